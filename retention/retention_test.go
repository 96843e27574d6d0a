package retention_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/api"
	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/retention"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"github.com/persistentchat/homeserver/testserver"
)

const (
	cs       = "/_matrix/client/v3"
	holds    = retention.AdminPrefix + "/holds"
	password = "correct horse battery"
	interval = time.Hour
)

// env is a server with retention on, one hourly purge job, an allowed
// range of [1h, 30d], and a fake clock.
type env struct {
	t     *testing.T
	srv   *testserver.Server
	clk   *clock.Fake
	waits int // purge timers seen set so far
	runs  int
}

func start(t *testing.T) *env { return startWith(t, true) }

// startWith is start with the server's own purge jobs on or off.
func startWith(t *testing.T, jobs bool) *env {
	t.Helper()
	clk := clock.NewFake(time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC))
	srv := testserver.Start(t, testserver.Options{Clock: clk, Configure: func(c *configs.Config) {
		c.Retention.Enabled = jobs
		c.Retention.AllowedLifetimeMin = configs.Duration(time.Hour)
		c.Retention.AllowedLifetimeMax = configs.Duration(30 * 24 * time.Hour)
		c.Retention.PurgeJobs = []configs.PurgeJob{{Interval: configs.Duration(interval)}}
	}})
	return &env{t: t, srv: srv, clk: clk}
}

// advance waits until the purge job waits on its timer, moves the clock
// by d, which must be the job's interval, and waits for the run to end.
func (e *env) advance(d time.Duration) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := e.srv.HS.Retention
	e.waits++
	if err := p.WaitStats(ctx, func(s retention.Stats) bool { return s.Waits >= e.waits }); err != nil {
		e.t.Fatalf("waiting for the purge job's timer: %v", err)
	}
	if d != interval {
		e.t.Fatalf("advance by %v, not the interval", d)
	}
	e.clk.Advance(d)
	e.runs++
	if err := p.WaitStats(ctx, func(s retention.Stats) bool { return s.Runs >= e.runs }); err != nil {
		e.t.Fatalf("waiting for the purge: %v", err)
	}
	if s := p.Stats(); s.Failures > 0 {
		e.t.Fatalf("purge failed: %+v", s)
	}
}

// admin makes a server administrator and logs in.
func (e *env) admin() *testserver.Client {
	e.t.Helper()
	hash, err := api.HashPassword(password, 4)
	if err != nil {
		e.t.Fatal(err)
	}
	id := "@admin" + strings.ToLower(strings.ReplaceAll(e.t.Name(), "/", "")) + ":localhost"
	if err := e.srv.HS.DB().CreateUser(context.Background(), storage.User{ID: roomdag.UserID(id), PasswordHash: hash, Admin: true}, e.clk.Now().UnixMilli()); err != nil {
		e.t.Fatal(err)
	}
	c := e.srv.Anonymous()
	var out struct {
		AccessToken string `json:"access_token"`
	}
	c.MustDo("POST", cs+"/login", map[string]any{"type": "m.login.password",
		"identifier": map[string]string{"type": "m.id.user", "user": id}, "password": password}, &out)
	c.UserID, c.Token = id, out.AccessToken
	return c
}

func (e *env) room(c *testserver.Client, maxLifetime int64) string {
	e.t.Helper()
	return c.CreateRoom(map[string]any{"preset": "public_chat", "name": "Kept name",
		"initial_state": []any{map[string]any{"type": "m.room.retention", "state_key": "", "content": map[string]any{"max_lifetime": maxLifetime}}}})
}

// messages is the bodies of the room's timeline, from /messages.
func messages(t *testing.T, c *testserver.Client, room string) []string {
	t.Helper()
	var out struct {
		Chunk []struct {
			Type    string         `json:"type"`
			Content map[string]any `json:"content"`
		} `json:"chunk"`
	}
	c.MustDo("GET", cs+"/rooms/"+url.PathEscape(room)+"/messages?dir=b&limit=100", nil, &out)
	var bodies []string
	for _, ev := range out.Chunk {
		if b, ok := ev.Content["body"].(string); ok && ev.Type == "m.room.message" {
			bodies = append(bodies, b)
		}
	}
	return bodies
}

func has(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func searchCount(t *testing.T, c *testserver.Client, term string) int {
	t.Helper()
	var out struct {
		SearchCategories struct {
			RoomEvents struct {
				Results []any `json:"results"`
			} `json:"room_events"`
		} `json:"search_categories"`
	}
	c.MustDo("POST", cs+"/search", map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": term}}}, &out)
	return len(out.SearchCategories.RoomEvents.Results)
}

func upload(t *testing.T, c *testserver.Client, data []byte) string {
	t.Helper()
	req, _ := http.NewRequest("POST", c.Base+"/_matrix/media/v3/upload", bytes.NewReader(data))
	req.Header.Set("Authorization", "Bearer "+c.Token)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		ContentURI string `json:"content_uri"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("upload: %d %v", resp.StatusCode, err)
	}
	return out.ContentURI
}

func download(c *testserver.Client, uri string) int {
	req, _ := http.NewRequest("GET", c.Base+"/_matrix/client/v1/media/download/"+strings.TrimPrefix(uri, "mxc://"), nil)
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func send(t *testing.T, c *testserver.Client, room, typ string, content map[string]any) string {
	t.Helper()
	var out struct {
		EventID string `json:"event_id"`
	}
	c.MustDo("PUT", cs+"/rooms/"+url.PathEscape(room)+"/send/"+typ+"/"+url.PathEscape(time.Now().Format(time.RFC3339Nano)), content, &out)
	return out.EventID
}

// TestPurge: a room's m.room.retention max_lifetime expires its history:
// once the clock passes it, the purge removes the expired messages from
// /messages and search, their relations and the media only they used,
// and keeps the room's state, its newest event and what is not expired.
func TestPurge(t *testing.T) {
	e := start(t)
	alice := e.srv.Register("alice")
	room := e.room(alice, (2 * time.Hour).Milliseconds())
	old := alice.SendText(room, "expiring walrus")
	uri := upload(t, alice, []byte("an image that expires"))
	kept := upload(t, alice, []byte("an image still in use"))
	send(t, alice, room, "m.room.message", map[string]any{"msgtype": "m.image", "body": "walrus.png", "url": uri})
	send(t, alice, room, "m.room.message", map[string]any{"msgtype": "m.image", "body": "old copy", "url": kept})
	send(t, alice, room, "m.reaction", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": old, "key": "👍"}})

	e.advance(interval) // t0+1h: nothing has expired yet
	if got := messages(t, alice, room); !has(got, "expiring walrus") {
		t.Fatalf("purged before its time: %q", got)
	}
	if searchCount(t, alice, "walrus") == 0 {
		t.Fatal("search lost the message before its time")
	}
	alice.SendText(room, "fresh narwhal")
	send(t, alice, room, "m.room.message", map[string]any{"msgtype": "m.image", "body": "new copy", "url": kept})

	e.advance(interval) // t0+2h: the first messages are 2h old, not older
	if got := messages(t, alice, room); !has(got, "expiring walrus") {
		t.Fatalf("purged at exactly max_lifetime: %q", got)
	}
	e.advance(interval) // t0+3h: they are past it
	got := messages(t, alice, room)
	for _, gone := range []string{"expiring walrus", "walrus.png", "old copy"} {
		if has(got, gone) {
			t.Errorf("%q still in /messages after its max_lifetime: %q", gone, got)
		}
	}
	if !has(got, "fresh narwhal") || !has(got, "new copy") {
		t.Errorf("unexpired messages purged: %q", got)
	}
	if n := searchCount(t, alice, "walrus"); n != 0 {
		t.Errorf("search finds %d purged events", n)
	}
	if n := searchCount(t, alice, "narwhal"); n != 1 {
		t.Errorf("search finds %d unexpired events, want 1", n)
	}
	if st := download(alice, uri); st != http.StatusNotFound {
		t.Errorf("media of purged events only: download status %d, want 404", st)
	}
	if st := download(alice, kept); st != http.StatusOK {
		t.Errorf("media still referred to: download status %d, want 200", st)
	}
	for content, want := range map[string]bool{"an image that expires": false, "an image still in use": true} {
		sum := fmt.Sprintf("%x", sha256.Sum256([]byte(content)))
		_, err := os.Stat(filepath.Join(e.srv.Config.MediaDir(), "content", sum[:2], sum[2:4], sum))
		if exists := err == nil; exists != want {
			t.Errorf("content file of %q exists: %v, want %v (%v)", content, exists, want, err)
		}
	}
	// An initial sync's timeline has none of it either.
	if b, _ := json.Marshal(alice.Sync("timeout=0")); strings.Contains(string(b), "expiring walrus") {
		t.Error("initial sync serves a purged event")
	}
	// Notifications of purged events are left out, not an error.
	alice.MustDo("GET", cs+"/notifications", nil, nil)
	r := alice.Do("GET", cs+"/rooms/"+url.PathEscape(room)+"/event/"+url.PathEscape(old), nil)
	if r.Status != http.StatusNotFound {
		t.Errorf("purged event: status %d %s, want 404", r.Status, r.Body)
	}
	var rel struct {
		Chunk []any `json:"chunk"`
	}
	if r := alice.Do("GET", "/_matrix/client/v1/rooms/"+url.PathEscape(room)+"/relations/"+url.PathEscape(old), nil); r.Status == http.StatusOK {
		if err := r.JSON(&rel); err != nil || len(rel.Chunk) != 0 {
			t.Errorf("relations of a purged event: %s", r.Body)
		}
	}
	// The state is whole, and the room keeps working.
	var name struct {
		Name string `json:"name"`
	}
	alice.MustDo("GET", cs+"/rooms/"+url.PathEscape(room)+"/state/m.room.name/", nil, &name)
	if name.Name != "Kept name" {
		t.Errorf("room name after the purge = %q", name.Name)
	}
	bob := e.srv.Register("bob")
	bob.Join(room)
	bob.SendText(room, "still works")
	if got := messages(t, bob, room); !has(got, "still works") {
		t.Errorf("room after the purge: %q", got)
	}
	if s := e.srv.HS.Retention.Stats(); s.Events < 4 || s.Media != 1 {
		t.Errorf("stats %+v: want at least 4 events and 1 media purged", s)
	}
}

// TestHolds: a held room is not purged, nor a held user's events in any
// room; releasing the hold lets the next purge run. Holds are for server
// administrators only.
func TestHolds(t *testing.T) {
	e := start(t)
	admin := e.admin()
	alice := e.srv.Register("alice")
	bob := e.srv.Register("bob")
	heldRoom := e.room(alice, time.Hour.Milliseconds())
	shared := e.room(alice, time.Hour.Milliseconds())
	bob.Join(shared)
	alice.SendText(heldRoom, "held room message")
	alice.SendText(shared, "alice unheld")
	bob.SendText(shared, "bob held")

	// Only administrators, and only well-formed holds.
	for _, c := range []struct {
		name   string
		who    *testserver.Client
		method string
		path   string
		body   any
		status int
		code   string
	}{
		{"non-admin create", alice, "POST", holds, map[string]any{"room_id": heldRoom, "reason": "x"}, 403, "M_FORBIDDEN"},
		{"non-admin list", alice, "GET", holds, nil, 403, "M_FORBIDDEN"},
		{"non-admin release", alice, "DELETE", holds + "/1", nil, 403, "M_FORBIDDEN"},
		{"non-admin release POST", alice, "POST", holds + "/1/release", nil, 403, "M_FORBIDDEN"},
		{"no token", e.srv.Anonymous(), "GET", holds, nil, 401, "M_MISSING_TOKEN"},
		{"both targets", admin, "POST", holds, map[string]any{"room_id": heldRoom, "user_id": bob.UserID, "reason": "x"}, 400, "M_INVALID_PARAM"},
		{"no target", admin, "POST", holds, map[string]any{"reason": "x"}, 400, "M_INVALID_PARAM"},
		{"no reason", admin, "POST", holds, map[string]any{"room_id": heldRoom}, 400, "M_INVALID_PARAM"},
		{"bad user", admin, "POST", holds, map[string]any{"user_id": "bob", "reason": "x"}, 400, "M_INVALID_PARAM"},
		{"bad room", admin, "POST", holds, map[string]any{"room_id": "room", "reason": "x"}, 400, "M_INVALID_PARAM"},
		{"wrong type", admin, "POST", holds, map[string]any{"room_id": 5, "reason": "x"}, 400, "M_BAD_JSON"},
		{"not JSON", admin, "POST", holds, "{", 400, "M_NOT_JSON"},
		{"bad hold ID", admin, "DELETE", holds + "/abc", nil, 400, "M_INVALID_PARAM"},
		{"unknown hold", admin, "DELETE", holds + "/999", nil, 404, "M_NOT_FOUND"},
		{"bad all", admin, "GET", holds + "?all=maybe", nil, 400, "M_INVALID_PARAM"},
	} {
		if r := c.who.Do(c.method, c.path, c.body); r.Status != c.status || r.Errcode() != c.code {
			t.Errorf("%s: %d %s, want %d %s", c.name, r.Status, r.Body, c.status, c.code)
		}
	}

	var roomHold, userHold retention.HoldJSON
	admin.MustDo("POST", holds, map[string]any{"room_id": heldRoom, "reason": "matter 1"}, &roomHold)
	admin.MustDo("POST", holds, map[string]any{"user_id": bob.UserID, "reason": "matter 2"}, &userHold)
	if !roomHold.Active || roomHold.RoomID != heldRoom || roomHold.CreatedBy != admin.UserID || userHold.UserID != bob.UserID {
		t.Fatalf("holds %+v %+v", roomHold, userHold)
	}
	var list struct {
		Holds []retention.HoldJSON `json:"holds"`
	}
	admin.MustDo("GET", holds, nil, &list)
	if len(list.Holds) != 2 {
		t.Fatalf("list %+v", list)
	}

	e.advance(interval)
	e.advance(interval) // t0+2h: everything is past max_lifetime (1h)
	if got := messages(t, alice, heldRoom); !has(got, "held room message") {
		t.Errorf("held room purged: %q", got)
	}
	got := messages(t, alice, shared)
	if has(got, "alice unheld") {
		t.Errorf("unheld user's event kept: %q", got)
	}
	if !has(got, "bob held") {
		t.Errorf("held user's event purged: %q", got)
	}

	var released retention.HoldJSON
	admin.MustDo("DELETE", holds+"/"+itoa(roomHold.ID), nil, &released)
	if released.Active || released.ReleasedBy != admin.UserID || released.ReleasedTS == 0 {
		t.Errorf("released %+v", released)
	}
	if r := admin.Do("POST", holds+"/"+itoa(roomHold.ID)+"/release", nil); r.Status != 400 || r.Errcode() != "M_BAD_STATE" {
		t.Errorf("second release: %d %s", r.Status, r.Body)
	}
	admin.MustDo("POST", holds+"/"+itoa(userHold.ID)+"/release", nil, &released)
	admin.MustDo("GET", holds, nil, &list)
	if len(list.Holds) != 0 {
		t.Errorf("active holds after release: %+v", list)
	}
	admin.MustDo("GET", holds+"?all=true", nil, &list)
	if len(list.Holds) != 2 {
		t.Errorf("all holds: %+v", list)
	}
	// New newest events, so that the ones above are no longer the newest.
	alice.SendText(heldRoom, "after release")
	bob.SendText(shared, "after release")

	e.advance(interval)
	if got := messages(t, alice, heldRoom); has(got, "held room message") {
		t.Errorf("released room not purged: %q", got)
	}
	if got := messages(t, alice, shared); has(got, "bob held") || !has(got, "after release") {
		t.Errorf("released user's events: %q", got)
	}
}

// TestAllowedRange: a room's max_lifetime below allowed_lifetime_min is
// raised to it.
func TestAllowedRange(t *testing.T) {
	e := start(t)
	alice := e.srv.Register("alice")
	room := e.room(alice, 1000) // 1 s, raised to the allowed 1h
	alice.SendText(room, "short lived")
	e.advance(interval) // the purge at t0+1h: the message is 1h old, not older
	if got := messages(t, alice, room); !has(got, "short lived") {
		t.Fatalf("max_lifetime not raised to allowed_lifetime_min: %q", got)
	}
	alice.SendText(room, "newest")
	e.advance(interval) // t0+2h
	if got := messages(t, alice, room); has(got, "short lived") || !has(got, "newest") {
		t.Errorf("after allowed_lifetime_min: %q", got)
	}
}

// TestEraseHeldUser: deactivating a held user's account with erase: true
// is refused with 403 M_FORBIDDEN, by the user and by an admin alike, and
// changes nothing; without erase it is deactivated.
func TestEraseHeldUser(t *testing.T) {
	e := start(t)
	admin := e.admin()
	alice := e.srv.Register("alice")
	admin.MustDo("POST", holds, map[string]any{"user_id": alice.UserID, "reason": "litigation"}, nil)
	auth := map[string]any{"type": "m.login.password", "user": alice.UserID, "password": password}
	r := alice.Do("POST", cs+"/account/deactivate", map[string]any{"erase": true, "auth": auth})
	if r.Status != 403 || r.Errcode() != "M_FORBIDDEN" || !strings.Contains(string(r.Body), "legal hold") {
		t.Fatalf("erase of a held user: %d %s", r.Status, r.Body)
	}
	r = admin.Do("POST", "/_synapse/admin/v1/deactivate/"+url.PathEscape(alice.UserID), map[string]any{"erase": true})
	if r.Status != 403 || r.Errcode() != "M_FORBIDDEN" {
		t.Fatalf("admin erase of a held user: %d %s", r.Status, r.Body)
	}
	alice.MustDo("GET", cs+"/account/whoami", nil, nil) // still active
	alice.MustDo("POST", cs+"/account/deactivate", map[string]any{"auth": auth}, nil)
	if r := alice.Do("GET", cs+"/account/whoami", nil); r.Status != 401 {
		t.Errorf("deactivated without erase: whoami %d", r.Status)
	}
	// An unheld user is erased as before.
	bob := e.srv.Register("bob")
	bob.MustDo("POST", cs+"/account/deactivate", map[string]any{"erase": true,
		"auth": map[string]any{"type": "m.login.password", "user": bob.UserID, "password": password}}, nil)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestRetentionEventChecked: a local m.room.retention event must carry
// integer lifetimes, min no greater than max (as Synapse checks), in
// PUT /state and in createRoom's initial_state alike.
func TestRetentionEventChecked(t *testing.T) {
	e := start(t)
	alice := e.srv.Register("alice")
	room := e.room(alice, time.Hour.Milliseconds())
	path := cs + "/rooms/" + url.PathEscape(room) + "/state/m.room.retention/"
	for _, c := range []struct {
		content any
		status  int
	}{
		{map[string]any{"max_lifetime": 86400000}, 200},
		{map[string]any{"max_lifetime": 86400000, "min_lifetime": 3600000}, 200},
		{map[string]any{"max_lifetime": nil}, 200},
		{map[string]any{}, 200},
		{map[string]any{"max_lifetime": "86400000"}, 400},
		{map[string]any{"max_lifetime": 1.5}, 400},
		{map[string]any{"max_lifetime": -1}, 400},
		{map[string]any{"min_lifetime": true}, 400},
		{map[string]any{"max_lifetime": 1000, "min_lifetime": 2000}, 400},
	} {
		r := alice.Do("PUT", path, c.content)
		if r.Status != c.status || (c.status == 400 && r.Errcode() != "M_BAD_JSON") {
			t.Errorf("PUT %v: %d %s, want %d", c.content, r.Status, r.Body, c.status)
		}
	}
	r := alice.Do("POST", cs+"/createRoom", map[string]any{"initial_state": []any{
		map[string]any{"type": "m.room.retention", "state_key": "", "content": map[string]any{"max_lifetime": "soon"}}}})
	if r.Status != 400 || r.Errcode() != "M_BAD_JSON" {
		t.Errorf("createRoom with a bad retention event: %d %s", r.Status, r.Body)
	}
}
