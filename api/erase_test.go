package api_test

import (
	"net/url"
	"testing"

	"github.com/persistentchat/homeserver/testserver"
)

// TestErasedSenderRedacted: once alice deactivates with erase: true, her
// events are served redacted to whoever was not joined to the room when
// she sent them (spec: POST /account/deactivate, "erase"; Synapse's
// filter_events_for_client): bob, joined throughout, still reads them
// whole; carol, who joins after, reads redacted copies; erin, who was
// joined for the first message and away for the second, reads the first
// whole and the second redacted. Every view of the timeline does it.
// Without erase nothing is redacted.
func TestErasedSenderRedacted(t *testing.T) {
	t.Parallel()
	for _, erase := range []bool{true, false} {
		name := "without erase"
		if erase {
			name = "erase"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testErasedSender(t, erase)
		})
	}
}

func testErasedSender(t *testing.T, erase bool) {
	srv := testserver.Start(t, testserver.Options{})
	alice, bob, carol, erin := srv.Register("alice"), srv.Register("bob"), srv.Register("carol"), srv.Register("erin")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, bob, room)
	joinRoom(t, erin, room)
	bobSince := syncSince(t, bob, "").NextBatch
	first := sendText(t, alice, room, "secret first")
	edit := editText(t, alice, room, first, "secret first edited")
	reply := threadReply(t, bob, room, first, "bob in the thread")
	topic := putState(t, alice, room, "m.room.topic", "", map[string]any{"topic": "secret topic"})
	leaveRoom(t, erin, room)
	second := sendText(t, alice, room, "secret second")

	wantOK(t, alice.Do("POST", deactivatePath, map[string]any{"erase": erase,
		"auth": hsPasswordAuth(alice.UserID, hsPassword, "")}), nil)
	joinRoom(t, carol, room)
	joinRoom(t, erin, room)
	for _, c := range []*testserver.Client{bob, carol, erin} {
		follow := map[string]any{"feeds": map[string]any{"alice": map[string]any{"senders": []string{alice.UserID}, "rooms": []string{room}}}}
		wantOK(t, c.Do("PUT", csAPI+"/user/"+url.PathEscape(c.UserID)+"/account_data/org.persistentchat.feeds", follow), nil)
	}
	srv.Settle()

	// redacted lists, per reader, the events of alice they get redacted.
	all := map[string]bool{first: true, edit: true, topic: true, second: true}
	redacted := map[string]map[string]bool{bob.UserID: {}, carol.UserID: all, erin.UserID: {second: true}}
	if !erase {
		redacted[carol.UserID], redacted[erin.UserID] = map[string]bool{}, map[string]bool{}
	}
	body := map[string]string{first: "secret first", edit: "* secret first edited", second: "secret second"}

	// check asserts each event of alice among evs is whole or redacted as
	// c should get it; min is how many of hers the view must hold.
	check := func(t *testing.T, c *testserver.Client, view string, evs []clientEvent, min int) {
		t.Helper()
		n := 0
		for _, ev := range evs {
			if !all[ev.EventID] {
				continue
			}
			n++
			if ev.Sender != alice.UserID || ev.Type == "" || ev.Unsigned["membership"] == nil {
				t.Errorf("%s: %s lost its sender, type or unsigned.membership: %+v", view, ev, ev)
			}
			if redacted[c.UserID][ev.EventID] {
				if len(ev.Content) != 0 {
					t.Errorf("%s: %s of an erased sender has content %v, want the redacted {}", view, ev, ev.Content)
				}
				if _, ok := ev.Unsigned["prev_content"]; ok {
					t.Errorf("%s: redacted %s keeps prev_content", view, ev)
				}
				if b := bundleOf(t, ev); b.Replace != nil {
					t.Errorf("%s: redacted %s bundles its edit", view, ev)
				}
				continue
			}
			switch {
			case ev.EventID == topic:
				if ev.Content["topic"] != "secret topic" {
					t.Errorf("%s: topic content %v, want it whole", view, ev.Content)
				}
			case ev.Content["body"] != body[ev.EventID]:
				t.Errorf("%s: %s has body %v, want %q", view, ev, ev.Content["body"], body[ev.EventID])
			}
		}
		if n < min {
			t.Errorf("%s: %d events of alice, want at least %d", view, n, min)
		}
	}

	for _, c := range []*testserver.Client{bob, carol, erin} {
		t.Run(c.UserID, func(t *testing.T) {
			tl, _ := syncRoom(t, c, room, 100)
			check(t, c, "initial /sync", tl.Events, 4)
			check(t, c, "/messages", messages(t, c, room, query("dir", "b", "limit", "100")).Chunk, 4)
			for id := range all {
				check(t, c, "/event", []clientEvent{getEvent(t, c, room, id)}, 1)
			}
			var ctx struct {
				Event        clientEvent   `json:"event"`
				EventsBefore []clientEvent `json:"events_before"`
				EventsAfter  []clientEvent `json:"events_after"`
			}
			wantOK(t, c.Do("GET", roomPath(room, "context", reply)+"?limit=10", nil), &ctx)
			check(t, c, "/context", append(ctx.EventsBefore, ctx.EventsAfter...), 4)
			r := search(t, c, term("secret", "event_context", map[string]any{"before_limit": 1, "after_limit": 1}), "")
			var found []clientEvent
			for _, res := range r.Results {
				found = append(append(append(found, res.Result), res.Context.EventsBefore...), res.Context.EventsAfter...)
			}
			check(t, c, "/search", found, 3)
			check(t, c, "/relations", getRelations(t, c, room, first, nil, "m.replace").Chunk, 1)
			threads := getThreads(t, c, room, nil).Chunk
			check(t, c, "/threads", threads, 1)
			// The thread summary stays on a redacted root, as in Synapse.
			if len(threads) != 1 || bundleOf(t, threads[0]).Thread == nil {
				t.Errorf("/threads: %v, want the root with its thread summary", threads)
			}
			check(t, c, "feed", getFeed(t, c, "alice", "").Chunk, 2)
		})
	}
	t.Run("bob incremental", func(t *testing.T) {
		// Events bob got when alice sent them stay whole after the
		// erasure too, incremental sync and notifications included.
		check(t, bob, "incremental /sync", syncSince(t, bob, bobSince).Rooms.Join[room].Timeline.Events, 4)
		var evs []clientEvent
		for _, n := range getNotifications(t, bob, "").Notifications {
			evs = append(evs, n.Event)
		}
		check(t, bob, "/notifications", evs, 2)
	})
}
