package api_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"testing"

	"github.com/persistentchat/homeserver/testserver"
)

type feedPage struct {
	Chunk     []clientEvent `json:"chunk"`
	NextBatch string        `json:"next_batch"`
	Limited   bool          `json:"limited"`
}

func (p feedPage) bodies() []string {
	var out []string
	for _, ev := range p.Chunk {
		out = append(out, ev.Content["body"].(string))
	}
	return out
}

func getFeed(t testing.TB, c *testserver.Client, id, query string) feedPage {
	t.Helper()
	var out feedPage
	wantOK(t, c.Do("GET", "/_matrix/client/unstable/org.persistentchat/feeds/"+id+"?"+query, nil), &out)
	return out
}

// waitParked spins until a long-poll is waiting on the server, or the
// request answered without waiting (then the test's checks fail).
func waitParked[T any](srv *testserver.Server, answered chan T) {
	for srv.HS.Syncer.Parked() == 0 && len(answered) == 0 {
		runtime.Gosched()
	}
}

// TestFeeds: keyword and sender feeds over a tagged joined room and a
// followed world_readable room bob never joined; a followed room whose
// history is not world_readable shows nothing; the endpoint long-polls
// and the /sync section carries new matches, also waking for a room bob
// is not in.
func TestFeeds(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob, carol := srv.Register("alice"), srv.Register("bob"), srv.Register("carol")
	joined := createRoom(t, alice, map[string]any{"preset": "public_chat", "name": "ops"})
	joinRoom(t, bob, joined)
	joinRoom(t, carol, joined)
	open := createRoom(t, alice, map[string]any{"preset": "public_chat", "initial_state": []any{
		map[string]any{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "world_readable"}}}})
	closed := createRoom(t, carol, map[string]any{"preset": "public_chat", "initial_state": []any{
		map[string]any{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "joined"}}}})

	wantOK(t, bob.Do("PUT", csAPI+"/user/"+url.PathEscape(bob.UserID)+"/rooms/"+url.PathEscape(joined)+"/tags/org.persistentchat.follow", map[string]any{}), nil)
	wantOK(t, bob.Do("PUT", csAPI+"/user/"+url.PathEscape(bob.UserID)+"/account_data/org.persistentchat.follows",
		map[string]any{"rooms": []string{open, closed}}), nil)
	wantOK(t, bob.Do("PUT", csAPI+"/user/"+url.PathEscape(bob.UserID)+"/account_data/org.persistentchat.feeds", map[string]any{"feeds": map[string]any{
		"ops":   map[string]any{"keywords": []string{"outage", "deploy*"}},
		"carol": map[string]any{"senders": []string{carol.UserID}, "rooms": []string{joined}},
	}}), nil)

	sendText(t, alice, joined, "deploying now")
	sendText(t, alice, joined, "lunch?")
	sendText(t, alice, open, "major OUTAGE upstream")
	sendText(t, carol, closed, "outage in a room bob cannot read")
	sendText(t, carol, joined, "hello from carol")

	ops := getFeed(t, bob, "ops", "")
	if got, want := ops.bodies(), []string{"deploying now", "major OUTAGE upstream"}; !slices.Equal(got, want) {
		t.Fatalf("ops feed = %q, want %q", got, want)
	}
	if ops.Chunk[1].RoomID != open || ops.NextBatch == "" {
		t.Errorf("ops feed: room %s, next_batch %q", ops.Chunk[1].RoomID, ops.NextBatch)
	}
	if got := getFeed(t, bob, "carol", "").bodies(); !slices.Equal(got, []string{"hello from carol"}) {
		t.Fatalf("carol feed = %q", got)
	}
	if got := getFeed(t, bob, "ops", "limit=1").bodies(); !slices.Equal(got, []string{"major OUTAGE upstream"}) {
		t.Fatalf("ops feed, limit 1 = %q", got)
	}
	// Nothing new: an answer at once without timeout.
	if got := getFeed(t, bob, "ops", "since="+ops.NextBatch); len(got.Chunk) != 0 || got.NextBatch != ops.NextBatch {
		t.Fatalf("ops feed with nothing new = %+v", got)
	}

	// The endpoint long-polls, woken by a room bob is not joined to.
	done := make(chan feedPage, 1)
	go func() { done <- getFeed(t, bob, "ops", "timeout=60000&since="+ops.NextBatch) }()
	waitParked(srv, done)
	sendText(t, alice, open, "lunch in the open room") // no match: keeps waiting
	sendText(t, alice, open, "second outage")
	next := <-done
	if got := next.bodies(); !slices.Equal(got, []string{"second outage"}) {
		t.Fatalf("long-polled ops feed = %q", got)
	}

	// /sync's section: an incremental long-poll woken by the open room.
	srv.Settle() // unread counts must not be what wakes the long-poll
	var first struct {
		NextBatch string `json:"next_batch"`
	}
	wantOK(t, bob.Do("GET", csAPI+"/sync?timeout=0", nil), &first)
	type syncFeeds struct {
		NextBatch string `json:"next_batch"`
		Feeds     map[string]struct {
			Events []clientEvent `json:"events"`
		} `json:"org.persistentchat.feeds"`
	}
	got := make(chan syncFeeds, 1)
	go func() {
		var s syncFeeds
		wantOK(t, bob.Do("GET", csAPI+"/sync?timeout=60000&since="+url.QueryEscape(first.NextBatch), nil), &s)
		got <- s
	}()
	waitParked(srv, got)
	sendText(t, alice, open, "third outage")
	s := <-got
	if evs := s.Feeds["ops"].Events; len(evs) != 1 || evs[0].Content["body"] != "third outage" || len(s.Feeds) != 1 {
		t.Fatalf("sync feeds section = %+v (sync %+v)", s.Feeds, s)
	}
	// And nothing repeated in the next sync.
	var again syncFeeds
	wantOK(t, bob.Do("GET", csAPI+"/sync?timeout=0&since="+url.QueryEscape(s.NextBatch), nil), &again)
	if len(again.Feeds) != 0 {
		t.Errorf("second sync repeated feeds: %+v", again.Feeds)
	}
}

func TestFeedErrors(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	bob := srv.Register("bob")
	put := func(typ string, content any) *testserver.Response {
		return bob.Do("PUT", csAPI+"/user/"+url.PathEscape(bob.UserID)+"/account_data/"+typ, content)
	}
	for name, content := range map[string]any{
		"bad feed ID":   map[string]any{"feeds": map[string]any{"no spaces": map[string]any{}}},
		"empty keyword": map[string]any{"feeds": map[string]any{"f": map[string]any{"keywords": []string{""}}}},
		"bad sender":    map[string]any{"feeds": map[string]any{"f": map[string]any{"senders": []string{"bob"}}}},
		"bad room":      map[string]any{"feeds": map[string]any{"f": map[string]any{"rooms": []string{"#alias:x"}}}},
		"not an object": map[string]any{"feeds": []string{"f"}},
	} {
		if r := put("org.persistentchat.feeds", content); r.Status != http.StatusBadRequest || r.Errcode() != "M_BAD_JSON" {
			t.Errorf("%s: got %d %s", name, r.Status, r.Body)
		}
	}
	wantErr(t, put("org.persistentchat.follows", map[string]any{"rooms": []string{"not-a-room"}}), http.StatusBadRequest, "M_BAD_JSON")
	wantErr(t, bob.Do("GET", "/_matrix/client/unstable/org.persistentchat/feeds/none", nil), http.StatusNotFound, "M_NOT_FOUND")
	wantOK(t, put("org.persistentchat.feeds", json.RawMessage(`{"feeds":{"f":{}}}`)), nil)
	for _, q := range []string{"since=abc", "since=-1", "since=999999999", "timeout=x", "limit=0"} {
		wantErr(t, bob.Do("GET", "/_matrix/client/unstable/org.persistentchat/feeds/f?"+q, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	}
	wantErr(t, srv.Anonymous().Do("GET", "/_matrix/client/unstable/org.persistentchat/feeds/f", nil), http.StatusUnauthorized, "M_MISSING_TOKEN")
}
