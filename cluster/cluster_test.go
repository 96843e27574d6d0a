package cluster_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/testserver"
)

const csAPI = "/_matrix/client/v3"

// syncResp is the part of a /sync response these tests read.
type syncResp struct {
	NextBatch   string `json:"next_batch"`
	AccountData struct {
		Events []json.RawMessage `json:"events"`
	} `json:"account_data"`
	Rooms struct {
		Join map[string]struct {
			Timeline struct {
				Events []struct {
					Type     string         `json:"type"`
					StateKey *string        `json:"state_key"`
					EventID  string         `json:"event_id"`
					Content  map[string]any `json:"content"`
				} `json:"events"`
			} `json:"timeline"`
			Ephemeral struct {
				Events []struct {
					Type    string          `json:"type"`
					Content json.RawMessage `json:"content"`
				} `json:"events"`
			} `json:"ephemeral"`
		} `json:"join"`
	} `json:"rooms"`
}

func doSync(t testing.TB, c *testserver.Client, query string) (*syncResp, int) {
	t.Helper()
	r := c.Do("GET", csAPI+"/sync?"+query, nil)
	if r.Status != http.StatusOK {
		return nil, r.Status
	}
	var s syncResp
	if err := r.JSON(&s); err != nil {
		t.Fatalf("sync: %v", err)
	}
	return &s, r.Status
}

func mustSync(t testing.TB, c *testserver.Client, query string) *syncResp {
	t.Helper()
	s, status := doSync(t, c, query)
	if s == nil {
		t.Fatalf("sync: status %d", status)
	}
	return s
}

// parked waits until a long-poll is waiting on srv, or the request has
// answered without waiting (then the test's checks fail): a change made
// after it returns must wake the poll.
func parked[T any](srv *testserver.Server, answered chan T) {
	for srv.HS.Syncer.Parked() == 0 && len(answered) == 0 {
		runtime.Gosched()
	}
}

// longPoll starts a /sync long-poll on c from since and returns the
// channel its response arrives on, once it is waiting on srv.
func longPoll(t testing.TB, srv *testserver.Server, c *testserver.Client, since string) chan *syncResp {
	done := make(chan *syncResp, 1)
	go func() {
		s, _ := doSync(t, c, "timeout=60000&since="+url.QueryEscape(since))
		done <- s
	}()
	parked(srv, done)
	return done
}

func roomSetup(t *testing.T) (a, b *testserver.Server, aliceA, bobB *testserver.Client, room string) {
	hs := testserver.Cluster(t, 2, testserver.Options{})
	a, b = hs[0], hs[1]
	aliceA = a.Register("alice")
	bobA := a.Register("bob")
	room = aliceA.CreateRoom(map[string]any{"preset": "public_chat"})
	// Every write goes through A: writes on B of a room A wrote need the
	// database's counters (issue 10's write path), not this package.
	bobA.Join(room)
	bobB = bobA.On(b)
	return
}

// TestWakeAcrossProcesses: a long-poll on B answers with the message sent
// on A; the wake latency over many messages is logged (p50, p99).
func TestWakeAcrossProcesses(t *testing.T) {
	a, b, alice, bob, room := roomSetup(t)
	if os.Getenv("CLUSTER_WAKE_SAME_PROCESS") != "" {
		// The baseline: the long-poll on A itself.
		b, bob = a, bob.On(a)
	}
	since := mustSync(t, bob, "timeout=0").NextBatch
	n := 200
	if testing.Short() {
		n = 20
	}
	lat := make([]time.Duration, 0, n)
	after := make([]time.Duration, 0, n) // from the send's response
	for i := range n {
		done := longPoll(t, b, bob, since)
		start := time.Now()
		id := alice.SendText(room, "hello")
		sent := time.Now()
		var s *syncResp
		for s == nil || len(s.Rooms.Join[room].Timeline.Events) == 0 {
			if s = <-done; s == nil {
				t.Fatalf("message %d: the long-poll failed", i)
			}
			since = s.NextBatch
			if len(s.Rooms.Join[room].Timeline.Events) == 0 {
				// Woken by something else (a notification count):
				// wait again.
				done = longPoll(t, b, bob, since)
			}
		}
		lat = append(lat, time.Since(start))
		after = append(after, time.Since(sent))
		evs := s.Rooms.Join[room].Timeline.Events
		if evs[len(evs)-1].EventID != id {
			t.Fatalf("message %d: B's long-poll answered %s, want %s", i, evs[len(evs)-1].EventID, id)
		}
	}
	for _, l := range [][]time.Duration{lat, after} {
		sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	}
	t.Logf("send on A to /sync answer on B, %d messages: p50 %v, p90 %v, p99 %v, max %v",
		n, lat[n/2], lat[n*9/10], lat[n*99/100], lat[n-1])
	t.Logf("send's response on A to /sync answer on B: p50 %v, p90 %v, p99 %v", after[n/2], after[n*9/10], after[n*99/100])
}

// TestFeedWokenAcrossProcesses: a topic feed long-poll on B is woken by a
// matching message sent on A in a room bob follows without joining.
func TestFeedWokenAcrossProcesses(t *testing.T) {
	hs := testserver.Cluster(t, 2, testserver.Options{})
	a, b := hs[0], hs[1]
	alice := a.Register("alice")
	bob := a.Register("bob").On(b)
	open := alice.CreateRoom(map[string]any{"preset": "public_chat", "initial_state": []any{
		map[string]any{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "world_readable"}}}})
	bob.MustDo("PUT", csAPI+"/user/"+url.PathEscape(bob.UserID)+"/account_data/org.persistentchat.follows",
		map[string]any{"rooms": []string{open}}, nil)
	bob.MustDo("PUT", csAPI+"/user/"+url.PathEscape(bob.UserID)+"/account_data/org.persistentchat.feeds",
		map[string]any{"feeds": map[string]any{"ops": map[string]any{"keywords": []string{"outage"}}}}, nil)
	type page struct {
		Chunk []struct {
			Content map[string]any `json:"content"`
		} `json:"chunk"`
		NextBatch string `json:"next_batch"`
	}
	feed := "/_matrix/client/unstable/org.persistentchat/feeds/ops"
	var first page
	bob.MustDo("GET", feed, nil, &first)
	done := make(chan page, 1)
	go func() {
		var p page
		bob.MustDo("GET", feed+"?timeout=60000&since="+url.QueryEscape(first.NextBatch), nil, &p)
		done <- p
	}()
	parked(b, done)
	alice.SendText(open, "lunch") // no match: the poll keeps waiting
	alice.SendText(open, "an outage")
	p := <-done
	if len(p.Chunk) != 1 || p.Chunk[0].Content["body"] != "an outage" {
		t.Fatalf("feed on B = %+v, want the outage message", p.Chunk)
	}
}

// TestStateAndRedactionAcrossProcesses: a room name set on A is B's at
// once, in GET /state and in /sync; an event B has served (and cached) is
// served redacted by B once A redacts it.
func TestStateAndRedactionAcrossProcesses(t *testing.T) {
	_, b, alice, bob, room := roomSetup(t)
	since := mustSync(t, bob, "timeout=0").NextBatch
	id := alice.SendText(room, "regret")
	path := csAPI + "/rooms/" + url.PathEscape(room) + "/event/" + url.PathEscape(id)
	var ev struct {
		Content map[string]any `json:"content"`
	}
	bob.MustDo("GET", path, nil, &ev) // caches it on B
	if ev.Content["body"] != "regret" {
		t.Fatalf("event on B = %v", ev.Content)
	}
	_ = b

	alice.MustDo("PUT", csAPI+"/rooms/"+url.PathEscape(room)+"/state/m.room.name/", map[string]any{"name": "renamed"}, nil)
	var name struct {
		Name string `json:"name"`
	}
	bob.MustDo("GET", csAPI+"/rooms/"+url.PathEscape(room)+"/state/m.room.name/", nil, &name)
	if name.Name != "renamed" {
		t.Fatalf("name on B = %q, want renamed", name.Name)
	}
	s := mustSync(t, bob, "timeout=0&since="+url.QueryEscape(since))
	found := false
	for _, e := range s.Rooms.Join[room].Timeline.Events {
		found = found || (e.Type == "m.room.name" && e.Content["name"] == "renamed")
	}
	if !found {
		t.Fatalf("B's sync has no name change: %+v", s.Rooms.Join[room].Timeline.Events)
	}

	alice.MustDo("PUT", csAPI+"/rooms/"+url.PathEscape(room)+"/redact/"+url.PathEscape(id)+"/t1", map[string]any{}, nil)
	// The redaction reaches B through the channel: wait for B's sync to
	// have it, then the event must be served redacted.
	since = s.NextBatch
	for {
		s = mustSync(t, bob, "timeout=30000&since="+url.QueryEscape(since))
		since = s.NextBatch
		if slices.ContainsFunc(s.Rooms.Join[room].Timeline.Events, func(e struct {
			Type     string         `json:"type"`
			StateKey *string        `json:"state_key"`
			EventID  string         `json:"event_id"`
			Content  map[string]any `json:"content"`
		}) bool {
			return e.Type == roomdag.TypeRedaction
		}) {
			break
		}
	}
	ev.Content = nil
	bob.MustDo("GET", path, nil, &ev)
	if len(ev.Content) != 0 {
		t.Fatalf("B serves the redacted event with content %v", ev.Content)
	}
}

// waitSync long-polls c on srv from since until cond holds for a
// response, returning it. Each poll waits on the notifier: no sleeps.
func waitSync(t *testing.T, c *testserver.Client, since string, cond func(*syncResp) bool) *syncResp {
	t.Helper()
	for range 50 {
		s := mustSync(t, c, "timeout=30000&since="+url.QueryEscape(since))
		if cond(s) {
			return s
		}
		since = s.NextBatch
	}
	t.Fatalf("no sync response met the condition")
	return nil
}

// TestAccountDataReceiptTypingAcrossProcesses: account data, a read
// receipt and typing set on A reach B's sync; each wakes a long-poll
// parked on B.
func TestAccountDataReceiptTypingAcrossProcesses(t *testing.T) {
	a, b, alice, bob, room := roomSetup(t)
	bobA := bob.On(a)
	since := mustSync(t, bob, "timeout=0").NextBatch

	done := longPoll(t, b, bob, since)
	bobA.MustDo("PUT", csAPI+"/user/"+url.PathEscape(bob.UserID)+"/account_data/org.example.x", map[string]any{"v": 1}, nil)
	s := <-done
	if s == nil || !slices.ContainsFunc(s.AccountData.Events, func(e json.RawMessage) bool {
		var ev struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal(e, &ev)
		return ev.Type == "org.example.x"
	}) {
		t.Fatalf("B's long-poll did not carry the account data: %+v", s)
	}
	since = s.NextBatch

	id := alice.SendText(room, "read me")
	s = waitSync(t, bob, since, func(s *syncResp) bool { return len(s.Rooms.Join[room].Timeline.Events) > 0 })
	since = s.NextBatch
	done = longPoll(t, b, bob, since)
	alice.MustDo("POST", csAPI+"/rooms/"+url.PathEscape(room)+"/receipt/m.read/"+url.PathEscape(id), map[string]any{}, nil)
	s = <-done
	hasEphemeral := func(s *syncResp, typ string) bool {
		return s != nil && slices.ContainsFunc(s.Rooms.Join[room].Ephemeral.Events, func(e struct {
			Type    string          `json:"type"`
			Content json.RawMessage `json:"content"`
		}) bool {
			return e.Type == typ
		})
	}
	if !hasEphemeral(s, "m.receipt") {
		s = waitSync(t, bob, s.NextBatch, func(s *syncResp) bool { return hasEphemeral(s, "m.receipt") })
	}
	since = s.NextBatch

	done = longPoll(t, b, bob, since)
	alice.MustDo("PUT", csAPI+"/rooms/"+url.PathEscape(room)+"/typing/"+url.PathEscape(alice.UserID),
		map[string]any{"typing": true, "timeout": 30000}, nil)
	s = <-done
	if !hasEphemeral(s, "m.typing") {
		s = waitSync(t, bob, s.NextBatch, func(s *syncResp) bool { return hasEphemeral(s, "m.typing") })
	}
	for _, e := range s.Rooms.Join[room].Ephemeral.Events {
		if e.Type == "m.typing" && !json.Valid(e.Content) {
			t.Fatalf("typing content %s", e.Content)
		}
		if e.Type == "m.typing" {
			var c struct {
				UserIDs []string `json:"user_ids"`
			}
			_ = json.Unmarshal(e.Content, &c)
			if !slices.Equal(c.UserIDs, []string{alice.UserID}) {
				t.Fatalf("typing on B = %v, want alice", c.UserIDs)
			}
		}
	}
}

// TestLogoutAcrossProcesses: a token logged out on A is refused by B at
// once, and B's long-poll under it ends with 401.
func TestLogoutAcrossProcesses(t *testing.T) {
	a, b, _, bob, _ := roomSetup(t)
	since := mustSync(t, bob, "timeout=0").NextBatch
	status := make(chan int, 1)
	go func() {
		_, st := doSync(t, bob, "timeout=60000&since="+url.QueryEscape(since))
		status <- st
	}()
	parked(b, status)
	bobA := bob.On(a)
	bobA.MustDo("POST", csAPI+"/logout", map[string]any{}, nil)
	if r := bob.Do("GET", csAPI+"/account/whoami", nil); r.Status != http.StatusUnauthorized || r.Errcode() != "M_UNKNOWN_TOKEN" {
		t.Fatalf("whoami on B after logout on A: %d %s", r.Status, r.Body)
	}
	if st := <-status; st != http.StatusUnauthorized {
		t.Fatalf("B's long-poll after logout on A answered %d, want 401", st)
	}
}

// TestDeactivationAcrossProcesses: a user deactivated with erasure on A
// can no longer use their token on B, and B hides their events as erased
// as soon as their leave reaches B's sync.
func TestDeactivationAcrossProcesses(t *testing.T) {
	a, b, alice, bob, room := roomSetup(t)
	bobA := bob.On(a)
	aliceB := alice.On(b)
	bobA.SendText(room, "before leaving")
	since := mustSync(t, aliceB, "timeout=0").NextBatch
	bobA.MustDo("POST", csAPI+"/account/deactivate", map[string]any{"erase": true,
		"auth": map[string]any{"type": "m.login.password", "password": "correct horse battery",
			"identifier": map[string]any{"type": "m.id.user", "user": bob.UserID}}}, nil)
	if r := bob.Do("GET", csAPI+"/account/whoami", nil); r.Status != http.StatusUnauthorized {
		t.Fatalf("whoami on B after deactivation on A: %d %s", r.Status, r.Body)
	}
	waitSync(t, aliceB, since, func(s *syncResp) bool {
		for _, e := range s.Rooms.Join[room].Timeline.Events {
			if e.Type == roomdag.TypeMember && e.StateKey != nil && *e.StateKey == bob.UserID && e.Content["membership"] == "leave" {
				return true
			}
		}
		return false
	})
	// The erasure committed before the leave, and B applies changes in
	// commit order.
	if !b.HS.DB().ErasedUsers()[roomdag.UserID(bob.UserID)] {
		t.Fatalf("B does not know %s is erased", bob.UserID)
	}
}
