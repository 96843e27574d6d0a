package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/testserver"
)

// ephemeralSync is the part of a /sync body the receipt and typing tests
// read.
type ephemeralSync struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Ephemeral struct {
				Events []struct {
					Type    string          `json:"type"`
					Content json.RawMessage `json:"content"`
				} `json:"events"`
			} `json:"ephemeral"`
			AccountData struct {
				Events []struct {
					Type    string         `json:"type"`
					Content map[string]any `json:"content"`
				} `json:"events"`
			} `json:"account_data"`
		} `json:"join"`
	} `json:"rooms"`
}

func syncEph(t *testing.T, c *testserver.Client, since string) ephemeralSync {
	t.Helper()
	q := "timeout=0"
	if since != "" {
		q += "&since=" + url.QueryEscape(since)
	}
	var out ephemeralSync
	wantOK(t, c.Do("GET", csAPI+"/sync?"+q, nil), &out)
	return out
}

// receiptEntry is content[event][type][user] of an m.receipt event.
type receiptEntry struct {
	TS       int64  `json:"ts"`
	ThreadID string `json:"thread_id"`
}

// receipts flattens a room's m.receipt events into
// "type event user thread" strings, sorted.
func (s ephemeralSync) receipts(room string) []string {
	var out []string
	for _, ev := range s.Rooms.Join[room].Ephemeral.Events {
		if ev.Type != "m.receipt" {
			continue
		}
		var c map[string]map[string]map[string]receiptEntry
		json.Unmarshal(ev.Content, &c)
		for event, types := range c {
			for typ, users := range types {
				for user, e := range users {
					if e.TS <= 0 {
						out = append(out, "no ts: "+user)
					}
					out = append(out, fmt.Sprintf("%s %s %s %s", typ, event, user, e.ThreadID))
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// typing returns the room's m.typing user_ids, and whether there was one.
func (s ephemeralSync) typing(room string) ([]string, bool) {
	for _, ev := range s.Rooms.Join[room].Ephemeral.Events {
		if ev.Type == "m.typing" {
			var c struct {
				UserIDs []string `json:"user_ids"`
			}
			json.Unmarshal(ev.Content, &c)
			return c.UserIDs, true
		}
	}
	return nil, false
}

func receipt(c *testserver.Client, room, typ, event string, body any) *testserver.Response {
	return c.Do("POST", roomPath(room, "receipt", typ, event), body)
}

func wantReceipts(t *testing.T, got []string, want ...string) {
	t.Helper()
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("receipts = %q, want %q", got, want)
	}
}

func TestReceipts(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob, carol := srv.Register("alice"), srv.Register("bob"), srv.Register("carol")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, bob, room)
	e1 := sendText(t, alice, room, "one")
	e2 := sendText(t, alice, room, "two")
	since := syncEph(t, bob, "").NextBatch

	wantOK(t, receipt(bob, room, "m.read", e2, map[string]any{}), nil)
	s := syncEph(t, alice, since)
	wantReceipts(t, s.receipts(room), "m.read "+e2+" "+bob.UserID+" ")

	// Receipts only move forward: an older one is accepted and ignored.
	next := s.NextBatch
	wantOK(t, receipt(bob, room, "m.read", e1, nil), nil)
	if got := syncEph(t, alice, next).receipts(room); len(got) != 0 {
		t.Errorf("a receipt for an older event reached others: %q", got)
	}
	wantReceipts(t, syncEph(t, alice, "").receipts(room), "m.read "+e2+" "+bob.UserID+" ")

	// A private receipt reaches only its owner.
	e3 := sendText(t, alice, room, "three")
	next = syncEph(t, alice, "").NextBatch
	bobNext := syncEph(t, bob, "").NextBatch
	wantOK(t, receipt(bob, room, "m.read.private", e3, map[string]any{}), nil)
	if got := syncEph(t, alice, next).receipts(room); len(got) != 0 {
		t.Errorf("another user's private receipt reached alice: %q", got)
	}
	wantReceipts(t, syncEph(t, bob, bobNext).receipts(room), "m.read.private "+e3+" "+bob.UserID+" ")
	wantReceipts(t, syncEph(t, alice, "").receipts(room), "m.read "+e2+" "+bob.UserID+" ")
	wantReceipts(t, syncEph(t, bob, "").receipts(room),
		"m.read "+e2+" "+bob.UserID+" ", "m.read.private "+e3+" "+bob.UserID+" ")

	// Threaded receipts are kept apart from the unthreaded one.
	wantOK(t, receipt(alice, room, "m.read", e1, map[string]any{"thread_id": "main"}), nil)
	wantReceipts(t, syncEph(t, carol, "").receipts(room)) // not joined: no room at all
	joinRoom(t, carol, room)
	wantReceipts(t, syncEph(t, carol, "").receipts(room),
		"m.read "+e1+" "+alice.UserID+" main", "m.read "+e2+" "+bob.UserID+" ")

	// m.fully_read through /receipt is room account data, not a receipt.
	next = syncEph(t, alice, "").NextBatch
	wantOK(t, receipt(alice, room, "m.fully_read", e2, map[string]any{}), nil)
	s = syncEph(t, alice, next)
	if got := s.receipts(room); len(got) != 0 {
		t.Errorf("m.fully_read appeared as a receipt: %q", got)
	}
	if ad := s.Rooms.Join[room].AccountData.Events; len(ad) != 1 || ad[0].Type != "m.fully_read" || ad[0].Content["event_id"] != e2 {
		t.Errorf("account data after m.fully_read = %+v", ad)
	}
}

func TestReceiptsSurviveRestart(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	room := createRoom(t, alice, map[string]any{})
	e1 := sendText(t, alice, room, "one")
	wantOK(t, receipt(alice, room, "m.read", e1, nil), nil)
	before := syncEph(t, alice, "").NextBatch
	dir := srv.DataDir
	srv.Stop()

	srv = testserver.Start(t, testserver.Options{DataDir: dir})
	alice.Base, alice.HTTP = srv.URL, srv.Anonymous().HTTP
	wantReceipts(t, syncEph(t, alice, "").receipts(room), "m.read "+e1+" "+alice.UserID+" ")
	// The old token is still valid and nothing has changed since.
	if s := syncEph(t, alice, before); len(s.Rooms.Join) != 0 {
		t.Errorf("sync from a pre-restart token returned %+v", s.Rooms.Join)
	}
	e2 := sendText(t, alice, room, "two")
	wantOK(t, receipt(alice, room, "m.read", e2, nil), nil)
	wantReceipts(t, syncEph(t, alice, before).receipts(room), "m.read "+e2+" "+alice.UserID+" ")
}

func TestReceiptErrors(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, outsider := srv.Register("alice"), srv.Register("outsider")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	other := createRoom(t, alice, map[string]any{})
	ev := sendText(t, alice, room, "hello")
	elsewhere := sendText(t, alice, other, "elsewhere")

	wantErr(t, receipt(alice, room, "m.unknown", ev, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, receipt(alice, room, "m.read", "$nonexistent", nil), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, receipt(alice, room, "m.read", elsewhere, nil), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, receipt(outsider, room, "m.read", ev, nil), http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, receipt(alice, room, "m.read", ev, map[string]any{"thread_id": ""}), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, receipt(alice, room, "m.read", ev, map[string]any{"thread_id": 7}), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, receipt(alice, room, "m.fully_read", ev, map[string]any{"thread_id": "main"}), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, receipt(alice, room, "m.read", ev, "{not json"), http.StatusBadRequest, "M_NOT_JSON")

	markers := roomPath(room, "read_markers")
	wantErr(t, alice.Do("POST", markers, map[string]any{"m.fully_read": "$nonexistent"}), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, alice.Do("POST", markers, map[string]any{"m.read": 12}), http.StatusBadRequest, "M_BAD_JSON")
	wantErr(t, alice.Do("POST", markers, "[]"), http.StatusBadRequest, "M_BAD_JSON")
	wantErr(t, outsider.Do("POST", markers, map[string]any{"m.read": ev}), http.StatusForbidden, "M_FORBIDDEN")
	// The client cannot set m.fully_read as plain room account data.
	r := alice.Do("PUT", fmt.Sprintf("%s/user/%s/rooms/%s/account_data/m.fully_read", csAPI, url.PathEscape(alice.UserID), url.PathEscape(room)),
		map[string]any{"event_id": ev})
	if r.Status == http.StatusOK {
		t.Errorf("m.fully_read set directly as account data")
	}
}

// TestReceiptOnHiddenEvent: a member may not mark as read an event the
// room's history visibility hides from them, here a message from before
// they joined a room whose history is "joined": 403, as Synapse answers,
// by receipt and by read marker alike, and nothing is recorded.
func TestReceiptOnHiddenEvent(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat", "initial_state": []any{
		map[string]any{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "joined"}}}})
	before := sendText(t, alice, room, "before bob")
	joinRoom(t, bob, room)
	after := sendText(t, alice, room, "after bob")
	aliceSince := syncEph(t, alice, "").NextBatch

	for _, typ := range []string{"m.read", "m.read.private", "m.fully_read"} {
		wantErr(t, receipt(bob, room, typ, before, nil), http.StatusForbidden, "M_FORBIDDEN")
	}
	for _, key := range []string{"m.read", "m.read.private", "m.fully_read"} {
		wantErr(t, bob.Do("POST", roomPath(room, "read_markers"), map[string]any{key: before}), http.StatusForbidden, "M_FORBIDDEN")
	}
	// Nothing was recorded: alice's sync shows no receipt of bob's yet,
	// then the one on the event he could see.
	if got := syncEph(t, alice, aliceSince).receipts(room); len(got) != 0 {
		t.Errorf("receipts after refusals: %v", got)
	}
	wantOK(t, receipt(bob, room, "m.read", after, nil), nil)
	wantReceipts(t, syncEph(t, alice, aliceSince).receipts(room), "m.read "+after+" "+bob.UserID+" ")
}

func TestReadMarkers(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, bob, room)
	e1 := sendText(t, alice, room, "one")
	e2 := sendText(t, alice, room, "two")
	aliceSince := syncEph(t, alice, "").NextBatch
	bobSince := syncEph(t, bob, "").NextBatch

	wantOK(t, bob.Do("POST", roomPath(room, "read_markers"), map[string]any{
		"m.fully_read": e2, "m.read": e1, "m.read.private": e2}), nil)
	fullyRead := func() any {
		var c map[string]any
		wantOK(t, bob.Do("GET", fmt.Sprintf("%s/user/%s/rooms/%s/account_data/m.fully_read", csAPI,
			url.PathEscape(bob.UserID), url.PathEscape(room)), nil), &c)
		return c["event_id"]
	}
	if got := fullyRead(); got != e2 {
		t.Fatalf("m.fully_read = %v, want %s", got, e2)
	}
	wantReceipts(t, syncEph(t, alice, aliceSince).receipts(room), "m.read "+e1+" "+bob.UserID+" ")
	s := syncEph(t, bob, bobSince)
	wantReceipts(t, s.receipts(room), "m.read "+e1+" "+bob.UserID+" ", "m.read.private "+e2+" "+bob.UserID+" ")
	if ad := s.Rooms.Join[room].AccountData.Events; len(ad) != 1 || ad[0].Content["event_id"] != e2 {
		t.Errorf("bob's sync has room account data %+v, want m.fully_read at %s", ad, e2)
	}

	// The fully read marker does not move back either.
	wantOK(t, bob.Do("POST", roomPath(room, "read_markers"), map[string]any{"m.fully_read": e1}), nil)
	if got := fullyRead(); got != e2 {
		t.Errorf("m.fully_read moved back to %v", got)
	}
	// Nothing to do is fine.
	wantOK(t, bob.Do("POST", roomPath(room, "read_markers"), map[string]any{}), nil)
}

func typingPath(room, user string) string { return roomPath(room, "typing", user) }

func TestTyping(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC))
	srv := testserver.Start(t, testserver.Options{Clock: clk})
	alice, bob, outsider := srv.Register("alice"), srv.Register("bob"), srv.Register("outsider")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, bob, room)
	since := syncEph(t, bob, "").NextBatch

	wantOK(t, alice.Do("PUT", typingPath(room, alice.UserID), map[string]any{"typing": true, "timeout": 10000}), nil)
	s := syncEph(t, bob, since)
	if users, ok := s.typing(room); !ok || !slices.Equal(users, []string{alice.UserID}) {
		t.Fatalf("typing after start = %v (%v), want alice", users, ok)
	}
	// A fresh sync shows who is typing now.
	if users, _ := syncEph(t, bob, "").typing(room); !slices.Equal(users, []string{alice.UserID}) {
		t.Errorf("initial sync typing = %v", users)
	}
	// Nothing new: nothing repeated.
	if _, ok := syncEph(t, bob, s.NextBatch).typing(room); ok {
		t.Errorf("typing repeated without a change")
	}

	// Explicit stop.
	wantOK(t, bob.Do("PUT", typingPath(room, bob.UserID), map[string]any{"typing": true, "timeout": 60000}), nil)
	s = syncEph(t, alice, s.NextBatch)
	if users, _ := s.typing(room); !slices.Equal(users, []string{alice.UserID, bob.UserID}) {
		t.Fatalf("typing with both = %v", users)
	}
	wantOK(t, bob.Do("PUT", typingPath(room, bob.UserID), map[string]any{"typing": false}), nil)
	s = syncEph(t, alice, s.NextBatch)
	if users, _ := s.typing(room); !slices.Equal(users, []string{alice.UserID}) {
		t.Fatalf("typing after bob stopped = %v", users)
	}

	// Expiry on the injected clock.
	clk.Advance(9 * time.Second)
	if _, ok := syncEph(t, bob, s.NextBatch).typing(room); ok {
		t.Fatalf("typing changed before the timeout")
	}
	clk.Advance(time.Second)
	s = syncEph(t, bob, s.NextBatch)
	if users, ok := s.typing(room); !ok || len(users) != 0 {
		t.Fatalf("typing after the timeout = %v (%v), want an empty list", users, ok)
	}
	if users, ok := syncEph(t, bob, "").typing(room); ok {
		t.Errorf("initial sync shows typing %v after it ended", users)
	}

	// A timeout past the cap is capped at 120 s.
	wantOK(t, alice.Do("PUT", typingPath(room, alice.UserID), map[string]any{"typing": true, "timeout": 3600000}), nil)
	clk.Advance(120 * time.Second)
	if users, _ := syncEph(t, bob, "").typing(room); len(users) != 0 {
		t.Errorf("typing with a huge timeout still on after 120 s: %v", users)
	}

	// A token from before a restart (typing position ahead) still works.
	cur := syncEph(t, bob, "").NextBatch
	var ev, ad, rc, ty int64
	fmt.Sscanf(cur, "s%d_%d_%d_%d", &ev, &ad, &rc, &ty)
	future := fmt.Sprintf("s%d_%d_%d_%d", ev, ad, rc, ty+1000)
	wantOK(t, alice.Do("PUT", typingPath(room, alice.UserID), map[string]any{"typing": true}), nil)
	if users, _ := syncEph(t, bob, future).typing(room); !slices.Equal(users, []string{alice.UserID}) {
		t.Errorf("sync from a token ahead of the typing stream: typing = %v", users)
	}

	// Bad input.
	wantErr(t, alice.Do("PUT", typingPath(room, bob.UserID), map[string]any{"typing": true}), http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, outsider.Do("PUT", typingPath(room, outsider.UserID), map[string]any{"typing": true}), http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, alice.Do("PUT", typingPath(room, alice.UserID), "{oops"), http.StatusBadRequest, "M_NOT_JSON")
	wantErr(t, alice.Do("PUT", typingPath(room, alice.UserID), map[string]any{"typing": "yes"}), http.StatusBadRequest, "M_BAD_JSON")
	wantErr(t, alice.Do("PUT", typingPath(room, alice.UserID), map[string]any{}), http.StatusBadRequest, "M_MISSING_PARAM")
	wantErr(t, alice.Do("PUT", typingPath(room, alice.UserID), map[string]any{"typing": true, "timeout": -1}), http.StatusBadRequest, "M_INVALID_PARAM")
}

// longPoll starts a /sync that waits for news and returns its result.
func longPoll(c *testserver.Client, since string) <-chan ephemeralSync {
	got := make(chan ephemeralSync, 1)
	go func() {
		var out ephemeralSync
		r := c.Do("GET", csAPI+"/sync?timeout=600000&since="+url.QueryEscape(since), nil)
		json.Unmarshal(r.Body, &out)
		got <- out
	}()
	return got
}

func waitSync(t *testing.T, got <-chan ephemeralSync, what string) ephemeralSync {
	t.Helper()
	select {
	case s := <-got:
		return s
	case <-time.After(20 * time.Second):
		t.Fatalf("long-poll was not woken by %s", what)
		return ephemeralSync{}
	}
}

func TestLongPollWokenByEphemeral(t *testing.T) {
	t.Parallel()
	// A fake clock: the long-polls below can only end by being woken.
	clk := clock.NewFake(time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC))
	srv := testserver.Start(t, testserver.Options{Clock: clk})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, bob, room)
	ev := sendText(t, alice, room, "hello")
	srv.Settle() // bob's notification for "hello" must not be what wakes the poll
	since := syncEph(t, bob, "").NextBatch

	// The long-poll may not be parked yet when the change lands; either
	// way it must return with the change.
	got := longPoll(bob, since)
	wantOK(t, alice.Do("PUT", typingPath(room, alice.UserID), map[string]any{"typing": true, "timeout": 5000}), nil)
	s := waitSync(t, got, "typing")
	if users, _ := s.typing(room); !slices.Equal(users, []string{alice.UserID}) {
		t.Fatalf("woken sync typing = %v", users)
	}

	got = longPoll(bob, s.NextBatch)
	wantOK(t, alice.Do("POST", roomPath(room, "receipt", "m.read", ev), map[string]any{}), nil)
	s = waitSync(t, got, "a receipt")
	wantReceipts(t, s.receipts(room), "m.read "+ev+" "+alice.UserID+" ")

	// The end of a typing notification wakes it too.
	got = longPoll(bob, s.NextBatch)
	clk.Advance(5 * time.Second)
	s = waitSync(t, got, "typing expiry")
	if users, ok := s.typing(room); !ok || len(users) != 0 {
		t.Fatalf("woken sync after expiry: typing = %v (%v)", users, ok)
	}

	// A private receipt of another user does not end the long-poll; the
	// next public change does, and brings only that.
	got = longPoll(bob, s.NextBatch)
	wantOK(t, alice.Do("POST", roomPath(room, "receipt", "m.read.private", ev), map[string]any{}), nil)
	wantOK(t, alice.Do("PUT", typingPath(room, alice.UserID), map[string]any{"typing": true}), nil)
	s = waitSync(t, got, "typing after a private receipt")
	if r := s.receipts(room); len(r) != 0 {
		t.Errorf("bob's sync has alice's private receipt: %q", r)
	}
}
