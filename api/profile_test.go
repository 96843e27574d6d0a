package api_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/persistentchat/homeserver/testserver"
)

func profilePath(user string, field ...string) string {
	p := csAPI + "/profile/" + url.PathEscape(user)
	for _, f := range field {
		p += "/" + url.PathEscape(f)
	}
	return p
}

func TestProfileFields(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	server := srv.Config.ServerName

	wantOK(t, alice.Do("PUT", profilePath(alice.UserID, "displayname"), map[string]any{"displayname": "Alice Liddell"}), nil)
	wantOK(t, alice.Do("PUT", profilePath(alice.UserID, "avatar_url"), map[string]any{"avatar_url": "mxc://" + server + "/rabbit"}), nil)

	tests := []struct {
		name string
		path string
		want map[string]any
	}{
		{"displayname", profilePath(alice.UserID, "displayname"), map[string]any{"displayname": "Alice Liddell"}},
		{"avatar_url", profilePath(alice.UserID, "avatar_url"), map[string]any{"avatar_url": "mxc://" + server + "/rabbit"}},
		{"whole profile", profilePath(alice.UserID), map[string]any{"displayname": "Alice Liddell", "avatar_url": "mxc://" + server + "/rabbit"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// Anyone may read profiles, with or without an account.
			for _, c := range []*testserver.Client{alice, bob, srv.Anonymous()} {
				var got map[string]any
				wantOK(t, c.Do("GET", tc.path, nil), &got)
				if len(got) != len(tc.want) {
					t.Errorf("GET %s = %v, want %v", tc.path, got, tc.want)
				}
				for k, v := range tc.want {
					if got[k] != v {
						t.Errorf("GET %s: %s = %v, want %v", tc.path, k, got[k], v)
					}
				}
			}
		})
	}

	t.Run("rejects", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			name    string
			c       *testserver.Client
			method  string
			path    string
			body    any
			status  int
			errcode string
		}{
			{"set another user's displayname", bob, "PUT", profilePath(alice.UserID, "displayname"), map[string]any{"displayname": "Mallory"}, http.StatusForbidden, "M_FORBIDDEN"},
			{"set another user's avatar", bob, "PUT", profilePath(alice.UserID, "avatar_url"), map[string]any{"avatar_url": "mxc://x/y"}, http.StatusForbidden, "M_FORBIDDEN"},
			{"set without a token", srv.Anonymous(), "PUT", profilePath(alice.UserID, "displayname"), map[string]any{"displayname": "Anon"}, http.StatusUnauthorized, "M_MISSING_TOKEN"},
			{"displayname not a string", alice, "PUT", profilePath(alice.UserID, "displayname"), map[string]any{"displayname": 7}, http.StatusBadRequest, "M_BAD_JSON"},
			{"body not JSON", alice, "PUT", profilePath(alice.UserID, "displayname"), "{", http.StatusBadRequest, "M_NOT_JSON"},
			{"unknown user", bob, "GET", profilePath("@nobody:" + server), nil, http.StatusNotFound, "M_NOT_FOUND"},
			{"unknown user's field", bob, "GET", profilePath("@nobody:"+server, "displayname"), nil, http.StatusNotFound, "M_NOT_FOUND"},
			{"malformed user ID", bob, "GET", profilePath("nobody"), nil, http.StatusBadRequest, "M_INVALID_PARAM"},
			{"unset field", bob, "GET", profilePath(bob.UserID, "avatar_url"), nil, http.StatusNotFound, "M_NOT_FOUND"},
		}
		for _, tc := range tests {
			wantErr(t, tc.c.Do(tc.method, tc.path, tc.body), tc.status, tc.errcode)
		}
		var got map[string]any
		wantOK(t, bob.Do("GET", profilePath(alice.UserID), nil), &got)
		if got["displayname"] != "Alice Liddell" || got["avatar_url"] != "mxc://"+server+"/rabbit" {
			t.Errorf("refused writes changed the profile: %v", got)
		}
	})
}

// TestProfilePropagation: a profile change is sent as a new m.room.member
// join into every room the user is joined to, and nowhere else (spec:
// "Events on Change of Profile Information").
func TestProfilePropagation(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	joined1 := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, bob, joined1)
	joined2 := createRoom(t, bob, map[string]any{"preset": "public_chat"})
	joinRoom(t, alice, joined2)
	left := createRoom(t, bob, map[string]any{"preset": "public_chat"})
	joinRoom(t, alice, left)
	leaveRoom(t, alice, left)
	invited := createRoom(t, bob, map[string]any{"preset": "private_chat"})
	inviteUser(t, bob, invited, alice.UserID)

	memberEvent := func(t *testing.T, room string) clientEvent {
		t.Helper()
		ev := stateEvent(roomState(t, bob, room), "m.room.member", alice.UserID)
		if ev == nil {
			t.Fatalf("no member event for alice in %s", room)
		}
		return *ev
	}
	before := map[string]clientEvent{}
	for _, r := range []string{joined1, joined2, left, invited} {
		before[r] = memberEvent(t, r)
	}

	wantOK(t, alice.Do("PUT", profilePath(alice.UserID, "displayname"), map[string]any{"displayname": "Alice"}), nil)
	wantOK(t, alice.Do("PUT", profilePath(alice.UserID, "avatar_url"), map[string]any{"avatar_url": "mxc://example/a"}), nil)

	for _, r := range []string{joined1, joined2} {
		ev := memberEvent(t, r)
		if ev.EventID == before[r].EventID {
			t.Errorf("%s: no new member event", r)
		}
		if ev.membership() != "join" || ev.Sender != alice.UserID || ev.Content["displayname"] != "Alice" || ev.Content["avatar_url"] != "mxc://example/a" {
			t.Errorf("%s: member event = %v", r, ev.Content)
		}
		var jm struct {
			Joined map[string]struct {
				DisplayName string `json:"display_name"`
				AvatarURL   string `json:"avatar_url"`
			} `json:"joined"`
		}
		wantOK(t, bob.Do("GET", roomPath(r, "joined_members"), nil), &jm)
		if a := jm.Joined[alice.UserID]; a.DisplayName != "Alice" || a.AvatarURL != "mxc://example/a" {
			t.Errorf("%s: joined_members entry = %+v", r, a)
		}
		// The displayname change is its own event, then the avatar's.
		var page messagesPage
		wantOK(t, bob.Do("GET", roomPath(r, "messages")+"?dir=b&limit=2", nil), &page)
		if len(page.Chunk) != 2 || page.Chunk[1].Content["displayname"] != "Alice" || page.Chunk[1].Content["avatar_url"] != nil ||
			page.Chunk[1].Unsigned["prev_content"] == nil {
			t.Errorf("%s: newest events = %v", r, page.Chunk)
		}
	}
	// Rooms alice left or is only invited to are untouched.
	for _, r := range []string{left, invited} {
		if ev := memberEvent(t, r); ev.EventID != before[r].EventID {
			t.Errorf("%s: profile change sent a member event %v (%s) into a room alice is not joined to", r, ev.Content, ev.membership())
		}
	}
	// Joining later carries the current profile.
	joinRoom(t, alice, left)
	if ev := memberEvent(t, left); ev.Content["displayname"] != "Alice" || ev.Content["avatar_url"] != "mxc://example/a" {
		t.Errorf("join after the change: %v", ev.Content)
	}
}
