package sync_test

import (
	"encoding/json"
	"net/url"
	"sort"
	"strings"
	"testing"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/testserver"
)

// afterRoom is a room of rooms.join or rooms.leave with both state
// sections, each nil when absent.
type afterRoom struct {
	Timeline struct {
		Events  []event `json:"events"`
		Limited bool    `json:"limited"`
	} `json:"timeline"`
	State      *struct{ Events []event } `json:"state"`
	StateAfter *struct{ Events []event } `json:"state_after"`
}

type afterResp struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join  map[string]afterRoom `json:"join"`
		Leave map[string]afterRoom `json:"leave"`
	} `json:"rooms"`
}

func syncAfter(t *testing.T, c *testserver.Client, query string) afterResp {
	t.Helper()
	var out afterResp
	c.MustDo("GET", "/_matrix/client/v3/sync?timeout=0&use_state_after=true&"+query, nil, &out)
	return out
}

// stateAfterOf checks that the room has state_after and no state, and
// returns state_after as "type/state_key" -> event.
func stateAfterOf(t *testing.T, r afterRoom, what string) map[string]event {
	t.Helper()
	if r.State != nil {
		t.Errorf("%s: state is present beside state_after", what)
	}
	if r.StateAfter == nil {
		t.Fatalf("%s: no state_after", what)
	}
	out := map[string]event{}
	for _, ev := range r.StateAfter.Events {
		if ev.StateKey == nil {
			t.Errorf("%s: state_after holds a non-state event %s", what, ev.EventID)
			continue
		}
		out[ev.Type+"/"+*ev.StateKey] = ev
	}
	return out
}

func keysOf(m map[string]event) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func contentField(ev event, field string) string {
	var c map[string]any
	_ = json.Unmarshal(ev.Content, &c)
	s, _ := c[field].(string)
	return s
}

func putStateEvent(t *testing.T, c *testserver.Client, room, typ, key string, content any) string {
	t.Helper()
	var out struct {
		EventID string `json:"event_id"`
	}
	c.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/"+typ+"/"+url.PathEscape(key), content, &out)
	return out.EventID
}

// TestUseStateAfter: with use_state_after=true every room carries
// state_after, the state at the end of its timeline, and no state (spec
// v1.16, MSC4222), in initial and incremental syncs, gappy or not, for
// rooms new to the sync and for rooms left.
func TestUseStateAfter(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob, carol := srv.Register("alice"), srv.Register("bob"), srv.Register("carol")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat", "topic": "one"})
	bob.Join(room)
	topicTwo := putStateEvent(t, alice, room, "m.room.topic", "", map[string]any{"topic": "two"})
	alice.SendText(room, "hello")
	limit2 := filterQuery(`{"room":{"timeline":{"limit":2}}}`)

	t.Run("initial", func(t *testing.T) {
		// The timeline is [topic two, hello]: state (before it) has topic
		// one, state_after topic two, though the timeline holds it too.
		var classic struct {
			Rooms struct {
				Join map[string]afterRoom `json:"join"`
			} `json:"rooms"`
		}
		alice.MustDo("GET", "/_matrix/client/v3/sync?timeout=0&"+limit2, nil, &classic)
		cr := classic.Rooms.Join[room]
		if cr.StateAfter != nil || cr.State == nil {
			t.Fatalf("without use_state_after: state %v, state_after %v", cr.State != nil, cr.StateAfter != nil)
		}
		for _, ev := range cr.State.Events {
			if ev.Type == "m.room.topic" && contentField(ev, "topic") != "one" {
				t.Errorf("state (before the timeline) has topic %q", contentField(ev, "topic"))
			}
		}
		// use_state_after=false is the default.
		alice.MustDo("GET", "/_matrix/client/v3/sync?timeout=0&use_state_after=false&"+limit2, nil, &classic)
		if r := classic.Rooms.Join[room]; r.StateAfter != nil || r.State == nil {
			t.Errorf("use_state_after=false answered with state_after")
		}

		out := syncAfter(t, alice, limit2)
		jr := out.Rooms.Join[room]
		if len(jr.Timeline.Events) != 2 || jr.Timeline.Events[0].EventID != topicTwo {
			t.Fatalf("timeline %+v, want topic two then hello", jr.Timeline.Events)
		}
		st := stateAfterOf(t, jr, "initial sync")
		if ev := st["m.room.topic/"]; ev.EventID != topicTwo {
			t.Errorf("state_after topic is %s (%q), want %s", ev.EventID, contentField(ev, "topic"), topicTwo)
		}
		for _, k := range []string{"m.room.create/", "m.room.power_levels/", "m.room.join_rules/", "m.room.member/" + alice.UserID, "m.room.member/" + bob.UserID} {
			if _, ok := st[k]; !ok {
				t.Errorf("state_after lacks %s: %v", k, keysOf(st))
			}
		}
	})

	t.Run("incremental", func(t *testing.T) {
		since := syncAfter(t, alice, "").NextBatch
		// Nothing new in state: state_after is there, and empty.
		alice.SendText(room, "just a message")
		srv.Settle()
		var raw struct {
			Rooms struct {
				Join map[string]map[string]json.RawMessage `json:"join"`
			} `json:"rooms"`
		}
		alice.MustDo("GET", "/_matrix/client/v3/sync?timeout=0&use_state_after=true&since="+since, nil, &raw)
		if got := string(raw.Rooms.Join[room]["state_after"]); got != `{"events":[]}` {
			t.Errorf("state_after of a sync without state changes = %s, want an empty list", got)
		}
		if _, ok := raw.Rooms.Join[room]["state"]; ok {
			t.Errorf("state present beside state_after")
		}

		// Not gappy: the new state is in the timeline and in state_after.
		since = syncAfter(t, alice, "").NextBatch
		carol.Join(room)
		name := putStateEvent(t, alice, room, "m.room.name", "", map[string]any{"name": "Lobby"})
		srv.Settle()
		out := syncAfter(t, alice, "since="+since)
		jr := out.Rooms.Join[room]
		if jr.Timeline.Limited {
			t.Fatalf("timeline limited")
		}
		st := stateAfterOf(t, jr, "incremental sync")
		if got := keysOf(st); strings.Join(got, " ") != "m.room.member/"+carol.UserID+" m.room.name/" {
			t.Errorf("state_after = %v, want carol's join and the name", got)
		}
		if st["m.room.name/"].EventID != name || contentField(st["m.room.member/"+carol.UserID], "membership") != "join" {
			t.Errorf("state_after events: %+v", st)
		}

		// Gappy: changes the timeline misses are in state_after too.
		since = out.NextBatch
		putStateEvent(t, alice, room, "m.room.name", "", map[string]any{"name": "Hall"})
		bobby := putStateEvent(t, bob, room, "m.room.member", bob.UserID, map[string]any{"membership": "join", "displayname": "Bobby"})
		for _, m := range []string{"a", "b", "c"} {
			alice.SendText(room, m)
		}
		srv.Settle()
		out = syncAfter(t, alice, "since="+since+"&"+filterQuery(`{"room":{"timeline":{"limit":1}}}`))
		jr = out.Rooms.Join[room]
		if !jr.Timeline.Limited || len(jr.Timeline.Events) != 1 {
			t.Fatalf("gappy timeline: limited %v, %d events", jr.Timeline.Limited, len(jr.Timeline.Events))
		}
		st = stateAfterOf(t, jr, "gappy sync")
		if contentField(st["m.room.name/"], "name") != "Hall" || st["m.room.member/"+bob.UserID].EventID != bobby || len(st) != 2 {
			t.Errorf("gappy state_after = %v", keysOf(st))
		}
	})

	t.Run("joined since", func(t *testing.T) {
		// A room the user joins after the token: its whole state.
		dave := srv.Register("dave")
		since := syncAfter(t, dave, "").NextBatch
		dave.Join(room)
		srv.Settle()
		out := syncAfter(t, dave, "since="+since+"&"+filterQuery(`{"room":{"timeline":{"limit":1}}}`))
		st := stateAfterOf(t, out.Rooms.Join[room], "room joined since the token")
		for _, k := range []string{"m.room.create/", "m.room.name/", "m.room.topic/", "m.room.member/" + alice.UserID, "m.room.member/" + dave.UserID} {
			if _, ok := st[k]; !ok {
				t.Errorf("state_after of a new room lacks %s: %v", k, keysOf(st))
			}
		}
	})

	t.Run("left", func(t *testing.T) {
		// A room left: state_after is the state at the leave, leave
		// included, and nothing from after it.
		erin := srv.Register("erin")
		erin.Join(room)
		since := syncAfter(t, erin, "").NextBatch
		erin.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/leave", map[string]any{}, nil)
		putStateEvent(t, alice, room, "m.room.name", "", map[string]any{"name": "After erin"})
		srv.Settle()
		out := syncAfter(t, erin, "since="+since)
		lr, ok := out.Rooms.Leave[room]
		if !ok {
			t.Fatalf("left room not in rooms.leave")
		}
		st := stateAfterOf(t, lr, "left room")
		if got := keysOf(st); len(got) != 1 || got[0] != "m.room.member/"+erin.UserID || contentField(st[got[0]], "membership") != "leave" {
			t.Errorf("left room state_after = %v, want erin's leave alone", got)
		}
		// An initial sync with include_leave: the whole state at the leave.
		out = syncAfter(t, erin, filterQuery(`{"room":{"include_leave":true}}`))
		st = stateAfterOf(t, out.Rooms.Leave[room], "left room, initial sync")
		if contentField(st["m.room.name/"], "name") != "Hall" || contentField(st["m.room.member/"+erin.UserID], "membership") != "leave" {
			t.Errorf("left room state_after in an initial sync: name %q, erin %q", contentField(st["m.room.name/"], "name"),
				contentField(st["m.room.member/"+erin.UserID], "membership"))
		}
	})

	t.Run("unstable name", func(t *testing.T) {
		// MSC4222's unstable parameter, which matrix-rust-sdk sends, is
		// answered under the unstable key.
		var raw struct {
			Rooms struct {
				Join map[string]map[string]json.RawMessage `json:"join"`
			} `json:"rooms"`
		}
		alice.MustDo("GET", "/_matrix/client/v3/sync?timeout=0&org.matrix.msc4222.use_state_after=true&"+limit2, nil, &raw)
		jr := raw.Rooms.Join[room]
		var st struct{ Events []event }
		if err := json.Unmarshal(jr["org.matrix.msc4222.state_after"], &st); err != nil || len(st.Events) == 0 {
			t.Errorf("org.matrix.msc4222.state_after = %s", jr["org.matrix.msc4222.state_after"])
		}
		if jr["state"] != nil || jr["state_after"] != nil {
			t.Errorf("state or state_after beside the unstable key")
		}
	})

	t.Run("bad value", func(t *testing.T) {
		for _, q := range []string{"use_state_after=yes", "org.matrix.msc4222.use_state_after=1"} {
			r := alice.Do("GET", "/_matrix/client/v3/sync?timeout=0&"+q, nil)
			if r.Status != 400 || r.Errcode() != "M_INVALID_PARAM" {
				t.Errorf("%s: %d %s", q, r.Status, r.Body)
			}
		}
	})
}

// TestUseStateAfterLazyMembers: with lazy_load_members, state_after holds
// the memberships of the timeline's senders (and, in a full state, the
// user's own), also in incremental syncs where they did not change, since
// the client takes no state from the timeline (as Synapse does).
func TestUseStateAfterLazyMembers(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob, carol := srv.Register("alice"), srv.Register("bob"), srv.Register("carol")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	bob.Join(room)
	carol.Join(room)
	bob.SendText(room, "from bob")
	lazy := filterQuery(`{"room":{"timeline":{"limit":1},"state":{"lazy_load_members":true}}}`)

	out := syncAfter(t, alice, lazy)
	st := stateAfterOf(t, out.Rooms.Join[room], "initial sync")
	members := map[string]bool{}
	for k := range st {
		if u, ok := strings.CutPrefix(k, roomdag.TypeMember+"/"); ok {
			members[u] = true
		}
	}
	if !members[alice.UserID] || !members[bob.UserID] || members[carol.UserID] || len(members) != 2 {
		t.Errorf("lazy members in an initial sync = %v, want alice and bob", members)
	}
	if _, ok := st["m.room.create/"]; !ok {
		t.Errorf("lazy loading dropped other state: %v", keysOf(st))
	}

	// carol, who joined before the token, speaks: her unchanged
	// membership comes with her message.
	carol.SendText(room, "from carol")
	srv.Settle()
	out = syncAfter(t, alice, "since="+out.NextBatch+"&"+lazy)
	st = stateAfterOf(t, out.Rooms.Join[room], "incremental sync")
	if got := keysOf(st); len(got) != 1 || got[0] != "m.room.member/"+carol.UserID {
		t.Errorf("lazy state_after in an incremental sync = %v, want carol's membership", got)
	}
}
