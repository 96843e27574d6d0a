package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
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
//
// "long" is a 60,000-character message, and "long-hostile" the same with
// one member holding the rules of issue 9's attack (10 override rules of
// 19 conditions, each a 998-byte wildcard chain that scans the body):
// the difference is what that member's rules add to every member's
// notification delay. The evaluation budget (push.MaxEvalSteps) bounds
// it; before the linear matcher it was about two minutes.
func BenchmarkNotify(b *testing.B) {
	short := "a typical message of modest length in a topic room"
	long := strings.Repeat("a", 60000)
	b.Run("single", func(b *testing.B) { benchNotify(b, 1, short, false) })
	b.Run("batch16", func(b *testing.B) { benchNotify(b, 16, short, false) })
	b.Run("long", func(b *testing.B) { benchNotify(b, 1, long, false) })
	b.Run("long-hostile", func(b *testing.B) { benchNotify(b, 1, long, true) })
}

// storeHostileRules gives user the attack's rule set, as PUT /pushrules
// would store it.
func storeHostileRules(b *testing.B, srv *testserver.Server, user roomdag.UserID) {
	var u push.UserRules
	chain := strings.Repeat("*a", 499)
	conds := make([]push.Condition, 19)
	for i := range conds {
		conds[i] = push.Condition{Kind: "event_match", Key: "content.body", Pattern: &chain}
	}
	for i := range 10 {
		if err := u.Put("override", push.Rule{RuleID: fmt.Sprintf("slow%d", i), Conditions: conds,
			Actions: []any{"notify", map[string]any{"set_tweak": "highlight"}}}, "", ""); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := srv.HS.DB().UpdatePushRules(context.Background(), user, func(json.RawMessage) (json.RawMessage, json.RawMessage, error) {
		doc, err := u.Encode()
		if err != nil {
			return nil, nil, err
		}
		content, err := push.AccountDataContent(user, doc)
		return doc, content, err
	}); err != nil {
		b.Fatal(err)
	}
}

func benchNotify(b *testing.B, batch int, body string, hostile bool) {
	srv := testserver.Start(b, testserver.Options{})
	room, creator := newBigRoom(b, srv, 1000)
	ctx := context.Background()
	if hostile {
		storeHostileRules(b, srv, roomdag.NewUserID("member2", srv.HS.Rooms.ServerName()))
	}
	// The server's own worker catches up and stops; this one takes over.
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := srv.HS.Notifications.Wait(wctx, srv.HS.Syncer.Notifier().Current().Events); err != nil {
		b.Fatal(err)
	}
	srv.HS.Notifications.Stop()
	w := push.NewWorker(srv.HS.DB(), nil, srv.HS.Rooms.ServerName(), clock.Real{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	content, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": body})
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
	if hostile {
		if over := w.Stats().OverBudget; over < b.N {
			b.Fatalf("%d evaluations over budget, want one a message (%d)", over, b.N)
		}
	}
}
