package csapi

import (
	"fmt"
	"testing"

	. "github.com/persistentchat/homeserver/conformance/deploy"
)

func TestRoomMessages(t *testing.T) {
	alice := register(t, "alice")
	bob := register(t, "bob")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, bob, room)
	t.Run("PUT /rooms/:room_id/send/:event_type/:txn_id sends a message", func(t *testing.T) {
		id := sendText(t, alice, room, "hello")
		r := mustOK(t, bob.Do(ctx, "GET", cs("rooms", room, "event", id), nil), "event")
		expectStr(t, r, "content.body", "hello")
		expectStr(t, r, "sender", alice.UserID)
		expectPresent(t, r, "origin_server_ts", "room_id")
	})
	t.Run("PUT /rooms/:room_id/send with the same txn_id is idempotent", func(t *testing.T) {
		r1 := mustOK(t, alice.Do(ctx, "PUT", cs("rooms", room, "send", "m.room.message", "same-txn"), map[string]any{"msgtype": "m.text", "body": "a"}), "send")
		r2 := mustOK(t, alice.Do(ctx, "PUT", cs("rooms", room, "send", "m.room.message", "same-txn"), map[string]any{"msgtype": "m.text", "body": "a"}), "send")
		if r1.GetString("event_id") != r2.GetString("event_id") {
			t.Fatalf("different event ids %s %s", r1, r2)
		}
	})
	t.Run("The same txn_id from a different device is a new event", func(t *testing.T) {
		a2 := login(t, alice, "")
		r1 := mustOK(t, alice.Do(ctx, "PUT", cs("rooms", room, "send", "m.room.message", "dev-txn"), map[string]any{"msgtype": "m.text", "body": "a"}), "send")
		r2 := mustOK(t, a2.Do(ctx, "PUT", cs("rooms", room, "send", "m.room.message", "dev-txn"), map[string]any{"msgtype": "m.text", "body": "a"}), "send")
		if r1.GetString("event_id") == r2.GetString("event_id") {
			t.Fatalf("same event id across devices")
		}
	})
	t.Run("Non-members cannot send", func(t *testing.T) {
		carol := register(t, "carol")
		expectStatus(t, carol.Do(ctx, "PUT", cs("rooms", room, "send", "m.room.message", "t1"), map[string]any{"body": "x"}), 403, "M_FORBIDDEN")
	})
	t.Run("GET /rooms/:room_id/messages returns a message, backwards and forwards", func(t *testing.T) {
		r2 := createRoom(t, alice, nil)
		for i := 0; i < 5; i++ {
			sendText(t, alice, r2, fmt.Sprintf("m%d", i))
		}
		r := mustOK(t, alice.Do(ctx, "GET", cs("rooms", r2, "messages"), nil, WithQuery("dir", "b", "limit", "3")), "messages")
		ch := arr(r.JSON, "chunk")
		if len(ch) != 3 || str(ch[0], "content.body") != "m4" {
			t.Fatalf("backwards page: %s", r)
		}
		expectPresent(t, r, "start", "end")
		r = mustOK(t, alice.Do(ctx, "GET", cs("rooms", r2, "messages"), nil, WithQuery("dir", "b", "limit", "3", "from", r.GetString("end"))), "messages page 2")
		if ch := arr(r.JSON, "chunk"); len(ch) != 3 || str(ch[0], "content.body") != "m1" {
			t.Fatalf("second page: %s", r)
		}
		r = mustOK(t, alice.Do(ctx, "GET", cs("rooms", r2, "messages"), nil, WithQuery("dir", "f", "limit", "100")), "forwards")
		if ch := arr(r.JSON, "chunk"); len(ch) < 5 || str(ch[0], "type") != "m.room.create" {
			t.Fatalf("forwards from start: %s", r)
		}
	})
	t.Run("GET /rooms/:room_id/messages with a filter", func(t *testing.T) {
		r := mustOK(t, alice.Do(ctx, "GET", cs("rooms", room, "messages"), nil, WithQuery("dir", "b", "filter", `{"types":["m.room.member"]}`)), "messages")
		for _, ev := range arr(r.JSON, "chunk") {
			if str(ev, "type") != "m.room.member" {
				t.Fatalf("filter not applied: %s", r)
			}
		}
	})
	t.Run("GET /rooms/:room_id/context/:event_id", func(t *testing.T) {
		id := sendText(t, alice, room, "ctx")
		r := mustOK(t, alice.Do(ctx, "GET", cs("rooms", room, "context", id), nil, WithQuery("limit", "2")), "context")
		expectStr(t, r, "event.event_id", id)
		expectPresent(t, r, "events_before", "state", "start", "end")
	})
	t.Run("Can redact a message, and its content is removed", func(t *testing.T) {
		id := sendText(t, alice, room, "secret")
		mustOK(t, alice.Do(ctx, "PUT", cs("rooms", room, "redact", id, alice.NextTxn()), map[string]any{"reason": "oops"}), "redact")
		r := mustOK(t, alice.Do(ctx, "GET", cs("rooms", room, "event", id), nil), "event")
		if _, ok := r.Get("content.body"); ok {
			t.Fatalf("content not redacted: %s", r)
		}
		expectPresent(t, r, "unsigned.redacted_because")
	})
	t.Run("Users cannot redact others' messages without power", func(t *testing.T) {
		id := sendText(t, alice, room, "mine")
		expectStatus(t, bob.Do(ctx, "PUT", cs("rooms", room, "redact", id, bob.NextTxn()), map[string]any{}), 403, "M_FORBIDDEN")
	})
	t.Run("GET /rooms/:room_id/event/:event_id for unknown event gives 404", func(t *testing.T) {
		expectStatus(t, alice.Do(ctx, "GET", cs("rooms", room, "event", "$nope"), nil), 404, "M_NOT_FOUND")
	})
	t.Run("Sending a message with an invalid JSON body gives 400 M_NOT_JSON", func(t *testing.T) {
		expectStatus(t, alice.Do(ctx, "PUT", cs("rooms", room, "send", "m.room.message", alice.NextTxn()), []byte("{not json")), 400, "M_NOT_JSON")
	})
	t.Run("Sending a JSON array body gives 400 M_BAD_JSON", func(t *testing.T) {
		expectStatus(t, alice.Do(ctx, "PUT", cs("rooms", room, "send", "m.room.message", alice.NextTxn()), []byte("[]")), 400, "M_BAD_JSON")
	})
	t.Run("GET /rooms/:room_id/relations/:event_id lists thread replies", func(t *testing.T) {
		root := sendText(t, alice, room, "root")
		sendEvent(t, alice, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "reply", "m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
		r := mustOK(t, alice.Do(ctx, "GET", append([]string{"_matrix", "client", "v1"}, "rooms", room, "relations", root), nil), "relations")
		if len(arr(r.JSON, "chunk")) != 1 {
			t.Fatalf("relations: %s", r)
		}
	})
}

func TestRoomState(t *testing.T) {
	alice := register(t, "alice")
	bob := register(t, "bob")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	t.Run("PUT /rooms/:room_id/state/m.room.name sets name", func(t *testing.T) {
		sendState(t, alice, room, "m.room.name", "", map[string]any{"name": "n1"})
		expectStr(t, mustOK(t, alice.Do(ctx, "GET", cs("rooms", room, "state", "m.room.name", ""), nil), "get"), "name", "n1")
	})
	t.Run("GET /rooms/:room_id/state/m.room.member/:user_id?format=event", func(t *testing.T) {
		r := mustOK(t, alice.Do(ctx, "GET", cs("rooms", room, "state", "m.room.member", alice.UserID), nil, WithQuery("format", "event")), "format=event")
		expectStr(t, r, "type", "m.room.member")
		expectStr(t, r, "content.membership", "join")
	})
	t.Run("GET /rooms/:room_id/state returns the full state", func(t *testing.T) {
		r := mustOK(t, alice.Do(ctx, "GET", cs("rooms", room, "state"), nil), "state")
		types := map[string]bool{}
		for _, ev := range r.JSON.([]any) {
			types[str(ev, "type")] = true
		}
		for _, want := range []string{"m.room.create", "m.room.member", "m.room.power_levels", "m.room.join_rules", "m.room.history_visibility"} {
			if !types[want] {
				t.Fatalf("missing %s", want)
			}
		}
	})
	t.Run("GET unknown state event gives 404 M_NOT_FOUND", func(t *testing.T) {
		expectStatus(t, alice.Do(ctx, "GET", cs("rooms", room, "state", "m.room.topic", ""), nil), 404, "M_NOT_FOUND")
	})
	t.Run("Non-members cannot read state of a private room", func(t *testing.T) {
		priv := createRoom(t, alice, map[string]any{"preset": "private_chat"})
		expectStatus(t, bob.Do(ctx, "GET", cs("rooms", priv, "state"), nil), 403, "M_FORBIDDEN")
	})
	t.Run("Members without power cannot send state", func(t *testing.T) {
		joinRoom(t, bob, room)
		expectStatus(t, bob.Do(ctx, "PUT", cs("rooms", room, "state", "m.room.name", ""), map[string]any{"name": "bob"}), 403, "M_FORBIDDEN")
	})
	t.Run("Setting state twice with the same content returns the same event", func(t *testing.T) {
		a := sendState(t, alice, room, "m.room.topic", "", map[string]any{"topic": "same"})
		b := sendState(t, alice, room, "m.room.topic", "", map[string]any{"topic": "same"})
		if a != b {
			t.Logf("note: server deduplicates identical state: %v", a == b)
		}
	})
	t.Run("Power levels: changing a user's level takes effect", func(t *testing.T) {
		sendState(t, alice, room, "m.room.power_levels", "", map[string]any{"users": map[string]any{alice.UserID: 100, bob.UserID: 50}, "state_default": 50})
		mustOK(t, bob.Do(ctx, "PUT", cs("rooms", room, "state", "m.room.name", ""), map[string]any{"name": "bob"}), "bob sets name")
	})
	t.Run("Power levels: cannot raise own level above own", func(t *testing.T) {
		expectStatus(t, bob.Do(ctx, "PUT", cs("rooms", room, "state", "m.room.power_levels", ""), map[string]any{"users": map[string]any{alice.UserID: 100, bob.UserID: 100}}), 403, "M_FORBIDDEN")
	})
}

func TestProfile(t *testing.T) {
	alice := register(t, "alice")
	t.Run("PUT /profile/:user_id/displayname sets my name", func(t *testing.T) {
		mustOK(t, alice.Do(ctx, "PUT", cs("profile", alice.UserID, "displayname"), map[string]any{"displayname": "Alice A"}), "put")
		expectStr(t, mustOK(t, anon(hs1()).Do(ctx, "GET", cs("profile", alice.UserID, "displayname"), nil), "get"), "displayname", "Alice A")
	})
	t.Run("PUT /profile/:user_id/avatar_url sets my avatar", func(t *testing.T) {
		mustOK(t, alice.Do(ctx, "PUT", cs("profile", alice.UserID, "avatar_url"), map[string]any{"avatar_url": "mxc://example.org/abc"}), "put")
		expectStr(t, mustOK(t, alice.Do(ctx, "GET", cs("profile", alice.UserID), nil), "get"), "avatar_url", "mxc://example.org/abc")
	})
	t.Run("Cannot set another user's displayname", func(t *testing.T) {
		bob := register(t, "bob")
		expectStatus(t, bob.Do(ctx, "PUT", cs("profile", alice.UserID, "displayname"), map[string]any{"displayname": "x"}), 403, "M_FORBIDDEN")
	})
	t.Run("GET /profile of unknown user gives 404", func(t *testing.T) {
		expectStatus(t, alice.Do(ctx, "GET", cs("profile", "@nobody-zz:"+hs1().Name), nil), 404, "M_NOT_FOUND")
	})
	t.Run("Displayname change is reflected in room membership", func(t *testing.T) {
		room := createRoom(t, alice, nil)
		mustOK(t, alice.Do(ctx, "PUT", cs("profile", alice.UserID, "displayname"), map[string]any{"displayname": "Alice B"}), "put")
		expectStr(t, mustOK(t, alice.Do(ctx, "GET", cs("rooms", room, "state", "m.room.member", alice.UserID), nil), "member"), "displayname", "Alice B")
	})
	t.Run("Custom profile field (m.tz, spec v1.16)", func(t *testing.T) {
		mustOK(t, alice.Do(ctx, "PUT", cs("profile", alice.UserID, "m.tz"), map[string]any{"m.tz": "Europe/London"}), "put")
	})
}

func TestAccountData(t *testing.T) {
	alice := register(t, "alice")
	room := createRoom(t, alice, nil)
	t.Run("Can add global account data and read it back", func(t *testing.T) {
		mustOK(t, alice.Do(ctx, "PUT", cs("user", alice.UserID, "account_data", "test.type"), map[string]any{"a": "b"}), "put")
		expectStr(t, mustOK(t, alice.Do(ctx, "GET", cs("user", alice.UserID, "account_data", "test.type"), nil), "get"), "a", "b")
	})
	t.Run("Can add room account data and see it in sync", func(t *testing.T) {
		mustOK(t, alice.Do(ctx, "PUT", cs("user", alice.UserID, "rooms", room, "account_data", "test.room"), map[string]any{"x": 1}), "put")
		syncUntil(t, alice, "", "room account data", func(r *Res) bool {
			for _, ev := range arr(r.JSON, "rooms.join."+esc(room)+".account_data.events") {
				if str(ev, "type") == "test.room" {
					return true
				}
			}
			return false
		})
	})
	t.Run("GET unknown account data gives 404", func(t *testing.T) {
		expectStatus(t, alice.Do(ctx, "GET", cs("user", alice.UserID, "account_data", "nope.type"), nil), 404, "M_NOT_FOUND")
	})
	t.Run("Cannot set account data for another user", func(t *testing.T) {
		bob := register(t, "bob")
		expectStatus(t, bob.Do(ctx, "PUT", cs("user", alice.UserID, "account_data", "x"), map[string]any{}), 403, "M_FORBIDDEN")
	})
	t.Run("Setting m.fully_read via account_data is rejected (must use read_markers)", func(t *testing.T) {
		expectStatus(t, alice.Do(ctx, "PUT", cs("user", alice.UserID, "rooms", room, "account_data", "m.fully_read"), map[string]any{"event_id": "$x"}), 405, "M_BAD_JSON")
	})
}
