package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"testing"

	"github.com/persistentchat/homeserver/roomdag"
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

// TestFederatedGapJoinedRoom: in a "joined" room that B joined over
// federation, A fills a gap in B's messages from B (/get_missing_events):
// B judges what A may see with the room's state from before its join,
// which it holds as outliers, so alice gets the messages whole.
func TestFederatedGapJoinedRoom(t *testing.T) {
	ctx := context.Background()
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice := a.Register("alice")
	bob := b.Register("bob")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat", "initial_state": []any{map[string]any{
		"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "joined"}}}})
	bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?via="+url.QueryEscape(a.Name()), map[string]any{}, nil)
	watch := watchTimeline(alice, room)
	watch.until(t, bob.SendText(room, "joined"))
	// B's next messages are not sent; then only the last, by the test.
	b.HS.FedSender.Stop()
	var ids []string
	for _, body := range []string{"one", "two", "three"} {
		ids = append(ids, bob.SendText(room, body))
	}
	last, err := b.HS.DB().Event(ctx, roomdag.EventID(ids[2]))
	if err != nil {
		t.Fatal(err)
	}
	if res := sendPDUs(t, b, a, last.JSON()); res[ids[2]] != "" {
		t.Fatalf("PDU: %v", res)
	}
	if got := watch.until(t, ids[2]); !slices.Equal(got, ids) {
		t.Fatalf("alice saw %v, want %v", got, ids)
	}
	for i, id := range ids {
		ev, err := a.HS.DB().Event(ctx, roomdag.EventID(id))
		if err != nil {
			t.Fatal(err)
		}
		var c struct {
			Body string `json:"body"`
		}
		json.Unmarshal(ev.Content(), &c)
		if want := []string{"one", "two", "three"}[i]; c.Body != want {
			t.Errorf("message %d on A: %s, want body %q (redacted by B?)", i, ev.Content(), want)
		}
	}
}

// TestFederatedReadsOfJoinedRoom: a server that joined a room over
// federation judges what other servers may see with the room's state
// from before its join, held as outliers: in a "joined" room, a server
// whose user joined after a message gets it redacted from /backfill.
func TestFederatedReadsOfJoinedRoom(t *testing.T) {
	fed := testserver.Federation(t, 3, testserver.Options{})
	a, b, c := fed[0], fed[1], fed[2]
	alice, bob, carol := a.Register("alice"), b.Register("bob"), c.Register("carol")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat", "initial_state": []any{map[string]any{
		"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "joined"}}}})
	bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?via="+url.QueryEscape(a.Name()), map[string]any{}, nil)
	onA := watchTimeline(alice, room)
	secret := bob.SendText(room, "secret")
	onA.until(t, secret)
	carol.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?via="+url.QueryEscape(a.Name()), map[string]any{}, nil)
	waitMember(t, bob, room, carol.UserID, "join")

	var txn struct {
		PDUs []json.RawMessage `json:"pdus"`
	}
	fedGet(t, c, b, "/_matrix/federation/v1/backfill/"+url.PathEscape(room)+"?limit=1&v="+url.QueryEscape(secret), &txn)
	if len(txn.PDUs) != 1 {
		t.Fatalf("backfill answer: %d PDUs", len(txn.PDUs))
	}
	var ev struct {
		EventID string `json:"event_id"`
		Content struct {
			Body *string `json:"body"`
		} `json:"content"`
	}
	json.Unmarshal(txn.PDUs[0], &ev)
	if ev.Content.Body != nil {
		t.Errorf("B sent C the message from before carol's join whole: %s", txn.PDUs[0])
	}
}
