package cluster_test

import (
	"encoding/json"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/testserver"
)

// typingOf returns who types in room according to s, and whether s has an
// m.typing event for it at all.
func typingOf(t *testing.T, s *syncResp, room string) ([]string, bool) {
	t.Helper()
	for _, e := range s.Rooms.Join[room].Ephemeral.Events {
		if e.Type != "m.typing" {
			continue
		}
		var c struct {
			UserIDs []string `json:"user_ids"`
		}
		if err := json.Unmarshal(e.Content, &c); err != nil {
			t.Fatalf("m.typing content %s: %v", e.Content, err)
		}
		slices.Sort(c.UserIDs)
		return c.UserIDs, true
	}
	return nil, false
}

func setTyping(c *testserver.Client, room string, on bool, timeoutMS int) {
	body := map[string]any{"typing": on}
	if on {
		body["timeout"] = timeoutMS
	}
	c.MustDo("PUT", csAPI+"/rooms/"+url.PathEscape(room)+"/typing/"+url.PathEscape(c.UserID), body, nil)
}

// typingCluster is three processes with alice, bob and carol in one room,
// each user's own requests on their own process.
func typingCluster(t *testing.T, opts testserver.Options) (hs []*testserver.Server, alice, bob, carol *testserver.Client, room string) {
	hs = testserver.Cluster(t, 3, opts)
	alice = hs[0].Register("alice")
	bob = hs[1].Register("bob")
	carol = hs[2].Register("carol")
	room = alice.CreateRoom(map[string]any{"preset": "public_chat"})
	bob.Join(room)
	carol.Join(room)
	return
}

// TestTypingTokensAcrossProcesses: typing changes made on every process
// reach bob's sync stream, which he follows on a different process at
// each step: a sync from any process's token hears of each change once
// (the long-poll answers with it, with who types now) and a sync from the
// token it answered, on yet another process, hears of nothing more. A
// fourth process starts after typing has begun, so it has not seen every
// change: the positions must still mean the same there.
func TestTypingTokensAcrossProcesses(t *testing.T) {
	hs, alice, bob, carol, room := typingCluster(t, testserver.Options{})
	since := mustSync(t, bob, "timeout=0").NextBatch
	setTyping(carol, room, true, 30000)
	setTyping(carol, room, false, 0)
	s := waitSync(t, bob, since, func(s *syncResp) bool { got, ok := typingOf(t, s, room); return ok && len(got) == 0 })
	since = s.NextBatch
	hs = append(hs, testserver.Start(t, testserver.Options{ShareWith: hs[0]}))
	steps := []struct {
		who  *testserver.Client
		on   *testserver.Server
		typ  bool
		want []string
	}{
		{alice, hs[0], true, []string{alice.UserID}},
		{carol, hs[2], true, []string{alice.UserID, carol.UserID}},
		{alice, hs[1], false, []string{carol.UserID}}, // alice stops through B
		{carol, hs[0], false, nil},                    // carol through A
		{alice, hs[2], true, []string{alice.UserID}},
		{bob, hs[1], true, []string{alice.UserID, bob.UserID}},
	}
	for i, st := range steps {
		setTyping(st.who.On(st.on), room, st.typ, 30000)
		// The long-poll on the next process must answer with the change
		// (it waits for it if it has not reached that process yet).
		on := bob.On(hs[(i+1)%len(hs)])
		s := mustSync(t, on, "timeout=30000&since="+url.QueryEscape(since))
		got, ok := typingOf(t, s, room)
		if !ok || !slices.Equal(got, st.want) {
			t.Fatalf("step %d: sync on %s from %s: typing %v (present %v), want %v", i, on.Base, since, got, ok, st.want)
		}
		since = s.NextBatch
		// From that token, on the other processes, nothing more.
		for k := 2; k <= len(hs); k++ {
			again := mustSync(t, bob.On(hs[(i+k)%len(hs)]), "timeout=0&since="+url.QueryEscape(since))
			if got, ok := typingOf(t, again, room); ok {
				t.Fatalf("step %d: sync on process %d from %s repeats typing %v", i, (i+k)%len(hs), since, got)
			}
		}
	}
}

// TestTypingAfterListenerDropped: typing set on A while B's listening
// connection is down reaches B's parked long-poll once B listens again
// (the catch-up reads the stored typing changes).
func TestTypingAfterListenerDropped(t *testing.T) {
	hs, alice, bob, _, room := typingCluster(t, testserver.Options{})
	b := hs[1]
	admin := openAdmin(t, b)
	since := mustSync(t, bob, "timeout=0").NextBatch
	done := longPoll(t, b, bob, since)
	release := b.HS.HoldListening()
	defer release()
	old := dropListener(t, admin, b)
	setTyping(alice, room, true, 30000)
	release()
	waitListener(t, admin, b, old)
	s := <-done
	if s == nil {
		t.Fatal("B's long-poll failed")
	}
	if got, _ := typingOf(t, s, room); !slices.Equal(got, []string{alice.UserID}) {
		t.Fatalf("B's long-poll answered typing %v, want alice", got)
	}
}

// TestTypingTimeoutAcrossProcesses: a typing notification set on A runs
// out; the long-poll on B hears that nobody types any more, once, and a
// sync on C from that token hears nothing more. The processes share one
// fake clock.
func TestTypingTimeoutAcrossProcesses(t *testing.T) {
	clk := clock.NewFake(time.Now())
	hs, alice, bob, _, room := typingCluster(t, testserver.Options{Clock: clk})
	since := mustSync(t, bob, "timeout=0").NextBatch
	setTyping(alice, room, true, 10000)
	s := waitSync(t, bob, since, func(s *syncResp) bool { _, ok := typingOf(t, s, room); return ok })
	if got, _ := typingOf(t, s, room); !slices.Equal(got, []string{alice.UserID}) {
		t.Fatalf("typing on B = %v, want alice", got)
	}
	since = s.NextBatch
	done := longPoll(t, hs[1], bob, since)
	clk.Advance(11 * time.Second)
	s = <-done
	if s == nil {
		t.Fatal("B's long-poll failed")
	}
	for {
		if got, ok := typingOf(t, s, room); ok {
			if len(got) != 0 {
				t.Fatalf("typing on B after the timeout = %v, want nobody", got)
			}
			break
		}
		s = waitSync(t, bob, s.NextBatch, func(s *syncResp) bool { _, ok := typingOf(t, s, room); return ok })
	}
	again := mustSync(t, bob.On(hs[2]), "timeout=0&since="+url.QueryEscape(s.NextBatch))
	if got, ok := typingOf(t, again, room); ok {
		t.Fatalf("sync on C from B's token repeats typing %v", got)
	}
}
