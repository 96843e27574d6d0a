package server_test

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	gosync "sync"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/testserver"
)

// BenchmarkFederationDelivery measures the delivery delay between two
// servers under load: FED_BENCH_SENDERS users of A (default 4) send b.N
// messages into a room shared with a user of B, each as fast as its sends
// return, or at FED_BENCH_RATE messages per second in all when set; a
// delay is the time from a send's return on A to the message's arrival
// in B's user's long-polling /sync. Reported: p50 and p99 delay, and the
// rates sent and delivered (to the last arrival). Run with a fixed count, e.g. -benchtime=2000x.
func BenchmarkFederationDelivery(b *testing.B) {
	senders := envInt("FED_BENCH_SENDERS", 4)
	rate := envInt("FED_BENCH_RATE", 0)
	fed := testserver.Federation(b, 2, testserver.Options{})
	a, bs := fed[0], fed[1]
	alice := a.Register("alice")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	users := []*testserver.Client{alice}
	for len(users) < senders {
		u := a.Register("sender")
		u.Join(room)
		users = append(users, u)
	}
	bob := bs.Register("bob")
	bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?via="+url.QueryEscape(a.Name()), map[string]any{}, nil)

	var mu gosync.Mutex
	sent := map[string]time.Time{}
	arrived := map[string]time.Time{}
	all := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	since := bob.Sync("timeout=0")["next_batch"].(string)
	syncDone := make(chan struct{})
	go func() {
		defer close(syncDone)
		for ctx.Err() == nil {
			var s syncResp
			r := bob.Do("GET", "/_matrix/client/v3/sync?timeout=5000&since="+url.QueryEscape(since), nil)
			now := time.Now()
			if r.Status != 200 || r.JSON(&s) != nil {
				return
			}
			since = s.NextBatch
			mu.Lock()
			for _, e := range s.Rooms.Join[room].Timeline.Events {
				if e.Type == "m.room.message" {
					arrived[e.EventID] = now
				}
			}
			n := len(arrived)
			mu.Unlock()
			if n >= b.N {
				close(all)
				return
			}
		}
	}()

	var interval time.Duration
	if rate > 0 {
		interval = time.Duration(senders) * time.Second / time.Duration(rate)
	}
	b.ResetTimer()
	start := time.Now()
	var wg gosync.WaitGroup
	for i, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := time.Now()
			for j := i; j < b.N; j += senders {
				if interval > 0 {
					time.Sleep(time.Until(next))
					next = next.Add(interval)
				}
				id := u.SendText(room, fmt.Sprintf("load %d", j))
				at := time.Now()
				mu.Lock()
				sent[id] = at
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	sending := time.Since(start)
	select {
	case <-all:
	case <-time.After(60 * time.Second):
		mu.Lock()
		n := len(arrived)
		mu.Unlock()
		b.Fatalf("%d of %d messages reached B within a minute of the last send", n, b.N)
	}
	b.StopTimer()
	cancel()
	<-syncDone
	var delays []time.Duration
	var last time.Time
	for _, at := range arrived {
		if at.After(last) {
			last = at
		}
	}
	for id, at := range sent {
		// A sync may answer before the send that committed the event
		// returns: no delay then.
		delays = append(delays, max(arrived[id].Sub(at), 0))
	}
	slices.Sort(delays)
	pct := func(p float64) float64 {
		return float64(delays[min(len(delays)-1, int(p*float64(len(delays))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(b.N)/sending.Seconds(), "sent/s")
	b.ReportMetric(float64(b.N)/last.Sub(start).Seconds(), "delivered/s")
}
