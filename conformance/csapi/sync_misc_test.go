package csapi

import (
	"testing"

	. "github.com/persistentchat/homeserver/conformance/deploy"
)

func TestSync(t *testing.T) {
	alice := register(t, "alice")
	bob := register(t, "bob")
	t.Run("Initial sync has next_batch and the joined room", func(t *testing.T) {
		room := createRoom(t, alice, nil)
		r := sync(t, alice, "")
		expectPresent(t, r, "next_batch", "rooms.join."+esc(room)+".timeline.events", "rooms.join."+esc(room)+".state.events")
	})
	t.Run("New message arrives in an incremental sync", func(t *testing.T) {
		room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		joinRoom(t, bob, room)
		since := syncSince(t, bob)
		id := sendText(t, alice, room, "hi bob")
		syncUntil(t, bob, since, "message", timelineHas(room, eventID(id)))
	})
	t.Run("Invite appears in the invite section with invite_state", func(t *testing.T) {
		room := createRoom(t, alice, map[string]any{"preset": "private_chat", "name": "inv"})
		since := syncSince(t, bob)
		inviteUser(t, alice, room, bob.UserID)
		syncUntil(t, bob, since, "invite", func(r *Res) bool {
			return len(arr(r.JSON, "rooms.invite."+esc(room)+".invite_state.events")) > 0
		})
	})
	t.Run("Leaving a room puts it in the leave section", func(t *testing.T) {
		room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		joinRoom(t, bob, room)
		since := syncSince(t, bob)
		mustOK(t, bob.Do(ctx, "POST", cs("rooms", room, "leave"), map[string]any{}), "leave")
		syncUntil(t, bob, since, "leave", inSection("leave", room))
	})
	t.Run("Filter with timeline limit gives limited and prev_batch", func(t *testing.T) {
		room := createRoom(t, alice, nil)
		for i := 0; i < 5; i++ {
			sendText(t, alice, room, "x")
		}
		r := sync(t, alice, "", "filter", `{"room":{"timeline":{"limit":2}}}`)
		tl := "rooms.join." + esc(room) + ".timeline"
		if n := len(arr(r.JSON, tl+".events")); n != 2 {
			t.Fatalf("want 2 events: %s", r)
		}
		if v, _ := r.Get(tl + ".limited"); v != true {
			t.Fatalf("not limited")
		}
		expectPresent(t, r, tl+".prev_batch")
	})
	t.Run("Can create and fetch a filter", func(t *testing.T) {
		r := mustOK(t, alice.Do(ctx, "POST", cs("user", alice.UserID, "filter"), map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 10}}}), "filter")
		id := r.GetString("filter_id")
		r = mustOK(t, alice.Do(ctx, "GET", cs("user", alice.UserID, "filter", id), nil), "get filter")
		if v, _ := r.Get("room.timeline.limit"); v != float64(10) {
			t.Fatalf("filter: %s", r)
		}
	})
	t.Run("Sync with a long timeout returns when a message arrives", func(t *testing.T) {
		room := createRoom(t, alice, nil)
		since := syncSince(t, alice)
		done := make(chan *Res, 1)
		go func() {
			done <- alice.Do(ctx, "GET", cs("sync"), nil, WithQuery("since", since, "timeout", "20000"))
		}()
		sendText(t, alice, room, "wake")
		r := <-done
		if len(arr(r.JSON, "rooms.join."+esc(room)+".timeline.events")) == 0 {
			t.Fatalf("long poll did not return the event: %s", r)
		}
	})
	t.Run("Typing notifications appear in ephemeral", func(t *testing.T) {
		room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		joinRoom(t, bob, room)
		mustOK(t, alice.Do(ctx, "PUT", cs("rooms", room, "typing", alice.UserID), map[string]any{"typing": true, "timeout": 10000}), "typing")
		syncUntil(t, bob, "", "typing", func(r *Res) bool {
			for _, ev := range arr(r.JSON, "rooms.join."+esc(room)+".ephemeral.events") {
				if str(ev, "type") == "m.typing" && len(arr(ev, "content.user_ids")) == 1 {
					return true
				}
			}
			return false
		})
	})
	t.Run("Read receipts appear in ephemeral", func(t *testing.T) {
		room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		joinRoom(t, bob, room)
		id := sendText(t, alice, room, "read me")
		mustOK(t, bob.Do(ctx, "POST", cs("rooms", room, "receipt", "m.read", id), map[string]any{}), "receipt")
		syncUntil(t, alice, "", "receipt", func(r *Res) bool {
			for _, ev := range arr(r.JSON, "rooms.join."+esc(room)+".ephemeral.events") {
				if str(ev, "type") == "m.receipt" {
					if _, ok := Path(ev, "content."+esc(id)+".m\\.read."+esc(bob.UserID)); ok {
						return true
					}
				}
			}
			return false
		})
	})
	t.Run("POST /rooms/:room_id/read_markers sets m.fully_read", func(t *testing.T) {
		room := createRoom(t, alice, nil)
		id := sendText(t, alice, room, "x")
		mustOK(t, alice.Do(ctx, "POST", cs("rooms", room, "read_markers"), map[string]any{"m.fully_read": id, "m.read": id}), "read_markers")
		expectStr(t, mustOK(t, alice.Do(ctx, "GET", cs("user", alice.UserID, "rooms", room, "account_data", "m.fully_read"), nil), "fully_read"), "event_id", id)
	})
	t.Run("Unread notification counts are present", func(t *testing.T) {
		room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		joinRoom(t, bob, room)
		sendText(t, alice, room, "ping")
		syncUntil(t, bob, "", "notification count", func(r *Res) bool {
			v, _ := r.Get("rooms.join." + esc(room) + ".unread_notifications.notification_count")
			f, _ := v.(float64)
			return f >= 1
		})
	})
}

func TestPresence(t *testing.T) {
	alice := register(t, "alice")
	t.Run("PUT /presence/:user_id/status updates my presence", func(t *testing.T) {
		mustOK(t, alice.Do(ctx, "PUT", cs("presence", alice.UserID, "status"), map[string]any{"presence": "online", "status_msg": "hi"}), "put")
		r := mustOK(t, alice.Do(ctx, "GET", cs("presence", alice.UserID, "status"), nil), "get")
		expectStr(t, r, "presence", "online")
		expectStr(t, r, "status_msg", "hi")
	})
}

func TestToDevice(t *testing.T) {
	alice := register(t, "alice")
	bob := register(t, "bob")
	t.Run("Can send a to-device message and it arrives in sync", func(t *testing.T) {
		since := syncSince(t, bob)
		mustOK(t, alice.Do(ctx, "PUT", cs("sendToDevice", "m.test", alice.NextTxn()), map[string]any{"messages": map[string]any{bob.UserID: map[string]any{bob.DeviceID: map[string]any{"x": "y"}}}}), "send")
		syncUntil(t, bob, since, "to_device", func(r *Res) bool { return len(arr(r.JSON, "to_device.events")) > 0 })
	})
}

func TestE2EKeys(t *testing.T) {
	alice := register(t, "alice")
	t.Run("Can upload device keys and one-time keys", func(t *testing.T) {
		r := mustOK(t, alice.Do(ctx, "POST", cs("keys", "upload"), map[string]any{
			"device_keys": map[string]any{"user_id": alice.UserID, "device_id": alice.DeviceID, "algorithms": []string{"m.olm.v1.curve25519-aes-sha2"},
				"keys": map[string]any{"curve25519:" + alice.DeviceID: "abc", "ed25519:" + alice.DeviceID: "def"}, "signatures": map[string]any{}},
			"one_time_keys": map[string]any{"curve25519:AAAA": "xyz"},
		}), "upload")
		expectPresent(t, r, "one_time_key_counts")
	})
	t.Run("Can query device keys", func(t *testing.T) {
		r := mustOK(t, alice.Do(ctx, "POST", cs("keys", "query"), map[string]any{"device_keys": map[string]any{alice.UserID: []string{}}}), "query")
		expectPresent(t, r, "device_keys."+esc(alice.UserID)+"."+alice.DeviceID)
	})
	t.Run("Can claim one-time keys", func(t *testing.T) {
		r := mustOK(t, alice.Do(ctx, "POST", cs("keys", "claim"), map[string]any{"one_time_keys": map[string]any{alice.UserID: map[string]any{alice.DeviceID: "curve25519"}}}), "claim")
		expectPresent(t, r, "one_time_keys")
	})
	t.Run("GET /room_keys/version gives 404 with no backup", func(t *testing.T) {
		expectStatus(t, alice.Do(ctx, "GET", cs("room_keys", "version"), nil), 404, "M_NOT_FOUND")
	})
}

func TestServerCapabilities(t *testing.T) {
	alice := register(t, "alice")
	r := mustOK(t, alice.Do(ctx, "GET", cs("capabilities"), nil), "capabilities")
	t.Run("GET /capabilities has room versions and change_password", func(t *testing.T) {
		expectPresent(t, r, "capabilities.m\\.room_versions.default", "capabilities.m\\.room_versions.available")
	})
}

func TestIgnoredUsers(t *testing.T) {
	alice := register(t, "alice")
	bob := register(t, "bob")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, bob, room)
	mustOK(t, alice.Do(ctx, "PUT", cs("user", alice.UserID, "account_data", "m.ignored_user_list"), map[string]any{"ignored_users": map[string]any{bob.UserID: map[string]any{}}}), "ignore")
	t.Run("Messages from ignored users are not in sync", func(t *testing.T) {
		hidden := sendText(t, bob, room, "ignored")
		marker := sendText(t, alice, room, "marker")
		syncUntil(t, alice, "", "marker", timelineHas(room, eventID(marker)))
		r := sync(t, alice, "")
		for _, ev := range arr(r.JSON, "rooms.join."+esc(room)+".timeline.events") {
			if str(ev, "event_id") == hidden {
				t.Fatalf("ignored user's event is in sync")
			}
		}
	})
}

func TestSearch(t *testing.T) {
	alice := register(t, "alice")
	room := createRoom(t, alice, nil)
	sendText(t, alice, room, "findable needle")
	t.Run("POST /search finds a message", func(t *testing.T) {
		r := mustOK(t, alice.Do(ctx, "POST", cs("search"), map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "needle"}}}), "search")
		if len(arr(r.JSON, "search_categories.room_events.results")) != 1 {
			t.Fatalf("search: %s", r)
		}
	})
}

func TestUserDirectory(t *testing.T) {
	alice := register(t, "alice")
	bob := register(t, "bob")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, bob, room)
	t.Run("User directory finds a user sharing a room", func(t *testing.T) {
		r := mustOK(t, alice.Do(ctx, "POST", cs("user_directory", "search"), map[string]any{"search_term": localpart(bob.UserID)}), "search")
		if len(arr(r.JSON, "results")) == 0 {
			t.Fatalf("not found: %s", r)
		}
	})
}

func TestRequestEncoding(t *testing.T) {
	alice := register(t, "alice")
	t.Run("Unknown endpoint gives 404 M_UNRECOGNIZED", func(t *testing.T) {
		expectStatus(t, alice.Do(ctx, "GET", cs("nope_endpoint"), nil), 404, "M_UNRECOGNIZED")
	})
	t.Run("Known endpoint with wrong method gives 405 M_UNRECOGNIZED", func(t *testing.T) {
		expectStatus(t, alice.Do(ctx, "PATCH", cs("account", "whoami"), nil), 405, "M_UNRECOGNIZED")
	})
	t.Run("CORS preflight is answered", func(t *testing.T) {
		r := alice.Do(ctx, "OPTIONS", cs("sync"), nil)
		if r.Header.Get("Access-Control-Allow-Origin") != "*" {
			t.Fatalf("no CORS: %s %v", r, r.Header)
		}
	})
	t.Run("r0 paths still work", func(t *testing.T) {
		mustOK(t, alice.Do(ctx, "GET", p("_matrix/client/r0/account/whoami"), nil), "r0 whoami")
	})
}

// Tests below need a second homeserver, that is federation.
func TestFederation(t *testing.T) {
	alice := register(t, "alice")
	remote := registerOn(t, hs2(), "remote")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	t.Run("Remote user can join a room over federation", func(t *testing.T) {
		mustOK(t, remote.Do(ctx, "POST", cs("join", room), map[string]any{}, WithQuery("server_name", hs1().Name)), "remote join")
	})
	t.Run("Remote user can be invited over federation", func(t *testing.T) {
		r2 := createRoom(t, alice, map[string]any{"preset": "private_chat"})
		mustOK(t, alice.Do(ctx, "POST", cs("rooms", r2, "invite"), map[string]any{"user_id": remote.UserID}), "invite remote")
	})
	t.Run("Remote profile lookup", func(t *testing.T) {
		mustOK(t, alice.Do(ctx, "GET", cs("profile", remote.UserID), nil), "remote profile")
	})
	t.Run("Remote alias resolution", func(t *testing.T) {
		a := dep.UniqueLocalpart("fedalias")
		createRoom(t, remote, map[string]any{"room_alias_name": a})
		mustOK(t, alice.Do(ctx, "GET", cs("directory", "room", "#"+a+":"+hs2().Name), nil), "remote alias")
	})
}

// TestUnknownEndpoints: spec "API Standards": an unknown endpoint is 404
// M_UNRECOGNIZED, a known one asked with the wrong method 405
// M_UNRECOGNIZED, under every prefix the server answers.
func TestUnknownEndpoints(t *testing.T) {
	alice := register(t, "alice")
	check := func(t *testing.T, method, path string, status int) {
		t.Helper()
		r := alice.Do(ctx, method, p(path), nil)
		if r.Status != status || r.GetString("errcode") != "M_UNRECOGNIZED" {
			t.Errorf("%s /%s: want %d M_UNRECOGNIZED, got %s", method, path, status, r)
		}
	}
	t.Run("Unknown prefix", func(t *testing.T) {
		check(t, "GET", "_matrix/unknown", 404)
	})
	t.Run("Client-server endpoints", func(t *testing.T) {
		check(t, "GET", "_matrix/client/unknown", 404)
		check(t, "GET", "_matrix/client/v1/unknown", 404)
		check(t, "GET", "_matrix/client/v3/room/unknown", 404)
		check(t, "PUT", "_matrix/client/v3/login", 405)
		// POST-only endpoints asked with GET.
		check(t, "GET", "_matrix/client/v3/createRoom", 405)
		check(t, "GET", "_matrix/client/v3/logout", 405)
		check(t, "GET", "_matrix/client/v3/account/deactivate", 405)
		check(t, "GET", "_matrix/client/v3/search", 405)
		check(t, "PATCH", "_matrix/client/v3/account/whoami", 405)
	})
	t.Run("Media endpoints", func(t *testing.T) {
		check(t, "GET", "_matrix/media/unknown", 404)
		check(t, "GET", "_matrix/media/v3/unknown", 404)
		check(t, "PATCH", "_matrix/media/v3/upload", 405)
		check(t, "GET", "_matrix/media/v3/upload", 405)
		check(t, "GET", "_matrix/media/v1/create", 405)
		check(t, "POST", "_matrix/client/v1/media/config", 405)
	})
	t.Run("Server-server endpoints", func(t *testing.T) {
		check(t, "GET", "_matrix/federation/unknown", 404)
		check(t, "GET", "_matrix/federation/v1/unknown", 404)
		check(t, "PUT", "_matrix/federation/v1/version", 405)
		check(t, "POST", "_matrix/federation/v1/version", 405)
	})
	t.Run("Key endpoints", func(t *testing.T) {
		check(t, "GET", "_matrix/key/unknown", 404)
		check(t, "GET", "_matrix/key/v2/unknown", 404)
		check(t, "POST", "_matrix/key/v2/server", 405)
	})
}
