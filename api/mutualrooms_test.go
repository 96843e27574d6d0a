package api_test

import (
	"net/http"
	"net/url"
	"sort"
	"testing"

	"github.com/persistentchat/homeserver/testserver"
)

type mutualPage struct {
	Joined    []string `json:"joined"`
	Count     *int     `json:"count"`
	NextBatch string   `json:"next_batch"`
}

func mutualRooms(t *testing.T, c *testserver.Client, user, from string) mutualPage {
	t.Helper()
	q := url.Values{"user_id": {user}}
	if from != "" {
		q.Set("from", from)
	}
	var p mutualPage
	wantOK(t, c.Do("GET", "/_matrix/client/v1/mutual_rooms?"+q.Encode(), nil), &p)
	if p.Joined == nil || p.Count == nil {
		t.Fatalf("mutual_rooms answer lacks joined or count: %+v", p)
	}
	return p
}

// TestMutualRooms: GET /_matrix/client/v1/mutual_rooms lists the rooms
// both users are joined to, a hundred at a time, with the total count
// (v1.19, MSC2666).
func TestMutualRooms(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	shared := map[string]bool{}
	for range 2 {
		r := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		joinRoom(t, bob, r)
		shared[r] = true
	}
	createRoom(t, alice, map[string]any{"preset": "public_chat"}) // alice's alone
	invited := createRoom(t, alice, map[string]any{"preset": "private_chat"})
	inviteUser(t, alice, invited, bob.UserID)
	left := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, bob, left)
	leaveRoom(t, bob, left)

	for _, c := range []struct {
		who, other *testserver.Client
	}{{alice, bob}, {bob, alice}} {
		p := mutualRooms(t, c.who, c.other.UserID, "")
		if len(p.Joined) != 2 || *p.Count != 2 || p.NextBatch != "" || !shared[p.Joined[0]] || !shared[p.Joined[1]] {
			t.Errorf("%s's rooms with %s: %+v, want the two shared rooms", c.who.UserID, c.other.UserID, p)
		}
	}
	// A well-formed ID of nobody shares nothing (spec: an empty list).
	if p := mutualRooms(t, alice, "@nobody:localhost", ""); len(p.Joined) != 0 || *p.Count != 0 {
		t.Errorf("rooms with an unknown user: %+v", p)
	}

	t.Run("rejects", func(t *testing.T) {
		tests := []struct {
			name    string
			c       *testserver.Client
			query   string
			status  int
			errcode string
		}{
			{"no user_id", alice, "", http.StatusBadRequest, "M_MISSING_PARAM"},
			{"malformed user_id", alice, "user_id=bob", http.StatusBadRequest, "M_INVALID_PARAM"},
			{"oneself", alice, "user_id=" + url.QueryEscape(alice.UserID), http.StatusBadRequest, "M_INVALID_PARAM"},
			{"two user_ids", alice, "user_id=" + url.QueryEscape(bob.UserID) + "&user_id=" + url.QueryEscape(bob.UserID), http.StatusBadRequest, "M_INVALID_PARAM"},
			{"malformed from", alice, "user_id=" + url.QueryEscape(bob.UserID) + "&from=%25%25", http.StatusBadRequest, "M_INVALID_PARAM"},
			{"no token", srv.Anonymous(), "user_id=" + url.QueryEscape(bob.UserID), http.StatusUnauthorized, "M_MISSING_TOKEN"},
		}
		for _, tc := range tests {
			wantErr(t, tc.c.Do("GET", "/_matrix/client/v1/mutual_rooms?"+tc.query, nil), tc.status, tc.errcode)
		}
	})

	t.Run("pages", func(t *testing.T) {
		// 101 shared rooms: a page of 100, then one of 1.
		carol, dave := srv.Register("carol"), srv.Register("dave")
		want := []string{}
		for range 101 {
			r := createRoom(t, carol, map[string]any{"preset": "public_chat"})
			joinRoom(t, dave, r)
			want = append(want, r)
		}
		sort.Strings(want)
		first := mutualRooms(t, carol, dave.UserID, "")
		if len(first.Joined) != 100 || *first.Count != 101 || first.NextBatch == "" {
			t.Fatalf("first page: %d rooms, count %d, next_batch %q", len(first.Joined), *first.Count, first.NextBatch)
		}
		second := mutualRooms(t, carol, dave.UserID, first.NextBatch)
		if len(second.Joined) != 1 || *second.Count != 101 || second.NextBatch != "" {
			t.Fatalf("second page: %+v", second)
		}
		got := append(first.Joined, second.Joined...)
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("pages list %v, want %v (sorted)", got, want)
			}
		}
	})
}
