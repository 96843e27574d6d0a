package api_test

import (
	"net/http"
	"slices"
	"testing"

	"github.com/persistentchat/homeserver/testserver"
)

// Redacting a state event strips it in the current state too, so /state
// and later auth checks see the redacted content.
func TestRedactedStateEventIsStrippedInState(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	room := createRoom(t, alice, map[string]any{})
	id := putState(t, alice, room, "m.room.name", "", map[string]any{"name": "Secret name"})
	wantOK(t, alice.Do("PUT", roomPath(room, "redact", id, "r1"), map[string]any{}), nil)
	if got := stateContent(t, alice, room, "m.room.name", ""); len(got) != 0 {
		t.Errorf("name state after redaction = %v, want {}", got)
	}
	st := stateEvent(roomState(t, alice, room), "m.room.name", "")
	if st == nil || st.EventID != id {
		t.Fatalf("redacted name event left the state: %+v", st)
	}
	if st.Unsigned["redacted_because"] == nil {
		t.Errorf("state copy lacks redacted_because: %+v", st.Unsigned)
	}
}

// Transaction IDs are scoped per endpoint and room: the same ID in another
// room, or on /redact, is a new request.
func TestTransactionIDScope(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	a := createRoom(t, alice, map[string]any{})
	b := createRoom(t, alice, map[string]any{})
	send := func(room string) string {
		var out struct {
			EventID string `json:"event_id"`
		}
		wantOK(t, alice.Do("PUT", roomPath(room, "send", "m.room.message", "same"), map[string]any{"body": "x"}), &out)
		return out.EventID
	}
	inA, inB := send(a), send(b)
	if inA == inB {
		t.Fatalf("same txn ID in two rooms gave one event %s", inA)
	}
	if getEvent(t, alice, b, inB).EventID != inB {
		t.Errorf("event in room B not readable there")
	}
	if again := send(a); again != inA {
		t.Errorf("retried txn gave %s, want %s", again, inA)
	}
	var red struct {
		EventID string `json:"event_id"`
	}
	wantOK(t, alice.Do("PUT", roomPath(a, "redact", inA, "same"), map[string]any{}), &red)
	if red.EventID == inA {
		t.Errorf("redact with a txn ID used by /send returned the message instead of redacting")
	}
	if ev := getEvent(t, alice, a, inA); len(ev.Content) != 0 {
		t.Errorf("message not redacted: %s", ev.Content)
	}
}

// A createRoom whose initial events are rejected stores nothing: no room
// appears in /joined_rooms.
func TestRejectedCreateRoomLeavesNothing(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	before := joinedRooms(t, alice)
	// The override drops the creator to 0, so the name event is refused.
	r := alice.Do("POST", "/_matrix/client/v3/createRoom", map[string]any{
		"name":                         "never",
		"power_level_content_override": map[string]any{"users": map[string]any{alice.UserID: 0}, "state_default": 50, "events": map[string]any{}},
	})
	wantErr(t, r, http.StatusBadRequest, "M_INVALID_ROOM_STATE")
	if after := joinedRooms(t, alice); !slices.Equal(before, after) {
		t.Errorf("joined rooms changed from %v to %v after a rejected createRoom", before, after)
	}
}

// v12 trusted private chats make invitees co-creators, not PL 100 users.
func TestTrustedPrivateChatV12Creators(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	room := createRoom(t, alice, map[string]any{"room_version": "12", "preset": "trusted_private_chat", "invite": []string{bob.UserID}})
	create := stateContent(t, alice, room, "m.room.create", "")
	if ac, _ := create["additional_creators"].([]any); len(ac) != 1 || ac[0] != bob.UserID {
		t.Errorf("additional_creators = %v, want [%s]", create["additional_creators"], bob.UserID)
	}
	users, _ := stateContent(t, alice, room, "m.room.power_levels", "")["users"].(map[string]any)
	if _, listed := users[bob.UserID]; listed {
		t.Errorf("v12 creator listed in power levels: %v", users)
	}
}

// Extra fields of a /join body go into the join event, as Synapse does.
func TestJoinWithCustomContent(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	wantOK(t, bob.Do("POST", "/_matrix/client/v3/join/"+room, map[string]any{"foo": "bar", "membership": "leave", "reason": "hi"}), nil)
	c := stateContent(t, alice, room, "m.room.member", bob.UserID)
	if c["foo"] != "bar" || c["membership"] != "join" || c["reason"] != "hi" {
		t.Errorf("join content = %v, want foo=bar, membership=join, reason=hi", c)
	}
	wantErr(t, bob.Do("POST", "/_matrix/client/v3/join/"+room, map[string]any{"reason": 5}), 400, "M_BAD_JSON")
}
