package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/persistentchat/homeserver/testserver"
)

func tagsPath(user, room string, tag ...string) string {
	p := csAPI + "/user/" + url.PathEscape(user) + "/rooms/" + url.PathEscape(room) + "/tags"
	for _, t := range tag {
		p += "/" + url.PathEscape(t)
	}
	return p
}

func getTags(t testing.TB, c *testserver.Client, room string) map[string]map[string]any {
	t.Helper()
	var out struct {
		Tags map[string]map[string]any `json:"tags"`
	}
	wantOK(t, c.Do("GET", tagsPath(c.UserID, room), nil), &out)
	if out.Tags == nil {
		t.Fatal("tags missing")
	}
	return out.Tags
}

// tagSync is the part of a /sync body with room account data.
type tagSync struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			AccountData struct {
				Events []struct {
					Type    string          `json:"type"`
					Content json.RawMessage `json:"content"`
				} `json:"events"`
			} `json:"account_data"`
		} `json:"join"`
	} `json:"rooms"`
}

// mTag returns the room's m.tag content in a sync ("" if absent).
func (s tagSync) mTag(room string) string {
	for _, ev := range s.Rooms.Join[room].AccountData.Events {
		if ev.Type == "m.tag" {
			return string(ev.Content)
		}
	}
	return ""
}

func TestRoomTags(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	server := srv.Config.ServerName
	room := createRoom(t, alice, map[string]any{"preset": "private_chat"})

	var first tagSync
	wantOK(t, alice.Do("GET", csAPI+"/sync?timeout=0", nil), &first)

	if tags := getTags(t, alice, room); len(tags) != 0 {
		t.Errorf("new room has tags %v", tags)
	}
	wantOK(t, alice.Do("PUT", tagsPath(alice.UserID, room, "m.favourite"), map[string]any{"order": 0.25}), nil)
	wantOK(t, alice.Do("PUT", tagsPath(alice.UserID, room, "u.work"), map[string]any{}), nil)
	tags := getTags(t, alice, room)
	if len(tags) != 2 || tags["m.favourite"]["order"] != 0.25 || tags["u.work"] == nil {
		t.Errorf("tags = %v", tags)
	}
	// Tags are the room's m.tag account data, so they reach /sync.
	var next tagSync
	wantOK(t, alice.Do("GET", csAPI+"/sync?timeout=0&since="+url.QueryEscape(first.NextBatch), nil), &next)
	if got := next.mTag(room); !strings.Contains(got, `"m.favourite":{"order":0.25}`) || !strings.Contains(got, `"u.work":{}`) {
		t.Errorf("m.tag in sync = %s", got)
	}

	// A waiting /sync wakes when a tag changes.
	done := make(chan tagSync)
	go func() {
		var s tagSync
		r := alice.Do("GET", csAPI+"/sync?timeout=20000&since="+url.QueryEscape(next.NextBatch), nil)
		if r.Status == http.StatusOK {
			r.JSON(&s)
		}
		done <- s
	}()
	wantOK(t, alice.Do("DELETE", tagsPath(alice.UserID, room, "m.favourite"), nil), nil)
	if got := (<-done).mTag(room); got != `{"tags":{"u.work":{}}}` {
		t.Errorf("m.tag after delete in sync = %q", got)
	}
	if tags := getTags(t, alice, room); len(tags) != 1 || tags["u.work"] == nil {
		t.Errorf("after delete: %v", tags)
	}
	// Deleting a tag the room does not have succeeds.
	wantOK(t, alice.Do("DELETE", tagsPath(alice.UserID, room, "m.lowpriority"), nil), nil)
	// Replacing a tag keeps one entry.
	wantOK(t, alice.Do("PUT", tagsPath(alice.UserID, room, "u.work"), map[string]any{"order": 1}), nil)
	if tags := getTags(t, alice, room); len(tags) != 1 || tags["u.work"]["order"] != 1.0 {
		t.Errorf("after replace: %v", tags)
	}

	t.Run("concurrent updates are all kept", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := alice.Do("PUT", tagsPath(alice.UserID, room, fmt.Sprintf("u.t%d", i)), map[string]any{})
				if r.Status != http.StatusOK {
					t.Errorf("PUT u.t%d: %d %s", i, r.Status, r.Body)
				}
			}()
		}
		wg.Wait()
		if tags := getTags(t, alice, room); len(tags) != 11 {
			t.Errorf("after 10 concurrent PUTs: %d tags: %v", len(tags), tags)
		}
	})

	t.Run("rejects", func(t *testing.T) {
		long := strings.Repeat("x", 256)
		tests := []struct {
			name    string
			c       *testserver.Client
			method  string
			path    string
			body    any
			status  int
			errcode string
		}{
			{"another user's tags", bob, "GET", tagsPath(alice.UserID, room), nil, http.StatusForbidden, "M_FORBIDDEN"},
			{"tag another user's room", bob, "PUT", tagsPath(alice.UserID, room, "u.x"), map[string]any{}, http.StatusForbidden, "M_FORBIDDEN"},
			{"delete another user's tag", bob, "DELETE", tagsPath(alice.UserID, room, "u.work"), nil, http.StatusForbidden, "M_FORBIDDEN"},
			{"malformed user", alice, "GET", tagsPath("alice", room), nil, http.StatusBadRequest, "M_INVALID_PARAM"},
			{"malformed room", alice, "PUT", tagsPath(alice.UserID, "room", "u.x"), map[string]any{}, http.StatusBadRequest, "M_INVALID_PARAM"},
			{"tag too long", alice, "PUT", tagsPath(alice.UserID, room, long), map[string]any{}, http.StatusBadRequest, "M_INVALID_PARAM"},
			{"order above 1", alice, "PUT", tagsPath(alice.UserID, room, "u.x"), map[string]any{"order": 2}, http.StatusBadRequest, "M_INVALID_PARAM"},
			{"negative order", alice, "PUT", tagsPath(alice.UserID, room, "u.x"), map[string]any{"order": -0.5}, http.StatusBadRequest, "M_INVALID_PARAM"},
			{"order a string", alice, "PUT", tagsPath(alice.UserID, room, "u.x"), map[string]any{"order": "0.5"}, http.StatusBadRequest, "M_BAD_JSON"},
			{"body not JSON", alice, "PUT", tagsPath(alice.UserID, room, "u.x"), "{", http.StatusBadRequest, "M_NOT_JSON"},
			{"body not an object", alice, "PUT", tagsPath(alice.UserID, room, "u.x"), "[]", http.StatusBadRequest, "M_BAD_JSON"},
			{"no token", srv.Anonymous(), "GET", tagsPath(alice.UserID, room), nil, http.StatusUnauthorized, "M_MISSING_TOKEN"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				wantErr(t, tc.c.Do(tc.method, tc.path, tc.body), tc.status, tc.errcode)
			})
		}
		if tags := getTags(t, alice, room); len(tags) != 11 || tags["u.x"] != nil {
			t.Errorf("rejected requests changed tags: %v", tags)
		}
	})

	// A tag name of 255 bytes is allowed; other rooms' tags are separate.
	other := "!elsewhere:" + server
	wantOK(t, alice.Do("PUT", tagsPath(alice.UserID, other, strings.Repeat("y", 255)), map[string]any{}), nil)
	if tags := getTags(t, alice, other); len(tags) != 1 {
		t.Errorf("other room's tags = %v", tags)
	}
}
