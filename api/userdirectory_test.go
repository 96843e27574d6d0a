package api_test

import (
	"net/http"
	"slices"
	"testing"

	"github.com/persistentchat/homeserver/testserver"
)

type userSearch struct {
	Results []struct {
		UserID      string  `json:"user_id"`
		DisplayName *string `json:"display_name"`
		AvatarURL   *string `json:"avatar_url"`
	} `json:"results"`
	Limited *bool `json:"limited"`
}

func (s userSearch) ids() []string {
	var out []string
	for _, r := range s.Results {
		out = append(out, r.UserID)
	}
	return out
}

func searchUsers(t testing.TB, c *testserver.Client, body any) userSearch {
	t.Helper()
	var out userSearch
	wantOK(t, c.Do("POST", csAPI+"/user_directory/search", body), &out)
	if out.Results == nil || out.Limited == nil {
		t.Fatalf("results or limited missing")
	}
	return out
}

func TestUserDirectory(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	server := srv.Config.ServerName
	alice, bob, carol := srv.Register("alice"), srv.Register("bob"), srv.Register("carol")
	dave, erin := srv.Register("dave"), srv.Register("erin")
	// alice and bob share a private room; carol is in a public room alice
	// is not in; dave is alone in a private room; erin is in no room.
	// alice is in no public room, so she does not find herself: as in
	// Synapse, nobody shares a room with themselves.
	private := createRoom(t, alice, map[string]any{"preset": "private_chat"})
	inviteUser(t, alice, private, bob.UserID)
	joinRoom(t, bob, private)
	public := createRoom(t, carol, map[string]any{"preset": "public_chat"})
	createRoom(t, dave, map[string]any{"preset": "private_chat"})
	_ = erin
	wantOK(t, bob.Do("PUT", profilePath(bob.UserID, "displayname"), map[string]any{"displayname": "Bobby Tables"}), nil)

	tests := []struct {
		name string
		term string
		want []string
	}{
		{"shares a room", bob.UserID[1:4], []string{bob.UserID}},
		{"display name, any case", "TABLES", []string{bob.UserID}},
		{"in a public room", "carol", []string{carol.UserID}},
		{"private room, not shared", "dave", nil},
		{"in no room", "erin", nil},
		{"themselves, in no public room", alice.UserID, nil},
		{"LIKE wildcards are literal", "%", nil},
		{"underscore is literal", "_", nil},
		// Every term must match (Synapse ANDs the words of a query): a full
		// user ID is its localpart and server name, so it finds that user
		// and not everyone who shares the server name.
		{"full user ID", bob.UserID, []string{bob.UserID}},
		{"full user ID of someone hidden", dave.UserID, nil},
		{"two words of a display name", "bobby tables", []string{bob.UserID}},
		{"words in any order, extra space", "  Tables\tBobby ", []string{bob.UserID}},
		{"one word matches, the other not", "bobby carol", nil},
		{"name and ID words together", "tables " + bob.UserID[1:4], []string{bob.UserID}},
		{"only separators", " @: ", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := searchUsers(t, alice, map[string]any{"search_term": tc.term})
			if !slices.Equal(got.ids(), tc.want) || *got.Limited {
				t.Errorf("search %q = %v (limited %v), want %v", tc.term, got.ids(), *got.Limited, tc.want)
			}
		})
	}

	got := searchUsers(t, alice, map[string]any{"search_term": "tables"})
	if len(got.Results) != 1 || got.Results[0].DisplayName == nil || *got.Results[0].DisplayName != "Bobby Tables" {
		t.Errorf("result for bob = %+v", got.Results)
	}
	// Everyone alice may see has the server name in their ID.
	all := searchUsers(t, alice, map[string]any{"search_term": server, "limit": 50})
	if want := []string{bob.UserID, carol.UserID}; !slices.Equal(all.ids(), want) || *all.Limited {
		t.Errorf("all visible = %v (limited %v), want %v", all.ids(), *all.Limited, want)
	}
	// Complement "Bob can find Alice by mxid": the searcher is left out of
	// a search every user matches, unless in a public room; carol is, so
	// she finds herself.
	if got := searchUsers(t, bob, map[string]any{"search_term": server}).ids(); !slices.Equal(got, []string{alice.UserID, carol.UserID}) {
		t.Errorf("bob's search of everyone = %v, want alice and carol", got)
	}
	if got := searchUsers(t, carol, map[string]any{"search_term": carol.UserID}).ids(); !slices.Equal(got, []string{carol.UserID}) {
		t.Errorf("carol, in a public room, searching herself = %v", got)
	}
	// A world-readable room counts as public, as in Synapse
	// (is_room_world_readable_or_publicly_joinable).
	readable := createRoom(t, dave, map[string]any{"preset": "private_chat", "initial_state": []any{
		map[string]any{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "world_readable"}}}})
	if got := searchUsers(t, alice, map[string]any{"search_term": "dave"}).ids(); !slices.Equal(got, []string{dave.UserID}) {
		t.Errorf("dave in a world-readable room = %v", got)
	}
	leaveRoom(t, dave, readable)
	page := searchUsers(t, alice, map[string]any{"search_term": server, "limit": 1})
	if len(page.Results) != 1 || !*page.Limited {
		t.Errorf("limit 1 = %v (limited %v)", page.ids(), *page.Limited)
	}
	// Once carol leaves the public room, alice no longer finds her.
	leaveRoom(t, carol, public)
	if got := searchUsers(t, alice, map[string]any{"search_term": "carol"}); len(got.Results) != 0 {
		t.Errorf("after carol left: %v", got.ids())
	}

	t.Run("rejects", func(t *testing.T) {
		tests := []struct {
			name    string
			c       *testserver.Client
			body    any
			status  int
			errcode string
		}{
			{"no search_term", alice, map[string]any{}, http.StatusBadRequest, "M_MISSING_PARAM"},
			{"search_term not a string", alice, map[string]any{"search_term": 5}, http.StatusBadRequest, "M_BAD_JSON"},
			{"negative limit", alice, map[string]any{"search_term": "a", "limit": -1}, http.StatusBadRequest, "M_INVALID_PARAM"},
			{"limit not a number", alice, map[string]any{"search_term": "a", "limit": "2"}, http.StatusBadRequest, "M_BAD_JSON"},
			{"not JSON", alice, "{", http.StatusBadRequest, "M_NOT_JSON"},
			{"no token", srv.Anonymous(), map[string]any{"search_term": "a"}, http.StatusUnauthorized, "M_MISSING_TOKEN"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				wantErr(t, tc.c.Do("POST", csAPI+"/user_directory/search", tc.body), tc.status, tc.errcode)
			})
		}
	})
}
