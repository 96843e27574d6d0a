package csapi

import (
	"testing"

	. "github.com/persistentchat/homeserver/conformance/deploy"
)

func upgradeRoom(t *testing.T, c *Client, room, version string, extra ...map[string]any) string {
	t.Helper()
	body := map[string]any{"new_version": version}
	for _, e := range extra {
		for k, v := range e {
			body[k] = v
		}
	}
	r := mustOK(t, c.Do(ctx, "POST", cs("rooms", room, "upgrade"), body), "upgrade")
	repl := r.GetString("replacement_room")
	if repl == "" || repl == room {
		t.Fatalf("replacement_room: %s", r)
	}
	return repl
}

func stateContent(t *testing.T, c *Client, room, typ, key string) *Res {
	t.Helper()
	return mustOK(t, c.Do(ctx, "GET", cs("rooms", room, "state", typ, key), nil), "state "+typ)
}

// TestRoomUpgrade: POST /rooms/{roomId}/upgrade (spec: "Room Upgrades",
// server behaviour).
func TestRoomUpgrade(t *testing.T) {
	alice := register(t, "alice")
	bob := register(t, "bob")
	carol := register(t, "carol")
	a1 := dep.UniqueLocalpart("upgrade")
	alias := "#" + a1 + ":" + hs1().Name
	alt := "#" + dep.UniqueLocalpart("upgrade-alt") + ":" + hs1().Name
	room := createRoom(t, alice, map[string]any{"room_version": "10", "preset": "public_chat", "name": "Ops", "topic": "incidents", "room_alias_name": a1})
	joinRoom(t, bob, room)
	joinRoom(t, carol, room)
	mustOK(t, alice.Do(ctx, "PUT", cs("directory", "room", alt), map[string]any{"room_id": room}), "alt alias")
	sendState(t, alice, room, "m.room.canonical_alias", "", map[string]any{"alias": alias, "alt_aliases": []string{alt}})
	sendState(t, alice, room, "m.room.history_visibility", "", map[string]any{"history_visibility": "joined"})
	sendState(t, alice, room, "m.room.power_levels", "", map[string]any{"users": map[string]any{alice.UserID: 100, bob.UserID: 50}})
	sendText(t, bob, room, "last words")

	t.Run("Upgrading needs the power to send a tombstone", func(t *testing.T) {
		expectStatus(t, carol.Do(ctx, "POST", cs("rooms", room, "upgrade"), map[string]any{"new_version": "11"}), 403, "M_FORBIDDEN")
	})
	t.Run("Upgrading to an unknown version gives 400 M_UNSUPPORTED_ROOM_VERSION", func(t *testing.T) {
		expectStatus(t, alice.Do(ctx, "POST", cs("rooms", room, "upgrade"), map[string]any{"new_version": "999"}), 400, "M_UNSUPPORTED_ROOM_VERSION")
	})
	repl := upgradeRoom(t, alice, room, "11")
	t.Run("POST /rooms/:room_id/upgrade creates a new room with a tombstone", func(t *testing.T) {
		r := stateContent(t, alice, room, "m.room.tombstone", "")
		expectStr(t, r, "replacement_room", repl)
		expectPresent(t, r, "body")
	})
	t.Run("The new room's create event names its predecessor", func(t *testing.T) {
		r := stateContent(t, alice, repl, "m.room.create", "")
		expectStr(t, r, "room_version", "11")
		expectStr(t, r, "predecessor.room_id", room)
		// event_id is optional (deprecated in v1.16); when given it names
		// an event of the old room.
		if id := r.GetString("predecessor.event_id"); id != "" {
			mustOK(t, alice.Do(ctx, "GET", cs("rooms", room, "event", id), nil), "predecessor event")
		}
	})
	t.Run("State is copied to the new room", func(t *testing.T) {
		expectStr(t, stateContent(t, alice, repl, "m.room.name", ""), "name", "Ops")
		expectStr(t, stateContent(t, alice, repl, "m.room.topic", ""), "topic", "incidents")
		expectStr(t, stateContent(t, alice, repl, "m.room.join_rules", ""), "join_rule", "public")
		expectStr(t, stateContent(t, alice, repl, "m.room.history_visibility", ""), "history_visibility", "joined")
		pl := stateContent(t, alice, repl, "m.room.power_levels", "")
		if v, _ := pl.Get("users." + esc(bob.UserID)); v != float64(50) {
			t.Fatalf("bob's power in the new room %v: %s", v, pl)
		}
	})
	t.Run("Local aliases move to the new room", func(t *testing.T) {
		for _, a := range []string{alias, alt} {
			expectStr(t, mustOK(t, anon(hs1()).Do(ctx, "GET", cs("directory", "room", a), nil), "resolve "+a), "room_id", repl)
		}
		r := stateContent(t, alice, repl, "m.room.canonical_alias", "")
		expectStr(t, r, "alias", alias)
		if a := arr(r.JSON, "alt_aliases"); len(a) != 1 || a[0] != alt {
			t.Fatalf("alt_aliases: %s", r)
		}
		if a := arr(mustOK(t, alice.Do(ctx, "GET", cs("rooms", room, "aliases"), nil), "old aliases").JSON, "aliases"); len(a) != 0 {
			t.Fatalf("old room still has aliases %v", a)
		}
	})
	t.Run("The old room is closed to ordinary members", func(t *testing.T) {
		expectStatus(t, carol.Do(ctx, "PUT", cs("rooms", room, "send", "m.room.message", carol.NextTxn()), map[string]any{"msgtype": "m.text", "body": "hello?"}), 403, "M_FORBIDDEN")
	})
	t.Run("Members can join the new room", func(t *testing.T) {
		joinRoom(t, carol, repl)
		sendText(t, carol, repl, "here instead")
	})
	t.Run("Upgrading v11 to v12 makes the upgrader and additional_creators the creators", func(t *testing.T) {
		old := createRoom(t, alice, map[string]any{"room_version": "11", "preset": "public_chat"})
		joinRoom(t, bob, old)
		v12 := upgradeRoom(t, alice, old, "12", map[string]any{"additional_creators": []string{bob.UserID}})
		create := stateEventOf(t, alice, v12, "m.room.create")
		if str(create, "sender") != alice.UserID || str(create, "content.room_version") != "12" {
			t.Fatalf("create: %v", create)
		}
		if a := arr(create, "content.additional_creators"); len(a) != 1 || a[0] != bob.UserID {
			t.Fatalf("additional_creators: %v", create)
		}
		if v12 != roomIDOf(str(create, "event_id")) {
			t.Fatalf("v12 room ID %s is not its create event's", v12)
		}
		pl := stateContent(t, alice, v12, "m.room.power_levels", "")
		for _, u := range []string{alice.UserID, bob.UserID} {
			if _, listed := pl.Get("users." + esc(u)); listed {
				t.Errorf("creator %s listed in power levels: %s", u, pl)
			}
		}
		// The old room's levels are copied, as Synapse does: the 150 for
		// tombstones is createRoom's default, not the upgrade's.
	})
}

func TestPushRuleRoomUpgrade(t *testing.T) {
	alice := register(t, "alice")
	bob := register(t, "bob")
	t.Run("upgrading a room carries over existing push rules for local users", func(t *testing.T) {
		room := createRoom(t, alice, map[string]any{"preset": "public_chat", "room_version": "10"})
		joinRoom(t, bob, room)
		for _, c := range []*Client{alice, bob} {
			mustOK(t, c.Do(ctx, "PUT", cs("pushrules", "global", "room", room), map[string]any{"actions": []string{"dont_notify"}}), "room rule")
		}
		repl := upgradeRoom(t, alice, room, "11")
		joinRoom(t, bob, repl)
		for _, c := range []*Client{alice, bob} {
			syncUntil(t, c, "", "a push rule for the new room", func(r *Res) bool {
				global, _ := pushRulesIn(r)
				return findRule(global, "room", repl) != nil
			})
			r := mustOK(t, c.Do(ctx, "GET", cs("pushrules", "global", "room", repl), nil), "new room's rule")
			if a := arr(r.JSON, "actions"); len(a) != 1 || a[0] != "dont_notify" {
				t.Errorf("%s: new room's rule %s", c.UserID, r)
			}
			mustOK(t, c.Do(ctx, "GET", cs("pushrules", "global", "room", room), nil), "old room's rule stays")
		}
	})
}
