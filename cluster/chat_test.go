package cluster_test

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	gosync "sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/testserver"
)

// These tests are issue 10's chat across processes: users of one room on
// different processes of one homeserver (Cluster), each writing and
// reading through its own process, must see one room, as on one process.

// wideTimeline is a /sync filter whose timeline holds every message these
// tests send, so an incremental sync is never limited (a gap would hide a
// missing message behind a prev_batch).
var wideTimeline = "filter=" + url.QueryEscape(`{"room":{"timeline":{"limit":1000}}}`)

// chatSync is the part of a /sync response these tests read.
type chatSync struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline struct {
				Limited   bool        `json:"limited"`
				PrevBatch string      `json:"prev_batch"`
				Events    []chatEvent `json:"events"`
			} `json:"timeline"`
		} `json:"join"`
	} `json:"rooms"`
}

type chatEvent struct {
	Type    string `json:"type"`
	EventID string `json:"event_id"`
	Content struct {
		Body string `json:"body"`
	} `json:"content"`
}

// bodies returns the bodies of the m.room.message events of evs, in order.
func bodies(evs []chatEvent) []string {
	var out []string
	for _, ev := range evs {
		if ev.Type == "m.room.message" {
			out = append(out, ev.Content.Body)
		}
	}
	return out
}

// chatSyncOnce runs one /sync of c from since ("" for an initial sync) and
// returns the room's message bodies and the next_batch. A limited timeline
// fails the test: wideTimeline holds every message, so limited means the
// server dropped some.
func chatSyncOnce(t testing.TB, c *testserver.Client, room, since string, timeoutMS int) ([]string, string, bool) {
	t.Helper()
	q := wideTimeline + fmt.Sprintf("&timeout=%d", timeoutMS)
	if since != "" {
		q += "&since=" + url.QueryEscape(since)
	}
	r := c.Do("GET", csAPI+"/sync?"+q, nil)
	if r.Status != http.StatusOK {
		t.Errorf("%s: sync on %s: status %d: %s", c.UserID, c.Base, r.Status, r.Body)
		return nil, "", false
	}
	var s chatSync
	if err := r.JSON(&s); err != nil {
		t.Errorf("sync: %v", err)
		return nil, "", false
	}
	tl := s.Rooms.Join[room].Timeline
	if tl.Limited && since != "" {
		t.Errorf("%s: sync on %s from %s: limited timeline", c.UserID, c.Base, since)
		return nil, "", false
	}
	return bodies(tl.Events), s.NextBatch, true
}

// sendBody sends an m.room.message with the body and transaction ID
// through c, retrying a 429 M_LIMIT_EXCEEDED (ErrRoomBusy) after its
// retry_after_ms with the same transaction ID; busy counts the retries.
// It reports an error (not fatal: it runs in goroutines) and returns ""
// on any other answer.
func sendBody(t testing.TB, c *testserver.Client, room, txn, body string, busy *atomic.Int64) string {
	path := fmt.Sprintf("%s/rooms/%s/send/m.room.message/%s", csAPI, url.PathEscape(room), txn)
	for attempt := 0; attempt < 50; attempt++ {
		r := c.Do("PUT", path, map[string]any{"msgtype": "m.text", "body": body})
		switch {
		case r.Status == http.StatusOK:
			var out struct {
				EventID string `json:"event_id"`
			}
			if err := r.JSON(&out); err != nil || out.EventID == "" {
				t.Errorf("send %s: reply %s", body, r.Body)
				return ""
			}
			return out.EventID
		case r.Status == http.StatusTooManyRequests && r.Errcode() == "M_LIMIT_EXCEEDED":
			busy.Add(1)
			var out struct {
				RetryAfterMS int64 `json:"retry_after_ms"`
			}
			_ = r.JSON(&out)
			time.Sleep(time.Duration(out.RetryAfterMS) * time.Millisecond)
		default:
			t.Errorf("send %s through %s: status %d: %s", body, c.Base, r.Status, r.Body)
			return ""
		}
	}
	t.Errorf("send %s through %s: still busy after 50 attempts", body, c.Base)
	return ""
}

// page is one /messages answer.
type page struct {
	Start string      `json:"start"`
	End   string      `json:"end"`
	Chunk []chatEvent `json:"chunk"`
}

func messages(t testing.TB, c *testserver.Client, room, query string) page {
	t.Helper()
	var p page
	c.MustDo("GET", fmt.Sprintf("%s/rooms/%s/messages?%s", csAPI, url.PathEscape(room), query), nil, &p)
	return p
}

// history pages /messages of the room backwards from its end through c, 7
// events a page (so the pages cut through the messages), and returns the
// message bodies oldest first.
func history(t testing.TB, c *testserver.Client, room string) []string {
	t.Helper()
	var out []string
	from := ""
	for range 1000 {
		q := "dir=b&limit=7"
		if from != "" {
			q += "&from=" + url.QueryEscape(from)
		}
		p := messages(t, c, room, q)
		out = append(out, bodies(p.Chunk)...)
		if p.End == "" || len(p.Chunk) == 0 {
			slices.Reverse(out)
			return out
		}
		from = p.End
	}
	t.Fatalf("%s: /messages did not reach the start of the room", c.Base)
	return nil
}

// TestChatAcrossThreeProcesses: alice on A creates the room, bob joins
// through B, carol through C; each sends through its own process, and each
// sees every message, in the order they were sent (one after another), in
// its /sync and its /messages.
func TestChatAcrossThreeProcesses(t *testing.T) {
	hs := testserver.Cluster(t, 3, testserver.Options{})
	alice := hs[0].Register("alice")
	bob := hs[1].Register("bob")
	carol := hs[2].Register("carol")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	bob.Join(room)
	carol.Join(room)
	clients := []*testserver.Client{alice, bob, carol}
	var sent []string
	for i := range 5 {
		for _, c := range clients {
			body := fmt.Sprintf("%s says %d", c.UserID, i)
			c.SendText(room, body)
			sent = append(sent, body)
		}
	}
	for _, c := range clients {
		got, _, ok := chatSyncOnce(t, c, room, "", 0)
		if !ok {
			t.FailNow()
		}
		if !slices.Equal(got, sent) {
			t.Errorf("%s: /sync on its process has\n%q\nwant\n%q", c.UserID, got, sent)
		}
		if got := history(t, c, room); !slices.Equal(got, sent) {
			t.Errorf("%s: /messages on its process has\n%q\nwant\n%q", c.UserID, got, sent)
		}
	}
}

// TestConcurrentSendsAcrossProcesses: three senders on each of three
// processes send 20 messages each, all at once, while each sender follows
// its /sync stream, on another process at every step. Every send succeeds
// (a 429 for a busy room is retried and counted); afterwards /messages on
// every process has every message exactly once, in one order, and every
// sync stream delivered every message exactly once, in one order.
func TestConcurrentSendsAcrossProcesses(t *testing.T) {
	const perProcess, perSender = 3, 20
	hs := testserver.Cluster(t, 3, testserver.Options{})
	creator := hs[0].Register("creator")
	room := creator.CreateRoom(map[string]any{"preset": "public_chat"})
	var senders []*testserver.Client
	for _, s := range hs {
		for range perProcess {
			c := s.Register("sender")
			c.Join(room)
			senders = append(senders, c)
		}
	}
	total := len(senders) * perSender
	want := map[string]bool{}
	for i := range senders {
		for j := range perSender {
			want[fmt.Sprintf("m%d-%d", i, j)] = true
		}
	}
	// Each stream starts after every join, before any message.
	since := make([]string, len(senders))
	for i, c := range senders {
		_, since[i], _ = chatSyncOnce(t, c, room, "", 0)
		if since[i] == "" {
			t.FailNow()
		}
	}

	var busy atomic.Int64
	streams := make([][]string, len(senders))
	var wg gosync.WaitGroup
	start := time.Now()
	for i, c := range senders {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for j := range perSender {
				sendBody(t, c, room, fmt.Sprintf("cc%d-%d", i, j), fmt.Sprintf("m%d-%d", i, j), &busy)
			}
		}()
		go func() {
			defer wg.Done()
			// Follow next_batch on the next process at each step, until
			// every message has arrived or a minute has passed.
			seen := map[string]bool{}
			deadline := time.Now().Add(60 * time.Second)
			tok := since[i]
			for step := 0; len(seen) < total && time.Now().Before(deadline); step++ {
				on := c.On(hs[(i+step)%len(hs)])
				got, next, ok := chatSyncOnce(t, on, room, tok, 1000)
				if !ok {
					return
				}
				for _, b := range got {
					if seen[b] {
						t.Errorf("sender %d: sync step %d on %s from %s delivered %s again", i, step, on.Base, tok, b)
					}
					seen[b] = true
				}
				streams[i] = append(streams[i], got...)
				tok = next
			}
		}()
	}
	wg.Wait()
	t.Logf("%d messages through %d processes in %v, %d busy retries", total, len(hs), time.Since(start), busy.Load())
	if t.Failed() {
		t.FailNow()
	}

	check := func(what string, got []string) {
		t.Helper()
		seen := map[string]int{}
		for _, b := range got {
			seen[b]++
		}
		for b := range want {
			if seen[b] != 1 {
				t.Errorf("%s: %s %d times, want once", what, b, seen[b])
			}
		}
		if len(got) != total {
			t.Errorf("%s: %d messages, want %d", what, len(got), total)
		}
	}
	var order []string
	for k, s := range hs {
		got := history(t, senders[k*perProcess].On(s), room)
		check(fmt.Sprintf("/messages on process %d", k), got)
		if order == nil {
			order = got
		} else if !slices.Equal(got, order) {
			t.Errorf("/messages on process %d has another order than on process 0:\n%q\n%q", k, got, order)
		}
	}
	for i, got := range streams {
		check(fmt.Sprintf("sync stream of sender %d", i), got)
		if i > 0 && !slices.Equal(got, streams[0]) {
			t.Errorf("sync stream of sender %d has another order than sender 0's:\n%q\n%q", i, got, streams[0])
		}
	}
}

// TestTokensAcrossProcesses: a sync next_batch and prev_batch and the
// /messages tokens minted by one process mean the same place on the
// others.
func TestTokensAcrossProcesses(t *testing.T) {
	hs := testserver.Cluster(t, 3, testserver.Options{})
	alice := hs[0].Register("alice")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	bob := hs[1].Register("bob")
	bob.Join(room)
	on := func(k int) *testserver.Client { return alice.On(hs[k]) }
	for i := range 6 {
		on(i%3).SendText(room, fmt.Sprintf("before %d", i))
	}
	_, tokA, ok := chatSyncOnce(t, alice, room, "", 0)
	if !ok {
		t.FailNow()
	}
	var after []string
	for i := range 6 {
		b := fmt.Sprintf("after %d", i)
		// Through B and C only: A has not written since its token.
		c := bob
		if i%2 == 1 {
			c = bob.On(hs[2])
		}
		c.SendText(room, b)
		after = append(after, b)
	}
	for k := 1; k < 3; k++ {
		got, next, ok := chatSyncOnce(t, on(k), room, tokA, 0)
		if !ok {
			t.FailNow()
		}
		if !slices.Equal(got, after) {
			t.Errorf("sync on process %d from A's next_batch: %q, want %q", k, got, after)
		}
		// And that process's next_batch, back on A, is the end.
		got, _, _ = chatSyncOnce(t, alice, room, next, 0)
		if len(got) != 0 {
			t.Errorf("sync on A from process %d's next_batch: %q, want nothing", k, got)
		}
	}

	// A sync timeline's prev_batch from A, on B, pages back from its
	// first event.
	r := alice.Do("GET", csAPI+"/sync?filter="+url.QueryEscape(`{"room":{"timeline":{"limit":3}}}`), nil)
	var cs chatSync
	if err := r.JSON(&cs); err != nil {
		t.Fatal(err)
	}
	tl := cs.Rooms.Join[room].Timeline
	if got := bodies(tl.Events); !slices.Equal(got, after[3:]) || tl.PrevBatch == "" {
		t.Fatalf("sync on A, timeline of 3: %q (prev_batch %q), want %q", got, tl.PrevBatch, after[3:])
	}
	p := messages(t, on(1), room, "dir=b&limit=3&from="+url.QueryEscape(tl.PrevBatch))
	if got := bodies(p.Chunk); !slices.Equal(got, []string{after[2], after[1], after[0]}) {
		t.Errorf("/messages on B from A's prev_batch: %q, want after 2..0", got)
	}

	// /messages pages: A's end token continues on B and then on C with
	// no event repeated or skipped, and each token is read the same on
	// every process.
	all := history(t, alice, room)
	var paged []string
	from := ""
	var tokens []string
	for step := 0; ; step++ {
		q := "dir=b&limit=4"
		if from != "" {
			q += "&from=" + url.QueryEscape(from)
		}
		p := messages(t, on(step%3), room, q)
		paged = append(paged, bodies(p.Chunk)...)
		if p.End == "" || len(p.Chunk) == 0 {
			break
		}
		from = p.End
		tokens = append(tokens, p.End)
	}
	slices.Reverse(paged)
	if !slices.Equal(paged, all) {
		t.Errorf("/messages paged across processes: %q, want %q", paged, all)
	}
	if len(tokens) < 3 {
		t.Fatalf("only %d /messages tokens", len(tokens))
	}
	// from and to tokens of different processes, in both directions. A
	// token names the place before its event: tokens[i] is before the
	// oldest event of page i, each page 4 events, the last 12 events of
	// the room are its 12 messages.
	n := len(all)
	fwd := slices.Clone(all[n-12 : n-4])
	back := slices.Clone(fwd)
	slices.Reverse(back)
	for _, c := range []struct {
		q    string
		want []string
	}{
		{"dir=f&limit=100&from=" + url.QueryEscape(tokens[2]) + "&to=" + url.QueryEscape(tokens[0]), fwd},
		{"dir=b&limit=100&from=" + url.QueryEscape(tokens[0]) + "&to=" + url.QueryEscape(tokens[2]), back},
		{"dir=f&limit=100&from=" + url.QueryEscape(tokens[1]), all[n-8:]},
	} {
		q := c.q
		ref := messages(t, on(0), room, q)
		if got := bodies(ref.Chunk); !slices.Equal(got, c.want) {
			t.Errorf("/messages?%s on A: %q, want %q", q, got, c.want)
		}
		for k := 1; k < 3; k++ {
			got := messages(t, on(k), room, q)
			if !slices.EqualFunc(got.Chunk, ref.Chunk, func(a, b chatEvent) bool { return a.EventID == b.EventID }) || got.End != ref.End {
				t.Errorf("/messages?%s: on process %d %q (end %s), on A %q (end %s)", q, k, bodies(got.Chunk), got.End, bodies(ref.Chunk), ref.End)
			}
		}
	}
}
