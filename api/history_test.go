package api_test

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"testing"

	"github.com/persistentchat/homeserver/testserver"
)

// messagesPage is a /messages reply. End is nil when the reply has none.
type messagesPage struct {
	Start string        `json:"start"`
	End   *string       `json:"end"`
	Chunk []clientEvent `json:"chunk"`
	State []clientEvent `json:"state"`
}

// messages is GET /rooms/{roomId}/messages; q holds dir, from, to, limit,
// filter.
func messages(t testing.TB, c *testserver.Client, room string, q url.Values) messagesPage {
	t.Helper()
	var p messagesPage
	wantOK(t, c.Do("GET", roomPath(room, "messages")+"?"+q.Encode(), nil), &p)
	if p.Start == "" {
		t.Errorf("/messages?%s: no start token", q.Encode())
	}
	if p.Chunk == nil {
		t.Fatalf("/messages?%s: no chunk", q.Encode())
	}
	if from := q.Get("from"); from != "" && p.Start != from {
		t.Errorf("start = %q, want the from token %q (spec: \"the same as the value given in from\")", p.Start, from)
	}
	return p
}

// query builds url.Values from key, value pairs.
func query(kv ...string) url.Values {
	q := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	return q
}

func eventIDs(evs []clientEvent) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.EventID
	}
	return out
}

// bodies lists the bodies of the m.room.message events among evs.
func bodies(evs []clientEvent) []string {
	out := []string{}
	for _, ev := range evs {
		if ev.Type == "m.room.message" {
			b, _ := ev.Content["body"].(string)
			out = append(out, b)
		}
	}
	return out
}

// syncTimeline is one joined room of a /sync reply.
type syncTimeline struct {
	Events    []clientEvent `json:"events"`
	Limited   bool          `json:"limited"`
	PrevBatch string        `json:"prev_batch"`
}

// syncRoom runs /sync with a timeline limit and returns the room's
// timeline and next_batch.
func syncRoom(t testing.TB, c *testserver.Client, room string, limit int) (syncTimeline, string) {
	t.Helper()
	filter := fmt.Sprintf(`{"room":{"timeline":{"limit":%d}}}`, limit)
	var out struct {
		NextBatch string `json:"next_batch"`
		Rooms     struct {
			Join map[string]struct {
				Timeline syncTimeline `json:"timeline"`
			} `json:"join"`
		} `json:"rooms"`
	}
	wantOK(t, c.Do("GET", csAPI+"/sync?timeout=0&filter="+url.QueryEscape(filter), nil), &out)
	jr, ok := out.Rooms.Join[room]
	if !ok || out.NextBatch == "" {
		t.Fatalf("room %s not in /sync, or no next_batch", room)
	}
	return jr.Timeline, out.NextBatch
}

func TestMessagesPaging(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	room := alice.CreateRoom(map[string]any{"preset": "private_chat"})
	const n = 250
	var sent []string
	for i := range n {
		sent = append(sent, alice.SendText(room, "m"+strconv.Itoa(i)))
	}
	// The whole room in one page: the creation events, then ours. It has
	// an end all the same, as every page that returned events has (as in
	// Synapse): paging on from it finds nothing and no end.
	all := messages(t, alice, room, query("dir", "f", "limit", "1000"))
	if all.End == nil {
		t.Fatalf("no end on a page of %d events", len(all.Chunk))
	}
	if after := messages(t, alice, room, query("dir", "f", "from", *all.End)); len(after.Chunk) != 0 || after.End != nil {
		t.Errorf("after the whole room: %d events, end %v; want none and no end", len(after.Chunk), after.End)
	}
	ids := eventIDs(all.Chunk)
	if len(ids) < n || !slices.Equal(ids[len(ids)-n:], sent) || all.Chunk[0].Type != "m.room.create" {
		t.Fatalf("dir=f over the whole room: %d events, want the creation events then the %d sent in order", len(ids), n)
	}
	reversed := slices.Clone(ids)
	slices.Reverse(reversed)

	tests := []struct {
		dir   string
		limit int
		want  []string
	}{
		{"b", 40, reversed},
		{"f", 40, ids},
		{"b", 32, reversed}, // 256 events: the last page is exactly full
		{"f", 32, ids},
		{"b", 1, reversed[:60]}, // one event per page, stopped early
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("dir=%s/limit=%d", tc.dir, tc.limit), func(t *testing.T) {
			t.Parallel()
			var got []string
			from := ""
			for pages := 0; ; pages++ {
				if pages > len(ids) {
					t.Fatal("pagination does not end")
				}
				q := query("dir", tc.dir, "limit", strconv.Itoa(tc.limit))
				if from != "" {
					q.Set("from", from)
				}
				p := messages(t, alice, room, q)
				if len(p.Chunk) > tc.limit {
					t.Fatalf("page of %d events, limit %d", len(p.Chunk), tc.limit)
				}
				got = append(got, eventIDs(p.Chunk)...)
				if len(got) >= len(tc.want) && len(tc.want) < len(ids) {
					break // stopped early on purpose
				}
				if p.End == nil {
					if len(p.Chunk) != 0 {
						t.Errorf("a page of %d events without end", len(p.Chunk))
					}
					break
				}
				if len(p.Chunk) == 0 {
					t.Fatalf("empty page with end %q after %d events, though events remain", *p.End, len(got))
				}
				if *p.End == from {
					t.Fatalf("end token %q did not move", from)
				}
				from = *p.End
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("paged %d events, want %d, each once in order", len(got), len(tc.want))
				for i := range min(len(got), len(tc.want)) {
					if got[i] != tc.want[i] {
						t.Errorf("first difference at %d: %s, want %s", i, got[i], tc.want[i])
						break
					}
				}
			}
		})
	}
}

func TestMessagesFromSyncTokens(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	room := alice.CreateRoom(map[string]any{"preset": "private_chat"})
	for i := range 10 {
		alice.SendText(room, "m"+strconv.Itoa(i))
	}
	tl, next := syncRoom(t, alice, room, 3)
	if got := bodies(tl.Events); !slices.Equal(got, []string{"m7", "m8", "m9"}) || !tl.Limited || tl.PrevBatch == "" {
		t.Fatalf("sync timeline = %q limited=%v prev_batch=%q", got, tl.Limited, tl.PrevBatch)
	}
	alice.SendText(room, "m10")
	alice.SendText(room, "m11")

	tests := []struct {
		name string
		q    url.Values
		want []string
		end  bool
	}{
		{"back from prev_batch", query("dir", "b", "from", tl.PrevBatch, "limit", "3"), []string{"m6", "m5", "m4"}, true},
		// A token is a place between events, the same in both directions.
		{"forwards from prev_batch", query("dir", "f", "from", tl.PrevBatch, "limit", "3"), []string{"m7", "m8", "m9"}, true},
		{"back from next_batch", query("dir", "b", "from", next, "limit", "2"), []string{"m9", "m8"}, true},
		{"forwards from next_batch", query("dir", "f", "from", next, "limit", "10"), []string{"m10", "m11"}, true},
		{"back from the end to prev_batch", query("dir", "b", "to", tl.PrevBatch, "limit", "100"), []string{"m11", "m10", "m9", "m8", "m7"}, true},
		{"forwards from prev_batch to next_batch", query("dir", "f", "from", tl.PrevBatch, "to", next, "limit", "100"), []string{"m7", "m8", "m9"}, true},
		{"back from next_batch to prev_batch", query("dir", "b", "from", next, "to", tl.PrevBatch, "limit", "100"), []string{"m9", "m8", "m7"}, true},
		{"forwards to next_batch", query("dir", "f", "to", next, "limit", "100"), nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := messages(t, alice, room, tc.q)
			got := bodies(p.Chunk)
			if tc.want == nil {
				// Everything up to next_batch: m0..m9 after the creation events.
				if len(got) != 10 || got[0] != "m0" || got[9] != "m9" {
					t.Errorf("messages = %q, want m0..m9", got)
				}
				return
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("messages = %q, want %q", got, tc.want)
			}
			if (p.End != nil) != tc.end {
				t.Errorf("end = %v, want present: %v", p.End, tc.end)
			}
		})
	}
}

func TestMessagesFilter(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob, carol, dave := srv.Register("alice"), srv.Register("bob"), srv.Register("carol"), srv.Register("dave")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	for _, c := range []*testserver.Client{bob, carol, dave} {
		c.Join(room)
	}
	alice.SendText(room, "a1")
	sendEvent(t, alice, room, "org.example.ping", map[string]any{"n": 1})
	dave.SendText(room, "d1")
	bob.SendText(room, "b1")
	carol.SendText(room, "c1")

	filtered := func(t *testing.T, filter string, limit int) messagesPage {
		t.Helper()
		return messages(t, alice, room, query("dir", "b", "limit", strconv.Itoa(limit), "filter", filter))
	}
	types := func(evs []clientEvent) []string {
		var out []string
		for _, ev := range evs {
			out = append(out, ev.Type)
		}
		return out
	}
	t.Run("types", func(t *testing.T) {
		p := filtered(t, `{"types":["m.room.message"]}`, 100)
		if got := types(p.Chunk); len(got) != 4 || slices.ContainsFunc(got, func(s string) bool { return s != "m.room.message" }) {
			t.Errorf("types = %q, want the 4 messages", got)
		}
		if got := bodies(p.Chunk); !slices.Equal(got, []string{"c1", "b1", "d1", "a1"}) {
			t.Errorf("bodies = %q", got)
		}
		p = filtered(t, `{"types":["org.example.*"]}`, 100)
		if got := types(p.Chunk); !slices.Equal(got, []string{"org.example.ping"}) {
			t.Errorf("wildcard types = %q", got)
		}
		// A page that read the whole room still has an end (Complement
		// TestContentMediaV1 reads one with a filter matching one event).
		if p.End == nil {
			t.Errorf("no end on a filtered page of %d events", len(p.Chunk))
		}
	})
	t.Run("not_types", func(t *testing.T) {
		p := filtered(t, `{"not_types":["m.room.message","m.room.member"]}`, 100)
		for _, ty := range types(p.Chunk) {
			if ty == "m.room.message" || ty == "m.room.member" {
				t.Errorf("not_types let %s through", ty)
			}
		}
		if !slices.Contains(types(p.Chunk), "org.example.ping") || !slices.Contains(types(p.Chunk), "m.room.create") {
			t.Errorf("not_types dropped too much: %q", types(p.Chunk))
		}
	})
	t.Run("senders", func(t *testing.T) {
		p := filtered(t, `{"senders":["`+bob.UserID+`","`+carol.UserID+`"],"types":["m.room.message"]}`, 100)
		if got := bodies(p.Chunk); !slices.Equal(got, []string{"c1", "b1"}) {
			t.Errorf("bodies = %q, want c1 b1", got)
		}
		p = filtered(t, `{"not_senders":["`+alice.UserID+`"],"types":["m.room.message"]}`, 100)
		if got := bodies(p.Chunk); !slices.Equal(got, []string{"c1", "b1", "d1"}) {
			t.Errorf("not_senders bodies = %q", got)
		}
	})
	t.Run("limit in the filter", func(t *testing.T) {
		p := filtered(t, `{"limit":2}`, 100)
		if got := bodies(p.Chunk); !slices.Equal(got, []string{"c1", "b1"}) || p.End == nil {
			t.Errorf("bodies = %q end=%v, want c1 b1 and more", got, p.End)
		}
	})
	t.Run("lazy_load_members", func(t *testing.T) {
		// The last two events come from carol and bob: the state holds
		// their member events and no one else's.
		p := filtered(t, `{"lazy_load_members":true}`, 2)
		var members []string
		for _, ev := range p.State {
			if ev.Type != "m.room.member" || ev.StateKey == nil || ev.membership() != "join" {
				t.Errorf("unexpected state event %v", ev)
				continue
			}
			members = append(members, *ev.StateKey)
		}
		slices.Sort(members)
		want := []string{bob.UserID, carol.UserID}
		slices.Sort(want)
		if !slices.Equal(members, want) {
			t.Errorf("lazy-loaded members = %q, want %q", members, want)
		}
		// Without lazy loading there is no state.
		if p := filtered(t, `{}`, 2); len(p.State) != 0 {
			t.Errorf("state without lazy loading: %v", p.State)
		}
	})
	t.Run("rejects", func(t *testing.T) {
		tests := []struct {
			name    string
			q       url.Values
			errcode string
		}{
			{"bad dir", query("dir", "sideways"), "M_INVALID_PARAM"},
			{"bad limit", query("dir", "b", "limit", "-1"), "M_INVALID_PARAM"},
			{"bad from", query("dir", "b", "from", "nonsense"), "M_INVALID_PARAM"},
			{"bad to", query("dir", "b", "to", "t1"), "M_INVALID_PARAM"},
			{"bad filter", query("dir", "b", "filter", "{nope"), "M_BAD_JSON"},
		}
		for _, tc := range tests {
			r := alice.Do("GET", roomPath(room, "messages")+"?"+tc.q.Encode(), nil)
			t.Run(tc.name, func(t *testing.T) { wantErr(t, r, http.StatusBadRequest, tc.errcode) })
		}
		stranger := srv.Register("stranger")
		wantErr(t, stranger.Do("GET", roomPath(room, "messages")+"?dir=b", nil), http.StatusForbidden, "M_FORBIDDEN")
		wantErr(t, stranger.Do("GET", roomPath(room, "messages"), nil), http.StatusForbidden, "M_FORBIDDEN")
		wantErr(t, alice.Do("GET", roomPath("!unknown:"+srv.Config.ServerName, "messages")+"?dir=b", nil), http.StatusForbidden, "M_FORBIDDEN")
	})
}

func TestContext(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob, carol, dave := srv.Register("alice"), srv.Register("bob"), srv.Register("carol"), srv.Register("dave")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat", "name": "Context"})
	var ids []string
	for i := range 20 {
		ids = append(ids, alice.SendText(room, "e"+strconv.Itoa(i)))
	}
	type contextReply struct {
		Event        clientEvent   `json:"event"`
		EventsBefore []clientEvent `json:"events_before"`
		EventsAfter  []clientEvent `json:"events_after"`
		Start        string        `json:"start"`
		End          string        `json:"end"`
		State        []clientEvent `json:"state"`
	}
	get := func(t *testing.T, c *testserver.Client, id string, q url.Values) contextReply {
		t.Helper()
		var out contextReply
		wantOK(t, c.Do("GET", roomPath(room, "context", id)+"?"+q.Encode(), nil), &out)
		return out
	}

	t.Run("around an event", func(t *testing.T) {
		c := get(t, alice, ids[10], query("limit", "6"))
		if c.Event.EventID != ids[10] || c.Event.Content["body"] != "e10" {
			t.Errorf("event = %v", c.Event)
		}
		// events_before in reverse-chronological order, events_after in
		// chronological order (spec: event_context).
		if got := bodies(c.EventsBefore); !slices.Equal(got, []string{"e9", "e8", "e7"}) {
			t.Errorf("events_before = %q", got)
		}
		if got := bodies(c.EventsAfter); !slices.Equal(got, []string{"e11", "e12", "e13"}) {
			t.Errorf("events_after = %q", got)
		}
		if stateEvent(c.State, "m.room.create", "") == nil || stateEvent(c.State, "m.room.member", alice.UserID) == nil {
			t.Errorf("state lacks create or alice's membership: %v", c.State)
		}
		if n := stateEvent(c.State, "m.room.name", ""); n == nil || n.Content["name"] != "Context" {
			t.Errorf("state name = %v", n)
		}
		// start pages backwards from events_before, end forwards from
		// events_after, without gaps or repeats.
		back := messages(t, alice, room, query("dir", "b", "from", c.Start, "limit", "2"))
		if got := bodies(back.Chunk); !slices.Equal(got, []string{"e6", "e5"}) {
			t.Errorf("back from start = %q, want e6 e5", got)
		}
		fwd := messages(t, alice, room, query("dir", "f", "from", c.End, "limit", "2"))
		if got := bodies(fwd.Chunk); !slices.Equal(got, []string{"e14", "e15"}) {
			t.Errorf("forwards from end = %q, want e14 e15", got)
		}
	})
	t.Run("at the newest event", func(t *testing.T) {
		c := get(t, alice, ids[19], query("limit", "4"))
		if len(c.EventsAfter) != 0 || !slices.Equal(bodies(c.EventsBefore), []string{"e18", "e17"}) {
			t.Errorf("before %q after %q", bodies(c.EventsBefore), bodies(c.EventsAfter))
		}
		fwd := messages(t, alice, room, query("dir", "f", "from", c.End))
		if len(fwd.Chunk) != 0 || fwd.End != nil {
			t.Errorf("forwards from end at the newest event = %v end=%v", eventIDs(fwd.Chunk), fwd.End)
		}
	})
	t.Run("limit 0", func(t *testing.T) {
		c := get(t, alice, ids[5], query("limit", "0"))
		if c.Event.EventID != ids[5] || len(c.EventsBefore) != 0 || len(c.EventsAfter) != 0 {
			t.Errorf("event %s, %d before, %d after", c.Event.EventID, len(c.EventsBefore), len(c.EventsAfter))
		}
	})
	t.Run("lazy_load_members", func(t *testing.T) {
		for _, c := range []*testserver.Client{bob, carol, dave} {
			c.Join(room)
		}
		bob.SendText(room, "b")
		target := alice.SendText(room, "target")
		carol.SendText(room, "c")
		dave.SendText(room, "d")
		c := get(t, alice, target, query("limit", "2", "filter", `{"lazy_load_members":true}`))
		if got := bodies(c.EventsBefore); !slices.Equal(got, []string{"b"}) {
			t.Fatalf("events_before = %q", got)
		}
		if got := bodies(c.EventsAfter); !slices.Equal(got, []string{"c"}) {
			t.Fatalf("events_after = %q", got)
		}
		// The senders of events_before, event and events_after.
		for _, u := range []*testserver.Client{alice, bob, carol} {
			if stateEvent(c.State, "m.room.member", u.UserID) == nil {
				t.Errorf("lazy-loaded state lacks the member event of %s", u.UserID)
			}
		}
		if stateEvent(c.State, "m.room.member", dave.UserID) != nil {
			t.Errorf("lazy-loaded state has %s, who sent none of the events", dave.UserID)
		}
		if stateEvent(c.State, "m.room.create", "") == nil {
			t.Error("lazy loading dropped non-member state")
		}
	})
	t.Run("errors", func(t *testing.T) {
		wantErr(t, alice.Do("GET", roomPath(room, "context", "$unknown"), nil), http.StatusNotFound, "M_NOT_FOUND")
		other := alice.CreateRoom(map[string]any{})
		foreign := alice.SendText(other, "elsewhere")
		wantErr(t, alice.Do("GET", roomPath(room, "context", foreign), nil), http.StatusNotFound, "M_NOT_FOUND")
		wantErr(t, alice.Do("GET", roomPath(room, "context", "nothing"), nil), http.StatusBadRequest, "M_INVALID_PARAM")
	})
}

func TestGetEvent(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	room := alice.CreateRoom(map[string]any{"preset": "private_chat"})
	id := sendEvent(t, alice, room, "org.example.thing", map[string]any{"answer": 42})
	ev := getEvent(t, alice, room, id)
	if ev.EventID != id || ev.Type != "org.example.thing" || ev.Sender != alice.UserID || ev.RoomID != room ||
		ev.Content["answer"] != float64(42) || ev.StateKey != nil || ev.OriginServerTS == 0 {
		t.Errorf("event = %+v", ev)
	}
	if _, ok := ev.Unsigned["age"]; !ok {
		t.Errorf("unsigned = %v, want age", ev.Unsigned)
	}
	other := alice.CreateRoom(map[string]any{})
	foreign := alice.SendText(other, "elsewhere")
	tests := []struct {
		name    string
		c       *testserver.Client
		id      string
		status  int
		errcode string
	}{
		{"unknown event", alice, "$unknown", http.StatusNotFound, "M_NOT_FOUND"},
		{"event of another room", alice, foreign, http.StatusNotFound, "M_NOT_FOUND"},
		{"malformed event ID", alice, "unknown", http.StatusBadRequest, "M_INVALID_PARAM"},
		// spec: 404 "The event was not found or you do not have permission
		// to read this event" (Complement: TestFetchEventNonWorldReadable).
		{"not a member", bob, id, http.StatusNotFound, "M_NOT_FOUND"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			wantErr(t, tc.c.Do("GET", roomPath(room, "event", tc.id), nil), tc.status, tc.errcode)
		})
	}
}

func TestMembers(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob, carol, dave, erin := srv.Register("alice"), srv.Register("bob"), srv.Register("carol"), srv.Register("dave"), srv.Register("erin")
	wantOK(t, alice.Do("PUT", csAPI+"/profile/"+url.PathEscape(alice.UserID)+"/displayname", map[string]any{"displayname": "Alice"}), nil)
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	bob.Join(room)
	bob.SendText(room, "before carol")
	before, nextBefore := syncRoom(t, bob, room, 1)
	carol.Join(room)
	inviteUser(t, alice, room, dave.UserID)
	erin.Join(room)
	leaveRoom(t, erin, room)

	type membersReply struct {
		Chunk []clientEvent `json:"chunk"`
	}
	members := func(t *testing.T, q url.Values) map[string]string {
		t.Helper()
		var out membersReply
		wantOK(t, bob.Do("GET", roomPath(room, "members")+"?"+q.Encode(), nil), &out)
		m := map[string]string{}
		for _, ev := range out.Chunk {
			if ev.Type != "m.room.member" || ev.StateKey == nil {
				t.Fatalf("non-member event in chunk: %v", ev)
			}
			m[*ev.StateKey] = ev.membership()
		}
		return m
	}
	all := map[string]string{alice.UserID: "join", bob.UserID: "join", carol.UserID: "join", dave.UserID: "invite", erin.UserID: "leave"}
	tests := []struct {
		name string
		q    url.Values
		want map[string]string
	}{
		{"all", query(), all},
		{"membership=join", query("membership", "join"), map[string]string{alice.UserID: "join", bob.UserID: "join", carol.UserID: "join"}},
		{"membership=invite", query("membership", "invite"), map[string]string{dave.UserID: "invite"}},
		{"not_membership=join", query("not_membership", "join"), map[string]string{dave.UserID: "invite", erin.UserID: "leave"}},
		{"not_membership=leave", query("not_membership", "leave"), map[string]string{alice.UserID: "join", bob.UserID: "join", carol.UserID: "join", dave.UserID: "invite"}},
		// spec: at "can be obtained from a prev_batch token returned for
		// each room by the sync API".
		{"at prev_batch", query("at", before.PrevBatch), map[string]string{alice.UserID: "join", bob.UserID: "join"}},
		{"at next_batch", query("at", nextBefore), map[string]string{alice.UserID: "join", bob.UserID: "join"}},
		{"at next_batch, joined only", query("at", nextBefore, "membership", "join"), map[string]string{alice.UserID: "join", bob.UserID: "join"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := members(t, tc.q); !mapsEqual(got, tc.want) {
				t.Errorf("members = %v, want %v", got, tc.want)
			}
		})
	}
	// The member events are whole client events.
	var out membersReply
	wantOK(t, bob.Do("GET", roomPath(room, "members")+"?membership=join", nil), &out)
	for _, ev := range out.Chunk {
		if ev.EventID == "" || ev.RoomID != room || ev.Sender == "" {
			t.Errorf("incomplete member event %+v", ev)
		}
		if *ev.StateKey == alice.UserID && ev.Content["displayname"] != "Alice" {
			t.Errorf("alice's member content = %v", ev.Content)
		}
	}
	// A user who left sees the members as they were when they left.
	var left membersReply
	wantOK(t, erin.Do("GET", roomPath(room, "members"), nil), &left)
	if len(left.Chunk) != len(all) {
		t.Errorf("erin sees %d members, want %d", len(left.Chunk), len(all))
	}
	stranger := srv.Register("stranger")
	wantErr(t, stranger.Do("GET", roomPath(room, "members"), nil), http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, bob.Do("GET", roomPath(room, "members")+"?at=nonsense", nil), http.StatusBadRequest, "M_INVALID_PARAM")

	// A later joiner of a room hiding earlier history may not see the
	// members before their join (as Synapse: 403, even at the prev_batch
	// of a timeline that starts with the join), and sees them from it on.
	t.Run("at a point the user may not see", func(t *testing.T) {
		hidden := alice.CreateRoom(map[string]any{"preset": "public_chat", "initial_state": []map[string]any{
			{"type": "m.room.history_visibility", "content": map[string]any{"history_visibility": "joined"}}}})
		alice.SendText(hidden, "before the stranger")
		_, early := syncRoom(t, alice, hidden, 1)
		stranger.Join(hidden)
		wantErr(t, stranger.Do("GET", roomPath(hidden, "members")+"?at="+url.QueryEscape(early), nil), http.StatusForbidden, "M_FORBIDDEN")
		tl, next := syncRoom(t, stranger, hidden, 1)
		wantErr(t, stranger.Do("GET", roomPath(hidden, "members")+"?at="+url.QueryEscape(tl.PrevBatch), nil), http.StatusForbidden, "M_FORBIDDEN")
		var out membersReply
		wantOK(t, stranger.Do("GET", roomPath(hidden, "members")+"?at="+url.QueryEscape(next), nil), &out)
		if len(out.Chunk) != 2 {
			t.Errorf("members at the stranger's next_batch: %d, want alice and the stranger", len(out.Chunk))
		}
	})

	t.Run("joined_members", func(t *testing.T) {
		var jm struct {
			Joined map[string]struct {
				DisplayName *string `json:"display_name"`
				AvatarURL   *string `json:"avatar_url"`
			} `json:"joined"`
		}
		wantOK(t, bob.Do("GET", roomPath(room, "joined_members"), nil), &jm)
		var got []string
		for u := range jm.Joined {
			got = append(got, u)
		}
		slices.Sort(got)
		want := []string{alice.UserID, bob.UserID, carol.UserID}
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("joined = %q, want %q", got, want)
		}
		if a := jm.Joined[alice.UserID]; a.DisplayName == nil || *a.DisplayName != "Alice" {
			t.Errorf("alice's display_name = %v", a.DisplayName)
		}
		wantErr(t, stranger.Do("GET", roomPath(room, "joined_members"), nil), http.StatusForbidden, "M_FORBIDDEN")
		wantErr(t, dave.Do("GET", roomPath(room, "joined_members"), nil), http.StatusForbidden, "M_FORBIDDEN")
		wantErr(t, erin.Do("GET", roomPath(room, "joined_members"), nil), http.StatusForbidden, "M_FORBIDDEN")
	})
}

// TestMembersAtInitialPrevBatch is Complement's TestGetRoomMembersAtPoint:
// the members at the prev_batch of an initial sync whose timeline holds
// the whole new room are its creator, not the later joiner.
func TestMembersAtInitialPrevBatch(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	alice.SendText(room, "Hello world!")
	var out struct {
		Rooms struct {
			Join map[string]struct {
				Timeline syncTimeline `json:"timeline"`
			} `json:"join"`
		} `json:"rooms"`
	}
	wantOK(t, alice.Do("GET", csAPI+"/sync?timeout=0", nil), &out)
	tl := out.Rooms.Join[room].Timeline
	if len(tl.Events) == 0 || tl.Events[0].Type != "m.room.create" {
		t.Fatalf("the timeline does not begin at m.room.create: %v", tl.Events)
	}
	bob.Join(room)
	bob.SendText(room, "Hello back")
	var members struct {
		Chunk []clientEvent `json:"chunk"`
	}
	wantOK(t, alice.Do("GET", roomPath(room, "members")+"?at="+url.QueryEscape(tl.PrevBatch), nil), &members)
	var got []string
	for _, ev := range members.Chunk {
		if ev.RoomID != room {
			t.Errorf("member event of room %s", ev.RoomID)
		}
		got = append(got, *ev.StateKey)
	}
	if !slices.Equal(got, []string{alice.UserID}) {
		t.Errorf("members at prev_batch = %q, want the creator alone", got)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestHistoryVisibility checks what a late joiner sees of the history
// before they joined (spec: "History visibility").
func TestHistoryVisibility(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	tests := []struct {
		visibility string
		want       []string // messages the late joiner sees
		// seenBefore: the joiner may fetch the first message with /event.
		seenBefore bool
		// public: anyone may read /messages and /state without joining.
		public bool
	}{
		{"joined", []string{"after join"}, false, false},
		{"invited", []string{"while invited", "after join"}, false, false},
		{"shared", []string{"before invite", "while invited", "after join"}, true, false},
		{"world_readable", []string{"before invite", "while invited", "after join"}, true, true},
	}
	for _, tc := range tests {
		bob, stranger := srv.Register("bob"), srv.Register("stranger")
		t.Run(tc.visibility, func(t *testing.T) {
			t.Parallel()
			room := createRoom(t, alice, map[string]any{"preset": "private_chat", "initial_state": []map[string]any{
				{"type": "m.room.history_visibility", "content": map[string]any{"history_visibility": tc.visibility}},
			}})
			first := sendText(t, alice, room, "before invite")
			inviteUser(t, alice, room, bob.UserID)
			sendText(t, alice, room, "while invited")
			joinRoom(t, bob, room)
			sendText(t, alice, room, "after join")

			got := messages(t, bob, room, query("dir", "f", "limit", "100"))
			if b := bodies(got.Chunk); !slices.Equal(b, tc.want) {
				t.Errorf("late joiner sees %q, want %q", b, tc.want)
			}
			if !slices.ContainsFunc(got.Chunk, func(ev clientEvent) bool {
				return ev.Type == "m.room.member" && ev.StateKey != nil && *ev.StateKey == bob.UserID && ev.membership() == "join"
			}) {
				t.Error("late joiner does not see their own join")
			}
			back := messages(t, bob, room, query("dir", "b", "limit", "100"))
			if b := bodies(back.Chunk); !slices.Equal(b, reversedStrings(tc.want)) {
				t.Errorf("dir=b: late joiner sees %q", b)
			}
			r := bob.Do("GET", roomPath(room, "event", first), nil)
			if tc.seenBefore {
				wantOK(t, r, nil)
			} else {
				wantErr(t, r, http.StatusNotFound, "M_NOT_FOUND")
			}
			r = bob.Do("GET", roomPath(room, "context", first), nil)
			if tc.seenBefore {
				wantOK(t, r, nil)
			} else {
				wantErr(t, r, http.StatusNotFound, "M_NOT_FOUND")
			}

			// Non-members.
			r = stranger.Do("GET", roomPath(room, "messages")+"?dir=b&limit=100", nil)
			rs := stranger.Do("GET", roomPath(room, "state"), nil)
			re := stranger.Do("GET", roomPath(room, "event", first), nil)
			if tc.public {
				var p messagesPage
				wantOK(t, r, &p)
				if b := bodies(p.Chunk); !slices.Equal(b, reversedStrings(tc.want)) {
					t.Errorf("stranger sees %q", b)
				}
				var st []clientEvent
				wantOK(t, rs, &st)
				if stateEvent(st, "m.room.member", bob.UserID) == nil {
					t.Error("stranger's /state lacks bob")
				}
				wantOK(t, re, nil)
			} else {
				wantErr(t, r, http.StatusForbidden, "M_FORBIDDEN")
				wantErr(t, rs, http.StatusForbidden, "M_FORBIDDEN")
				wantErr(t, re, http.StatusNotFound, "M_NOT_FOUND")
			}
		})
	}
}

func reversedStrings(s []string) []string {
	out := slices.Clone(s)
	slices.Reverse(out)
	return out
}

// TestHistoryAfterLeaving: members who left see events up to their leave
// and the state as it was then; not what came after.
func TestHistoryAfterLeaving(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	for _, how := range []string{"leave", "kick", "ban"} {
		bob := srv.Register("bob")
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			room := createRoom(t, alice, map[string]any{"preset": "public_chat", "name": "Old name"})
			joinRoom(t, bob, room)
			sendText(t, alice, room, "while joined")
			switch how {
			case "leave":
				leaveRoom(t, bob, room)
			default:
				wantOK(t, alice.Do("POST", roomPath(room, how), map[string]any{"user_id": bob.UserID}), nil)
			}
			after := sendText(t, alice, room, "after leaving")
			putState(t, alice, room, "m.room.name", "", map[string]any{"name": "New name"})

			p := messages(t, bob, room, query("dir", "b", "limit", "100"))
			if b := bodies(p.Chunk); !slices.Equal(b, []string{"while joined"}) {
				t.Errorf("bob sees %q, want only what came before he left", b)
			}
			f := messages(t, bob, room, query("dir", "f", "limit", "100"))
			if b := bodies(f.Chunk); !slices.Equal(b, []string{"while joined"}) {
				t.Errorf("dir=f: bob sees %q", b)
			}
			wantErr(t, bob.Do("GET", roomPath(room, "event", after), nil), http.StatusNotFound, "M_NOT_FOUND")
			if got := stateContent(t, bob, room, "m.room.name", "")["name"]; got != "Old name" {
				t.Errorf("bob's view of the name = %v, want the name when he left", got)
			}
			st := roomState(t, bob, room)
			if n := stateEvent(st, "m.room.name", ""); n == nil || n.Content["name"] != "Old name" {
				t.Errorf("bob's /state name = %v", n)
			}
			if m := stateEvent(st, "m.room.member", bob.UserID); m == nil || m.membership() == "join" {
				t.Errorf("bob's /state shows his membership as %v", m)
			}
			// Sending is over.
			r := bob.Do("PUT", roomPath(room, "send", "m.room.message", "late-"+how), map[string]any{"body": "x"})
			wantErr(t, r, http.StatusForbidden, "M_FORBIDDEN")
		})
	}
}
