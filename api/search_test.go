package api_test

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/persistentchat/homeserver/testserver"
)

// searchReply is the room_events part of a /search reply.
type searchReply struct {
	Count      int      `json:"count"`
	Highlights []string `json:"highlights"`
	NextBatch  string   `json:"next_batch"`
	Results    []struct {
		Rank    float64     `json:"rank"`
		Result  clientEvent `json:"result"`
		Context *struct {
			Start       string `json:"start"`
			End         string `json:"end"`
			ProfileInfo map[string]struct {
				DisplayName string `json:"displayname"`
				AvatarURL   string `json:"avatar_url"`
			} `json:"profile_info"`
			EventsBefore []clientEvent `json:"events_before"`
			EventsAfter  []clientEvent `json:"events_after"`
		} `json:"context"`
	} `json:"results"`
	Groups map[string]map[string]struct {
		NextBatch string   `json:"next_batch"`
		Order     int      `json:"order"`
		Results   []string `json:"results"`
	} `json:"groups"`
	State map[string][]clientEvent `json:"state"`
}

// searchRaw posts a room_events search; nextBatch may be "".
func searchRaw(t testing.TB, c *testserver.Client, criteria map[string]any, nextBatch string) *testserver.Response {
	t.Helper()
	path := csAPI + "/search"
	if nextBatch != "" {
		path += "?next_batch=" + url.QueryEscape(nextBatch)
	}
	return c.Do("POST", path, map[string]any{"search_categories": map[string]any{"room_events": criteria}})
}

func search(t testing.TB, c *testserver.Client, criteria map[string]any, nextBatch string) searchReply {
	t.Helper()
	var out struct {
		SearchCategories struct {
			RoomEvents *searchReply `json:"room_events"`
		} `json:"search_categories"`
	}
	wantOK(t, searchRaw(t, c, criteria, nextBatch), &out)
	if out.SearchCategories.RoomEvents == nil {
		t.Fatalf("no room_events in the reply")
	}
	r := *out.SearchCategories.RoomEvents
	if r.Highlights == nil {
		t.Errorf("no highlights list")
	}
	return r
}

func (r searchReply) ids() []string {
	out := []string{}
	for _, res := range r.Results {
		out = append(out, res.Result.EventID)
	}
	return out
}

// term is a search for a term with the given extra criteria (key, value
// pairs).
func term(s string, kv ...any) map[string]any {
	m := map[string]any{"search_term": s}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return m
}

func searchRedact(t testing.TB, c *testserver.Client, room, id string) {
	t.Helper()
	wantOK(t, c.Do("PUT", roomPath(room, "redact", id, "r"+id), map[string]any{"reason": "test"}), nil)
}

func TestSearchFindsEvents(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	room := createRoom(t, alice, map[string]any{"preset": "private_chat"})
	other := createRoom(t, alice, map[string]any{"preset": "private_chat"})
	hello := sendText(t, alice, room, "hello, world")
	deploy := sendText(t, alice, room, "The deployment FAILED on staging")
	cafe := sendText(t, alice, room, "Café au lait?")
	hyphen := sendText(t, alice, room, "please e-mail the on-call")
	name := putState(t, alice, room, "m.room.name", "", map[string]any{"name": "Deploy war room"})
	topic := putState(t, alice, room, "m.room.topic", "", map[string]any{"topic": "incident handling"})
	elsewhere := sendText(t, alice, other, "hello from the other room")

	for _, c := range []struct {
		name     string
		criteria map[string]any
		want     []string // newest first (order recent)
		hl       []string // must be among the highlights
	}{
		{"body", term("hello"), []string{elsewhere, hello}, []string{"hello"}},
		{"all words must match", term("hello world"), []string{hello}, []string{"hello", "world"}},
		{"case and accents fold", term("CAFE"), []string{cafe}, []string{"cafe", "café"}},
		{"prefix of three letters or more", term("deplo"), []string{name, deploy}, []string{"deplo", "deployment"}},
		{"shorter words match whole words", term("he"), []string{}, nil},
		{"quoted phrase", term(`"failed on staging"`), []string{deploy}, nil},
		{"quoted words out of order", term(`"staging on failed"`), []string{}, nil},
		{"word with inner punctuation is a phrase", term("e-mail"), []string{hyphen}, nil},
		{"topic", term("incident"), []string{topic}, nil},
		{"keys: name only", term("deploy", "keys", []string{"content.name"}), []string{name}, nil},
		{"keys: body only", term("deploy", "keys", []string{"content.body"}), []string{deploy}, nil},
		{"keys: topic only", term("hello", "keys", []string{"content.topic"}), []string{}, nil},
		{"filter rooms", term("hello", "filter", map[string]any{"rooms": []string{other}}), []string{elsewhere}, nil},
		{"filter not_rooms", term("hello", "filter", map[string]any{"not_rooms": []string{other}}), []string{hello}, nil},
		{"filter types", term("deploy", "filter", map[string]any{"types": []string{"m.room.n*"}}), []string{name}, nil},
		{"filter not_types", term("deploy", "filter", map[string]any{"not_types": []string{"m.room.name"}}), []string{deploy}, nil},
		{"filter senders", term("hello", "filter", map[string]any{"senders": []string{alice.UserID}}), []string{elsewhere, hello}, nil},
		{"filter not_senders", term("hello", "filter", map[string]any{"not_senders": []string{alice.UserID}}), []string{}, nil},
		{"filter limit", term("hello", "filter", map[string]any{"limit": 1}, "order_by", "recent"), []string{elsewhere}, nil},
		{"operators are words", term("hello OR nothing"), []string{}, nil},
		{"syntax characters are separators", term(`hello* "world AND (x) NEAR/2 body:hello ^-`), []string{}, nil},
		{"only punctuation", term(`*** "" ()`), []string{}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.criteria["order_by"] = "recent"
			r := search(t, alice, c.criteria, "")
			if got := r.ids(); !slices.Equal(got, c.want) {
				t.Errorf("results %v, want %v", got, c.want)
			}
			if limited := c.criteria["filter"] != nil && c.criteria["filter"].(map[string]any)["limit"] != nil; !limited && r.Count != len(c.want) {
				t.Errorf("count %d, want %d", r.Count, len(c.want))
			}
			for _, w := range c.hl {
				if !slices.Contains(r.Highlights, w) {
					t.Errorf("highlights %v lack %q", r.Highlights, w)
				}
			}
		})
	}

	// A result is the event in client format (Complement TestSearch).
	r := search(t, alice, term("hello", "keys", []string{"content.body"}, "filter", map[string]any{"rooms": []string{room}}), "")
	if r.Count != 1 || len(r.Results) != 1 {
		t.Fatalf("count %d, %d results", r.Count, len(r.Results))
	}
	res := r.Results[0]
	if ev := res.Result; ev.EventID != hello || ev.RoomID != room || ev.Type != "m.room.message" || ev.Sender != alice.UserID || ev.Content["body"] != "hello, world" {
		t.Errorf("result %+v", ev)
	}
	if res.Rank <= 0 {
		t.Errorf("rank %v, want > 0", res.Rank)
	}
	if res.Context != nil || r.Groups != nil || r.State != nil || r.NextBatch != "" {
		t.Errorf("context, groups, state or next_batch that were not asked for: %+v", r)
	}
}

// Only events the searcher may see are found: never from rooms they were
// never in, not from before their join where history is "joined", not
// from after they left, and nothing once they forget the room.
func TestSearchVisibility(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	bob := srv.Register("bob")
	visibility := func(v string) map[string]any {
		return map[string]any{"preset": "public_chat", "initial_state": []map[string]any{
			{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": v}}}}
	}
	never := createRoom(t, alice, visibility("shared"))
	sendText(t, alice, never, "needle in a room bob never joined")
	worldReadable := createRoom(t, alice, visibility("world_readable"))
	sendText(t, alice, worldReadable, "needle in a world readable room")

	joined := createRoom(t, alice, visibility("joined"))
	sendText(t, alice, joined, "needle before bob joined")
	shared := createRoom(t, alice, visibility("shared"))
	sharedBefore := sendText(t, alice, shared, "needle shared before bob joined")
	joinRoom(t, bob, joined)
	joinRoom(t, bob, shared)
	joinedAfter := sendText(t, alice, joined, "needle after bob joined")
	sharedWhile := sendText(t, alice, shared, "needle while bob is in")

	left := createRoom(t, alice, visibility("shared"))
	joinRoom(t, bob, left)
	leftBefore := sendText(t, alice, left, "needle before bob left")
	leaveRoom(t, bob, left)
	sendText(t, alice, left, "needle after bob left")

	want := []string{leftBefore, sharedWhile, joinedAfter, sharedBefore}
	for _, order := range []string{"recent", "rank"} {
		r := search(t, bob, term("needle", "order_by", order), "")
		got := r.ids()
		if order == "rank" {
			sort.Slice(got, func(i, j int) bool { return slices.Index(want, got[i]) < slices.Index(want, got[j]) })
		}
		if !slices.Equal(got, want) || r.Count != len(want) {
			t.Errorf("order %s: bob found %v (count %d), want %v", order, r.ids(), r.Count, want)
		}
	}
	// Naming a room does not widen the search.
	if r := search(t, bob, term("needle", "filter", map[string]any{"rooms": []string{never, worldReadable}}), ""); r.Count != 0 {
		t.Errorf("bob found %v in rooms he never joined", r.ids())
	}
	// alice sees all eight.
	if r := search(t, alice, term("needle"), ""); r.Count != 8 {
		t.Errorf("alice found %d, want 8", r.Count)
	}
	wantOK(t, bob.Do("POST", roomPath(left, "forget"), map[string]any{}), nil)
	if r := search(t, bob, term("needle", "order_by", "recent"), ""); slices.Contains(r.ids(), leftBefore) {
		t.Errorf("found %s in a forgotten room", leftBefore)
	}
}

// Redacted events leave the index (Complement: "Search results with rank
// ordering do not include redacted events").
func TestSearchRedacted(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	room := createRoom(t, alice, map[string]any{"preset": "private_chat"})
	gone := sendText(t, alice, room, "This message is going to be redacted")
	kept := sendText(t, alice, room, "This message is not going to be redacted")
	name := putState(t, alice, room, "m.room.name", "", map[string]any{"name": "redacted name"})
	searchRedact(t, alice, room, gone)
	searchRedact(t, alice, room, name)
	for _, order := range []string{"rank", "recent"} {
		r := search(t, alice, term("redacted", "order_by", order), "")
		if got := r.ids(); !slices.Equal(got, []string{kept}) || r.Count != 1 {
			t.Errorf("order %s: %v (count %d), want [%s]", order, got, r.Count, kept)
		}
	}
}

// Paging with next_batch returns every result exactly once, in order, with
// the same count on every page, in both orders; events sent between pages
// do not shift them.
func TestSearchPagination(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	room := createRoom(t, alice, map[string]any{"preset": "private_chat"})
	other := createRoom(t, alice, map[string]any{"preset": "private_chat"})
	var sent []string
	for i := 0; i < 23; i++ {
		// Different lengths and repetitions give different ranks; some tie.
		body := fmt.Sprintf("message %d%s", i, strings.Repeat(" message", i%4)) + strings.Repeat(" filler", i%3)
		r := room
		if i%5 == 0 {
			r = other
		}
		sent = append(sent, sendText(t, alice, r, body))
	}
	sendText(t, alice, room, "unrelated")

	var late []string
	for _, order := range []string{"recent", "rank"} {
		sent = append(sent, late...)
		late = nil
		t.Run(order, func(t *testing.T) {
			sent := slices.Clone(sent)
			criteria := term("message", "order_by", order, "filter", map[string]any{"limit": 10})
			var got []string
			var ranks []float64
			next, pages := "", 0
			for {
				r := search(t, alice, criteria, next)
				pages++
				if r.Count != len(sent) {
					t.Errorf("page %d: count %d, want %d", pages, r.Count, len(sent))
				}
				for _, res := range r.Results {
					got = append(got, res.Result.EventID)
					ranks = append(ranks, res.Rank)
				}
				if pages == 1 {
					// Arrives after the first page: not part of this
					// search, but of the next.
					late = append(late, sendText(t, alice, room, "message arriving late, message message"))
				}
				if r.NextBatch == "" {
					if len(r.Results) == 0 && pages > 1 {
						t.Errorf("page %d is empty but the previous page had a next_batch", pages)
					}
					break
				}
				if len(r.Results) != 10 {
					t.Errorf("page %d has %d results and a next_batch", pages, len(r.Results))
				}
				next = r.NextBatch
			}
			if pages != 3 {
				t.Errorf("%d pages, want 3", pages)
			}
			seen := map[string]bool{}
			for _, id := range got {
				if seen[id] {
					t.Errorf("%s returned twice", id)
				}
				seen[id] = true
			}
			want := slices.Clone(sent)
			slices.Reverse(want)
			if order == "recent" {
				if !slices.Equal(got, want) {
					t.Errorf("got %v, want newest first %v", got, want)
				}
				return
			}
			if len(got) != len(sent) {
				t.Errorf("got %d results, want %d", len(got), len(sent))
			}
			for _, id := range sent {
				if !seen[id] {
					t.Errorf("%s never returned", id)
				}
			}
			for i := 1; i < len(ranks); i++ {
				if ranks[i] > ranks[i-1] {
					t.Errorf("rank %v after %v", ranks[i], ranks[i-1])
				}
				if ranks[i] == ranks[i-1] && slices.Index(want, got[i]) < slices.Index(want, got[i-1]) {
					t.Errorf("equal ranks not newest first: %s after %s", got[i], got[i-1])
				}
			}
			if ranks[0] == ranks[len(ranks)-1] {
				t.Errorf("all ranks equal (%v): the test needs different ranks", ranks[0])
			}
		})
	}
}

// Context around results, as in Complement's "Can get context around
// search results", with profiles and tokens that /messages continues from.
func TestSearchContext(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	bob := srv.Register("bob")
	wantOK(t, bob.Do("PUT", profilePath(bob.UserID, "displayname"), map[string]any{"displayname": "Bob Builder"}), nil)
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, bob, room)
	var ids []string
	for i := 1; i <= 7; i++ {
		c := alice
		if i%2 == 0 {
			c = bob
		}
		ids = append(ids, sendText(t, c, room, fmt.Sprintf("Message number %d", i)))
	}
	r := search(t, alice, term("Message 4", "order_by", "recent", "filter", map[string]any{"limit": 1, "rooms": []string{room}},
		"event_context", map[string]any{"before_limit": 2, "after_limit": 2, "include_profile": true}), "")
	if r.Count != 1 || len(r.Results) != 1 {
		t.Fatalf("count %d, %d results", r.Count, len(r.Results))
	}
	res := r.Results[0]
	if res.Result.EventID != ids[3] || res.Context == nil {
		t.Fatalf("result %s with context %v, want %s with context", res.Result.EventID, res.Context, ids[3])
	}
	c := res.Context
	if got := bodies(c.EventsBefore); !slices.Equal(got, []string{"Message number 3", "Message number 2"}) {
		t.Errorf("events_before %v", got)
	}
	if got := bodies(c.EventsAfter); !slices.Equal(got, []string{"Message number 5", "Message number 6"}) {
		t.Errorf("events_after %v", got)
	}
	if p, ok := c.ProfileInfo[bob.UserID]; !ok || p.DisplayName != "Bob Builder" {
		t.Errorf("profile_info %+v, want Bob Builder for %s", c.ProfileInfo, bob.UserID)
	}
	if _, ok := c.ProfileInfo[alice.UserID]; !ok {
		t.Errorf("profile_info %+v lacks %s", c.ProfileInfo, alice.UserID)
	}
	back := messages(t, alice, room, query("dir", "b", "from", c.Start, "limit", "1"))
	if got := bodies(back.Chunk); !slices.Equal(got, []string{"Message number 1"}) {
		t.Errorf("/messages back from start: %v, want Message number 1", got)
	}
	fwd := messages(t, alice, room, query("dir", "f", "from", c.End, "limit", "1"))
	if got := bodies(fwd.Chunk); !slices.Equal(got, []string{"Message number 7"}) {
		t.Errorf("/messages forward from end: %v, want Message number 7", got)
	}

	// Defaults: five each side; no profiles unless asked.
	r = search(t, alice, term("Message 4", "event_context", map[string]any{}), "")
	if c := r.Results[0].Context; c == nil || len(c.EventsAfter) != 3 || len(c.EventsBefore) != 5 || c.ProfileInfo != nil {
		t.Errorf("default context %+v: want 3 after, 5 before (3 messages, bob's join, a creation event), no profile_info", c)
	}
}

// Groups by room and sender, and a group's next_batch pages that group.
func TestSearchGroups(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	bob := srv.Register("bob")
	a := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	b := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, bob, a)
	var inA []string
	for i := 0; i < 5; i++ {
		inA = append(inA, sendText(t, alice, a, fmt.Sprintf("topic %d", i)))
	}
	inB := []string{sendText(t, alice, b, "topic b0"), sendText(t, alice, b, "topic b1")}
	fromBob := sendText(t, bob, a, "topic from bob")
	groupBy := map[string]any{"group_by": []map[string]any{{"key": "room_id"}, {"key": "sender"}}}
	r := search(t, alice, term("topic", "order_by", "recent", "groupings", groupBy, "filter", map[string]any{"limit": 4}), "")
	if got, want := r.ids(), []string{fromBob, inB[1], inB[0], inA[4]}; !slices.Equal(got, want) {
		t.Fatalf("results %v, want %v", got, want)
	}
	ga, gb := r.Groups["room_id"][a], r.Groups["room_id"][b]
	if !slices.Equal(ga.Results, []string{fromBob, inA[4]}) || ga.Order != 1 || ga.NextBatch == "" {
		t.Errorf("room group a %+v", ga)
	}
	if !slices.Equal(gb.Results, []string{inB[1], inB[0]}) || gb.Order != 2 || gb.NextBatch != "" {
		t.Errorf("room group b %+v: want both of b's, order 2, no next_batch", gb)
	}
	if gs := r.Groups["sender"][bob.UserID]; !slices.Equal(gs.Results, []string{fromBob}) || gs.NextBatch != "" {
		t.Errorf("sender group bob %+v", gs)
	}
	if gs := r.Groups["sender"][alice.UserID]; len(gs.Results) != 3 || gs.NextBatch == "" {
		t.Errorf("sender group alice %+v", gs)
	}
	// The room group's next_batch continues within room a only.
	r2 := search(t, alice, term("topic", "order_by", "recent", "groupings", groupBy, "filter", map[string]any{"limit": 4}), ga.NextBatch)
	if got, want := r2.ids(), []string{inA[3], inA[2], inA[1], inA[0]}; !slices.Equal(got, want) {
		t.Errorf("room a's next page %v, want %v", got, want)
	}
	// A full page has a next_batch (as in Synapse); the page after it is
	// empty and has none.
	if r2.Count != 6 || r2.NextBatch == "" {
		t.Errorf("room a's next page: count %d (want 6) next_batch %q (want one: the page is full)", r2.Count, r2.NextBatch)
	} else if r4 := search(t, alice, term("topic", "order_by", "recent", "groupings", groupBy, "filter", map[string]any{"limit": 4}), r2.NextBatch); len(r4.Results) != 0 || r4.NextBatch != "" || r4.Count != 6 {
		t.Errorf("after room a's last page: %v, count %d, next_batch %q; want nothing, 6, none", r4.ids(), r4.Count, r4.NextBatch)
	}
	// The sender group's next_batch continues with alice's events only.
	r3 := search(t, alice, term("topic", "order_by", "recent", "filter", map[string]any{"limit": 10}), r.Groups["sender"][alice.UserID].NextBatch)
	if got, want := r3.ids(), []string{inA[3], inA[2], inA[1], inA[0]}; !slices.Equal(got, want) {
		t.Errorf("alice's next page %v, want %v", got, want)
	}
}

func TestSearchIncludeState(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	room := createRoom(t, alice, map[string]any{"preset": "private_chat", "name": "State room"})
	createRoom(t, alice, map[string]any{"preset": "private_chat"}) // no results there
	sendText(t, alice, room, "stateful needle")
	r := search(t, alice, term("needle", "include_state", true), "")
	if len(r.State) != 1 {
		t.Fatalf("state for %d rooms, want 1: %v", len(r.State), r.State)
	}
	if ev := stateEvent(r.State[room], "m.room.name", ""); ev == nil || ev.Content["name"] != "State room" {
		t.Errorf("state of %s lacks its name: %v", room, r.State[room])
	}
}

func TestSearchBadRequests(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	room := createRoom(t, alice, map[string]any{"preset": "private_chat"})
	for i := 0; i < 3; i++ {
		sendText(t, alice, room, "paged needle")
	}
	r := search(t, alice, term("needle", "filter", map[string]any{"limit": 1}), "")
	rankToken := r.NextBatch
	if rankToken == "" {
		t.Fatal("no next_batch")
	}
	post := func(body any, nextBatch string) *testserver.Response {
		path := csAPI + "/search"
		if nextBatch != "" {
			path += "?next_batch=" + url.QueryEscape(nextBatch)
		}
		return alice.Do("POST", path, body)
	}
	cat := func(c map[string]any) map[string]any {
		return map[string]any{"search_categories": map[string]any{"room_events": c}}
	}
	for _, c := range []struct {
		name      string
		body      any
		nextBatch string
		errcode   string
	}{
		{"not JSON", "{", "", "M_NOT_JSON"},
		{"no search_categories", map[string]any{}, "", "M_BAD_JSON"},
		{"no search_term", cat(map[string]any{"keys": []string{"content.body"}}), "", "M_BAD_JSON"},
		{"search_term not a string", cat(map[string]any{"search_term": 5}), "", "M_BAD_JSON"},
		{"empty search_term", cat(term("")), "", "M_INVALID_PARAM"},
		{"blank search_term", cat(term(" \t ")), "", "M_INVALID_PARAM"},
		{"unknown order_by", cat(term("x", "order_by", "oldest")), "", "M_INVALID_PARAM"},
		{"unknown key", cat(term("x", "keys", []string{"content.url"})), "", "M_INVALID_PARAM"},
		{"unknown group", cat(term("x", "groupings", map[string]any{"group_by": []map[string]any{{"key": "type"}}})), "", "M_INVALID_PARAM"},
		{"negative limit", cat(term("x", "filter", map[string]any{"limit": -1})), "", "M_INVALID_PARAM"},
		{"filter not an object", cat(term("x", "filter", "abc")), "", "M_BAD_JSON"},
		{"negative context", cat(term("x", "event_context", map[string]any{"before_limit": -1})), "", "M_INVALID_PARAM"},
		{"garbage next_batch", cat(term("needle")), "not a token!", "M_INVALID_PARAM"},
		{"base64 garbage next_batch", cat(term("needle")), "YWJj", "M_INVALID_PARAM"},
		{"next_batch of another order", cat(term("needle", "order_by", "recent")), rankToken, "M_INVALID_PARAM"},
		{"truncated next_batch", cat(term("needle")), rankToken[:len(rankToken)-3], "M_INVALID_PARAM"},
	} {
		t.Run(c.name, func(t *testing.T) {
			wantErr(t, post(c.body, c.nextBatch), http.StatusBadRequest, c.errcode)
		})
	}
	// Categories other than room_events are not answered, not refused.
	var out map[string]map[string]any
	wantOK(t, post(map[string]any{"search_categories": map[string]any{"future_things": map[string]any{"search_term": "x"}}}, ""), &out)
	if len(out["search_categories"]) != 0 {
		t.Errorf("reply %v, want empty search_categories", out)
	}
	wantOK(t, post(map[string]any{"search_categories": map[string]any{"future_things": map[string]any{}, "room_events": term("needle")}}, ""), &out)
	if _, ok := out["search_categories"]["room_events"]; !ok || len(out["search_categories"]) != 1 {
		t.Errorf("reply %v, want only room_events", out)
	}
	// The token pages on.
	if r := search(t, alice, term("needle", "filter", map[string]any{"limit": 1}), rankToken); len(r.Results) != 1 || r.Count != 3 {
		t.Errorf("second page: %d results, count %d", len(r.Results), r.Count)
	}
	// Query syntax in a term never breaks the search, nor do many words.
	var many []string
	for i := 0; i < 40; i++ {
		many = append(many, fmt.Sprintf(`w%d "x%d y%d" z-%d`, i, i, i, i))
	}
	for _, s := range []string{strings.Join(many, " "), `"`, `*`, `needle"`, `"needle`, `NOT needle`, `needle OR`, `(needle`, `needle)`, `needle NEAR`, `-needle`,
		`content:needle`, `needle^`, "needle\x00", `\"needle\"`, strings.Repeat("needle ", 200), strings.Repeat(`"a" `, 200)} {
		if r := searchRaw(t, alice, term(s), ""); r.Status != http.StatusOK {
			t.Errorf("term %q: status %d: %s", s, r.Status, r.Body)
		}
	}
}

// TestSearchFullPageHasNextBatch: as Complement's "Can back-paginate search
// results": 20 matches in pages of 10 give two full pages, each with a
// next_batch, then an empty page without one; the count is 20 throughout.
func TestSearchFullPageHasNextBatch(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	room := createRoom(t, alice, map[string]any{"preset": "private_chat"})
	var sent []string
	for i := 0; i < 20; i++ {
		sent = append(sent, sendText(t, alice, room, fmt.Sprintf("Message number %d", i)))
	}
	for _, order := range []string{"recent", "rank"} {
		t.Run(order, func(t *testing.T) {
			criteria := term("Message", "order_by", order, "filter", map[string]any{"limit": 10, "rooms": []string{room}})
			var got []string
			next := ""
			for page, want := range []int{10, 10, 0} {
				r := search(t, alice, criteria, next)
				got = append(got, r.ids()...)
				if len(r.Results) != want || r.Count != 20 || (r.NextBatch != "") != (want == 10) {
					t.Fatalf("page %d: %d results, count %d, next_batch %q; want %d, 20, present: %v",
						page+1, len(r.Results), r.Count, r.NextBatch, want, want == 10)
				}
				next = r.NextBatch
			}
			slices.Sort(got)
			want := slices.Clone(sent)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("pages hold %d results, want the 20 sent once each", len(got))
			}
		})
	}
}
