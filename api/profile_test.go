package api_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
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

// TestExtensibleProfiles: custom fields and m.tz through PUT, GET and
// DELETE /profile/{userId}/{keyName}, the whole profile in GET
// /profile/{userId}, and the spec's limits (v1.16, MSC4133, MSC4175).
func TestExtensibleProfiles(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("alice"), srv.Register("bob")

	wantOK(t, alice.Do("PUT", profilePath(alice.UserID, "displayname"), map[string]any{"displayname": "Alice"}), nil)
	wantOK(t, alice.Do("PUT", profilePath(alice.UserID, "m.tz"), map[string]any{"m.tz": "Europe/London"}), nil)
	job := map[string]any{"title": "Queen", "since": 1865}
	wantOK(t, alice.Do("PUT", profilePath(alice.UserID, "org.example.job"), map[string]any{"org.example.job": job}), nil)
	// Stored, not taken as a deletion (spec: servers that accept null
	// SHOULD store it).
	wantOK(t, alice.Do("PUT", profilePath(alice.UserID, "org.example.empty"), map[string]any{"org.example.empty": nil}), nil)
	// Keys need no namespace (the grammar only recommends one; Synapse).
	wantOK(t, alice.Do("PUT", profilePath(alice.UserID, "pronouns"), map[string]any{"pronouns": "she/her"}), nil)

	fields := []struct {
		key  string
		want string // JSON
	}{
		{"displayname", `"Alice"`},
		{"m.tz", `"Europe/London"`},
		{"org.example.job", `{"since":1865,"title":"Queen"}`},
		{"org.example.empty", `null`},
		{"pronouns", `"she/her"`},
	}
	var whole map[string]json.RawMessage
	wantOK(t, srv.Anonymous().Do("GET", profilePath(alice.UserID), nil), &whole)
	if len(whole) != len(fields) {
		t.Errorf("whole profile %s, want %d fields", mustJSON(whole), len(fields))
	}
	for _, f := range fields {
		var one map[string]json.RawMessage
		wantOK(t, bob.Do("GET", profilePath(alice.UserID, f.key), nil), &one)
		if got := compactJSON(t, one[f.key]); len(one) != 1 || got != f.want {
			t.Errorf("GET %s = %s, want {%q: %s}", f.key, mustJSON(one), f.key, f.want)
		}
		if got := compactJSON(t, whole[f.key]); got != f.want {
			t.Errorf("whole profile: %s = %s, want %s", f.key, got, f.want)
		}
	}

	// DELETE removes a field, and succeeds for one that is not set.
	wantOK(t, alice.Do("DELETE", profilePath(alice.UserID, "org.example.job"), nil), nil)
	wantErr(t, bob.Do("GET", profilePath(alice.UserID, "org.example.job"), nil), http.StatusNotFound, "M_NOT_FOUND")
	wantOK(t, alice.Do("DELETE", profilePath(alice.UserID, "org.example.job"), nil), nil)
	wantOK(t, alice.Do("DELETE", profilePath(alice.UserID, "m.tz"), nil), nil)
	wantErr(t, bob.Do("GET", profilePath(alice.UserID, "m.tz"), nil), http.StatusNotFound, "M_NOT_FOUND")

	// Custom fields stay out of rooms; the display name goes there, and
	// deleting it takes it out again.
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, bob, room)
	member := func() clientEvent {
		t.Helper()
		ev := stateEvent(roomState(t, bob, room), "m.room.member", alice.UserID)
		if ev == nil {
			t.Fatalf("no member event for alice")
		}
		return *ev
	}
	before := member()
	if before.Content["displayname"] != "Alice" || before.Content["pronouns"] != nil {
		t.Errorf("member event at join: %v", before.Content)
	}
	wantOK(t, alice.Do("PUT", profilePath(alice.UserID, "pronouns"), map[string]any{"pronouns": "they/them"}), nil)
	if ev := member(); ev.EventID != before.EventID {
		t.Errorf("a custom field sent a member event: %v", ev.Content)
	}
	wantOK(t, alice.Do("DELETE", profilePath(alice.UserID, "displayname"), nil), nil)
	if ev := member(); ev.EventID == before.EventID || ev.membership() != "join" || ev.Content["displayname"] != nil {
		t.Errorf("member event after deleting the display name: %v", ev.Content)
	}
	wantErr(t, bob.Do("GET", profilePath(alice.UserID, "displayname"), nil), http.StatusNotFound, "M_NOT_FOUND")
	// Deleting it again changes nothing, in the rooms either.
	after := member()
	wantOK(t, alice.Do("DELETE", profilePath(alice.UserID, "displayname"), nil), nil)
	if ev := member(); ev.EventID != after.EventID {
		t.Errorf("deleting an unset display name sent a member event")
	}

	t.Run("rejects", func(t *testing.T) {
		t.Parallel()
		big := strings.Repeat("x", 40<<10)
		wantOK(t, bob.Do("PUT", profilePath(bob.UserID, "org.example.big1"), map[string]any{"org.example.big1": big}), nil)
		tests := []struct {
			name    string
			c       *testserver.Client
			method  string
			key     string
			body    any
			status  int
			errcode string
		}{
			{"key over 255 bytes", bob, "PUT", "org.example." + strings.Repeat("k", 244), map[string]any{}, http.StatusBadRequest, "M_KEY_TOO_LARGE"},
			{"key over 255 bytes, GET", bob, "GET", strings.Repeat("k", 256), nil, http.StatusBadRequest, "M_KEY_TOO_LARGE"},
			{"key over 255 bytes, DELETE", bob, "DELETE", strings.Repeat("k", 256), nil, http.StatusBadRequest, "M_KEY_TOO_LARGE"},
			{"key with capitals", bob, "PUT", "Org.Example", map[string]any{"Org.Example": 1}, http.StatusBadRequest, "M_INVALID_PARAM"},
			{"key starting with a digit", bob, "GET", "1field", nil, http.StatusBadRequest, "M_INVALID_PARAM"},
			{"key with a space", bob, "DELETE", "my field", nil, http.StatusBadRequest, "M_INVALID_PARAM"},
			{"value missing", bob, "PUT", "org.example.x", map[string]any{"org.example.y": 1}, http.StatusBadRequest, "M_MISSING_PARAM"},
			{"m.tz not a string", bob, "PUT", "m.tz", map[string]any{"m.tz": 1}, http.StatusBadRequest, "M_BAD_JSON"},
			{"m.tz null", bob, "PUT", "m.tz", map[string]any{"m.tz": nil}, http.StatusBadRequest, "M_BAD_JSON"},
			{"profile over 64 KiB", bob, "PUT", "org.example.big2", map[string]any{"org.example.big2": big}, http.StatusBadRequest, "M_PROFILE_TOO_LARGE"},
			{"another user's field", bob, "PUT", "org.example.x", map[string]any{"org.example.x": 1}, http.StatusForbidden, "M_FORBIDDEN"},
			{"delete another user's field", bob, "DELETE", "pronouns", nil, http.StatusForbidden, "M_FORBIDDEN"},
			{"delete without a token", srv.Anonymous(), "DELETE", "pronouns", nil, http.StatusUnauthorized, "M_MISSING_TOKEN"},
		}
		for _, tc := range tests {
			owner := bob.UserID
			if strings.HasPrefix(tc.name, "another") || strings.HasPrefix(tc.name, "delete") {
				owner = alice.UserID
			}
			wantErr(t, tc.c.Do(tc.method, profilePath(owner, tc.key), tc.body), tc.status, tc.errcode)
		}
		// The display name counts too. The profile as JSON is 41,005
		// bytes plus the second field's value: 100 bytes short of 64 KiB.
		wantOK(t, bob.Do("PUT", profilePath(bob.UserID, "org.example.big3"), map[string]any{"org.example.big3": strings.Repeat("y", 24431)}), nil)
		wantErr(t, bob.Do("PUT", profilePath(bob.UserID, "displayname"), map[string]any{"displayname": strings.Repeat("n", 1000)}),
			http.StatusBadRequest, "M_PROFILE_TOO_LARGE")
		wantOK(t, bob.Do("PUT", profilePath(bob.UserID, "displayname"), map[string]any{"displayname": "B"}), nil) // 18 bytes more
		// What was refused is not stored.
		wantErr(t, bob.Do("GET", profilePath(bob.UserID, "org.example.big2"), nil), http.StatusNotFound, "M_NOT_FOUND")
		var p map[string]any
		wantOK(t, bob.Do("GET", profilePath(alice.UserID), nil), &p)
		if p["pronouns"] != "they/them" || p["org.example.x"] != nil {
			t.Errorf("refused writes changed alice's profile: %v", p)
		}
		// Making room lets a field in.
		wantOK(t, bob.Do("DELETE", profilePath(bob.UserID, "org.example.big1"), nil), nil)
		wantOK(t, bob.Do("PUT", profilePath(bob.UserID, "org.example.big2"), map[string]any{"org.example.big2": big}), nil)
	})
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// compactJSON is raw without white space and with sorted keys.
func compactJSON(t testing.TB, raw json.RawMessage) string {
	t.Helper()
	if raw == nil {
		return "<absent>"
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("decoding %s: %v", raw, err)
	}
	return mustJSON(v)
}
