package server_test

import (
	"fmt"
	"net/url"
	"slices"
	"sync"
	"testing"

	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/testserver"
)

// TestTinyRoomCache runs a server whose room cache holds two rooms while
// clients use eight: rooms leave memory and come back from the database,
// and every answer (state reads, sends, joins, /messages, /sync) stays
// right while they do.
func TestTinyRoomCache(t *testing.T) {
	const cacheSize, nRooms, workers, rounds = 2, 8, 4, 6
	srv := testserver.Start(t, testserver.Options{Configure: func(c *configs.Config) { c.Caches.Rooms = cacheSize }})
	owner, reader := srv.Register("cacheowner"), srv.Register("cachereader")
	rooms := make([]string, nRooms)
	for i := range rooms {
		rooms[i] = owner.CreateRoom(map[string]any{"preset": "public_chat", "name": fmt.Sprintf("room %d", i)})
		reader.Join(rooms[i])
	}
	topicPath := func(room string) string {
		return "/_matrix/client/v3/rooms/" + url.PathEscape(room) + "/state/m.room.topic"
	}
	// Each worker owns two rooms: it sets their topic and sends to them,
	// and reads back what it wrote while the others churn the cache.
	var wg sync.WaitGroup
	sent := make([][]string, nRooms)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				for _, r := range []int{2 * w, 2*w + 1} {
					topic := fmt.Sprintf("topic %d.%d", r, i)
					owner.MustDo("PUT", topicPath(rooms[r]), map[string]any{"topic": topic}, nil)
					body := fmt.Sprintf("message %d.%d", r, i)
					owner.SendText(rooms[r], body)
					sent[r] = append(sent[r], body)
					var got struct{ Topic string }
					reader.MustDo("GET", topicPath(rooms[r]), nil, &got)
					if got.Topic != topic {
						t.Errorf("room %d: topic %q, want the one just set, %q", r, got.Topic, topic)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	srv.Settle()
	if n := srv.HS.Rooms.CachedRooms(); n > cacheSize {
		t.Errorf("%d rooms cached, bound %d", n, cacheSize)
	}
	// Every message is in its room's history exactly once, in order.
	for r, room := range rooms {
		var page struct {
			Chunk []struct {
				Type    string
				Content struct{ Body string }
			}
		}
		reader.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?dir=f&limit=1000", nil, &page)
		var got []string
		for _, ev := range page.Chunk {
			if ev.Type == "m.room.message" {
				got = append(got, ev.Content.Body)
			}
		}
		if !slices.Equal(got, sent[r]) {
			t.Errorf("room %d history %q, want %q", r, got, sent[r])
		}
	}
	// A fresh sync sees every room with its last topic.
	resp := reader.Sync("timeout=0")
	join, _ := resp["rooms"].(map[string]any)["join"].(map[string]any)
	for r, room := range rooms {
		jr, ok := join[room].(map[string]any)
		if !ok {
			t.Errorf("room %d missing from /sync", r)
			continue
		}
		want := fmt.Sprintf("topic %d.%d", r, rounds-1)
		found := false
		for _, section := range []string{"state", "timeline"} {
			evs, _ := jr[section].(map[string]any)["events"].([]any)
			for _, e := range evs {
				ev := e.(map[string]any)
				if ev["type"] == "m.room.topic" && ev["content"].(map[string]any)["topic"] == want {
					found = true
				}
			}
		}
		if !found {
			t.Errorf("room %d: /sync does not show topic %q", r, want)
		}
	}
}
