package api_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/testserver"
)

type presenceContent struct {
	Presence        string  `json:"presence"`
	StatusMsg       *string `json:"status_msg"`
	LastActiveAgo   *int64  `json:"last_active_ago"`
	CurrentlyActive *bool   `json:"currently_active"`
}

type presenceSync struct {
	next string
	// by sender; the last event of each
	events map[string]presenceContent
	count  int
}

// syncPresence runs /sync with the query and returns its presence section.
func syncPresence(t testing.TB, c *testserver.Client, query string) presenceSync {
	t.Helper()
	var out struct {
		NextBatch string `json:"next_batch"`
		Presence  struct {
			Events []struct {
				Type    string          `json:"type"`
				Sender  string          `json:"sender"`
				Content presenceContent `json:"content"`
			} `json:"events"`
		} `json:"presence"`
	}
	wantOK(t, c.Do("GET", csAPI+"/sync?"+query, nil), &out)
	ps := presenceSync{next: out.NextBatch, events: map[string]presenceContent{}, count: len(out.Presence.Events)}
	for _, ev := range out.Presence.Events {
		if ev.Type != "m.presence" {
			t.Errorf("presence section holds a %q event", ev.Type)
		}
		ps.events[ev.Sender] = ev.Content
	}
	return ps
}

func presencePath(user string) string { return csAPI + "/presence/" + url.PathEscape(user) + "/status" }

func getPresence(t testing.TB, c *testserver.Client, user string) presenceContent {
	t.Helper()
	var p presenceContent
	wantOK(t, c.Do("GET", presencePath(user), nil), &p)
	return p
}

func TestPresence(t *testing.T) {
	t.Parallel()
	// A fake clock: last_active_ago and the offline timeout move only
	// when the test says, and long-polls end only when woken.
	clk := clock.NewFake(time.Date(2025, 7, 1, 9, 0, 0, 0, time.UTC))
	srv := testserver.Start(t, testserver.Options{Clock: clk})
	alice, bob, carol := srv.Register("alice"), srv.Register("bob"), srv.Register("carol")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, bob, room)

	if p := getPresence(t, alice, alice.UserID); p.Presence != "offline" || p.LastActiveAgo != nil {
		t.Errorf("presence before anything = %+v, want offline", p)
	}
	// bob's first sync brings him online; alice has never been seen.
	first := syncPresence(t, bob, "timeout=0")
	if p, ok := first.events[bob.UserID]; !ok || p.Presence != "online" {
		t.Errorf("bob's first sync: own presence %+v (%v), want online", p, ok)
	}
	if _, ok := first.events[alice.UserID]; ok {
		t.Errorf("initial sync lists alice, who is offline: %+v", first.events)
	}

	t.Run("set and read", func(t *testing.T) {
		wantOK(t, alice.Do("PUT", presencePath(alice.UserID), map[string]any{"presence": "online", "status_msg": "Testing something"}), nil)
		p := getPresence(t, bob, alice.UserID)
		if p.Presence != "online" || p.StatusMsg == nil || *p.StatusMsg != "Testing something" ||
			p.LastActiveAgo == nil || *p.LastActiveAgo != 0 || p.CurrentlyActive == nil || !*p.CurrentlyActive {
			t.Errorf("alice as bob sees her = %+v", p)
		}
		clk.Advance(10 * time.Second)
		if p := getPresence(t, alice, alice.UserID); p.LastActiveAgo == nil || *p.LastActiveAgo != 10_000 {
			t.Errorf("10 s later last_active_ago = %v, want 10000", p.LastActiveAgo)
		}
		s := syncPresence(t, bob, "timeout=0&since="+url.QueryEscape(first.next))
		if p, ok := s.events[alice.UserID]; !ok || p.Presence != "online" || p.StatusMsg == nil || *p.StatusMsg != "Testing something" ||
			p.LastActiveAgo == nil || *p.LastActiveAgo != 10_000 {
			t.Errorf("bob's sync has alice as %+v (%v)", p, ok)
		}
		if _, ok := s.events[bob.UserID]; ok {
			t.Errorf("bob's incremental sync repeats his own unchanged presence")
		}
		// Nothing changed since: nothing again.
		if again := syncPresence(t, bob, "timeout=0&since="+url.QueryEscape(s.next)); again.count != 0 {
			t.Errorf("second incremental sync repeats presence: %+v", again.events)
		}
		// A new initial sync shows alice's current presence.
		if p, ok := syncPresence(t, bob, "timeout=0").events[alice.UserID]; !ok || p.Presence != "online" {
			t.Errorf("bob's initial sync has alice as %+v (%v)", p, ok)
		}
		// The presence filter can leave it all out.
		filter := url.QueryEscape(`{"presence":{"not_types":["*"]}}`)
		if s := syncPresence(t, bob, "timeout=0&filter="+filter); s.count != 0 {
			t.Errorf("filtered sync has presence %+v", s.events)
		}
	})

	t.Run("only users sharing a room", func(t *testing.T) {
		wantErr(t, carol.Do("GET", presencePath(alice.UserID), nil), http.StatusForbidden, "M_FORBIDDEN")
		if s := syncPresence(t, carol, "timeout=0"); len(s.events) != 1 || s.events[carol.UserID].Presence != "online" {
			t.Errorf("carol, in no room, sees presence %+v; want only her own", s.events)
		}
	})

	t.Run("set from sync, and explicit unavailable sticks", func(t *testing.T) {
		since := syncPresence(t, bob, "timeout=0").next
		syncPresence(t, alice, "timeout=0&set_presence=unavailable")
		s := syncPresence(t, bob, "timeout=0&since="+url.QueryEscape(since))
		if p := s.events[alice.UserID]; p.Presence != "unavailable" || p.CurrentlyActive != nil {
			t.Errorf("after alice's set_presence=unavailable bob sees %+v", p)
		}
		// A sync without set_presence brings her back online...
		syncPresence(t, alice, "timeout=0")
		if p := getPresence(t, bob, alice.UserID); p.Presence != "online" {
			t.Errorf("after a plain sync alice is %q, want online", p.Presence)
		}
		// ...but not after she said so herself.
		wantOK(t, alice.Do("PUT", presencePath(alice.UserID), map[string]any{"presence": "unavailable"}), nil)
		syncPresence(t, alice, "timeout=0")
		if p := getPresence(t, bob, alice.UserID); p.Presence != "unavailable" || p.StatusMsg != nil {
			t.Errorf("after PUT unavailable and a plain sync alice is %+v, want unavailable without a status", p)
		}
		syncPresence(t, alice, "timeout=0&set_presence=offline") // changes nothing
		if p := getPresence(t, bob, alice.UserID); p.Presence != "unavailable" {
			t.Errorf("set_presence=offline changed alice to %q", p.Presence)
		}
		wantOK(t, alice.Do("PUT", presencePath(alice.UserID), map[string]any{"presence": "online"}), nil)
		if p := getPresence(t, bob, alice.UserID); p.Presence != "online" {
			t.Errorf("after PUT online alice is %q", p.Presence)
		}
	})

	t.Run("a long-poll is woken by a change", func(t *testing.T) {
		since := syncPresence(t, bob, "timeout=0&set_presence=offline").next
		got := make(chan presenceSync, 1)
		go func() {
			got <- syncPresence(t, bob, "timeout=600000&set_presence=offline&since="+url.QueryEscape(since))
		}()
		wantOK(t, alice.Do("PUT", presencePath(alice.UserID), map[string]any{"presence": "unavailable", "status_msg": "lunch"}), nil)
		select {
		case s := <-got:
			if p := s.events[alice.UserID]; p.Presence != "unavailable" || p.StatusMsg == nil || *p.StatusMsg != "lunch" {
				t.Errorf("woken sync has alice as %+v", p)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("long-poll not woken by a presence change")
		}
	})

	t.Run("offline once no client syncs", func(t *testing.T) {
		since := syncPresence(t, bob, "timeout=0&set_presence=offline").next
		clk.Advance(31 * time.Second)
		// The timeout takes bob offline too (his polls here do not count
		// as a connected client), so poll until alice's change arrives.
		for range 5 {
			got := make(chan presenceSync, 1)
			go func() {
				got <- syncPresence(t, bob, "timeout=600000&set_presence=offline&since="+url.QueryEscape(since))
			}()
			var s presenceSync
			select {
			case s = <-got:
			case <-time.After(20 * time.Second):
				t.Fatal("long-poll not woken by the offline timeout")
			}
			if p, ok := s.events[alice.UserID]; ok {
				if p.Presence != "offline" || p.LastActiveAgo == nil {
					t.Errorf("after the timeout alice is %+v, want offline with last_active_ago", p)
				}
				if g := getPresence(t, bob, alice.UserID); g.Presence != "offline" {
					t.Errorf("GET says alice is %q", g.Presence)
				}
				return
			}
			since = s.next
		}
		t.Fatal("alice never went offline")
	})

	t.Run("bad requests", func(t *testing.T) {
		wantErr(t, alice.Do("PUT", presencePath(bob.UserID), map[string]any{"presence": "online"}), http.StatusForbidden, "M_FORBIDDEN")
		wantErr(t, alice.Do("PUT", presencePath(alice.UserID), map[string]any{"presence": "busy"}), http.StatusBadRequest, "M_INVALID_PARAM")
		wantErr(t, alice.Do("PUT", presencePath(alice.UserID), map[string]any{"status_msg": "hi"}), http.StatusBadRequest, "M_MISSING_PARAM")
		wantErr(t, alice.Do("PUT", presencePath(alice.UserID), map[string]any{"presence": "online", "status_msg": 5}), http.StatusBadRequest, "M_BAD_JSON")
		wantErr(t, alice.Do("PUT", presencePath(alice.UserID), "not json"), http.StatusBadRequest, "M_NOT_JSON")
		wantErr(t, alice.Do("GET", presencePath("nobody"), nil), http.StatusBadRequest, "M_INVALID_PARAM")
		wantErr(t, alice.Do("GET", csAPI+"/sync?set_presence=away", nil), http.StatusBadRequest, "M_INVALID_PARAM")
	})
}

// TestPresenceManyChanges: a sync with many changes (past the one-by-one
// checks) still shows only users who share a room.
func TestPresenceManyChanges(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	since := syncPresence(t, alice, "timeout=0").next
	want := map[string]string{}
	for i := range 12 {
		c := srv.Register("user")
		if i%2 == 0 {
			joinRoom(t, c, room)
			want[c.UserID] = "unavailable"
		}
		wantOK(t, c.Do("PUT", presencePath(c.UserID), map[string]any{"presence": "unavailable"}), nil)
	}
	for name, query := range map[string]string{"initial": "timeout=0", "incremental": "timeout=0&since=" + url.QueryEscape(since)} {
		s := syncPresence(t, alice, query)
		got := map[string]string{}
		for u, p := range s.events {
			if u != alice.UserID {
				got[u] = p.Presence
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s sync: presence %v, want %v", name, got, want)
		}
	}
}

// TestPresenceSurvivesRestart: presence is durable, and a sync token from
// before the restart still works.
func TestPresenceSurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := testserver.Start(t, testserver.Options{DataDir: dir})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, bob, room)
	wantOK(t, alice.Do("PUT", presencePath(alice.UserID), map[string]any{"presence": "unavailable", "status_msg": "away"}), nil)
	since := syncPresence(t, bob, "timeout=0&set_presence=offline").next
	srv.Stop()

	srv2 := testserver.Start(t, testserver.Options{DataDir: dir})
	bob2 := srv2.Anonymous()
	bob2.Token, bob2.UserID = bob.Token, bob.UserID
	if p := getPresence(t, bob2, alice.UserID); p.Presence != "unavailable" || p.StatusMsg == nil || *p.StatusMsg != "away" {
		t.Errorf("after a restart alice is %+v", p)
	}
	// The old token is neither from the future nor replayed.
	if s := syncPresence(t, bob2, "timeout=0&set_presence=offline&since="+url.QueryEscape(since)); s.count != 0 {
		t.Errorf("sync from before the restart repeats presence %+v", s.events)
	}
}

func TestPresenceDisabled(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{Configure: func(c *configs.Config) { c.Presence.Enabled = false }})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, bob, room)
	since := syncPresence(t, bob, "timeout=0").next
	// Accepted and ignored, as Synapse does; still checked.
	wantOK(t, alice.Do("PUT", presencePath(alice.UserID), map[string]any{"presence": "online", "status_msg": "hi"}), nil)
	wantErr(t, alice.Do("PUT", presencePath(alice.UserID), map[string]any{"presence": "busy"}), http.StatusBadRequest, "M_INVALID_PARAM")
	syncPresence(t, alice, "timeout=0&set_presence=unavailable")
	var raw map[string]any
	wantOK(t, bob.Do("GET", presencePath(alice.UserID), nil), &raw)
	if b, _ := json.Marshal(raw); string(b) != `{"presence":"offline"}` {
		t.Errorf("GET with presence off = %s, want {\"presence\":\"offline\"}", b)
	}
	if s := syncPresence(t, bob, "timeout=0&since="+url.QueryEscape(since)); s.count != 0 {
		t.Errorf("sync with presence off has presence %+v", s.events)
	}
	if s := syncPresence(t, bob, "timeout=0"); s.count != 0 {
		t.Errorf("initial sync with presence off has presence %+v", s.events)
	}
}

// TestPresenceOfNewlySharedUsers: an incremental sync whose range holds a
// join that brings the user into a room with someone carries that
// someone's current presence, though it last changed before the token;
// the next sync does not repeat it (Complement TestSync "Newly joined
// room includes presence in incremental sync", "Get presence for newly
// joined members in incremental sync").
func TestPresenceOfNewlySharedUsers(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob, carol, dave := srv.Register("alice"), srv.Register("bob"), srv.Register("carol"), srv.Register("dave")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, carol, room)
	// Everyone's presence is set before any token below; dave's is
	// "unavailable" with a message, so it is his stored one that comes.
	for _, c := range []*testserver.Client{alice, bob, carol} {
		wantOK(t, c.Do("PUT", presencePath(c.UserID), map[string]any{"presence": "online"}), nil)
	}
	wantOK(t, dave.Do("PUT", presencePath(dave.UserID), map[string]any{"presence": "unavailable", "status_msg": "lunch"}), nil)
	users := func(ps presenceSync) map[string]bool {
		m := map[string]bool{}
		for u := range ps.events {
			m[u] = true
		}
		return m
	}

	// bob joins: his sync has the room's members, alice and carol.
	bobSince := syncPresence(t, bob, "timeout=0").next
	aliceSince := syncPresence(t, alice, "timeout=0").next
	joinRoom(t, bob, room)
	got := syncPresence(t, bob, "timeout=0&since="+url.QueryEscape(bobSince))
	if u := users(got); !reflect.DeepEqual(u, map[string]bool{alice.UserID: true, carol.UserID: true}) {
		t.Errorf("bob's sync after joining: presence of %v, want alice and carol", u)
	}
	if p := got.events[alice.UserID]; p.Presence != "online" {
		t.Errorf("alice's presence = %+v", p)
	}
	if again := syncPresence(t, bob, "timeout=0&since="+url.QueryEscape(got.next)); again.count != 0 {
		t.Errorf("the next sync repeats presence: %v", users(again))
	}
	// alice, in the room already, gets bob's presence with his join.
	got = syncPresence(t, alice, "timeout=0&since="+url.QueryEscape(aliceSince))
	if u := users(got); !reflect.DeepEqual(u, map[string]bool{bob.UserID: true}) {
		t.Errorf("alice's sync after bob joined: presence of %v, want bob", u)
	}
	if again := syncPresence(t, alice, "timeout=0&since="+url.QueryEscape(got.next)); again.count != 0 {
		t.Errorf("alice's next sync repeats presence: %v", users(again))
	}
	// A profile change (a join after a join) brings nobody new.
	aliceSince = got.next
	wantOK(t, carol.Do("PUT", profilePath(carol.UserID, "displayname"), map[string]any{"displayname": "Carol"}), nil)
	if got := syncPresence(t, alice, "timeout=0&since="+url.QueryEscape(aliceSince)); got.count != 0 {
		t.Errorf("a profile change sent presence of %v", users(got))
	}
	// dave's stored presence, message and all, comes with his join.
	aliceSince = syncPresence(t, alice, "timeout=0").next
	joinRoom(t, dave, room)
	got = syncPresence(t, alice, "timeout=0&since="+url.QueryEscape(aliceSince))
	if p, ok := got.events[dave.UserID]; !ok || p.Presence != "unavailable" || p.StatusMsg == nil || *p.StatusMsg != "lunch" {
		t.Errorf("dave's presence on joining = %+v (%v), want unavailable, lunch", p, ok)
	}
	// Someone who joins and leaves within the range shares no room: none.
	erin := srv.Register("erin")
	wantOK(t, erin.Do("PUT", presencePath(erin.UserID), map[string]any{"presence": "online"}), nil)
	aliceSince = syncPresence(t, alice, "timeout=0").next
	joinRoom(t, erin, room)
	leaveRoom(t, erin, room)
	if got := syncPresence(t, alice, "timeout=0&since="+url.QueryEscape(aliceSince)); got.events[erin.UserID].Presence != "" {
		t.Errorf("presence of erin, who left again: %+v", got.events[erin.UserID])
	}
}
