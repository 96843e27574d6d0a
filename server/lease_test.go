package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/netguard"
	"github.com/persistentchat/homeserver/push"
	"github.com/persistentchat/homeserver/pusher"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/streamworker"
	"github.com/persistentchat/homeserver/streamworker/leasetest"
	"github.com/persistentchat/homeserver/testserver"
)

// TestNotificationsLeaseHandOver: two notification workers, as two
// processes would run them, on one database under one lease. Only the
// holder steps; the lease moves when the holder's renewal is refused,
// and when the holder is cut off from the database (it stops before the
// lease expires, the other takes it after). Every message notifies the
// other member exactly once, whoever processed it.
func TestNotificationsLeaseHandOver(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("leasealice"), srv.Register("leasebob")
	room := roomdag.RoomID(alice.CreateRoom(map[string]any{"preset": "public_chat"}))
	bob.Join(string(room))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := srv.HS.Notifications.Wait(ctx, srv.HS.Syncer.Notifier().Current().Events); err != nil {
		t.Fatal(err)
	}
	srv.HS.Notifications.Stop()

	const ttl = 30 * time.Second
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	table := leasetest.NewTable(clk, ttl)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	type process struct {
		holder *streamworker.Holder
		worker *push.Worker
	}
	start := func(name string) process {
		h := streamworker.NewHolder("notifications", table.Lease(name), clk, log)
		if err := h.Start(ctx); err != nil {
			t.Fatal(err)
		}
		w := push.NewWorker(srv.HS.DB(), nil, srv.HS.Rooms.ServerName(), clk, log, h)
		if err := w.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.Stop(); h.Stop() })
		return process{h, w}
	}
	a, b := start("a"), start("b")
	both := []process{a, b}
	// tick moves the clock a third of the lease on: every holder's timer
	// (a renewal, or the next try) is due, and tick returns once each has
	// acted and set its next one.
	waits := func() []int {
		var n []int
		for _, p := range both {
			n = append(n, p.holder.Stats().Waits)
		}
		return n
	}
	for i, p := range both {
		if err := p.holder.WaitStats(ctx, func(s streamworker.HolderStats) bool { return s.Waits > 0 }); err != nil {
			t.Fatalf("holder %d: %v", i, err)
		}
	}
	tick := func() {
		t.Helper()
		before := waits()
		clk.Advance(ttl / 3)
		for i, p := range both {
			if err := p.holder.WaitStats(ctx, func(s streamworker.HolderStats) bool { return s.Waits > before[i] }); err != nil {
				t.Fatalf("holder %d: %v", i, err)
			}
		}
	}
	holding := func(want string) {
		t.Helper()
		if a.holder.Holding() != (want == "a") || b.holder.Holding() != (want == "b") {
			t.Fatalf("a holds: %v, b holds: %v; want %q", a.holder.Holding(), b.holder.Holding(), want)
		}
	}
	var sent []roomdag.EventID
	send := func(n int) roomdag.StreamPos {
		t.Helper()
		var pos roomdag.StreamPos
		for range n {
			content, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": fmt.Sprintf("m%d", len(sent))})
			ev, p, err := srv.HS.Rooms.Append(ctx, room, roomdag.ProtoEvent{Type: "m.room.message", Sender: roomdag.UserID(alice.UserID), Content: content})
			if err != nil {
				t.Fatal(err)
			}
			sent, pos = append(sent, ev.ID()), p
			for _, p := range both {
				p.worker.EventCommitted(ev, pos) // the commit reaches every process
			}
		}
		return pos
	}

	holding("a")
	if err := a.worker.Wait(ctx, send(3)); err != nil {
		t.Fatal(err)
	}
	table.TakeOver("b")
	tick() // a's renewal is refused; b takes the lease
	holding("b")
	handed := send(3)
	if err := b.worker.Wait(ctx, handed); err != nil {
		t.Fatal(err)
	}
	table.SetDown("b", true)
	tick() // b's renewal fails; it holds on
	holding("b")
	tick() // it fails again, too close to the expiry: b lets go
	holding("")
	pos := send(3) // while nobody holds the lease
	tick()         // the lease has expired: a takes it
	holding("a")
	if err := a.worker.Wait(ctx, pos); err != nil {
		t.Fatal(err)
	}
	if b.worker.Pos() != handed {
		t.Errorf("b reached %d without the lease (it had %d)", b.worker.Pos(), handed)
	}
	table.SetDown("b", false)

	ns, err := srv.HS.DB().Notifications(ctx, roomdag.UserID(bob.UserID), 0, 100, false)
	if err != nil {
		t.Fatal(err)
	}
	var got []roomdag.EventID
	for _, n := range ns {
		got = append(got, n.EventID)
	}
	slices.Reverse(got) // newest first
	if !slices.Equal(got, sent) {
		t.Errorf("bob's notifications are of %v, want one of each message sent: %v", got, sent)
	}
}

// TestPushersLeaseHandOver: two pusher senders, as two processes would
// run them, under one lease. A pusher is set through the holder, which
// is then cut off from the database with a notification undelivered;
// the other process, which never heard of the pusher, takes the lease
// over, lists the pushers again, and delivers it. The gateway gets each
// notification once.
func TestPushersLeaseHandOver(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{Configure: func(c *configs.Config) {
		c.IPRangeWhitelist = []string{"127.0.0.1"} // the gateway is on loopback
	}})
	srv.HS.Pushers.Stop() // the processes' senders below take over
	pushes := make(chan string, 10)
	gateway := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Notification struct {
				EventID string `json:"event_id"`
			} `json:"notification"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			t.Errorf("gateway: %v", err)
		}
		pushes <- body.Notification.EventID
		io.WriteString(w, `{"rejected":[]}`)
	}))
	defer gateway.Close()
	alice, bob := srv.Register("pushlalice"), srv.Register("pushlbob")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	bob.Join(room)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	const ttl = 30 * time.Second
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	table := leasetest.NewTable(clk, ttl)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	deny, allow := srv.Config.IPRanges()
	start := func(name string) (*streamworker.Holder, *pusher.Sender) {
		h := streamworker.NewHolder("pushers", table.Lease(name), clk, log)
		if err := h.Start(ctx); err != nil {
			t.Fatal(err)
		}
		s := pusher.NewSender(srv.HS.DB(), pusher.RoomStatesFunc(srv.HS.Rooms.State), clk, log, netguard.Guard{Deny: deny, Allow: allow}, h)
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Stop(); h.Stop() })
		return h, s
	}
	ha, a := start("a")
	hb, b := start("b")
	holders := []*streamworker.Holder{ha, hb}
	for _, h := range holders {
		if err := h.WaitStats(ctx, func(s streamworker.HolderStats) bool { return s.Waits > 0 }); err != nil {
			t.Fatal(err)
		}
	}
	tick := func() { // as in TestNotificationsLeaseHandOver
		t.Helper()
		var before []int
		for _, h := range holders {
			before = append(before, h.Stats().Waits)
		}
		clk.Advance(ttl / 3)
		for i, h := range holders {
			if err := h.WaitStats(ctx, func(s streamworker.HolderStats) bool { return s.Waits > before[i] }); err != nil {
				t.Fatal(err)
			}
		}
	}
	// send sends a message that notifies bob, and wakes both senders once
	// the notification is stored.
	send := func(text string) string {
		t.Helper()
		id := alice.SendText(room, text)
		if err := srv.HS.Notifications.Wait(ctx, srv.HS.Syncer.Notifier().Current().Events); err != nil {
			t.Fatal(err)
		}
		for _, s := range []*pusher.Sender{a, b} {
			s.NotificationsAdded(0, []roomdag.UserID{roomdag.UserID(bob.UserID)})
		}
		return id
	}
	next := func() string {
		t.Helper()
		select {
		case id := <-pushes:
			return id
		case <-ctx.Done():
			t.Fatal("the gateway got no push")
			return ""
		}
	}

	bob.MustDo("POST", "/_matrix/client/v3/pushers/set", map[string]any{
		"kind": "http", "app_id": "org.example.app", "pushkey": "key", "app_display_name": "Example",
		"device_display_name": "Phone", "lang": "en", "data": map[string]any{"url": gateway.URL + pusher.NotifyPath}}, nil)
	if err := a.PushersChanged(ctx, roomdag.UserID(bob.UserID)); err != nil { // a served the request
		t.Fatal(err)
	}
	first := send("one")
	if got := next(); got != first {
		t.Fatalf("first push for %s, want %s", got, first)
	}
	if err := a.WaitStats(ctx, func(s pusher.Stats) bool { return s.Delivered == 1 }); err != nil {
		t.Fatal(err) // stored as delivered
	}
	table.SetDown("a", true)
	tick()
	tick() // a lets the lease go
	if ha.Holding() {
		t.Fatal("a holds the lease it cannot renew")
	}
	second := send("two")
	tick() // the lease expired: b takes it and lists the pushers
	if !hb.Holding() {
		t.Fatal("b did not take the lease over")
	}
	if got := next(); got != second {
		t.Fatalf("second push for %s, want %s", got, second)
	}
	table.SetDown("a", false)
	b.Stop() // after its last push: nothing more may arrive
	select {
	case id := <-pushes:
		t.Errorf("a push arrived twice, or late: %s", id)
	default:
	}
	if st := a.Stats(); st.Delivered != 1 {
		t.Errorf("a delivered %d, want 1", st.Delivered)
	}
}
