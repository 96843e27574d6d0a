package cluster_test

import (
	"net/url"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/testserver"
)

// presenceOf returns the state of user's m.presence event in a /sync of c
// from since, and the next_batch; "" when the sync has none for them.
func presenceOf(t *testing.T, c *testserver.Client, since, user, query string) (string, string) {
	t.Helper()
	var out struct {
		NextBatch string `json:"next_batch"`
		Presence  struct {
			Events []struct {
				Sender  string `json:"sender"`
				Content struct {
					Presence string `json:"presence"`
				} `json:"content"`
			} `json:"events"`
		} `json:"presence"`
	}
	c.MustDo("GET", csAPI+"/sync?set_presence=offline&"+query+"&since="+url.QueryEscape(since), nil, &out)
	state := ""
	for _, e := range out.Presence.Events {
		if e.Sender == user {
			state = e.Content.Presence
		}
	}
	return state, out.NextBatch
}

// TestPresenceDoesNotFlapAcrossProcesses: alice's client syncs once
// through A, then only through B, every 12 s of a clock the processes
// share, for a minute: A's offline timeout runs out meanwhile, but B
// serves her, so she stays online: bob (whose own syncs, with
// set_presence=offline, do not count) hears of no change of hers. Once
// her client stops, she goes offline, once.
func TestPresenceDoesNotFlapAcrossProcesses(t *testing.T) {
	clk := clock.NewFake(time.Now())
	hs := testserver.Cluster(t, 2, testserver.Options{Clock: clk})
	a, b := hs[0], hs[1]
	alice := a.Register("alice")
	bob := a.Register("bob")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	bob.Join(room)
	_, since := presenceOf(t, bob, "", alice.UserID, "timeout=0")
	mustSync(t, alice, "timeout=0") // through A: online
	state, since := presenceOf(t, bob, since, alice.UserID, "timeout=0")
	if state != "online" {
		t.Fatalf("bob hears alice as %q after her first sync, want online", state)
	}
	aliceB := alice.On(b)
	for round := range 5 {
		clk.Advance(12 * time.Second)
		mustSync(t, aliceB, "timeout=0")
		var got string
		got, since = presenceOf(t, bob, since, alice.UserID, "timeout=0")
		if got != "" {
			t.Fatalf("round %d (%ds after her sync on A): bob hears alice as %q, a change while her client syncs through B",
				round, 12*(round+1), got)
		}
	}
	clk.Advance(31 * time.Second)
	for range 20 {
		var got string
		got, since = presenceOf(t, bob, since, alice.UserID, "timeout=600000")
		switch got {
		case "":
			continue // woken by something else
		case "offline":
			return
		default:
			t.Fatalf("after her client stopped bob hears alice as %q, want offline", got)
		}
	}
	t.Fatal("alice never went offline")
}
