package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"testing"

	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/testserver"
)

// withMetrics runs a benchmark with the metrics off and on: what they
// cost the request path.
func withMetrics(b *testing.B, run func(b *testing.B, opts testserver.Options)) {
	for _, on := range []bool{false, true} {
		b.Run(fmt.Sprintf("metrics=%v", on), func(b *testing.B) {
			run(b, testserver.Options{Configure: func(c *configs.Config) {
				c.Metrics.Enabled = on
				c.Metrics.Listen = "127.0.0.1:0"
			}})
		})
	}
}

// BenchmarkMetricsSend: PUT /send over HTTP, one sender: the request
// middleware and the persisted-events counter on the send path.
func BenchmarkMetricsSend(b *testing.B) {
	withMetrics(b, func(b *testing.B, opts testserver.Options) {
		srv := testserver.Start(b, opts)
		alice := srv.Register("alice")
		room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
		path := "/_matrix/client/v3/rooms/" + url.PathEscape(room) + "/send/m.room.message/"
		body := map[string]any{"msgtype": "m.text", "body": "a typical message of modest length in a topic room"}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			alice.MustDo("PUT", path+fmt.Sprint(i), body, nil)
		}
	})
}

// BenchmarkMetricsIncrementalSync: BenchmarkIncrementalSync's case (a user
// in 20 rooms of 50 members, one new message) over HTTP, where the
// middleware runs.
func BenchmarkMetricsIncrementalSync(b *testing.B) {
	withMetrics(b, func(b *testing.B, opts testserver.Options) {
		srv := testserver.Start(b, opts)
		ctx := context.Background()
		alice := srv.Register("alice")
		user := roomdag.UserID(alice.UserID)
		var rooms []string
		for i := 0; i < 20; i++ {
			r, _ := newBigRoomNamed(b, srv, 50, i)
			rooms = append(rooms, string(r))
			alice.Join(string(r))
		}
		srv.Settle()
		since := alice.Sync("timeout=0")["next_batch"].(string)
		if _, _, err := srv.HS.Rooms.Append(ctx, roomdag.RoomID(rooms[7]), roomdag.ProtoEvent{Type: "m.room.message",
			Sender: user, Content: json.RawMessage(`{"msgtype":"m.text","body":"new"}`)}); err != nil {
			b.Fatal(err)
		}
		srv.Settle()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			var out struct {
				Rooms struct {
					Join map[string]json.RawMessage `json:"join"`
				} `json:"rooms"`
			}
			alice.MustDo("GET", "/_matrix/client/v3/sync?timeout=0&since="+url.QueryEscape(since), nil, &out)
			if len(out.Rooms.Join) != 1 {
				b.Fatalf("sync returned %d rooms, want 1", len(out.Rooms.Join))
			}
		}
	})
}
