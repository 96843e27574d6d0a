package api_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/persistentchat/homeserver/testserver"
)

func blockInvites(t *testing.T, c *testserver.Client, content map[string]any) {
	t.Helper()
	wantOK(t, c.Do("PUT", csAPI+"/user/"+url.PathEscape(c.UserID)+"/account_data/m.invite_permission_config", content), nil)
}

func invitedRooms(t *testing.T, c *testserver.Client) map[string]any {
	t.Helper()
	var out struct {
		Rooms struct {
			Invite map[string]any `json:"invite"`
		} `json:"rooms"`
	}
	wantOK(t, c.Do("GET", csAPI+"/sync?timeout=0", nil), &out)
	return out.Rooms.Invite
}

// TestInviteBlocking: a user whose m.invite_permission_config has
// default_action "block" cannot be invited through any of the endpoints
// the spec lists (403 M_INVITE_BLOCKED), and invites they already had are
// not served by /sync while the block lasts (v1.18, MSC4380).
func TestInviteBlocking(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob, carol, dave := srv.Register("alice"), srv.Register("bob"), srv.Register("carol"), srv.Register("dave")
	room := createRoom(t, alice, map[string]any{"preset": "private_chat"})
	// dave's invite comes before his block.
	inviteUser(t, alice, room, dave.UserID)
	blockInvites(t, bob, map[string]any{"default_action": "block"})
	blockInvites(t, dave, map[string]any{"default_action": "block"})

	var before struct {
		JoinedRooms []string `json:"joined_rooms"`
	}
	wantOK(t, alice.Do("GET", csAPI+"/joined_rooms", nil), &before)
	tests := []struct {
		name   string
		method string
		path   string
		body   any
	}{
		{"invite", "POST", roomPath(room, "invite"), map[string]any{"user_id": bob.UserID}},
		{"member state", "PUT", roomPath(room, "state", "m.room.member", bob.UserID), map[string]any{"membership": "invite"}},
		{"createRoom", "POST", csAPI + "/createRoom", map[string]any{"invite": []string{carol.UserID, bob.UserID}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, alice.Do(tc.method, tc.path, tc.body), http.StatusForbidden, "M_INVITE_BLOCKED")
		})
	}
	// createRoom made nothing, and carol got no invite from it.
	var after struct {
		JoinedRooms []string `json:"joined_rooms"`
	}
	wantOK(t, alice.Do("GET", csAPI+"/joined_rooms", nil), &after)
	if len(after.JoinedRooms) != len(before.JoinedRooms) {
		t.Errorf("a refused createRoom made a room: %v", after.JoinedRooms)
	}
	if inv := invitedRooms(t, carol); len(inv) != 0 {
		t.Errorf("carol was invited by a refused createRoom: %v", inv)
	}
	// Users who do not block are invited as before, in the same ways.
	inviteUser(t, alice, room, carol.UserID)
	if _, ok := invitedRooms(t, carol)[room]; !ok {
		t.Errorf("carol's invite is not in her sync")
	}

	// dave's earlier invite is hidden while he blocks invites, and back
	// once he stops (spec: servers MAY serve them again).
	if inv := invitedRooms(t, dave); len(inv) != 0 {
		t.Errorf("dave, blocking invites, is shown %v", inv)
	}
	blockInvites(t, dave, map[string]any{})
	if _, ok := invitedRooms(t, dave)[room]; !ok {
		t.Errorf("dave's invite is not back after he stopped blocking")
	}

	// Other values than "block" let invites through (spec: "A missing,
	// invalid or unsupported value").
	for _, content := range []map[string]any{{"default_action": "allow"}, {"default_action": true}, {}} {
		blockInvites(t, bob, content)
		r := createRoom(t, alice, map[string]any{"invite": []string{bob.UserID}})
		if _, ok := invitedRooms(t, bob)[r]; !ok {
			t.Errorf("with %v, bob was not invited", content)
		}
	}
}
