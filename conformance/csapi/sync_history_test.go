package csapi

import (
	"fmt"
	"testing"

	. "github.com/persistentchat/homeserver/conformance/deploy"
)

// hasMembershipOf is a sync check: the room's section (join, leave) holds
// userID's membership event with the given membership in its timeline or
// state.
func hasMembershipOf(section, room, userID, membership string) func(*Res) bool {
	return func(r *Res) bool {
		base := "rooms." + section + "." + esc(room)
		for _, part := range []string{".timeline.events", ".state.events"} {
			for _, ev := range arr(r.JSON, base+part) {
				if str(ev, "type") == "m.room.member" && str(ev, "state_key") == userID && str(ev, "content.membership") == membership {
					return true
				}
			}
		}
		return false
	}
}

func filterID(t *testing.T, c *Client, filter map[string]any) string {
	t.Helper()
	return mustOK(t, c.Do(ctx, "POST", cs("user", c.UserID, "filter"), filter), "filter").GetString("filter_id")
}

func TestLeaveEventInviteRejection(t *testing.T) {
	alice := register(t, "alice")
	bob := register(t, "bob")
	f := filterID(t, alice, map[string]any{"room": map[string]any{"include_leave": true}})
	// In a room whose history is visible only to members, the rejection is
	// the one event alice may see: it must still reach her.
	room := createRoom(t, bob, map[string]any{"initial_state": []any{map[string]any{"type": "m.room.history_visibility", "state_key": "",
		"content": map[string]any{"history_visibility": "joined"}}}})
	since := syncSince(t, alice)
	inviteUser(t, bob, room, alice.UserID)
	since = syncUntil(t, alice, since, "invite", inSection("invite", room), "filter", f)
	mustOK(t, alice.Do(ctx, "POST", cs("rooms", room, "leave"), map[string]any{}), "reject")
	t.Run("Rejected invite is in rooms.leave of an incremental sync with the leave event", func(t *testing.T) {
		syncUntil(t, alice, since, "the rejection in rooms.leave", hasMembershipOf("leave", room, alice.UserID, "leave"), "filter", f)
	})
	t.Run("Rejected invite is in rooms.leave of an initial sync with include_leave", func(t *testing.T) {
		r := sync(t, alice, "", "filter", f)
		if !hasMembershipOf("leave", room, alice.UserID, "leave")(r) {
			t.Fatalf("no leave event in rooms.leave: %s", r)
		}
	})
}

func TestArchivedRoomsHistory(t *testing.T) {
	alice := register(t, "alice")
	bob := register(t, "bob")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, bob, room)
	for i := 0; i < 3; i++ {
		sendText(t, alice, room, fmt.Sprintf("before the leave %d", i))
	}
	mustOK(t, bob.Do(ctx, "POST", cs("rooms", room, "leave"), map[string]any{}), "leave")
	t.Run("timeline has events", func(t *testing.T) {
		r := sync(t, bob, "", "filter", `{"room":{"include_leave":true,"timeline":{"limit":10}}}`)
		if !hasMembershipOf("leave", room, bob.UserID, "leave")(r) {
			t.Fatalf("no leave event: %s", r)
		}
		if n := len(arr(r.JSON, "rooms.leave."+esc(room)+".timeline.events")); n < 2 {
			t.Fatalf("timeline has %d events: %s", n, r)
		}
	})
	t.Run("timeline is empty", func(t *testing.T) {
		t.Run("initial sync", func(t *testing.T) {
			r := sync(t, bob, "", "filter", `{"room":{"include_leave":true,"timeline":{"limit":0}}}`)
			if _, ok := r.Get("rooms.leave." + esc(room)); !ok {
				t.Fatalf("left room missing: %s", r)
			}
			if n := len(arr(r.JSON, "rooms.leave."+esc(room)+".timeline.events")); n != 0 {
				t.Fatalf("timeline.limit 0 gave %d events: %s", n, r)
			}
		})
	})
}

// presenceOf reports whether a sync response's presence section has an
// event from userID with the given status message.
func presenceOf(userID, statusMsg string) func(*Res) bool {
	return func(r *Res) bool {
		for _, ev := range arr(r.JSON, "presence.events") {
			if str(ev, "sender") == userID && str(ev, "content.status_msg") == statusMsg {
				return true
			}
		}
		return false
	}
}

// TestSyncPresenceOfNewRoomMates: a join brings the presence of the users
// it newly shares a room with into the next incremental sync, although
// their presence did not change since the token. Neither user syncs
// before the token with presence, so nothing else can bring it.
func TestSyncPresenceOfNewRoomMates(t *testing.T) {
	t.Run("Newly joined room includes presence in incremental sync", func(t *testing.T) {
		alice := register(t, "alice")
		bob := register(t, "bob")
		mustOK(t, alice.Do(ctx, "PUT", cs("presence", alice.UserID, "status"), map[string]any{"presence": "online", "status_msg": "alice here"}), "presence")
		room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		r := sync(t, bob, "", "set_presence", "offline")
		if presenceOf(alice.UserID, "alice here")(r) {
			t.Fatalf("alice's presence visible before sharing a room: %s", r)
		}
		joinRoom(t, bob, room)
		syncUntil(t, bob, r.GetString("next_batch"), "alice's presence", presenceOf(alice.UserID, "alice here"), "set_presence", "offline")
	})
	t.Run("Get presence for newly joined members in incremental sync", func(t *testing.T) {
		alice := register(t, "alice")
		bob := register(t, "bob")
		mustOK(t, bob.Do(ctx, "PUT", cs("presence", bob.UserID, "status"), map[string]any{"presence": "online", "status_msg": "bob here"}), "presence")
		room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		since := sync(t, alice, "", "set_presence", "offline").GetString("next_batch")
		joinRoom(t, bob, room)
		syncUntil(t, alice, since, "bob's presence", presenceOf(bob.UserID, "bob here"), "set_presence", "offline")
	})
}

func TestMembershipOnEvents(t *testing.T) {
	alice := register(t, "alice")
	bob := register(t, "bob")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	pre := sendText(t, alice, room, "prejoin")
	joinRoom(t, bob, room)
	post := sendText(t, alice, room, "postjoin")
	// MSC4115 (spec v1.11): unsigned.membership is the requesting user's
	// membership at the event; "leave" before they ever joined.
	t.Run("unsigned.membership in /sync is leave before the join and join after", func(t *testing.T) {
		r := sync(t, bob, "")
		seenJoin, found := false, 0
		for _, ev := range arr(r.JSON, "rooms.join."+esc(room)+".timeline.events") {
			if str(ev, "type") == "m.room.member" && str(ev, "state_key") == bob.UserID {
				seenJoin = true
			}
			want := map[bool]string{false: "leave", true: "join"}[seenJoin]
			if got := str(ev, "unsigned.membership"); got != want {
				t.Errorf("%s %s: unsigned.membership %q, want %q", str(ev, "type"), str(ev, "event_id"), got, want)
			}
			if id := str(ev, "event_id"); id == pre || id == post {
				found++
			}
		}
		if found != 2 {
			t.Fatalf("timeline lacks the messages: %s", r)
		}
	})
	t.Run("unsigned.membership in /messages and /event", func(t *testing.T) {
		r := mustOK(t, bob.Do(ctx, "GET", cs("rooms", room, "messages"), nil, WithQuery("dir", "b", "limit", "10")), "messages")
		for _, ev := range arr(r.JSON, "chunk") {
			want := ""
			switch str(ev, "event_id") {
			case pre:
				want = "leave"
			case post:
				want = "join"
			default:
				continue
			}
			if got := str(ev, "unsigned.membership"); got != want {
				t.Errorf("/messages %s: unsigned.membership %q, want %q", str(ev, "content.body"), got, want)
			}
		}
		expectStr(t, mustOK(t, bob.Do(ctx, "GET", cs("rooms", room, "event", post), nil), "event"), "unsigned.membership", "join")
		expectStr(t, mustOK(t, alice.Do(ctx, "GET", cs("rooms", room, "event", pre), nil), "event"), "unsigned.membership", "join")
	})
	t.Run("unsigned.membership after leaving is leave", func(t *testing.T) {
		mustOK(t, bob.Do(ctx, "POST", cs("rooms", room, "leave"), map[string]any{}), "leave")
		after := sendText(t, alice, room, "after bob left")
		expectStr(t, mustOK(t, alice.Do(ctx, "GET", cs("rooms", room, "event", after), nil), "event"), "unsigned.membership", "join")
		r := mustOK(t, bob.Do(ctx, "GET", cs("rooms", room, "messages"), nil, WithQuery("dir", "b", "limit", "10")), "messages")
		for _, ev := range arr(r.JSON, "chunk") {
			if str(ev, "event_id") == post && str(ev, "unsigned.membership") != "join" {
				t.Errorf("postjoin: %v", ev)
			}
		}
	})
}

func TestRoomForget(t *testing.T) {
	alice := register(t, "alice")
	bob := register(t, "bob")
	t.Run("Forgotten room messages cannot be paginated", func(t *testing.T) {
		room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		joinRoom(t, bob, room)
		sendText(t, alice, room, "Hello world!")
		mustOK(t, alice.Do(ctx, "POST", cs("rooms", room, "leave"), map[string]any{}), "leave")
		mustOK(t, alice.Do(ctx, "POST", cs("rooms", room, "forget"), map[string]any{}), "forget")
		// No dir: access is checked first (Synapse defaults dir to b).
		expectStatus(t, alice.Do(ctx, "GET", cs("rooms", room, "messages"), nil), 403, "M_FORBIDDEN")
		expectStatus(t, alice.Do(ctx, "GET", cs("rooms", room, "messages"), nil, WithQuery("dir", "b")), 403, "M_FORBIDDEN")
	})
	t.Run("Forgetting room does not show up in v2 initial /sync", func(t *testing.T) {
		room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		joinRoom(t, bob, room)
		mustOK(t, bob.Do(ctx, "POST", cs("rooms", room, "leave"), map[string]any{}), "leave")
		mustOK(t, bob.Do(ctx, "POST", cs("rooms", room, "forget"), map[string]any{}), "forget")
		r := sync(t, bob, "", "filter", `{"room":{"include_leave":true}}`)
		if _, ok := r.Get("rooms.leave." + esc(room)); ok {
			t.Fatalf("forgotten room in rooms.leave: %s", r)
		}
	})
}

func TestGetRoomMembersAtPoint(t *testing.T) {
	alice := register(t, "alice")
	bob := register(t, "bob")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	sendText(t, alice, room, "Hello world!")
	r := sync(t, alice, "")
	at := r.GetString("rooms.join." + esc(room) + ".timeline.prev_batch")
	if at == "" {
		t.Fatalf("no prev_batch: %s", r)
	}
	joinRoom(t, bob, room)
	sendText(t, bob, room, "Hello back")
	t.Run("GET /members?at= gives the members at that point", func(t *testing.T) {
		r := mustOK(t, alice.Do(ctx, "GET", cs("rooms", room, "members"), nil, WithQuery("at", at)), "members at")
		members := map[string]string{}
		for _, ev := range arr(r.JSON, "chunk") {
			if str(ev, "room_id") != room {
				t.Errorf("room_id %q", str(ev, "room_id"))
			}
			members[str(ev, "state_key")] = str(ev, "content.membership")
		}
		if members[alice.UserID] != "join" || members[bob.UserID] != "" {
			t.Fatalf("members at the point before bob joined: %v (%s)", members, r)
		}
	})
	t.Run("GET /members without at gives the current members", func(t *testing.T) {
		r := mustOK(t, alice.Do(ctx, "GET", cs("rooms", room, "members"), nil), "members")
		if n := len(arr(r.JSON, "chunk")); n != 2 {
			t.Fatalf("want 2 members: %s", r)
		}
	})
	t.Run("GET /members?at= with a bad token gives 400", func(t *testing.T) {
		expectStatus(t, alice.Do(ctx, "GET", cs("rooms", room, "members"), nil, WithQuery("at", "not-a-token")), 400, "")
	})
}

// TestRoomImageRoundtrip: a filtered /messages that reads to the start of
// the room still gives an end, as Synapse does; the page from that end is
// empty and has none, which is where clients stop.
func TestRoomImageRoundtrip(t *testing.T) {
	alice := register(t, "alice")
	srv, id := upload(t, alice, testPNG(t), "image/png", "test.png")
	room := createRoom(t, alice, nil)
	sendText(t, alice, room, "test")
	sendEvent(t, alice, room, "m.room.message", map[string]any{"msgtype": "m.image", "body": "test.png", "url": "mxc://" + srv + "/" + id})
	r := mustOK(t, alice.Do(ctx, "GET", cs("rooms", room, "messages"), nil, WithQuery("dir", "b", "filter", `{"contains_url":true}`)), "messages")
	if len(arr(r.JSON, "chunk")) != 1 {
		t.Fatalf("want the one event with a url: %s", r)
	}
	expectPresent(t, r, "start", "end")
	r = mustOK(t, alice.Do(ctx, "GET", cs("rooms", room, "messages"), nil, WithQuery("dir", "b", "filter", `{"contains_url":true}`, "from", r.GetString("end"))), "next page")
	if len(arr(r.JSON, "chunk")) != 0 {
		t.Fatalf("page past the start: %s", r)
	}
	if _, ok := r.Get("end"); ok {
		t.Fatalf("end on the page past the start of the room: %s", r)
	}
}

func TestRoomDeleteAlias(t *testing.T) {
	alice := register(t, "alice")
	t.Run("Can delete canonical alias", func(t *testing.T) {
		room := createRoom(t, alice, nil)
		alias := "#" + dep.UniqueLocalpart("canon") + ":" + hs1().Name
		mustOK(t, alice.Do(ctx, "PUT", cs("directory", "room", alias), map[string]any{"room_id": room}), "alias")
		sendState(t, alice, room, "m.room.canonical_alias", "", map[string]any{"alias": alias})
		since := syncSince(t, alice)
		mustOK(t, alice.Do(ctx, "DELETE", cs("directory", "room", alias), nil), "delete")
		syncUntil(t, alice, since, "m.room.canonical_alias without the alias", timelineHas(room, func(ev any) bool {
			c, _ := Path(ev, "content")
			m, _ := c.(map[string]any)
			return str(ev, "type") == "m.room.canonical_alias" && m != nil && len(m) == 0
		}))
	})
	t.Run("Deleting an alt alias removes it from alt_aliases", func(t *testing.T) {
		room := createRoom(t, alice, nil)
		main := "#" + dep.UniqueLocalpart("canon") + ":" + hs1().Name
		alt := "#" + dep.UniqueLocalpart("canon-alt") + ":" + hs1().Name
		for _, a := range []string{main, alt} {
			mustOK(t, alice.Do(ctx, "PUT", cs("directory", "room", a), map[string]any{"room_id": room}), "alias")
		}
		sendState(t, alice, room, "m.room.canonical_alias", "", map[string]any{"alias": main, "alt_aliases": []string{alt}})
		mustOK(t, alice.Do(ctx, "DELETE", cs("directory", "room", alt), nil), "delete")
		r := stateContent(t, alice, room, "m.room.canonical_alias", "")
		expectStr(t, r, "alias", main)
		if a := arr(r.JSON, "alt_aliases"); len(a) != 0 {
			t.Fatalf("alt_aliases still has %v", a)
		}
	})
	t.Run("Deleting a non-existent alias should return a 404", func(t *testing.T) {
		expectStatus(t, alice.Do(ctx, "DELETE", cs("directory", "room", "#"+dep.UniqueLocalpart("none")+":"+hs1().Name), nil), 404, "M_NOT_FOUND")
	})
}

func TestFilter(t *testing.T) {
	alice := register(t, "alice")
	// Filters naming malformed room or user IDs are refused (Synapse
	// checks them against its schema: 400 M_BAD_JSON).
	for _, f := range []map[string]any{
		{"room": map[string]any{"timeline": map[string]any{"rooms": []string{"not_a_room_id"}}}},
		{"room": map[string]any{"timeline": map[string]any{"senders": []string{"not_a_sender_id"}}}},
		{"room": map[string]any{"rooms": []string{"not_a_room_id"}}},
		{"room": map[string]any{"not_rooms": []string{"#alias:server"}}},
		{"presence": map[string]any{"senders": []string{"nope"}}},
		{"room": map[string]any{"timeline": map[string]any{"limit": "ten"}}},
	} {
		t.Run(fmt.Sprintf("Check creating invalid filters returns 400: %v", f), func(t *testing.T) {
			expectStatus(t, alice.Do(ctx, "POST", cs("user", alice.UserID, "filter"), f), 400, "M_BAD_JSON")
		})
	}
	t.Run("An inline filter with bad IDs is refused by /sync", func(t *testing.T) {
		expectStatus(t, alice.Do(ctx, "GET", cs("sync"), nil, WithQuery("timeout", "0", "filter", `{"room":{"rooms":["not_a_room_id"]}}`)), 400, "M_BAD_JSON")
	})
	t.Run("A filter ID that is not one gives 400 from /sync", func(t *testing.T) {
		expectStatus(t, alice.Do(ctx, "GET", cs("sync"), nil, WithQuery("timeout", "0", "filter", "not-an-id")), 400, "M_INVALID_PARAM")
	})
	t.Run("GET of an unknown filter ID gives 404", func(t *testing.T) {
		expectStatus(t, alice.Do(ctx, "GET", cs("user", alice.UserID, "filter", "999999"), nil), 404, "M_NOT_FOUND")
	})
	t.Run("Valid IDs are accepted", func(t *testing.T) {
		mustOK(t, alice.Do(ctx, "POST", cs("user", alice.UserID, "filter"), map[string]any{"room": map[string]any{"rooms": []string{"!a:example.org"},
			"timeline": map[string]any{"senders": []string{"@b:example.org"}}}}), "filter")
	})
}

func TestSearchPaging(t *testing.T) {
	alice := register(t, "alice")
	room := createRoom(t, alice, nil)
	for i := 0; i < 12; i++ {
		sendText(t, alice, room, fmt.Sprintf("pageable word %d", i))
	}
	search := func(t *testing.T, nextBatch string) *Res {
		t.Helper()
		body := map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "pageable",
			"order_by": "recent", "filter": map[string]any{"limit": 5}}}}
		var opts []Opt
		if nextBatch != "" {
			opts = append(opts, WithQuery("next_batch", nextBatch))
		}
		return mustOK(t, alice.Do(ctx, "POST", cs("search"), body, opts...), "search")
	}
	// Synapse gives next_batch on every full page (the spec allows leaving
	// it out when the server knows there is nothing more); clients page
	// until it is missing.
	t.Run("Can back-paginate search results", func(t *testing.T) {
		seen := map[string]bool{}
		next, pages := "", 0
		for {
			r := search(t, next)
			pages++
			res := arr(r.JSON, "search_categories.room_events.results")
			for _, x := range res {
				id := str(x, "result.event_id")
				if seen[id] {
					t.Fatalf("%s twice", id)
				}
				seen[id] = true
			}
			next = r.GetString("search_categories.room_events.next_batch")
			if len(res) == 5 && next == "" {
				t.Fatalf("full page without next_batch: %s", r)
			}
			if next == "" || pages > 5 {
				break
			}
		}
		if len(seen) != 12 {
			t.Fatalf("saw %d results over %d pages, want 12", len(seen), pages)
		}
	})
	t.Run("Search works across an upgraded room and its predecessor", func(t *testing.T) {
		old := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		sendText(t, alice, old, "predecessorword before")
		repl := upgradeRoom(t, alice, old, "11")
		sendText(t, alice, repl, "predecessorword after")
		r := mustOK(t, alice.Do(ctx, "POST", cs("search"), map[string]any{"search_categories": map[string]any{"room_events": map[string]any{
			"search_term": "predecessorword", "filter": map[string]any{"rooms": []string{repl}}}}}), "search")
		rooms := map[string]bool{}
		for _, x := range arr(r.JSON, "search_categories.room_events.results") {
			rooms[str(x, "result.room_id")] = true
		}
		if !rooms[old] || !rooms[repl] {
			t.Fatalf("results from %v, want both rooms: %s", rooms, r)
		}
	})
}

func TestJumpToDateEndpoint(t *testing.T) {
	alice := register(t, "alice")
	bob := register(t, "bob")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	tsOf := func(id string) int64 {
		r := mustOK(t, alice.Do(ctx, "GET", cs("rooms", room, "event", id), nil), "event")
		v, _ := r.Get("origin_server_ts")
		f, _ := v.(float64)
		return int64(f)
	}
	// first, then messages until one has a later millisecond: second.
	// lastBefore is the last event sent before second.
	first := sendText(t, alice, room, "first")
	t1 := tsOf(first)
	lastBefore, second, t2 := first, "", t1
	for i := 0; t2 == t1; i++ {
		if i > 1000 {
			t.Fatal("origin_server_ts does not advance")
		}
		id := sendText(t, alice, room, "second")
		if t2 = tsOf(id); t2 == t1 {
			lastBefore = id
		} else {
			second = id
		}
	}
	jump := func(c *Client, ts int64, dir string) *Res {
		return c.Do(ctx, "GET", append([]string{"_matrix", "client", "v1"}, "rooms", room, "timestamp_to_event"), nil,
			WithQuery("ts", fmt.Sprint(ts), "dir", dir))
	}
	t.Run("should find event after given timestamp", func(t *testing.T) {
		r := mustOK(t, jump(alice, t1+1, "f"), "jump")
		expectStr(t, r, "event_id", second)
		if v, _ := r.Get("origin_server_ts"); v != float64(t2) {
			t.Fatalf("origin_server_ts %v, want %d", v, t2)
		}
	})
	t.Run("should find event before given timestamp", func(t *testing.T) {
		expectStr(t, mustOK(t, jump(alice, t2-1, "b"), "jump"), "event_id", lastBefore)
	})
	t.Run("should find nothing before the earliest timestamp", func(t *testing.T) {
		create := stateEventOf(t, alice, room, "m.room.create")
		v, _ := Path(create, "origin_server_ts")
		f, _ := v.(float64)
		expectStatus(t, jump(alice, int64(f)-1, "b"), 404, "M_NOT_FOUND")
	})
	t.Run("should find nothing after the latest timestamp", func(t *testing.T) {
		expectStatus(t, jump(alice, t2+1000000, "f"), 404, "M_NOT_FOUND")
	})
	t.Run("should not be able to query a private room you are not a member of", func(t *testing.T) {
		priv := createRoom(t, alice, map[string]any{"preset": "private_chat"})
		r := bob.Do(ctx, "GET", append([]string{"_matrix", "client", "v1"}, "rooms", priv, "timestamp_to_event"), nil, WithQuery("ts", fmt.Sprint(t2), "dir", "b"))
		expectStatus(t, r, 403, "M_FORBIDDEN")
	})
	t.Run("Bad parameters give 400", func(t *testing.T) {
		expectStatus(t, jump(alice, t1, "x"), 400, "M_INVALID_PARAM")
		r := alice.Do(ctx, "GET", append([]string{"_matrix", "client", "v1"}, "rooms", room, "timestamp_to_event"), nil, WithQuery("dir", "f"))
		expectStatus(t, r, 400, "M_MISSING_PARAM")
	})
}

// TestUserDirectorySearchTerms: every word of the search term must match
// (as Synapse does), in the display name or the user ID.
func TestUserDirectorySearchTerms(t *testing.T) {
	alice := register(t, "alice")
	bob := register(t, "bob")
	carol := register(t, "carol")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	for c, name := range map[*Client]string{bob: "Marley Robert", carol: "Dylan Robert"} {
		mustOK(t, c.Do(ctx, "PUT", cs("profile", c.UserID, "displayname"), map[string]any{"displayname": name}), "name")
		joinRoom(t, c, room)
	}
	find := func(t *testing.T, term string) map[string]bool {
		t.Helper()
		r := mustOK(t, alice.Do(ctx, "POST", cs("user_directory", "search"), map[string]any{"search_term": term, "limit": 50}), "search")
		got := map[string]bool{}
		for _, x := range arr(r.JSON, "results") {
			got[str(x, "user_id")] = true
		}
		return got
	}
	t.Run("One word matches every user with it", func(t *testing.T) {
		if got := find(t, "robert"); !got[bob.UserID] || !got[carol.UserID] {
			t.Fatalf("results %v", got)
		}
	})
	t.Run("Two words match only users with both", func(t *testing.T) {
		if got := find(t, "robert dylan"); got[bob.UserID] || !got[carol.UserID] {
			t.Fatalf("results %v", got)
		}
		if got := find(t, "Marley rob"); !got[bob.UserID] || got[carol.UserID] {
			t.Fatalf("prefix of the last word: results %v", got)
		}
	})
	t.Run("A word of the name and a word of the user ID match together", func(t *testing.T) {
		if got := find(t, "dylan "+localpart(carol.UserID)); !got[carol.UserID] || got[bob.UserID] {
			t.Fatalf("results %v", got)
		}
	})
	t.Run("A word nobody has matches no one", func(t *testing.T) {
		if got := find(t, "robert zzyzx"); len(got) != 0 {
			t.Fatalf("results %v", got)
		}
	})
}

// TestSyncEndsWithSession: a /sync long-poll whose access token is revoked
// (logout) ends at once with 401 M_UNKNOWN_TOKEN instead of running to its
// timeout and answering 200.
func TestSyncEndsWithSession(t *testing.T) {
	alice := register(t, "alice")
	watcher := register(t, "watcher")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, watcher, room)
	for _, tc := range []struct {
		name string
		end  func(t *testing.T, d *Client)
	}{
		{"Logging out ends the device's /sync long-poll with 401 M_UNKNOWN_TOKEN", func(t *testing.T, d *Client) {
			mustOK(t, d.Do(ctx, "POST", cs("logout"), map[string]any{}), "logout")
		}},
		{"Deleting the device ends its /sync long-poll with 401 M_UNKNOWN_TOKEN", func(t *testing.T, d *Client) {
			mustOK(t, alice.Do(ctx, "DELETE", cs("devices", d.DeviceID), map[string]any{"auth": passwordAuth(alice.UserID, password)}), "delete device")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := login(t, alice, "")
			since := sync(t, d, "", "set_presence", "offline").GetString("next_batch")
			// The poll's set_presence applies when it starts, so the watcher
			// sees alice go unavailable once the poll is under way; its
			// filter leaves presence out, so that change (or the watcher's)
			// does not answer the poll itself.
			filter := `{"presence":{"not_types":["*"]}}`
			done := make(chan *Res, 1)
			go func() {
				done <- d.Do(ctx, "GET", cs("sync"), nil, WithQuery("since", since, "timeout", "30000", "set_presence", "unavailable", "filter", filter))
			}()
			syncUntil(t, watcher, "", "alice unavailable", func(r *Res) bool {
				for _, ev := range arr(r.JSON, "presence.events") {
					if str(ev, "sender") == alice.UserID && str(ev, "content.presence") == "unavailable" {
						return true
					}
				}
				return false
			}, "set_presence", "offline")
			tc.end(t, d)
			r := <-done
			expectStatus(t, r, 401, "M_UNKNOWN_TOKEN")
			// Back online for the next case.
			mustOK(t, alice.Do(ctx, "PUT", cs("presence", alice.UserID, "status"), map[string]any{"presence": "online"}), "online")
		})
	}
}
