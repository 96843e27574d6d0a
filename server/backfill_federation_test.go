package server_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"testing"

	"github.com/persistentchat/homeserver/testserver"
)

// pageBack pages c's /messages of room backwards to its start and returns
// the bodies of its m.room.message events, oldest first.
func pageBack(t *testing.T, c *testserver.Client, room string) []string {
	t.Helper()
	var bodies []string
	from := ""
	for range 100 {
		var page struct {
			Chunk []struct {
				Type    string          `json:"type"`
				Content json.RawMessage `json:"content"`
			} `json:"chunk"`
			End string `json:"end"`
		}
		c.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?dir=b&limit=10&from="+url.QueryEscape(from), nil, &page)
		for _, e := range page.Chunk {
			if e.Type != "m.room.message" {
				continue
			}
			var m struct {
				Body string `json:"body"`
			}
			json.Unmarshal(e.Content, &m)
			bodies = append(bodies, m.Body)
		}
		if page.End == "" || len(page.Chunk) == 0 {
			slices.Reverse(bodies)
			return bodies
		}
		from = page.End
	}
	t.Fatal("/messages did not reach the start of the room")
	return nil
}

// TestFederatedBackfill: a user who joined a room over federation pages
// back past their join, and their server fetches the history from the
// resident server (/backfill) as they go: all of it in a "shared" room,
// none of the messages from before the join in a "joined" one (the
// resident server sends those redacted, and history visibility hides
// them).
func TestFederatedBackfill(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice := a.Register("alice")
	bob := b.Register("bob")
	for _, vis := range []string{"shared", "joined"} {
		t.Run(vis, func(t *testing.T) {
			room := alice.CreateRoom(map[string]any{"preset": "public_chat", "initial_state": []any{map[string]any{
				"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": vis}}}})
			var want []string
			for i := range 60 {
				want = append(want, fmt.Sprintf("before %d", i))
				alice.SendText(room, want[i])
			}
			bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?via="+url.QueryEscape(a.Name()), map[string]any{}, nil)
			onB := watchTimeline(bob, room)
			onB.until(t, alice.SendText(room, "after"))
			got := pageBack(t, bob, room)
			if vis == "joined" {
				want = nil
			}
			want = append(want, "after")
			if !slices.Equal(got, want) {
				t.Errorf("bob's history: %q, want %q", got, want)
			}
		})
	}
}
