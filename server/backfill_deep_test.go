package server_test

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"

	"github.com/persistentchat/homeserver/testserver"
)

// pageBackAll pages c's /messages of room backwards from the end, limit
// events a page, until the end, and returns the events' types and
// bodies, newest first.
func pageBackAll(t *testing.T, c *testserver.Client, room string, limit int) (types, bodies []string) {
	t.Helper()
	from := ""
	for page := 0; page < 100; page++ {
		q := fmt.Sprintf("dir=b&limit=%d", limit)
		if from != "" {
			q += "&from=" + url.QueryEscape(from)
		}
		var out struct {
			Chunk []struct {
				Type    string `json:"type"`
				Content struct {
					Body string `json:"body"`
				} `json:"content"`
			} `json:"chunk"`
			End string `json:"end"`
		}
		c.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?"+q, nil, &out)
		for _, ev := range out.Chunk {
			types = append(types, ev.Type)
			bodies = append(bodies, ev.Content.Body)
		}
		if out.End == "" || len(out.Chunk) == 0 {
			return types, bodies
		}
		from = out.End
	}
	t.Fatal("more than 100 pages")
	return nil, nil
}

// TestFederatedBackfillDeep (beside TestFederatedBackfill): a user of B,
// which joined A's room late, pages back through /messages to the room's
// creation: B fetches the history from A with /backfill (more than one
// request's worth, so later pages ask again from where they ended), in
// order; none of it reaches B's /sync as new. With A down, B answers
// what it holds.
func TestFederatedBackfillDeep(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice := a.Register("alice")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	const n = 120 // over two /backfill requests' worth
	for i := range n {
		alice.SendText(room, fmt.Sprintf("history %03d", i))
	}
	bob := b.Register("bob")
	bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?via="+url.QueryEscape(a.Name()), map[string]any{}, nil)
	onB := watchTimeline(bob, room)

	types, bodies := pageBackAll(t, bob, room, 25)
	var history []string
	for i, typ := range types {
		if typ == "m.room.message" {
			history = append(history, bodies[i])
		}
	}
	if len(history) != n {
		t.Fatalf("B pages back through %d of the %d messages from before its join: %v", len(history), n, history)
	}
	for i, body := range history {
		if want := fmt.Sprintf("history %03d", n-1-i); body != want {
			t.Fatalf("message %d paging back is %q, want %q", i, body, want)
		}
	}
	if types[len(types)-1] != "m.room.create" {
		t.Errorf("paging back ends at %s, not the room's creation", types[len(types)-1])
	}

	// Backfilled history is not news: B's /sync has nothing new for the
	// room until the next live message, which alone arrives.
	live := alice.SendText(room, "live")
	if seen := onB.until(t, live); len(seen) != 1 {
		t.Errorf("B's /sync shows %d events, want the live one alone: %v", len(seen), seen)
	}

	// A second room, A then down: B answers what it holds, no error.
	room2 := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	for i := range 3 {
		alice.SendText(room2, fmt.Sprintf("unreachable %d", i))
	}
	bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room2)+"?via="+url.QueryEscape(a.Name()), map[string]any{}, nil)
	a.Stop()
	r := bob.Do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room2)+"/messages?dir=b&limit=50", nil)
	if r.Status != http.StatusOK {
		t.Fatalf("paging back with the room's other server down: %d %s", r.Status, r.Body)
	}
}
