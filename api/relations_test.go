package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/testserver"
)

const relAPI = "/_matrix/client/v1"

// relationsPage is a /relations or /threads reply.
type relationsPage struct {
	Chunk          []clientEvent `json:"chunk"`
	NextBatch      string        `json:"next_batch"`
	PrevBatch      string        `json:"prev_batch"`
	RecursionDepth *int          `json:"recursion_depth"`
}

func relationsPath(room, parent string, segs ...string) string {
	p := relAPI + "/rooms/" + url.PathEscape(room) + "/relations/" + url.PathEscape(parent)
	for _, s := range segs {
		p += "/" + url.PathEscape(s)
	}
	return p
}

// getRelations is GET /relations/{parent}[/{relType}[/{eventType}]].
func getRelations(t testing.TB, c *testserver.Client, room, parent string, q url.Values, segs ...string) relationsPage {
	t.Helper()
	var p relationsPage
	wantOK(t, c.Do("GET", relationsPath(room, parent, segs...)+"?"+q.Encode(), nil), &p)
	if p.Chunk == nil {
		t.Fatalf("/relations: no chunk")
	}
	return p
}

// getThreads is GET /rooms/{roomId}/threads.
func getThreads(t testing.TB, c *testserver.Client, room string, q url.Values) relationsPage {
	t.Helper()
	var p relationsPage
	wantOK(t, c.Do("GET", relAPI+"/rooms/"+url.PathEscape(room)+"/threads?"+q.Encode(), nil), &p)
	if p.Chunk == nil {
		t.Fatalf("/threads: no chunk")
	}
	return p
}

// relatesTo is an m.relates_to object; extra holds more key, value pairs.
func relatesTo(relType, parent string, extra ...string) map[string]any {
	m := map[string]any{"rel_type": relType, "event_id": parent}
	for i := 0; i+1 < len(extra); i += 2 {
		m[extra[i]] = extra[i+1]
	}
	return m
}

// threadReply sends a text message in the thread of root.
func threadReply(t testing.TB, c *testserver.Client, room, root, body string) string {
	t.Helper()
	return sendEvent(t, c, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": body,
		"m.relates_to": relatesTo("m.thread", root)})
}

// editText sends an edit of orig whose new body is body.
func editText(t testing.TB, c *testserver.Client, room, orig, body string) string {
	t.Helper()
	return sendEvent(t, c, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "* " + body,
		"m.new_content": map[string]any{"msgtype": "m.text", "body": body},
		"m.relates_to":  relatesTo("m.replace", orig)})
}

func redactEvent(t testing.TB, c *testserver.Client, room, id string) {
	t.Helper()
	wantOK(t, c.Do("PUT", roomPath(room, "redact", id, fmt.Sprintf("rx%d", testTxn.Add(1))), map[string]any{}), nil)
}

// bundle is unsigned."m.relations" of an event.
type bundle struct {
	Thread *struct {
		LatestEvent             clientEvent `json:"latest_event"`
		Count                   int         `json:"count"`
		CurrentUserParticipated bool        `json:"current_user_participated"`
	} `json:"m.thread"`
	Replace   *clientEvent `json:"m.replace"`
	Reference *struct {
		Chunk []struct {
			EventID string `json:"event_id"`
		} `json:"chunk"`
	} `json:"m.reference"`
	Annotation json.RawMessage `json:"m.annotation"`
}

func bundleOf(t testing.TB, ev clientEvent) bundle {
	t.Helper()
	var b bundle
	if raw, ok := ev.Unsigned["m.relations"]; ok {
		j, _ := json.Marshal(raw)
		if err := json.Unmarshal(j, &b); err != nil {
			t.Fatalf("m.relations of %s: %v", ev, err)
		}
	}
	return b
}

// summary writes a bundle as "thread=LATEST/COUNT/PARTICIPATED
// replace=ID refs=ID,ID", naming events through names, for comparisons.
func (b bundle) summary(names map[string]string) string {
	n := func(id string) string {
		if s, ok := names[id]; ok {
			return s
		}
		return id
	}
	var parts []string
	if b.Thread != nil {
		parts = append(parts, fmt.Sprintf("thread=%s/%d/%t", n(b.Thread.LatestEvent.EventID), b.Thread.Count, b.Thread.CurrentUserParticipated))
	}
	if b.Replace != nil {
		parts = append(parts, "replace="+n(b.Replace.EventID))
	}
	if b.Reference != nil {
		var refs []string
		for _, r := range b.Reference.Chunk {
			refs = append(refs, n(r.EventID))
		}
		parts = append(parts, "refs="+strings.Join(refs, ","))
	}
	if b.Annotation != nil {
		parts = append(parts, "annotation!") // never aggregated (spec)
	}
	return strings.Join(parts, " ")
}

func findEvent(evs []clientEvent, id string) (clientEvent, bool) {
	for _, ev := range evs {
		if ev.EventID == id {
			return ev, true
		}
	}
	return clientEvent{}, false
}

// TestRelations lists an event's children, filtered by relation type and
// event type (Complement: TestRelations).
func TestRelations(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	root := sendText(t, alice, room, "root")
	thread := threadReply(t, alice, room, root, "reply")
	dummy := sendEvent(t, alice, room, "m.dummy", map[string]any{"m.relates_to": relatesTo("m.thread", root)})
	edit := editText(t, alice, room, root, "edited root")
	react := sendEvent(t, alice, room, "m.reaction", map[string]any{"m.relates_to": relatesTo("m.annotation", root, "key", "👍")})
	custom := sendEvent(t, alice, room, "org.example.event", map[string]any{"m.relates_to": relatesTo("org.example.rel", root)})
	// Not relationships: a reply, a malformed m.relates_to, an unrelated message.
	sendEvent(t, alice, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "reply",
		"m.relates_to": map[string]any{"m.in_reply_to": map[string]any{"event_id": root}}})
	sendEvent(t, alice, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "bad",
		"m.relates_to": map[string]any{"rel_type": 5, "event_id": root}})
	sendText(t, alice, room, "unrelated")

	tests := []struct {
		segs []string
		want []string
	}{
		{nil, []string{custom, react, edit, dummy, thread}},
		{[]string{"m.thread"}, []string{dummy, thread}},
		{[]string{"m.thread", "m.room.message"}, []string{thread}},
		{[]string{"m.annotation"}, []string{react}},
		{[]string{"m.annotation", "m.reaction"}, []string{react}},
		{[]string{"m.replace"}, []string{edit}},
		{[]string{"org.example.rel"}, []string{custom}},
		{[]string{"m.reference"}, []string{}},
		{[]string{"m.thread", "m.reaction"}, []string{}},
	}
	for _, tc := range tests {
		t.Run(strings.Join(append([]string{"root"}, tc.segs...), "/"), func(t *testing.T) {
			p := getRelations(t, alice, room, root, nil, tc.segs...)
			if got := eventIDs(p.Chunk); !slices.Equal(got, tc.want) {
				t.Errorf("chunk = %q, want %q", got, tc.want)
			}
			if p.NextBatch != "" || p.PrevBatch != "" || p.RecursionDepth != nil {
				t.Errorf("next_batch %q, prev_batch %q, recursion_depth %v on a single page without recurse", p.NextBatch, p.PrevBatch, p.RecursionDepth)
			}
		})
	}
	// The children are whole client events.
	p := getRelations(t, alice, room, root, nil, "m.replace")
	if ev := p.Chunk[0]; ev.Type != "m.room.message" || ev.Sender != alice.UserID || ev.RoomID != room || ev.Content["body"] != "* edited root" {
		t.Errorf("edit in /relations = %+v", ev)
	}
	if p := getRelations(t, alice, room, thread, nil); len(p.Chunk) != 0 {
		t.Errorf("children of a childless event: %v", p.Chunk)
	}
}

// TestRelationsPagination pages both ways with next_batch, and bounds the
// children by a sync token (Complement: TestRelationsPagination,
// TestRelationsPaginationSync).
func TestRelationsPagination(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	root := sendText(t, alice, room, "root")
	var first, second []string
	for i := range 5 {
		first = append(first, threadReply(t, alice, room, root, fmt.Sprintf("first %d", i)))
	}
	_, token := syncRoom(t, alice, room, 1)
	for i := range 5 {
		second = append(second, threadReply(t, alice, room, root, fmt.Sprintf("second %d", i)))
	}
	all := append(slices.Clone(first), second...)
	backwards := reversedStrings(all)

	tests := []struct {
		name  string
		query url.Values
		want  []string
	}{
		{"backwards by 3", query("limit", "3"), backwards},
		{"forwards by 3", query("limit", "3", "dir", "f"), all},
		{"backwards by 4, rel type", query("limit", "4", "dir", "b"), backwards},
		{"forwards up to a sync token", query("limit", "3", "dir", "f", "to", token), first},
		{"backwards down to a sync token", query("limit", "3", "to", token), reversedStrings(second)},
		{"backwards from a sync token", query("limit", "2", "from", token), reversedStrings(first)},
		{"forwards from a sync token", query("limit", "2", "dir", "f", "from", token), second},
		{"default limit", query(), backwards},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			q := tc.query
			for pages := 0; ; pages++ {
				if pages > len(all) {
					t.Fatalf("no end after %d pages: %q", pages, got)
				}
				p := getRelations(t, alice, room, root, q, "m.thread")
				if from := q.Get("from"); p.PrevBatch != from {
					t.Errorf("prev_batch = %q, want the from token %q", p.PrevBatch, from)
				}
				got = append(got, eventIDs(p.Chunk)...)
				if p.NextBatch == "" {
					break
				}
				q = cloneQuery(q)
				q.Set("from", p.NextBatch)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("pages = %q, want %q", got, tc.want)
			}
		})
	}
	// A /messages token works as from.
	msgs := messages(t, alice, room, query("dir", "b", "limit", "5"))
	p := getRelations(t, alice, room, root, query("from", *msgs.End, "limit", "10"))
	if want := reversedStrings(all[:5]); !slices.Equal(eventIDs(p.Chunk), want) {
		t.Errorf("from a /messages end token: %q, want %q", eventIDs(p.Chunk), want)
	}
}

func cloneQuery(q url.Values) url.Values {
	out := url.Values{}
	for k, v := range q {
		out[k] = slices.Clone(v)
	}
	return out
}

// TestRelationsRecurse follows children of children up to three levels,
// applying the filters at every level (spec: "Relationships API").
func TestRelationsRecurse(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	root := sendText(t, alice, room, "root")
	a := threadReply(t, alice, room, root, "a")                                                                            // level 1
	b := sendEvent(t, alice, room, "m.reaction", map[string]any{"m.relates_to": relatesTo("m.annotation", a, "key", "x")}) // 2
	c := sendEvent(t, alice, room, "org.example", map[string]any{"m.relates_to": relatesTo("m.reference", b)})             // 3
	sendEvent(t, alice, room, "org.example", map[string]any{"m.relates_to": relatesTo("m.reference", c)})                  // 4: too deep
	e := sendEvent(t, alice, room, "org.example", map[string]any{"m.relates_to": relatesTo("m.reference", root)})          // 1

	depth := func(n int) *int { return &n }
	tests := []struct {
		name  string
		query url.Values
		segs  []string
		want  []string
		depth *int
	}{
		{"direct", query(), nil, []string{e, a}, nil},
		{"recurse=false", query("recurse", "false"), nil, []string{e, a}, depth(1)},
		{"recurse=true", query("recurse", "true"), nil, []string{e, c, b, a}, depth(3)},
		{"recurse forwards", query("recurse", "true", "dir", "f"), nil, []string{a, b, c, e}, depth(3)},
		{"recurse paged", query("recurse", "true", "limit", "3"), nil, []string{e, c, b}, depth(3)},
		// c references b, but b reaches the root through non-references.
		{"recurse by rel type", query("recurse", "true"), []string{"m.reference"}, []string{e}, depth(3)},
		{"recurse by event type", query("recurse", "true"), []string{"m.thread", "m.room.message"}, []string{a}, depth(3)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := getRelations(t, alice, room, root, tc.query, tc.segs...)
			if got := eventIDs(p.Chunk); !slices.Equal(got, tc.want) {
				t.Errorf("chunk = %q, want %q", got, tc.want)
			}
			switch {
			case tc.depth == nil && p.RecursionDepth != nil:
				t.Errorf("recursion_depth = %d without recurse", *p.RecursionDepth)
			case tc.depth != nil && (p.RecursionDepth == nil || *p.RecursionDepth != *tc.depth):
				t.Errorf("recursion_depth = %v, want %d", p.RecursionDepth, *tc.depth)
			}
		})
	}
}

// TestRelationsAccess: who may list relations and threads, and the errors
// of malformed requests.
func TestRelationsAccess(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob, carol := srv.Register("alice"), srv.Register("bob"), srv.Register("carol")
	room := createRoom(t, alice, map[string]any{"preset": "private_chat"})
	other := createRoom(t, alice, map[string]any{"preset": "private_chat"})
	inviteUser(t, alice, room, carol.UserID)
	joinRoom(t, carol, room)
	root := sendText(t, alice, room, "root")
	seen := threadReply(t, alice, room, root, "seen")
	leaveRoom(t, carol, room)
	threadReply(t, alice, room, root, "after carol left")
	elsewhere := sendText(t, alice, other, "elsewhere")

	// A departed member sees the thread as it was when they left.
	if p := getRelations(t, carol, room, root, nil); !slices.Equal(eventIDs(p.Chunk), []string{seen}) {
		t.Errorf("carol, who left: %q, want only %s", eventIDs(p.Chunk), seen)
	}
	if p := getThreads(t, carol, room, nil); len(p.Chunk) != 1 || bundleOf(t, p.Chunk[0]).Thread == nil {
		t.Errorf("carol's /threads = %+v", p.Chunk)
	}
	rel := func(parent string) string { return relationsPath(room, parent) }
	threads := relAPI + "/rooms/" + url.PathEscape(room) + "/threads"
	tests := []struct {
		name   string
		c      *testserver.Client
		path   string
		status int
		code   string
	}{
		{"not a member", bob, rel(root), http.StatusNotFound, "M_NOT_FOUND"},
		{"unknown event", alice, rel("$nope"), http.StatusNotFound, "M_NOT_FOUND"},
		{"event of another room", alice, rel(elsewhere), http.StatusNotFound, "M_NOT_FOUND"},
		{"malformed event ID", alice, rel("nope"), http.StatusBadRequest, "M_INVALID_PARAM"},
		{"bad dir", alice, rel(root) + "?dir=x", http.StatusBadRequest, "M_INVALID_PARAM"},
		{"bad recurse", alice, rel(root) + "?recurse=yes", http.StatusBadRequest, "M_INVALID_PARAM"},
		{"bad from", alice, rel(root) + "?from=junk", http.StatusBadRequest, "M_INVALID_PARAM"},
		{"bad limit", alice, rel(root) + "?limit=-1", http.StatusBadRequest, "M_INVALID_PARAM"},
		{"threads, not a member", bob, threads, http.StatusForbidden, "M_FORBIDDEN"},
		{"threads, bad include", alice, threads + "?include=some", http.StatusBadRequest, "M_INVALID_PARAM"},
		{"threads, bad from", alice, threads + "?from=junk", http.StatusBadRequest, "M_INVALID_PARAM"},
		{"threads, zero limit", alice, threads + "?limit=0", http.StatusBadRequest, "M_INVALID_PARAM"},
		{"no token", srv.Anonymous(), rel(root), http.StatusUnauthorized, "M_MISSING_TOKEN"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, tc.c.Do("GET", tc.path, nil), tc.status, tc.code)
		})
	}
}

// TestBundledAggregations: thread summaries, the latest valid edit and
// references ride along in unsigned."m.relations" wherever events are
// served, per viewer; the original content is left alone.
func TestBundledAggregations(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
	srv := testserver.Start(t, testserver.Options{Clock: clk})
	alice, bob, carol := srv.Register("alice"), srv.Register("bob"), srv.Register("carol")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, bob, room)
	joinRoom(t, carol, room)
	tick := func() { clk.Advance(time.Second) }

	root := sendText(t, alice, room, "original")
	tick()
	t1 := threadReply(t, bob, room, root, "t1")
	tick()
	t2 := threadReply(t, alice, room, root, "t2")
	tick()
	e1 := editText(t, alice, room, root, "first edit")
	tick()
	e2 := editText(t, alice, room, root, "second edit")
	tick()
	// Invalid edits, all newer: another sender, another type, no m.new_content.
	editText(t, bob, room, root, "bob's edit")
	sendEvent(t, alice, room, "org.example", map[string]any{"m.new_content": map[string]any{"body": "x"},
		"m.relates_to": relatesTo("m.replace", root)})
	sendEvent(t, alice, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "* no new content",
		"m.relates_to": relatesTo("m.replace", root)})
	tick()
	ref := sendEvent(t, carol, room, "org.example", map[string]any{"m.relates_to": relatesTo("m.reference", root)})
	sendEvent(t, carol, room, "m.reaction", map[string]any{"m.relates_to": relatesTo("m.annotation", root, "key", "👍")})
	t2edit := editText(t, alice, room, t2, "t2 edited")
	names := map[string]string{root: "root", t1: "t1", t2: "t2", e1: "e1", e2: "e2", ref: "ref", t2edit: "t2edit"}

	wantRoot := map[*testserver.Client]string{
		alice: "thread=t2/2/true replace=e2 refs=ref", // alice sent the root
		bob:   "thread=t2/2/true replace=e2 refs=ref", // bob replied
		carol: "thread=t2/2/false replace=e2 refs=ref",
	}
	check := func(t *testing.T, c *testserver.Client, where string, ev clientEvent) {
		t.Helper()
		b := bundleOf(t, ev)
		if got := b.summary(names); got != wantRoot[c] {
			t.Errorf("%s: root bundle for %s = %q, want %q", where, c.UserID, got, wantRoot[c])
		}
		if ev.Content["body"] != "original" {
			t.Errorf("%s: root content = %v: the server must not apply edits (spec v1.7)", where, ev.Content)
		}
		if b.Replace != nil {
			nc, _ := b.Replace.Content["m.new_content"].(map[string]any)
			if b.Replace.Sender != alice.UserID || nc["body"] != "second edit" || b.Replace.OriginServerTS == 0 {
				t.Errorf("%s: m.replace = %+v, want the whole edit event", where, *b.Replace)
			}
		}
		if b.Thread != nil {
			if got := bundleOf(t, b.Thread.LatestEvent).summary(names); got != "replace=t2edit" || b.Thread.LatestEvent.Content["body"] != "t2" {
				t.Errorf("%s: latest_event %v with bundle %q, want t2 with its edit bundled", where, b.Thread.LatestEvent.Content, got)
			}
		}
	}
	for _, c := range []*testserver.Client{alice, bob, carol} {
		check(t, c, "/event", getEvent(t, c, room, root))
		var ctx struct {
			Event        clientEvent   `json:"event"`
			EventsBefore []clientEvent `json:"events_before"`
		}
		wantOK(t, c.Do("GET", roomPath(room, "context", t1)+"?limit=4", nil), &ctx)
		if ev, ok := findEvent(ctx.EventsBefore, root); !ok {
			t.Errorf("/context of t1 lacks the root")
		} else {
			check(t, c, "/context", ev)
		}
		msgs := messages(t, c, room, query("dir", "b", "limit", "50"))
		if ev, ok := findEvent(msgs.Chunk, root); !ok {
			t.Errorf("/messages lacks the root")
		} else {
			check(t, c, "/messages", ev)
		}
		tl, _ := syncRoom(t, c, room, 50)
		if ev, ok := findEvent(tl.Events, root); !ok {
			t.Errorf("/sync lacks the root")
		} else {
			check(t, c, "/sync", ev)
		}
		th := getThreads(t, c, room, nil)
		if len(th.Chunk) != 1 || th.Chunk[0].EventID != root {
			t.Fatalf("/threads = %v", th.Chunk)
		}
		check(t, c, "/threads", th.Chunk[0])
	}
	// In /relations, children carry their own bundles.
	p := getRelations(t, carol, room, root, nil, "m.thread")
	if ev, _ := findEvent(p.Chunk, t2); bundleOf(t, ev).summary(names) != "replace=t2edit" {
		t.Errorf("t2 in /relations: bundle %q", bundleOf(t, ev).summary(names))
	}
	// Edits and annotations get no bundle of their own; neither do state events.
	if b := bundleOf(t, getEvent(t, alice, room, e2)); b.summary(names) != "" {
		t.Errorf("an edit got a bundle: %q", b.summary(names))
	}

	// Two edits at the same origin_server_ts: the larger event ID wins.
	e3, e4 := editText(t, alice, room, root, "tie a"), editText(t, alice, room, root, "tie b")
	if got, want := bundleOf(t, getEvent(t, carol, room, root)).Replace.EventID, max(e3, e4); got != want {
		t.Errorf("m.replace with tied timestamps = %s, want the larger ID %s", got, want)
	}

	// An incremental sync that is not limited bundles nothing: the client
	// has the children (spec: bundles go with limited timelines).
	_, since := syncRoom(t, carol, room, 50)
	root2 := sendText(t, alice, room, "root2")
	threadReply(t, alice, room, root2, "in root2")
	var inc struct {
		Rooms struct {
			Join map[string]struct {
				Timeline syncTimeline `json:"timeline"`
			} `json:"join"`
		} `json:"rooms"`
	}
	wantOK(t, carol.Do("GET", csAPI+"/sync?timeout=0&since="+url.QueryEscape(since), nil), &inc)
	tl := inc.Rooms.Join[room].Timeline
	if ev, ok := findEvent(tl.Events, root2); !ok || tl.Limited {
		t.Fatalf("incremental sync: root2 missing or limited: %+v", tl)
	} else if s := bundleOf(t, ev).summary(names); s != "" {
		t.Errorf("unlimited incremental sync bundled %q", s)
	}
	if s := bundleOf(t, getEvent(t, carol, room, root2)).summary(nil); !strings.HasPrefix(s, "thread=") {
		t.Errorf("root2 via /event: %q", s)
	}
}

// TestBundledAggregationsRedactions: a redacted child breaks its
// relationship, and a redacted original loses its edits.
func TestBundledAggregationsRedactions(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
	srv := testserver.Start(t, testserver.Options{Clock: clk})
	alice, bob, carol := srv.Register("alice"), srv.Register("bob"), srv.Register("carol")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, bob, room)
	joinRoom(t, carol, room)
	root := sendText(t, alice, room, "original")
	t1 := threadReply(t, bob, room, root, "t1")
	t2 := threadReply(t, carol, room, root, "t2")
	e1 := editText(t, alice, room, root, "first edit")
	clk.Advance(time.Second)
	e2 := editText(t, alice, room, root, "second edit")
	ref1 := sendEvent(t, bob, room, "org.example", map[string]any{"m.relates_to": relatesTo("m.reference", root)})
	ref2 := sendEvent(t, carol, room, "org.example", map[string]any{"m.relates_to": relatesTo("m.reference", root)})
	names := map[string]string{root: "root", t1: "t1", t2: "t2", e1: "e1", e2: "e2", ref1: "ref1", ref2: "ref2"}

	steps := []struct {
		redact  string
		want    string // root's bundle as carol sees it
		threads int    // rooms in /threads
		edits   int    // m.replace children in /relations
	}{
		{"", "thread=t2/2/true replace=e2 refs=ref1,ref2", 1, 2},
		{e2, "thread=t2/2/true replace=e1 refs=ref1,ref2", 1, 1},
		{t2, "thread=t1/1/false replace=e1 refs=ref1,ref2", 1, 1},
		{ref1, "thread=t1/1/false replace=e1 refs=ref2", 1, 1},
		{t1, "replace=e1 refs=ref2", 0, 1},
		{root, "refs=ref2", 0, 0}, // edits of a redacted event are not bundled, nor listed
	}
	for _, st := range steps {
		if st.redact != "" {
			redactEvent(t, alice, room, st.redact)
		}
		if got := bundleOf(t, getEvent(t, carol, room, root)).summary(names); got != st.want {
			t.Errorf("after redacting %s: bundle %q, want %q", names[st.redact], got, st.want)
		}
		if got := len(getThreads(t, carol, room, nil).Chunk); got != st.threads {
			t.Errorf("after redacting %s: %d threads, want %d", names[st.redact], got, st.threads)
		}
		if got := len(getRelations(t, carol, room, root, nil, "m.replace").Chunk); got != st.edits {
			t.Errorf("after redacting %s: %d edits listed, want %d", names[st.redact], got, st.edits)
		}
	}
}

// TestThreadsList orders threads by their latest event, filters those the
// user took part in and pages (Complement: TestThreadsEndpoint).
func TestThreadsList(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, bob, room)
	r1 := sendText(t, alice, room, "thread 1")
	r2 := sendText(t, bob, room, "thread 2")
	r3 := sendText(t, alice, room, "thread 3")
	sendText(t, alice, room, "no thread")
	a1 := threadReply(t, alice, room, r1, "a1")
	b2 := threadReply(t, alice, room, r2, "b2")
	x3 := threadReply(t, alice, room, r3, "x3")
	c3 := threadReply(t, bob, room, r3, "c3")
	// key lists the threads as root|latest.
	key := func(p relationsPage) []string {
		var out []string
		for _, ev := range p.Chunk {
			latest := ""
			if b := bundleOf(t, ev); b.Thread != nil {
				latest = b.Thread.LatestEvent.EventID
			}
			out = append(out, ev.EventID+"|"+latest)
		}
		return out
	}
	if got, want := key(getThreads(t, alice, room, nil)), []string{r3 + "|" + c3, r2 + "|" + b2, r1 + "|" + a1}; !slices.Equal(got, want) {
		t.Fatalf("threads = %q, want %q", got, want)
	}
	a1b := threadReply(t, alice, room, r1, "a1 again")

	tests := []struct {
		name string
		c    *testserver.Client
		q    url.Values
		want []string
	}{
		{"all", alice, query(), []string{r1 + "|" + a1b, r3 + "|" + c3, r2 + "|" + b2}},
		{"all explicitly", bob, query("include", "all"), []string{r1 + "|" + a1b, r3 + "|" + c3, r2 + "|" + b2}},
		{"bob participated", bob, query("include", "participated"), []string{r3 + "|" + c3, r2 + "|" + b2}},
		{"alice participated", alice, query("include", "participated"), []string{r1 + "|" + a1b, r3 + "|" + c3, r2 + "|" + b2}},
		{"paged by 1", alice, query("limit", "1"), []string{r1 + "|" + a1b, r3 + "|" + c3, r2 + "|" + b2}},
		{"participated paged by 1", bob, query("limit", "1", "include", "participated"), []string{r3 + "|" + c3, r2 + "|" + b2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			q := tc.q
			for pages := 0; ; pages++ {
				if pages > 5 {
					t.Fatalf("no end of pages: %q", got)
				}
				p := getThreads(t, tc.c, room, q)
				got = append(got, key(p)...)
				if p.NextBatch == "" {
					break
				}
				q = cloneQuery(q)
				q.Set("from", p.NextBatch)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("threads = %q, want %q", got, tc.want)
			}
		})
	}

	// Ignoring bob: his thread root comes back redacted, his replies leave
	// the summaries (spec: threads_list, m.thread aggregation).
	wantOK(t, alice.Do("PUT", csAPI+"/user/"+url.PathEscape(alice.UserID)+"/account_data/m.ignored_user_list",
		map[string]any{"ignored_users": map[string]any{bob.UserID: map[string]any{}}}), nil)
	p := getThreads(t, alice, room, nil)
	if got, want := key(p), []string{r1 + "|" + a1b, r3 + "|" + x3, r2 + "|" + b2}; !slices.Equal(got, want) {
		t.Errorf("threads while ignoring bob = %q, want %q", got, want)
	}
	if ev, _ := findEvent(p.Chunk, r2); len(ev.Content) != 0 || ev.Sender != bob.UserID {
		t.Errorf("bob's thread root while ignored = %+v, want it redacted", ev)
	}
	if ev, _ := findEvent(p.Chunk, r3); bundleOf(t, ev).Thread.Count != 1 {
		t.Errorf("thread 3 counts bob's reply while he is ignored: %+v", bundleOf(t, ev).Thread)
	}
}

// TestSendRelationChecks: no thread from an event that has a relationship,
// no duplicate annotations (spec: "Validation of m.thread relationships",
// "Avoiding duplicate annotations").
func TestSendRelationChecks(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, bob, room)
	root := sendText(t, alice, room, "root")
	reply := threadReply(t, alice, room, root, "reply")
	edit := editText(t, alice, room, root, "edit")
	react := func(c *testserver.Client, typ, key string) *testserver.Response {
		return c.Do("PUT", roomPath(room, "send", typ, fmt.Sprintf("rr%d", testTxn.Add(1))),
			map[string]any{"m.relates_to": relatesTo("m.annotation", root, "key", key)})
	}
	thread := func(parent string) *testserver.Response {
		return alice.Do("PUT", roomPath(room, "send", "m.room.message", fmt.Sprintf("rr%d", testTxn.Add(1))),
			map[string]any{"msgtype": "m.text", "body": "x", "m.relates_to": relatesTo("m.thread", parent)})
	}
	wantErr(t, thread(reply), http.StatusBadRequest, "M_UNKNOWN")
	wantErr(t, thread(edit), http.StatusBadRequest, "M_UNKNOWN")
	wantOK(t, thread(root), nil)

	var first struct {
		EventID string `json:"event_id"`
	}
	wantOK(t, react(alice, "m.reaction", "👍"), &first)
	wantErr(t, react(alice, "m.reaction", "👍"), http.StatusBadRequest, "M_DUPLICATE_ANNOTATION")
	wantOK(t, react(alice, "m.reaction", "👎"), nil)       // another key
	wantOK(t, react(bob, "m.reaction", "👍"), nil)         // another user
	wantOK(t, react(alice, "org.example.vote", "👍"), nil) // another type
	redactEvent(t, alice, room, first.EventID)
	wantOK(t, react(alice, "m.reaction", "👍"), nil) // the first is gone
	if got := len(getRelations(t, alice, room, root, nil, "m.annotation").Chunk); got != 4 {
		t.Errorf("%d annotations listed, want 4", got)
	}
}
