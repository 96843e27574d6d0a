package csapi

import (
	"testing"

	. "github.com/persistentchat/homeserver/conformance/deploy"
)

func TestRoomCreate(t *testing.T) {
	alice := register(t, "alice")
	t.Run("Can create a room", func(t *testing.T) { createRoom(t, alice, nil) })
	t.Run("Can create a room with a name and topic", func(t *testing.T) {
		room := createRoom(t, alice, map[string]any{"name": "Test name", "topic": "Test topic"})
		expectStr(t, mustOK(t, alice.Do(ctx, "GET", cs("rooms", room, "state", "m.room.name", ""), nil), "name"), "name", "Test name")
		expectStr(t, mustOK(t, alice.Do(ctx, "GET", cs("rooms", room, "state", "m.room.topic", ""), nil), "topic"), "topic", "Test topic")
	})
	t.Run("Can create a room with a given room_version", func(t *testing.T) {
		room := createRoom(t, alice, map[string]any{"room_version": "10"})
		expectStr(t, mustOK(t, alice.Do(ctx, "GET", cs("rooms", room, "state", "m.room.create", ""), nil), "create"), "room_version", "10")
	})
	t.Run("Rejects an unknown room_version with 400 M_UNSUPPORTED_ROOM_VERSION", func(t *testing.T) {
		expectStatus(t, alice.Do(ctx, "POST", cs("createRoom"), map[string]any{"room_version": "nope"}), 400, "M_UNSUPPORTED_ROOM_VERSION")
	})
	t.Run("Rejects an invalid preset with 400", func(t *testing.T) {
		expectStatus(t, alice.Do(ctx, "POST", cs("createRoom"), map[string]any{"preset": "nope"}), 400, "")
	})
	t.Run("Can create a room with initial_state and power_level_content_override", func(t *testing.T) {
		room := createRoom(t, alice, map[string]any{
			"initial_state":                []any{map[string]any{"type": "m.room.topic", "state_key": "", "content": map[string]any{"topic": "init"}}},
			"power_level_content_override": map[string]any{"events_default": 20},
		})
		expectStr(t, mustOK(t, alice.Do(ctx, "GET", cs("rooms", room, "state", "m.room.topic", ""), nil), "topic"), "topic", "init")
		r := mustOK(t, alice.Do(ctx, "GET", cs("rooms", room, "state", "m.room.power_levels", ""), nil), "pl")
		if v, _ := r.Get("events_default"); v != float64(20) {
			t.Fatalf("events_default: %s", r)
		}
	})
	t.Run("Can create a private_chat room with invitees and is_direct", func(t *testing.T) {
		bob := register(t, "bob")
		room := createRoom(t, alice, map[string]any{"preset": "private_chat", "invite": []string{bob.UserID}, "is_direct": true})
		syncUntil(t, bob, "", "invite", inSection("invite", room))
	})
	t.Run("Can create a room with a room alias", func(t *testing.T) {
		alias := "#" + dep.UniqueLocalpart("alias") + ":" + hs1().Name
		room := createRoom(t, alice, map[string]any{"room_alias_name": localpart(alias[1:])})
		r := mustOK(t, alice.Do(ctx, "GET", cs("directory", "room", alias), nil), "resolve alias")
		expectStr(t, r, "room_id", room)
	})
	t.Run("Rejects an already-taken room alias with M_ROOM_IN_USE", func(t *testing.T) {
		a := dep.UniqueLocalpart("dupalias")
		createRoom(t, alice, map[string]any{"room_alias_name": a})
		expectStatus(t, alice.Do(ctx, "POST", cs("createRoom"), map[string]any{"room_alias_name": a}), 400, "M_ROOM_IN_USE")
	})
	t.Run("Rooms can be created with rich topic (m.topic)", func(t *testing.T) {
		room := createRoom(t, alice, map[string]any{"topic": "plain"})
		r := mustOK(t, alice.Do(ctx, "GET", cs("rooms", room, "state", "m.room.topic", ""), nil), "topic")
		if _, ok := r.Get("m\\.topic"); !ok {
			t.Fatalf("m.topic missing (spec v1.15 createRoom sets it): %s", r)
		}
	})
}

func TestJoinedRooms(t *testing.T) {
	alice := register(t, "alice")
	room := createRoom(t, alice, nil)
	r := mustOK(t, alice.Do(ctx, "GET", cs("joined_rooms"), nil), "joined_rooms")
	if a := arr(r.JSON, "joined_rooms"); len(a) != 1 || a[0] != room {
		t.Fatalf("joined_rooms: %s", r)
	}
}

func TestRoomMembers(t *testing.T) {
	alice := register(t, "alice")
	bob := register(t, "bob")
	t.Run("POST /rooms/:room_id/join can join a public room", func(t *testing.T) {
		room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		mustOK(t, bob.Do(ctx, "POST", cs("rooms", room, "join"), map[string]any{}), "join")
		expectStr(t, mustOK(t, bob.Do(ctx, "GET", cs("rooms", room, "state", "m.room.member", bob.UserID), nil), "member"), "membership", "join")
	})
	t.Run("POST /join/:room_alias can join a room", func(t *testing.T) {
		a := dep.UniqueLocalpart("joinalias")
		room := createRoom(t, alice, map[string]any{"preset": "public_chat", "room_alias_name": a})
		r := mustOK(t, bob.Do(ctx, "POST", cs("join", "#"+a+":"+hs1().Name), map[string]any{}), "join")
		expectStr(t, r, "room_id", room)
	})
	t.Run("POST /join/:room_id can join a room with custom content", func(t *testing.T) {
		room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		mustOK(t, bob.Do(ctx, "POST", cs("join", room), map[string]any{"foo": "bar"}), "join")
		r := mustOK(t, bob.Do(ctx, "GET", cs("rooms", room, "state", "m.room.member", bob.UserID), nil), "member")
		expectStr(t, r, "foo", "bar")
		expectStr(t, r, "membership", "join")
	})
	t.Run("Joining a private room without invite gives 403", func(t *testing.T) {
		room := createRoom(t, alice, map[string]any{"preset": "private_chat"})
		expectStatus(t, bob.Do(ctx, "POST", cs("rooms", room, "join"), map[string]any{}), 403, "M_FORBIDDEN")
	})
	t.Run("Joining an unknown room gives 404 or 403", func(t *testing.T) {
		r := bob.Do(ctx, "POST", cs("join", "!nope:"+hs1().Name), map[string]any{})
		if r.Status != 404 && r.Status != 403 {
			t.Fatalf("want 404/403: %s", r)
		}
	})
	t.Run("Test that we can be reinvited to a room we created", func(t *testing.T) {
		room := createRoom(t, alice, map[string]any{"preset": "private_chat"})
		inviteUser(t, alice, room, bob.UserID)
		joinRoom(t, bob, room)
		mustOK(t, alice.Do(ctx, "PUT", cs("rooms", room, "state", "m.room.power_levels", ""), map[string]any{"users": map[string]any{alice.UserID: 100, bob.UserID: 100}}), "pl")
		mustOK(t, alice.Do(ctx, "POST", cs("rooms", room, "leave"), map[string]any{}), "leave")
		inviteUser(t, bob, room, alice.UserID)
		joinRoom(t, alice, room)
	})
	t.Run("GET /rooms/:room_id/members and joined_members", func(t *testing.T) {
		room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		joinRoom(t, bob, room)
		r := mustOK(t, alice.Do(ctx, "GET", cs("rooms", room, "members"), nil), "members")
		if n := len(arr(r.JSON, "chunk")); n != 2 {
			t.Fatalf("want 2 members: %s", r)
		}
		r = mustOK(t, alice.Do(ctx, "GET", cs("rooms", room, "joined_members"), nil), "joined_members")
		expectPresent(t, r, "joined."+esc(bob.UserID))
		r = mustOK(t, alice.Do(ctx, "GET", cs("rooms", room, "members"), nil, WithQuery("membership", "join", "not_membership", "leave")), "members filter")
		if n := len(arr(r.JSON, "chunk")); n != 2 {
			t.Fatalf("membership filter: %s", r)
		}
	})
	t.Run("Non-members cannot read /members", func(t *testing.T) {
		room := createRoom(t, alice, map[string]any{"preset": "private_chat"})
		expectStatus(t, bob.Do(ctx, "GET", cs("rooms", room, "members"), nil), 403, "M_FORBIDDEN")
	})
}

func TestRoomLeaveKickBan(t *testing.T) {
	alice := register(t, "alice")
	bob := register(t, "bob")
	t.Run("Can leave a room, and it leaves joined_rooms", func(t *testing.T) {
		room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		joinRoom(t, bob, room)
		mustOK(t, bob.Do(ctx, "POST", cs("rooms", room, "leave"), map[string]any{}), "leave")
		r := mustOK(t, bob.Do(ctx, "GET", cs("joined_rooms"), nil), "joined")
		for _, x := range arr(r.JSON, "joined_rooms") {
			if x == room {
				t.Fatalf("still joined")
			}
		}
	})
	t.Run("Can kick a user, with a reason", func(t *testing.T) {
		room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		joinRoom(t, bob, room)
		mustOK(t, alice.Do(ctx, "POST", cs("rooms", room, "kick"), map[string]any{"user_id": bob.UserID, "reason": "bye"}), "kick")
		r := mustOK(t, alice.Do(ctx, "GET", cs("rooms", room, "state", "m.room.member", bob.UserID), nil), "member")
		expectStr(t, r, "membership", "leave")
		expectStr(t, r, "reason", "bye")
	})
	t.Run("Non-present room members cannot ban others", func(t *testing.T) {
		room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		expectStatus(t, bob.Do(ctx, "POST", cs("rooms", room, "ban"), map[string]any{"user_id": alice.UserID}), 403, "M_FORBIDDEN")
	})
	t.Run("Banned user cannot rejoin until unbanned", func(t *testing.T) {
		room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		joinRoom(t, bob, room)
		mustOK(t, alice.Do(ctx, "POST", cs("rooms", room, "ban"), map[string]any{"user_id": bob.UserID}), "ban")
		expectStatus(t, bob.Do(ctx, "POST", cs("rooms", room, "join"), map[string]any{}), 403, "M_FORBIDDEN")
		mustOK(t, alice.Do(ctx, "POST", cs("rooms", room, "unban"), map[string]any{"user_id": bob.UserID}), "unban")
		joinRoom(t, bob, room)
	})
	t.Run("Can forget a room after leaving, not before", func(t *testing.T) {
		room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		joinRoom(t, bob, room)
		expectStatus(t, bob.Do(ctx, "POST", cs("rooms", room, "forget"), map[string]any{}), 400, "M_UNKNOWN")
		mustOK(t, bob.Do(ctx, "POST", cs("rooms", room, "leave"), map[string]any{}), "leave")
		mustOK(t, bob.Do(ctx, "POST", cs("rooms", room, "forget"), map[string]any{}), "forget")
	})
	t.Run("Leaving a room you are not in gives 403 or 404", func(t *testing.T) {
		room := createRoom(t, alice, map[string]any{"preset": "private_chat"})
		r := bob.Do(ctx, "POST", cs("rooms", room, "leave"), map[string]any{})
		if r.Status != 403 && r.Status != 404 {
			t.Fatalf("want 403/404: %s", r)
		}
	})
}

func TestRoomAlias(t *testing.T) {
	alice := register(t, "alice")
	bob := register(t, "bob")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	alias := "#" + dep.UniqueLocalpart("al") + ":" + hs1().Name
	t.Run("PUT /directory/room/:room_alias creates alias", func(t *testing.T) {
		mustOK(t, alice.Do(ctx, "PUT", cs("directory", "room", alias), map[string]any{"room_id": room}), "put alias")
		r := mustOK(t, anon(hs1()).Do(ctx, "GET", cs("directory", "room", alias), nil), "get alias")
		expectStr(t, r, "room_id", room)
		if len(arr(r.JSON, "servers")) == 0 {
			t.Fatalf("no servers: %s", r)
		}
	})
	t.Run("PUT the same alias again gives 409 M_UNKNOWN", func(t *testing.T) {
		expectStatus(t, alice.Do(ctx, "PUT", cs("directory", "room", alias), map[string]any{"room_id": room}), 409, "")
	})
	t.Run("GET /rooms/:room_id/aliases lists aliases", func(t *testing.T) {
		r := mustOK(t, alice.Do(ctx, "GET", cs("rooms", room, "aliases"), nil), "aliases")
		if a := arr(r.JSON, "aliases"); len(a) != 1 || a[0] != alias {
			t.Fatalf("aliases: %s", r)
		}
	})
	t.Run("Unknown alias gives 404 M_NOT_FOUND", func(t *testing.T) {
		expectStatus(t, alice.Do(ctx, "GET", cs("directory", "room", "#nope-x:"+hs1().Name), nil), 404, "M_NOT_FOUND")
	})
	t.Run("Regular users cannot delete an alias they did not create", func(t *testing.T) {
		joinRoom(t, bob, room)
		expectStatus(t, bob.Do(ctx, "DELETE", cs("directory", "room", alias), nil), 403, "M_FORBIDDEN")
	})
	t.Run("Alias creators can delete alias with no ops", func(t *testing.T) {
		a2 := "#" + dep.UniqueLocalpart("al") + ":" + hs1().Name
		mustOK(t, bob.Do(ctx, "PUT", cs("directory", "room", a2), map[string]any{"room_id": room}), "put")
		mustOK(t, bob.Do(ctx, "DELETE", cs("directory", "room", a2), nil), "delete")
		expectStatus(t, bob.Do(ctx, "GET", cs("directory", "room", a2), nil), 404, "M_NOT_FOUND")
	})
	t.Run("Invalid alias for another server is rejected", func(t *testing.T) {
		r := alice.Do(ctx, "PUT", cs("directory", "room", "#x:other.example"), map[string]any{"room_id": room})
		if r.Status != 400 && r.Status != 403 {
			t.Fatalf("want 400/403: %s", r)
		}
	})
	t.Run("m.room.canonical_alias accepts a present alias and rejects a missing one", func(t *testing.T) {
		mustOK(t, alice.Do(ctx, "PUT", cs("rooms", room, "state", "m.room.canonical_alias", ""), map[string]any{"alias": alias}), "good")
		expectStatus(t, alice.Do(ctx, "PUT", cs("rooms", room, "state", "m.room.canonical_alias", ""), map[string]any{"alias": "#missing-y:" + hs1().Name}), 400, "M_BAD_ALIAS")
	})
}

func TestPublicRooms(t *testing.T) {
	alice := register(t, "alice")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat", "visibility": "public", "name": "pubroom"})
	t.Run("GET /publicRooms lists a public room", func(t *testing.T) {
		r := mustOK(t, alice.Do(ctx, "GET", cs("publicRooms"), nil), "publicRooms")
		for _, x := range arr(r.JSON, "chunk") {
			if str(x, "room_id") == room {
				return
			}
		}
		t.Fatalf("room not listed: %s", r)
	})
	t.Run("GET /directory/list/room/:room_id returns visibility", func(t *testing.T) {
		expectStr(t, mustOK(t, alice.Do(ctx, "GET", cs("directory", "list", "room", room), nil), "vis"), "visibility", "public")
	})
	t.Run("PUT /directory/list/room/:room_id sets visibility", func(t *testing.T) {
		mustOK(t, alice.Do(ctx, "PUT", cs("directory", "list", "room", room), map[string]any{"visibility": "private"}), "set")
	})
	t.Run("POST /publicRooms with a filter", func(t *testing.T) {
		mustOK(t, alice.Do(ctx, "POST", cs("publicRooms"), map[string]any{"limit": 10, "filter": map[string]any{"generic_search_term": "pubroom"}}), "search")
	})
}

var _ = NewClient
