package sync_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/testserver"
)

// syncResp is the part of a /sync body the tests read.
type syncResp struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline struct {
				Events    []event `json:"events"`
				Limited   bool    `json:"limited"`
				PrevBatch string  `json:"prev_batch"`
			} `json:"timeline"`
			State       struct{ Events []event } `json:"state"`
			AccountData struct{ Events []event } `json:"account_data"`
			Summary     map[string]any           `json:"summary"`
			Unread      *struct {
				NotificationCount *int `json:"notification_count"`
				HighlightCount    *int `json:"highlight_count"`
			} `json:"unread_notifications"`
		} `json:"join"`
		Invite map[string]struct {
			InviteState struct{ Events []event } `json:"invite_state"`
		} `json:"invite"`
		Leave map[string]struct {
			Timeline struct{ Events []event } `json:"timeline"`
		} `json:"leave"`
	} `json:"rooms"`
	AccountData struct{ Events []event } `json:"account_data"`
}

type event struct {
	Type     string          `json:"type"`
	EventID  string          `json:"event_id"`
	Sender   string          `json:"sender"`
	StateKey *string         `json:"state_key"`
	Content  json.RawMessage `json:"content"`
	Unsigned map[string]any  `json:"unsigned"`
}

func doSync(t *testing.T, c *testserver.Client, query string) syncResp {
	t.Helper()
	var out syncResp
	c.MustDo("GET", "/_matrix/client/v3/sync?"+query, nil, &out)
	return out
}

func filterQuery(f string) string { return "filter=" + url.QueryEscape(f) }

func bodies(evs []event) []string {
	var out []string
	for _, e := range evs {
		if e.Type == "m.room.message" {
			var c struct{ Body string }
			json.Unmarshal(e.Content, &c)
			out = append(out, c.Body)
		}
	}
	return out
}

func TestInitialAndIncrementalSync(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	room := alice.CreateRoom(map[string]any{"name": "general"})
	first := doSync(t, alice, "")
	jr, ok := first.Rooms.Join[room]
	if !ok {
		t.Fatalf("room missing from initial sync")
	}
	if jr.Unread == nil || jr.Unread.NotificationCount == nil || jr.Unread.HighlightCount == nil {
		t.Errorf("unread_notifications fields missing")
	}
	if got := jr.Summary["m.joined_member_count"]; got != float64(1) {
		t.Errorf("joined member count = %v, want 1", got)
	}
	// The create event starts the timeline of a small new room.
	if len(jr.Timeline.Events) == 0 || jr.Timeline.Events[0].Type != roomdag.TypeCreate {
		t.Errorf("timeline does not start with the create event: %+v", jr.Timeline.Events)
	}
	id := alice.SendText(room, "hello")
	srv.Settle() // the notification worker's progress would otherwise move next_batch on
	next := doSync(t, alice, "since="+first.NextBatch+"&timeout=0")
	tl := next.Rooms.Join[room].Timeline
	if len(tl.Events) != 1 || tl.Events[0].EventID != id || tl.Limited {
		t.Fatalf("incremental timeline = %+v, want just %s", tl, id)
	}
	// The sender's device sees its transaction ID (local echo matching).
	if tl.Events[0].Unsigned["transaction_id"] == nil {
		t.Errorf("transaction_id missing for the sending device")
	}
	// Nothing new: an empty response with the same position.
	again := doSync(t, alice, "since="+next.NextBatch+"&timeout=0")
	if len(again.Rooms.Join) != 0 || again.NextBatch != next.NextBatch {
		t.Errorf("empty sync returned rooms %v, next_batch %s (was %s)", again.Rooms.Join, again.NextBatch, next.NextBatch)
	}
}

func TestLongPollWakesOnMessage(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	bob.Join(room)
	since := doSync(t, bob, "").NextBatch
	got := make(chan syncResp, 1)
	go func() {
		var out syncResp
		r := bob.Do("GET", "/_matrix/client/v3/sync?timeout=30000&since="+since, nil)
		json.Unmarshal(r.Body, &out)
		got <- out
	}()
	// The long-poll may not be parked yet; that is fine either way: the
	// message must arrive in this sync or be reported as new data at once.
	id := alice.SendText(room, "wake up")
	select {
	case out := <-got:
		evs := out.Rooms.Join[room].Timeline.Events
		if len(evs) != 1 || evs[0].EventID != id {
			t.Fatalf("woken sync has %+v, want %s", evs, id)
		}
		if evs[0].Unsigned["transaction_id"] != nil {
			t.Errorf("another user's sync shows the sender's transaction_id")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("long-poll was not woken by a new message")
	}
}

func TestLongPollTimesOutEmpty(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	alice.CreateRoom(map[string]any{})
	// The token carries the notification worker's position: let it catch
	// up first, or its progress is (rightly) news to the second sync.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.HS.Notifications.Wait(ctx, srv.HS.Syncer.Notifier().Current().Events); err != nil {
		t.Fatal(err)
	}
	since := doSync(t, alice, "").NextBatch
	out := doSync(t, alice, "timeout=50&since="+since)
	if len(out.Rooms.Join) != 0 || out.NextBatch != since {
		t.Fatalf("timed-out sync = %+v", out)
	}
}

// Backchat: a late joiner's first sync holds exactly N recent events, where
// N is the filter's limit, else the room's backchat event, else the server
// default; prev_batch pages the rest back to the room's creation.
func TestBackchat(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{Configure: func(c *configs.Config) { c.BackchatDefault = 7 }})
	alice := srv.Register("alice")
	// newRoom makes a public room with 30 messages and, if roomLimit > 0,
	// the backchat state event before them.
	newRoom := func(roomLimit int) (string, []string) {
		room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
		if roomLimit > 0 {
			alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/"+roomdag.TypeBackchat+"/", map[string]any{"limit": roomLimit}, nil)
		}
		var sent []string
		for i := 0; i < 30; i++ {
			sent = append(sent, fmt.Sprintf("m%d", i))
			alice.SendText(room, sent[i])
		}
		return room, sent
	}
	cases := []struct {
		name      string
		roomLimit int
		query     string
		want      int // events in the timeline: want-1 messages, then the join
	}{
		{"server default", 0, "", 7},
		{"filter limit", 0, filterQuery(`{"room":{"timeline":{"limit":12}}}`), 12},
		{"room backchat event", 4, "", 4},
		{"filter beats room", 4, filterQuery(`{"room":{"timeline":{"limit":9}}}`), 9},
	}
	for _, tc := range cases {
		room, sent := newRoom(tc.roomLimit)
		late := srv.Register("late")
		late.Join(room)
		out := doSync(t, late, tc.query)
		tl := out.Rooms.Join[room].Timeline
		if len(tl.Events) != tc.want {
			t.Fatalf("%s: timeline has %d events, want %d", tc.name, len(tl.Events), tc.want)
		}
		if !tl.Limited || tl.PrevBatch == "" {
			t.Errorf("%s: limited=%v prev_batch=%q, want limited with a prev_batch", tc.name, tl.Limited, tl.PrevBatch)
		}
		last := tl.Events[len(tl.Events)-1]
		if last.Type != roomdag.TypeMember || last.Sender != late.UserID {
			t.Errorf("%s: newest event is %s from %s, want the late joiner's join", tc.name, last.Type, last.Sender)
		}
		got := bodies(tl.Events)
		want := sent[len(sent)-(tc.want-1):]
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("%s: timeline bodies %v, want %v", tc.name, got, want)
		}
		if len(out.Rooms.Join[room].State.Events) == 0 {
			t.Errorf("%s: no state for a newly joined room", tc.name)
		}
	}
	// Paging back from prev_batch reaches the room's creation and shows
	// every message exactly once.
	room, sent := newRoom(0)
	late := srv.Register("pager")
	late.Join(room)
	tl := doSync(t, late, "").Rooms.Join[room].Timeline
	seen := bodies(tl.Events)
	from := tl.PrevBatch
	var sawCreate bool
	for pages := 0; from != "" && pages < 100; pages++ {
		var page struct {
			Chunk []event `json:"chunk"`
			End   string  `json:"end"`
		}
		late.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?dir=b&limit=5&from="+url.QueryEscape(from), nil, &page)
		for _, e := range page.Chunk {
			sawCreate = sawCreate || e.Type == roomdag.TypeCreate
		}
		seen = append(bodies(reverse(page.Chunk)), seen...)
		from = page.End
	}
	if !sawCreate {
		t.Errorf("paging back never reached the create event")
	}
	if strings.Join(seen, ",") != strings.Join(sent, ",") {
		t.Errorf("paged history = %v, want %v", seen, sent)
	}
}

func reverse(evs []event) []event {
	out := make([]event, len(evs))
	for i, e := range evs {
		out[len(evs)-1-i] = e
	}
	return out
}

func TestIncrementalGapIsLimited(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	bob.Join(room)
	since := doSync(t, bob, "").NextBatch
	alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.topic/", map[string]any{"topic": "new"}, nil)
	for i := 0; i < 10; i++ {
		alice.SendText(room, fmt.Sprint(i))
	}
	out := doSync(t, bob, filterQuery(`{"room":{"timeline":{"limit":3}}}`)+"&since="+since)
	jr := out.Rooms.Join[room]
	if !jr.Timeline.Limited || len(jr.Timeline.Events) != 3 {
		t.Fatalf("gap timeline limited=%v len=%d, want limited 3", jr.Timeline.Limited, len(jr.Timeline.Events))
	}
	// The topic changed inside the gap, so it must be in state.
	found := false
	for _, e := range jr.State.Events {
		found = found || e.Type == "m.room.topic"
	}
	if !found {
		t.Errorf("state of a limited incremental sync lacks the topic changed in the gap: %+v", jr.State.Events)
	}
}

func TestInviteLeaveAndFilters(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	room := alice.CreateRoom(map[string]any{"name": "secret", "invite": []string{bob.UserID}})
	out := doSync(t, bob, "")
	inv, ok := out.Rooms.Invite[room]
	if !ok {
		t.Fatalf("invite missing from sync: %+v", out.Rooms)
	}
	var sawName, sawInvite bool
	for _, e := range inv.InviteState.Events {
		sawName = sawName || e.Type == "m.room.name"
		sawInvite = sawInvite || e.Type == "m.room.member" && e.StateKey != nil && *e.StateKey == bob.UserID
	}
	if !sawName || !sawInvite {
		t.Errorf("invite_state lacks name or the invite itself: %+v", inv.InviteState.Events)
	}
	bob.Join(room)
	since := doSync(t, bob, "").NextBatch
	bob.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/leave", map[string]any{}, nil)
	out = doSync(t, bob, "since="+since)
	if _, ok := out.Rooms.Leave[room]; !ok {
		t.Fatalf("left room missing from the leave section")
	}
	// A later message is not shown to bob, who left.
	alice.SendText(room, "after bob left")
	out = doSync(t, bob, "since="+out.NextBatch+"&timeout=0")
	if len(out.Rooms.Join)+len(out.Rooms.Leave) != 0 {
		t.Errorf("bob sees a room he left: %+v", out.Rooms)
	}
	// Filters by ID and inline: only m.room.message in the timeline.
	var created struct {
		FilterID string `json:"filter_id"`
	}
	alice.MustDo("POST", "/_matrix/client/v3/user/"+url.PathEscape(alice.UserID)+"/filter",
		map[string]any{"room": map[string]any{"timeline": map[string]any{"types": []string{"m.room.message"}}}}, &created)
	for _, q := range []string{"filter=" + created.FilterID, filterQuery(`{"room":{"timeline":{"types":["m.room.message"]}}}`)} {
		out := doSync(t, alice, q)
		for _, e := range out.Rooms.Join[room].Timeline.Events {
			if e.Type != "m.room.message" {
				t.Errorf("%s: filtered timeline has %s", q, e.Type)
			}
		}
	}
	for _, tc := range []struct{ q, code string }{
		{"filter=999", "M_NOT_FOUND"},
		{"filter=" + url.QueryEscape(`{"room":{"timeline":{"limit":"x"}}}`), "M_BAD_JSON"},
		{"since=garbage", "M_INVALID_PARAM"},
		{"since=s999999_0", "M_INVALID_PARAM"},
		{"timeout=-1", "M_INVALID_PARAM"},
	} {
		r := alice.Do("GET", "/_matrix/client/v3/sync?"+tc.q, nil)
		if r.Status == 200 || r.Errcode() != tc.code {
			t.Errorf("sync?%s = %d %s, want %s", tc.q, r.Status, r.Body, tc.code)
		}
	}
}

func TestAccountDataInSync(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	room := alice.CreateRoom(map[string]any{})
	since := doSync(t, alice, "").NextBatch
	user := url.PathEscape(alice.UserID)
	alice.MustDo("PUT", "/_matrix/client/v3/user/"+user+"/account_data/org.example.settings", map[string]any{"theme": "dark"}, nil)
	alice.MustDo("PUT", "/_matrix/client/v3/user/"+user+"/rooms/"+url.PathEscape(room)+"/account_data/m.tag", map[string]any{"tags": map[string]any{"m.favourite": map[string]any{}}}, nil)
	out := doSync(t, alice, "since="+since+"&timeout=0")
	if len(out.AccountData.Events) != 1 || out.AccountData.Events[0].Type != "org.example.settings" {
		t.Errorf("global account data = %+v", out.AccountData.Events)
	}
	if evs := out.Rooms.Join[room].AccountData.Events; len(evs) != 1 || evs[0].Type != "m.tag" {
		t.Errorf("room account data = %+v", evs)
	}
}

// Restarting the server loses nothing: the events, the sync position and
// the rooms are all there afterwards.
func TestRestartKeepsEverything(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := testserver.Start(t, testserver.Options{DataDir: dir})
	alice := srv.Register("alice")
	room := alice.CreateRoom(map[string]any{})
	var ids []string
	for i := 0; i < 20; i++ {
		ids = append(ids, alice.SendText(room, fmt.Sprint(i)))
	}
	since := doSync(t, alice, "").NextBatch
	srv.Stop()

	srv2 := testserver.Start(t, testserver.Options{DataDir: dir})
	alice.Base = srv2.URL
	out := doSync(t, alice, "since="+since+"&timeout=0")
	if len(out.Rooms.Join) != 0 {
		t.Errorf("sync after restart repeats old events: %+v", out.Rooms.Join)
	}
	id := alice.SendText(room, "after restart")
	out = doSync(t, alice, "since="+since+"&timeout=0")
	evs := out.Rooms.Join[room].Timeline.Events
	if len(evs) != 1 || evs[0].EventID != id {
		t.Fatalf("after restart, incremental sync = %+v, want %s", evs, id)
	}
	var msgs struct{ Chunk []event }
	alice.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?dir=b&limit=21", nil, &msgs)
	if len(msgs.Chunk) != 21 || msgs.Chunk[20].EventID != ids[0] {
		t.Errorf("history after restart has %d events", len(msgs.Chunk))
	}
}

func TestSyncFilterOptions(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob, carol := srv.Register("alice"), srv.Register("bob"), srv.Register("carol")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	bob.Join(room)
	carol.Join(room)
	for i := 0; i < 5; i++ {
		bob.SendText(room, fmt.Sprint("b", i))
	}

	// lazy_load_members: only the members of timeline senders (and the
	// syncing user) are in state.
	out := doSync(t, alice, filterQuery(`{"room":{"timeline":{"limit":3},"state":{"lazy_load_members":true}}}`))
	members := map[string]bool{}
	for _, e := range out.Rooms.Join[room].State.Events {
		if e.Type == roomdag.TypeMember {
			members[*e.StateKey] = true
		}
	}
	if !members[bob.UserID] || !members[alice.UserID] || members[carol.UserID] {
		t.Errorf("lazy-loaded members = %v, want bob and alice but not carol", members)
	}
	full := doSync(t, alice, "")
	if n := countType(full.Rooms.Join[room].State.Events, roomdag.TypeMember) +
		countType(full.Rooms.Join[room].Timeline.Events, roomdag.TypeMember); n < 3 {
		t.Errorf("without lazy loading, %d member events; want all three", n)
	}

	// full_state: an incremental sync with nothing new still returns the
	// room with its whole state.
	since := full.NextBatch
	fs := doSync(t, alice, "full_state=true&since="+since)
	jr, ok := fs.Rooms.Join[room]
	if !ok || len(jr.State.Events)+len(jr.Timeline.Events) == 0 {
		t.Fatalf("full_state sync lacks the room's state: %+v", fs.Rooms.Join)
	}

	// include_leave: an initial sync lists left rooms only when asked.
	carol.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/leave", map[string]any{}, nil)
	if _, ok := doSync(t, carol, "").Rooms.Leave[room]; ok {
		t.Errorf("left room listed in an initial sync without include_leave")
	}
	left := doSync(t, carol, filterQuery(`{"room":{"include_leave":true}}`))
	lr, ok := left.Rooms.Leave[room]
	if !ok {
		t.Fatalf("left room missing with include_leave")
	}
	last := lr.Timeline.Events[len(lr.Timeline.Events)-1]
	if last.Type != roomdag.TypeMember || last.StateKey == nil || *last.StateKey != carol.UserID {
		t.Errorf("left room's timeline does not end at carol's leave: %+v", last)
	}
	// After forgetting, the room is gone even with include_leave.
	carol.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/forget", map[string]any{}, nil)
	if _, ok := doSync(t, carol, filterQuery(`{"room":{"include_leave":true}}`)).Rooms.Leave[room]; ok {
		t.Errorf("forgotten room still listed")
	}
}

func countType(evs []event, typ string) int {
	n := 0
	for _, e := range evs {
		if e.Type == typ {
			n++
		}
	}
	return n
}

// TestFilterIDsChecked: a filter naming a malformed room or user ID is
// refused, stored or inline: 400 M_BAD_JSON ("valid JSON, but malformed",
// spec: common error codes; Synapse checks the same lists with its filter
// schema).
func TestFilterIDsChecked(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	bad := []string{
		`{"room":{"rooms":["general"]}}`,
		`{"room":{"not_rooms":["#general:localhost"]}}`,
		`{"room":{"timeline":{"rooms":["!r:localhost","nope"]}}}`,
		`{"room":{"state":{"senders":["alice"]}}}`,
		`{"room":{"timeline":{"not_senders":["!r:localhost"]}}}`,
		`{"presence":{"senders":["alice:localhost"]}}`,
		`{"account_data":{"not_senders":["@"]}}`,
	}
	path := "/_matrix/client/v3/user/" + url.PathEscape(alice.UserID) + "/filter"
	for _, f := range bad {
		if r := alice.Do("POST", path, []byte(f)); r.Status != 400 || r.Errcode() != "M_BAD_JSON" {
			t.Errorf("POST filter %s = %d %s, want 400 M_BAD_JSON", f, r.Status, r.Body)
		}
		if r := alice.Do("GET", "/_matrix/client/v3/sync?timeout=0&"+filterQuery(f), nil); r.Status != 400 || r.Errcode() != "M_BAD_JSON" {
			t.Errorf("sync with inline filter %s = %d %s, want 400 M_BAD_JSON", f, r.Status, r.Body)
		}
	}
	good := `{"room":{"rooms":["!r:localhost"],"timeline":{"senders":["@bob:localhost"]}},"presence":{"not_senders":["@eve:localhost"]}}`
	if r := alice.Do("POST", path, []byte(good)); r.Status != 200 {
		t.Errorf("POST filter %s = %d %s", good, r.Status, r.Body)
	}
	doSync(t, alice, "timeout=0&"+filterQuery(good))
}

// TestNewlyJoinedRoomIncremental: a room joined since the token comes in
// an incremental sync as in an initial one, as Synapse serves it (Complement
// "Newly joined room has correct timeline in incremental sync"): the
// token is ignored for its timeline, which the filter's limit and types
// shape and which is always limited, and its state is full. A change of
// display name is no new join: the room carries just the change.
func TestNewlyJoinedRoomIncremental(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	messagesOnly := func(limit int) string {
		return filterQuery(fmt.Sprintf(`{"room":{"timeline":{"limit":%d,"types":["m.room.message"]},"state":{"types":[]}}}`, limit))
	}
	for _, tc := range []struct {
		name   string
		filter string
		want   []string // bodies of the timeline's messages
		state  bool     // a state section is expected
	}{
		{"limit above the messages, types", messagesOnly(10), []string{"a0", "a1", "a2", "a3", "b0", "b1", "b2", "b3"}, false},
		{"limit below the messages, types", messagesOnly(3), []string{"b1", "b2", "b3"}, false},
		{"limit only", filterQuery(`{"room":{"timeline":{"limit":5}}}`), []string{"b0", "b1", "b2", "b3"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bob := srv.Register("bob")
			room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
			for i := range 4 {
				alice.SendText(room, fmt.Sprintf("a%d", i))
			}
			since := doSync(t, bob, tc.filter).NextBatch
			for i := range 4 {
				alice.SendText(room, fmt.Sprintf("b%d", i))
			}
			bob.Join(room)
			srv.Settle() // notifications still to come would bring the room back in the next sync
			out := doSync(t, bob, tc.filter+"&timeout=0&since="+url.QueryEscape(since))
			jr, ok := out.Rooms.Join[room]
			if !ok {
				t.Fatalf("newly joined room missing from the incremental sync")
			}
			tl := jr.Timeline
			if !tl.Limited || tl.PrevBatch == "" {
				t.Errorf("limited=%v prev_batch=%q, want limited with a prev_batch", tl.Limited, tl.PrevBatch)
			}
			if got := strings.Join(bodies(tl.Events), ","); got != strings.Join(tc.want, ",") {
				t.Errorf("timeline messages %s, want %v", got, tc.want)
			}
			if !tc.state {
				for _, e := range tl.Events {
					if e.Type != "m.room.message" {
						t.Errorf("timeline holds a %s, the filter allows m.room.message only", e.Type)
					}
				}
			}
			var create bool
			for _, e := range jr.State.Events {
				create = create || e.Type == roomdag.TypeCreate
			}
			if create != tc.state || !tc.state && len(jr.State.Events) > 0 {
				t.Errorf("state section has %d events (the create event: %v), want the full state: %v", len(jr.State.Events), create, tc.state)
			}
			// The next sync has nothing new for the room.
			if again := doSync(t, bob, tc.filter+"&timeout=0&since="+url.QueryEscape(out.NextBatch)); len(again.Rooms.Join) != 0 {
				t.Errorf("the room is in the next sync again: %v", again.Rooms.Join)
			}
		})
	}
	t.Run("display name change", func(t *testing.T) {
		bob := srv.Register("bob")
		room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
		bob.Join(room)
		alice.SendText(room, "before")
		since := doSync(t, bob, "").NextBatch
		bob.MustDo("PUT", "/_matrix/client/v3/profile/"+url.PathEscape(bob.UserID)+"/displayname", map[string]any{"displayname": "Bob B"}, nil)
		srv.Settle()
		jr := doSync(t, bob, "timeout=0&since="+url.QueryEscape(since)).Rooms.Join[room]
		tl := jr.Timeline
		if tl.Limited || len(tl.Events) != 1 || tl.Events[0].Type != roomdag.TypeMember || len(jr.State.Events) != 0 {
			t.Errorf("after a display name change: limited=%v, %d timeline events, %d state events; want just the member event, not limited",
				tl.Limited, len(tl.Events), len(jr.State.Events))
		}
	})
	t.Run("left and back", func(t *testing.T) {
		bob := srv.Register("bob")
		room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
		bob.Join(room)
		since := doSync(t, bob, "").NextBatch
		bob.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/leave", map[string]any{}, nil)
		alice.SendText(room, "while away")
		bob.Join(room)
		jr := doSync(t, bob, "timeout=0&since="+url.QueryEscape(since)).Rooms.Join[room]
		var create bool
		for _, e := range append(jr.State.Events, jr.Timeline.Events...) {
			create = create || e.Type == roomdag.TypeCreate
		}
		if !jr.Timeline.Limited || !create {
			t.Errorf("rejoined since the token: limited=%v, create event served %v; want limited with full state", jr.Timeline.Limited, create)
		}
	})
}
