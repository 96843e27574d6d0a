package server_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/push"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/testserver"
)

// BenchmarkNotify: the notification worker's work for one message in a
// room of 1,000 local members: read the event back, evaluate every
// member's push rules (the defaults: 999 notifications), and commit the
// rows with the worker's new position. Appending the message is not
// timed (BenchmarkAppendMessage1000Members measures it). One event per
// step is the latency case; under load the worker takes up to 256 events
// per step, and "batch16" shows the cost per event then.
func BenchmarkNotify(b *testing.B) {
	b.Run("single", func(b *testing.B) { benchNotify(b, 1) })
	b.Run("batch16", func(b *testing.B) { benchNotify(b, 16) })
}

func benchNotify(b *testing.B, batch int) {
	srv := testserver.Start(b, testserver.Options{})
	room, creator := newBigRoom(b, srv, 1000)
	ctx := context.Background()
	// The server's own worker catches up and stops; this one takes over.
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := srv.HS.Notifications.Wait(wctx, srv.HS.Syncer.Notifier().Current().Events); err != nil {
		b.Fatal(err)
	}
	srv.HS.Notifications.Stop()
	w := push.NewWorker(srv.HS.DB(), nil, srv.HS.Rooms.ServerName(), clock.Real{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	content := json.RawMessage(`{"msgtype":"m.text","body":"a typical message of modest length in a topic room"}`)
	send := func() {
		if _, _, err := srv.HS.Rooms.Append(ctx, room, roomdag.ProtoEvent{Type: "m.room.message", Sender: creator, Content: content}); err != nil {
			b.Fatal(err)
		}
	}
	step := func(want int) {
		if n, err := w.Step(ctx); err != nil || n != want {
			b.Fatalf("step processed %d events: %v", n, err)
		}
	}
	send() // warm the room and rules caches, as in a running server
	step(1)
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		b.StopTimer()
		n := min(batch, b.N-i)
		for range n {
			send()
		}
		b.StartTimer()
		step(n)
	}
	b.StopTimer()
	n, err := srv.HS.DB().Notifications(ctx, roomdag.NewUserID("member1", srv.HS.Rooms.ServerName()), 0, b.N+10, false)
	if err != nil || len(n) != b.N+1 {
		b.Fatalf("member1 has %d notifications, want %d: %v", len(n), b.N+1, err)
	}
}
