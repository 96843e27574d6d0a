package api_test

import (
	"net/url"
	"testing"

	"github.com/persistentchat/homeserver/testserver"
)

// TestMembershipOnEvents: every event served to a client carries the
// requester's membership at it in unsigned.membership (MSC4115, spec
// v1.11; Complement TestMembershipOnEvents): "leave" before bob joined,
// "join" from his join on, "leave" from his leave until he is back, in
// every view of the timeline; state sections carry none, as from Synapse.
func TestMembershipOnEvents(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	// bob follows the room in a feed of alice's messages, and ignores
	// nobody: every view sees every event.
	wantOK(t, bob.Do("PUT", csAPI+"/user/"+url.PathEscape(bob.UserID)+"/account_data/org.persistentchat.follows",
		map[string]any{"rooms": []string{room}}), nil)
	wantOK(t, bob.Do("PUT", csAPI+"/user/"+url.PathEscape(bob.UserID)+"/account_data/org.persistentchat.feeds",
		map[string]any{"feeds": map[string]any{"alice": map[string]any{"senders": []string{alice.UserID}, "rooms": []string{room}}}}), nil)
	pre := sendText(t, alice, room, "word prejoin")
	joinRoom(t, bob, room)
	joined := sendText(t, alice, room, "word joined")
	beforeLeave := syncSince(t, bob, "").NextBatch
	leaveRoom(t, bob, room)
	away := sendText(t, alice, room, "word away")
	joinRoom(t, bob, room)
	back := threadReply(t, alice, room, pre, "word back in the thread")
	afterRejoin := syncSince(t, bob, "").NextBatch
	last := sendText(t, alice, room, "word last")
	srv.Settle()

	// What each event should carry, from the room's history as bob's own
	// membership events change it (content only, not unsigned).
	want := map[string]string{}
	var order []string
	mine := "leave"
	for _, ev := range messages(t, alice, room, query("dir", "f", "limit", "100")).Chunk {
		if ev.Type == "m.room.member" && ev.StateKey != nil && *ev.StateKey == bob.UserID {
			mine = ev.membership()
		}
		want[ev.EventID], order = mine, append(order, ev.EventID)
	}
	if want[pre] != "leave" || want[joined] != "join" || want[away] != "leave" || want[back] != "join" {
		t.Fatalf("the history is not what the test expects: %v", want)
	}
	check := func(t *testing.T, view string, evs []clientEvent, min int) {
		t.Helper()
		if len(evs) < min {
			t.Errorf("%s: %d events, want at least %d", view, len(evs), min)
		}
		for _, ev := range evs {
			if got, _ := ev.Unsigned["membership"].(string); got != want[ev.EventID] {
				t.Errorf("%s: %s %s has unsigned.membership %q, want %q", view, ev.Type, ev.EventID, got, want[ev.EventID])
			}
		}
	}
	noMembership := func(t *testing.T, view string, evs []clientEvent) {
		t.Helper()
		for _, ev := range evs {
			if m, ok := ev.Unsigned["membership"]; ok {
				t.Errorf("%s: state event %s has unsigned.membership %v", view, ev.EventID, m)
			}
		}
	}

	t.Run("sync", func(t *testing.T) {
		tl, _ := syncRoom(t, bob, room, 100)
		check(t, "initial sync", tl.Events, len(order))
		// Since before the leave: the timeline crosses bob's leave and
		// rejoin; since after the rejoin, it does not.
		check(t, "incremental across leave and rejoin", syncSince(t, bob, beforeLeave).Rooms.Join[room].Timeline.Events, 4)
		check(t, "incremental after rejoin", syncSince(t, bob, afterRejoin).Rooms.Join[room].Timeline.Events, 1)
		// A short timeline: the state before it carries none.
		var out struct {
			Rooms struct {
				Join map[string]struct {
					Timeline syncTimeline `json:"timeline"`
					State    struct {
						Events []clientEvent `json:"events"`
					} `json:"state"`
				} `json:"join"`
			} `json:"rooms"`
		}
		wantOK(t, bob.Do("GET", csAPI+"/sync?timeout=0&filter="+url.QueryEscape(`{"room":{"timeline":{"limit":2}}}`), nil), &out)
		jr := out.Rooms.Join[room]
		check(t, "short timeline", jr.Timeline.Events, 2)
		if len(jr.State.Events) == 0 {
			t.Fatal("no state before a short timeline")
		}
		noMembership(t, "sync state", jr.State.Events)
	})
	t.Run("/messages", func(t *testing.T) {
		check(t, "/messages backwards", messages(t, bob, room, query("dir", "b", "limit", "100")).Chunk, len(order))
		check(t, "/messages forwards", messages(t, bob, room, query("dir", "f", "limit", "3")).Chunk, 3)
		p := messages(t, bob, room, query("dir", "b", "limit", "5", "filter", `{"lazy_load_members":true}`))
		check(t, "/messages page", p.Chunk, 5)
		noMembership(t, "/messages lazy-loaded state", p.State)
	})
	t.Run("/event", func(t *testing.T) {
		for _, id := range []string{pre, joined, away, back, last} {
			check(t, "/event", []clientEvent{getEvent(t, bob, room, id)}, 1)
		}
	})
	t.Run("/context", func(t *testing.T) {
		var c struct {
			Event        clientEvent   `json:"event"`
			EventsBefore []clientEvent `json:"events_before"`
			EventsAfter  []clientEvent `json:"events_after"`
			State        []clientEvent `json:"state"`
		}
		wantOK(t, bob.Do("GET", roomPath(room, "context", away)+"?limit=8", nil), &c)
		check(t, "/context", append(append([]clientEvent{c.Event}, c.EventsBefore...), c.EventsAfter...), 8)
		noMembership(t, "/context state", c.State)
	})
	t.Run("/relations and /threads", func(t *testing.T) {
		check(t, "/relations", getRelations(t, bob, room, pre, nil).Chunk, 1)
		check(t, "/threads", getThreads(t, bob, room, nil).Chunk, 1)
	})
	t.Run("/search", func(t *testing.T) {
		r := search(t, bob, term("word", "order_by", "recent", "event_context", map[string]any{"before_limit": 2, "after_limit": 2}), "")
		var evs []clientEvent
		for _, res := range r.Results {
			evs = append(append(append(evs, res.Result), res.Context.EventsBefore...), res.Context.EventsAfter...)
		}
		check(t, "/search", evs, 5)
	})
	t.Run("/notifications", func(t *testing.T) {
		var evs []clientEvent
		for _, n := range getNotifications(t, bob, "").Notifications {
			evs = append(evs, n.Event)
		}
		check(t, "/notifications", evs, 2)
	})
	t.Run("feeds", func(t *testing.T) {
		check(t, "feed", getFeed(t, bob, "alice", "").Chunk, 4)
	})
	t.Run("never a member", func(t *testing.T) {
		// A world-readable room read by someone who never joined: leave.
		open := createRoom(t, alice, map[string]any{"preset": "public_chat", "initial_state": []any{
			map[string]any{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "world_readable"}}}})
		id := sendText(t, alice, open, "for all to read")
		carol := srv.Register("carol")
		ev := getEvent(t, carol, open, id)
		if got := ev.Unsigned["membership"]; got != "leave" {
			t.Errorf("membership of a reader who never joined = %v, want leave", got)
		}
		if got := getEvent(t, alice, open, id).Unsigned["membership"]; got != "join" {
			t.Errorf("alice's membership = %v, want join", got)
		}
	})
}
