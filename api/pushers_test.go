package api_test

// Pushers and their delivery, end to end over HTTP: the client API sets
// pushers, messages go through the write path and the notification
// worker, and the pusher sender posts to a push gateway listening on
// loopback (spec: client-server API "Push Notifications", pusher.yaml;
// push gateway API, push_notifier.yaml). Back-off runs on a fake clock:
// the tests wait for events (a request at the gateway, a counter of the
// sender), never for time to pass.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/pusher"
	"github.com/persistentchat/homeserver/testserver"
)

// pushDevice is one entry of notification.devices.
type pushDevice struct {
	AppID     string         `json:"app_id"`
	PushKey   string         `json:"pushkey"`
	PushKeyTS int64          `json:"pushkey_ts"`
	Data      map[string]any `json:"data"`
	Tweaks    map[string]any `json:"tweaks"`
}

// pushNotification is what the gateway received, decoded, with the raw
// notification object to check which fields are absent.
type pushNotification struct {
	EventID           string           `json:"event_id"`
	RoomID            string           `json:"room_id"`
	Type              string           `json:"type"`
	Sender            string           `json:"sender"`
	SenderDisplayName string           `json:"sender_display_name"`
	RoomName          string           `json:"room_name"`
	RoomAlias         string           `json:"room_alias"`
	UserIsTarget      *bool            `json:"user_is_target"`
	Prio              string           `json:"prio"`
	Content           map[string]any   `json:"content"`
	Counts            map[string]int64 `json:"counts"`
	Devices           []pushDevice     `json:"devices"`
	raw               map[string]json.RawMessage
}

func (n pushNotification) pushKey() string {
	if len(n.Devices) != 1 {
		return ""
	}
	return n.Devices[0].PushKey
}

// pushGateway is a push gateway on loopback. answer decides each reply;
// the default accepts everything.
type pushGateway struct {
	t    *testing.T
	URL  string
	reqs chan pushNotification

	mu     gosync.Mutex
	answer func(n pushNotification) (status int, body string)
}

func startPushGateway(t *testing.T) *pushGateway {
	g := &pushGateway{t: t, reqs: make(chan pushNotification, 100)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != pusher.NotifyPath || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("gateway got %s %s (Content-Type %q)", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
		}
		b, _ := io.ReadAll(r.Body)
		var body struct {
			Notification json.RawMessage `json:"notification"`
		}
		var n pushNotification
		if err := json.Unmarshal(b, &body); err != nil || json.Unmarshal(body.Notification, &n) != nil ||
			json.Unmarshal(body.Notification, &n.raw) != nil {
			t.Errorf("gateway got a body that is not a notification: %s", b)
		}
		g.mu.Lock()
		answer := g.answer
		g.mu.Unlock()
		status, reply := http.StatusOK, `{"rejected":[]}`
		if answer != nil {
			status, reply = answer(n)
		}
		g.reqs <- n
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, reply)
	}))
	t.Cleanup(srv.Close)
	g.URL = srv.URL + pusher.NotifyPath
	return g
}

func (g *pushGateway) setAnswer(f func(n pushNotification) (int, string)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.answer = f
}

// next waits for the gateway's next request.
func (g *pushGateway) next() pushNotification {
	g.t.Helper()
	select {
	case n := <-g.reqs:
		return n
	case <-time.After(20 * time.Second):
		g.t.Fatal("the push gateway got no request")
		return pushNotification{}
	}
}

// nextFor waits for the next request for an event, failing on any other.
func (g *pushGateway) nextFor(eventID string) pushNotification {
	g.t.Helper()
	n := g.next()
	if n.EventID != eventID {
		g.t.Fatalf("gateway got a push for %s (%s), want %s", n.EventID, n.Type, eventID)
	}
	return n
}

// pending returns the requests received and not yet read, without
// waiting.
func (g *pushGateway) pending() []pushNotification {
	var out []pushNotification
	for {
		select {
		case n := <-g.reqs:
			out = append(out, n)
		default:
			return out
		}
	}
}

func pusherBody(gatewayURL, pushKey string, data map[string]any) map[string]any {
	d := map[string]any{"url": gatewayURL}
	for k, v := range data {
		d[k] = v
	}
	return map[string]any{
		"kind": "http", "app_id": "org.example.app", "pushkey": pushKey,
		"app_display_name": "Example", "device_display_name": "Phone", "lang": "en", "data": d,
	}
}

func setPusher(t *testing.T, c *testserver.Client, body map[string]any) {
	t.Helper()
	wantOK(t, c.Do("POST", csAPI+"/pushers/set", body), nil)
}

type pushersList struct {
	Pushers []struct {
		PushKey           string         `json:"pushkey"`
		Kind              string         `json:"kind"`
		AppID             string         `json:"app_id"`
		AppDisplayName    string         `json:"app_display_name"`
		DeviceDisplayName string         `json:"device_display_name"`
		ProfileTag        string         `json:"profile_tag"`
		Lang              string         `json:"lang"`
		Data              map[string]any `json:"data"`
	} `json:"pushers"`
}

func getPushers(t *testing.T, c *testserver.Client) pushersList {
	t.Helper()
	var out pushersList
	wantOK(t, c.Do("GET", csAPI+"/pushers", nil), &out)
	return out
}

func pushKeys(l pushersList) string {
	var keys []string
	for _, p := range l.Pushers {
		keys = append(keys, p.AppID+"/"+p.PushKey)
	}
	return strings.Join(keys, ",")
}

// waitPushStats waits until the sender's counters satisfy cond.
func waitPushStats(t *testing.T, srv *testserver.Server, what string, cond func(pusher.Stats) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.HS.Pushers.WaitStats(ctx, cond); err != nil {
		t.Fatalf("waiting for %s: %v (stats %+v)", what, err, srv.HS.Pushers.Stats())
	}
}

// loopbackPushOptions configures a test server whose pushers may reach
// the test gateways on loopback, which the default ip_range_blacklist
// denies (TestPushGatewayOnDeniedAddressIsNeverContacted). clk nil is the
// real clock; dataDir "" a new directory.
func loopbackPushOptions(clk clock.Clock, dataDir string) testserver.Options {
	return testserver.Options{Clock: clk, DataDir: dataDir, Configure: func(c *configs.Config) {
		c.IPRangeWhitelist = []string{"127.0.0.1"}
	}}
}

// pushRoom makes a room of owner's with members joined, named.
func pushRoom(t *testing.T, owner *testserver.Client, name string, members ...*testserver.Client) string {
	t.Helper()
	room := owner.CreateRoom(map[string]any{"preset": "public_chat", "name": name})
	for _, m := range members {
		m.Join(room)
	}
	return room
}

func TestPushersSetGetDelete(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("pushalice"), srv.Register("pushbob")
	const gw = "https://push.example.org/_matrix/push/v1/notify"

	if got := getPushers(t, alice); got.Pushers == nil || len(got.Pushers) != 0 {
		t.Fatalf("pushers of a new user = %+v, want an empty list", got)
	}
	body := pusherBody(gw, "key1", map[string]any{"format": "event_id_only", "custom": "x"})
	body["profile_tag"] = "tag"
	setPusher(t, alice, body)
	got := getPushers(t, alice)
	if len(got.Pushers) != 1 {
		t.Fatalf("pushers = %+v, want one", got)
	}
	p := got.Pushers[0]
	if p.PushKey != "key1" || p.Kind != "http" || p.AppID != "org.example.app" || p.AppDisplayName != "Example" ||
		p.DeviceDisplayName != "Phone" || p.Lang != "en" || p.ProfileTag != "tag" ||
		p.Data["url"] != gw || p.Data["format"] != "event_id_only" || p.Data["custom"] != "x" {
		t.Errorf("pusher = %+v", p)
	}

	// The same app ID and pushkey again is an update, not a second pusher.
	body["device_display_name"] = "Tablet"
	setPusher(t, alice, body)
	got = getPushers(t, alice)
	if len(got.Pushers) != 1 || got.Pushers[0].DeviceDisplayName != "Tablet" {
		t.Fatalf("after update: %+v, want one pusher named Tablet", got)
	}
	setPusher(t, alice, pusherBody(gw, "key2", nil))
	if k := pushKeys(getPushers(t, alice)); k != "org.example.app/key1,org.example.app/key2" {
		t.Fatalf("pushers = %s", k)
	}

	// kind null deletes; deleting what does not exist is fine.
	wantOK(t, alice.Do("POST", csAPI+"/pushers/set", map[string]any{"kind": nil, "app_id": "org.example.app", "pushkey": "key1"}), nil)
	wantOK(t, alice.Do("POST", csAPI+"/pushers/set", map[string]any{"kind": nil, "app_id": "org.example.app", "pushkey": "nope"}), nil)
	if k := pushKeys(getPushers(t, alice)); k != "org.example.app/key2" {
		t.Fatalf("after delete: %s", k)
	}

	// append: true keeps other users' pushers with the same app ID and
	// pushkey; false (the default) removes them.
	shared := pusherBody(gw, "shared", nil)
	setPusher(t, alice, shared)
	shared["append"] = true
	setPusher(t, bob, shared)
	if k := pushKeys(getPushers(t, alice)); k != "org.example.app/key2,org.example.app/shared" {
		t.Fatalf("alice after bob appended: %s", k)
	}
	delete(shared, "append")
	setPusher(t, bob, shared)
	if k := pushKeys(getPushers(t, alice)); k != "org.example.app/key2" {
		t.Fatalf("alice after bob set without append: %s", k)
	}
	if k := pushKeys(getPushers(t, bob)); k != "org.example.app/shared" {
		t.Fatalf("bob: %s", k)
	}
}

func TestPushersSetValidation(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("pushvalid")
	const gw = "https://push.example.org/_matrix/push/v1/notify"
	with := func(k string, v any) map[string]any {
		b := pusherBody(gw, "key", nil)
		if v == nil {
			delete(b, k)
		} else {
			b[k] = v
		}
		return b
	}
	withData := func(d any) map[string]any { b := pusherBody(gw, "key", nil); b["data"] = d; return b }
	cases := []struct {
		name   string
		body   any
		status int
		code   string
	}{
		{"no kind", with("kind", nil), 400, "M_MISSING_PARAM"},
		{"no app_id", with("app_id", nil), 400, "M_MISSING_PARAM"},
		{"no pushkey", with("pushkey", nil), 400, "M_MISSING_PARAM"},
		{"no lang", with("lang", nil), 400, "M_MISSING_PARAM"},
		{"no data", with("data", nil), 400, "M_MISSING_PARAM"},
		{"no display names", map[string]any{"kind": "http", "app_id": "a", "pushkey": "k", "lang": "en", "data": map[string]any{"url": gw}}, 400, "M_MISSING_PARAM"},
		{"delete without pushkey", map[string]any{"kind": nil, "app_id": "a"}, 400, "M_MISSING_PARAM"},
		{"email", with("kind", "email"), 400, "M_INVALID_PARAM"},
		{"unknown kind", with("kind", "carrier-pigeon"), 400, "M_INVALID_PARAM"},
		{"empty kind", with("kind", ""), 400, "M_INVALID_PARAM"},
		{"kind not a string", with("kind", 5), 400, "M_BAD_JSON"},
		{"app_id too long", with("app_id", strings.Repeat("a", 65)), 400, "M_INVALID_PARAM"},
		{"pushkey too long", with("pushkey", strings.Repeat("k", 513)), 400, "M_INVALID_PARAM"},
		{"lang not a string", with("lang", []string{"en"}), 400, "M_BAD_JSON"},
		{"append not a bool", with("append", "yes"), 400, "M_BAD_JSON"},
		{"data not an object", withData("x"), 400, "M_BAD_JSON"},
		{"no url", withData(map[string]any{"format": "event_id_only"}), 400, "M_MISSING_PARAM"},
		{"url not a string", withData(map[string]any{"url": 7}), 400, "M_INVALID_PARAM"},
		{"wrong path", withData(map[string]any{"url": "https://push.example.org/notify"}), 400, "M_INVALID_PARAM"},
		{"not http", withData(map[string]any{"url": "ftp://push.example.org/_matrix/push/v1/notify"}), 400, "M_INVALID_PARAM"},
		{"no host", withData(map[string]any{"url": "https:///_matrix/push/v1/notify"}), 400, "M_INVALID_PARAM"},
		{"format not a string", withData(map[string]any{"url": gw, "format": 1}), 400, "M_INVALID_PARAM"},
		{"not JSON", []byte("{"), 400, "M_NOT_JSON"},
	}
	for _, tc := range cases {
		r := alice.Do("POST", csAPI+"/pushers/set", tc.body)
		if r.Status != tc.status || r.Errcode() != tc.code {
			t.Errorf("%s: got %d %s, want %d %s: %s", tc.name, r.Status, r.Errcode(), tc.status, tc.code, r.Body)
		}
	}
	if got := getPushers(t, alice); len(got.Pushers) != 0 {
		t.Fatalf("refused requests stored pushers: %+v", got)
	}
	// The limits themselves are allowed: 64 characters (not bytes) of
	// app_id, 512 bytes of pushkey; a path prefix before the notify path.
	setPusher(t, alice, with("app_id", strings.Repeat("é", 64)))
	setPusher(t, alice, with("pushkey", strings.Repeat("k", 512)))
	setPusher(t, alice, withData(map[string]any{"url": "http://gateway.internal/prefix/_matrix/push/v1/notify"}))
	if got := getPushers(t, alice); len(got.Pushers) != 3 {
		t.Fatalf("pushers at the limits = %+v, want 3", got)
	}
	wantErr(t, srv.Anonymous().Do("GET", csAPI+"/pushers", nil), 401, "M_MISSING_TOKEN")
	wantErr(t, srv.Anonymous().Do("POST", csAPI+"/pushers/set", pusherBody(gw, "k", nil)), 401, "M_MISSING_TOKEN")
}

func TestPushDeliveryFields(t *testing.T) {
	t.Parallel()
	g := startPushGateway(t)
	srv := testserver.Start(t, loopbackPushOptions(nil, ""))
	alice, bob, carol := srv.Register("pushrecv"), srv.Register("pushsend"), srv.Register("pushthird")
	wantOK(t, bob.Do("PUT", csAPI+"/profile/"+url.PathEscape(bob.UserID)+"/displayname", map[string]any{"displayname": "Bob Builder"}), nil)
	alias := fmt.Sprintf("pushroom%d", time.Now().UnixNano())
	room := bob.CreateRoom(map[string]any{"preset": "public_chat", "name": "Pusher room", "room_alias_name": alias})
	alice.Join(room)
	carol.Join(room)
	srv.Settle()
	before := time.Now().Unix()
	setPusher(t, alice, pusherBody(g.URL, "alicekey", map[string]any{"custom": "x"}))

	// alice's own message is never pushed to her: the first push is bob's.
	alice.SendText(room, "my own words")
	first := bob.SendText(room, "hello alice")
	n := g.nextFor(first)
	if n.RoomID != room || n.Type != "m.room.message" || n.Sender != bob.UserID || n.SenderDisplayName != "Bob Builder" ||
		n.RoomName != "Pusher room" || n.RoomAlias != "#"+alias+":localhost" || n.Content["body"] != "hello alice" {
		t.Errorf("notification = %+v", n)
	}
	// A plain message in a group room makes no sound: low priority.
	if n.Prio != "low" || n.Counts["unread"] != 1 || n.UserIsTarget != nil {
		t.Errorf("prio %q, counts %v, user_is_target %v; want low, unread 1, absent", n.Prio, n.Counts, n.UserIsTarget)
	}
	if len(n.Devices) != 1 {
		t.Fatalf("devices = %+v, want one", n.Devices)
	}
	d := n.Devices[0]
	if d.AppID != "org.example.app" || d.PushKey != "alicekey" || d.PushKeyTS < before || d.PushKeyTS > time.Now().Unix() {
		t.Errorf("device = %+v", d)
	}
	if len(d.Data) != 1 || d.Data["custom"] != "x" {
		t.Errorf("device data = %v, want the pusher's data without url", d.Data)
	}
	second := bob.SendText(room, "are you there?")
	if n := g.nextFor(second); n.Counts["unread"] != 2 {
		t.Errorf("second push counts = %v, want unread 2", n.Counts)
	}

	// An invite is for alice, with a sound: high priority, user_is_target.
	dm := bob.CreateRoom(map[string]any{"preset": "private_chat"})
	wantOK(t, bob.Do("POST", csAPI+"/rooms/"+url.PathEscape(dm)+"/invite", map[string]any{"user_id": alice.UserID}), nil)
	n = g.next()
	if n.Type != "m.room.member" || n.RoomID != dm || n.UserIsTarget == nil || !*n.UserIsTarget || n.Prio != "high" ||
		n.Devices[0].Tweaks["sound"] != "default" || n.Content["membership"] != "invite" {
		t.Errorf("invite push = %+v", n)
	}

	// event_id_only: IDs, priority and counts, nothing of the event.
	setPusher(t, alice, pusherBody(g.URL, "alicekey", map[string]any{"format": "event_id_only"}))
	third := bob.SendText(room, "secret")
	n = g.nextFor(third)
	for _, k := range []string{"content", "sender", "type", "sender_display_name", "room_name"} {
		if _, ok := n.raw[k]; ok {
			t.Errorf("event_id_only push has %s: %s", k, n.raw[k])
		}
	}
	if n.RoomID != room || n.Prio != "low" || n.Counts["unread"] != 3 || n.Devices[0].Tweaks != nil ||
		n.Devices[0].Data["format"] != "event_id_only" {
		t.Errorf("event_id_only push = %+v", n)
	}
}

func TestPushRetriesWithBackoff(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Now())
	g := startPushGateway(t)
	var mu gosync.Mutex
	attempts := 0
	g.setAnswer(func(pushNotification) (int, string) {
		mu.Lock()
		defer mu.Unlock()
		attempts++
		if attempts <= 2 {
			return http.StatusInternalServerError, `{"errcode":"M_UNKNOWN"}`
		}
		return http.StatusOK, `{"rejected":[]}`
	})
	srv := testserver.Start(t, loopbackPushOptions(clk, ""))
	alice, bob := srv.Register("pushretry"), srv.Register("pushretrysend")
	room := pushRoom(t, bob, "Retry room", alice)
	srv.Settle()
	setPusher(t, alice, pusherBody(g.URL, "retrykey", nil))

	ev := bob.SendText(room, "try, try again")
	g.nextFor(ev) // 500
	waitPushStats(t, srv, "the first back-off", func(s pusher.Stats) bool { return s.Backoffs >= 1 })
	clk.Advance(pusher.InitialBackoff)
	g.nextFor(ev) // 500 again: the wait doubles
	waitPushStats(t, srv, "the second back-off", func(s pusher.Stats) bool { return s.Backoffs >= 2 })
	clk.Advance(2 * pusher.InitialBackoff)
	g.nextFor(ev) // 200
	waitPushStats(t, srv, "the delivery", func(s pusher.Stats) bool { return s.Delivered >= 1 })
	if s := srv.HS.Pushers.Stats(); s.Failed != 2 || s.Delivered != 1 || s.Backoffs != 2 {
		t.Errorf("stats = %+v, want 2 failed, 1 delivered, 2 back-offs", s)
	}
	// Delivered once: the next request is for the next message.
	next := bob.SendText(room, "and again")
	g.nextFor(next)
}

func TestPushGivesUpAfterADay(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Now())
	g := startPushGateway(t)
	g.setAnswer(func(pushNotification) (int, string) { return http.StatusBadGateway, "" })
	srv := testserver.Start(t, loopbackPushOptions(clk, ""))
	alice, bob := srv.Register("pushgiveup"), srv.Register("pushgiveupsend")
	room := pushRoom(t, bob, "Give-up room", alice)
	srv.Settle()
	setPusher(t, alice, pusherBody(g.URL, "giveupkey", nil))

	stale := bob.SendText(room, "nobody will see this")
	g.nextFor(stale)
	waitPushStats(t, srv, "a back-off", func(s pusher.Stats) bool { return s.Backoffs >= 1 })
	clk.Advance(pusher.GiveUpAfter + time.Minute)
	g.nextFor(stale) // fails again, now after a day of failing
	waitPushStats(t, srv, "giving up", func(s pusher.Stats) bool { return s.GivenUp >= 1 })
	g.setAnswer(nil)
	fresh := bob.SendText(room, "fresh news")
	g.nextFor(fresh) // the stale notification is not sent again
}

func TestPushRejectedPushKeyRemovesPusher(t *testing.T) {
	t.Parallel()
	g := startPushGateway(t)
	g.setAnswer(func(n pushNotification) (int, string) {
		return http.StatusOK, `{"rejected":["` + n.pushKey() + `"]}`
	})
	srv := testserver.Start(t, loopbackPushOptions(nil, ""))
	alice, bob := srv.Register("pushreject"), srv.Register("pushrejectsend")
	room := pushRoom(t, bob, "Reject room", alice)
	srv.Settle()
	setPusher(t, alice, pusherBody(g.URL, "expiredkey", nil))
	setPusher(t, alice, pusherBody("https://push.example.org/_matrix/push/v1/notify", "otherkey", map[string]any{"unused": true}))

	ev := bob.SendText(room, "anyone?")
	g.nextFor(ev)
	waitPushStats(t, srv, "the rejection", func(s pusher.Stats) bool { return s.Rejected >= 1 })
	if k := pushKeys(getPushers(t, alice)); k != "org.example.app/otherkey" {
		t.Fatalf("pushers after the gateway rejected expiredkey: %s", k)
	}
}

func TestPushUndeliveredIsSentAfterRestart(t *testing.T) {
	t.Parallel()
	g := startPushGateway(t)
	g.setAnswer(func(pushNotification) (int, string) { return http.StatusServiceUnavailable, "" })
	// A fake clock that never moves: no retry before the restart.
	srv := testserver.Start(t, loopbackPushOptions(clock.NewFake(time.Now()), ""))
	alice, bob := srv.Register("pushrestart"), srv.Register("pushrestartsend")
	room := pushRoom(t, bob, "Restart room", alice)
	srv.Settle()
	setPusher(t, alice, pusherBody(g.URL, "restartkey", nil))
	ev := bob.SendText(room, "see you on the other side")
	g.nextFor(ev)
	waitPushStats(t, srv, "a back-off", func(s pusher.Stats) bool { return s.Backoffs >= 1 })
	srv.Stop()

	g.setAnswer(nil)
	srv2 := testserver.Start(t, loopbackPushOptions(clock.NewFake(time.Now()), srv.DataDir))
	g.nextFor(ev)
	waitPushStats(t, srv2, "the delivery", func(s pusher.Stats) bool { return s.Delivered >= 1 })
	bob2 := srv2.Anonymous()
	bob2.UserID, bob2.Token = bob.UserID, bob.Token
	next := bob2.SendText(room, "made it")
	g.nextFor(next) // not the first one again
}

func TestPushLogoutRemovesDevicePushers(t *testing.T) {
	t.Parallel()
	g := startPushGateway(t)
	srv := testserver.Start(t, loopbackPushOptions(nil, ""))
	alice, bob := srv.Register("pushlogout"), srv.Register("pushlogoutsend")
	localpart := strings.TrimPrefix(strings.SplitN(alice.UserID, ":", 2)[0], "@")
	var login struct {
		AccessToken string `json:"access_token"`
	}
	wantOK(t, srv.Anonymous().Do("POST", csAPI+"/login", map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": localpart},
		"password": "correct horse battery"}), &login)
	phone := srv.Anonymous()
	phone.UserID, phone.Token = alice.UserID, login.AccessToken
	room := pushRoom(t, bob, "Logout room", alice)
	srv.Settle()
	setPusher(t, alice, pusherBody(g.URL, "laptopkey", nil))
	setPusher(t, phone, pusherBody(g.URL, "phonekey", nil))
	if k := pushKeys(getPushers(t, phone)); k != "org.example.app/laptopkey,org.example.app/phonekey" {
		t.Fatalf("pushers = %s", k)
	}

	wantOK(t, alice.Do("POST", csAPI+"/logout", map[string]any{}), nil)
	if k := pushKeys(getPushers(t, phone)); k != "org.example.app/phonekey" {
		t.Fatalf("pushers after the laptop logged out = %s", k)
	}
	ev := bob.SendText(room, "still there?")
	n := g.nextFor(ev)
	// Both loops were woken: the laptop's found its pusher gone and ended
	// without a request.
	waitPushStats(t, srv, "the laptop's loop to end", func(s pusher.Stats) bool { return s.Running == 1 && s.Delivered >= 1 })
	for _, m := range append(g.pending(), n) {
		if m.pushKey() != "phonekey" {
			t.Errorf("push to %q after its device logged out", m.pushKey())
		}
	}
}

func TestPushSlowGatewayBlocksNobodyElse(t *testing.T) {
	t.Parallel()
	slow := startPushGateway(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	slow.setAnswer(func(pushNotification) (int, string) {
		<-release
		return http.StatusOK, `{"rejected":[]}`
	})
	fast := startPushGateway(t)
	srv := testserver.Start(t, loopbackPushOptions(nil, ""))
	alice, carol, bob := srv.Register("pushslow"), srv.Register("pushfast"), srv.Register("pushslowsend")
	room := pushRoom(t, bob, "Slow room", alice, carol)
	srv.Settle()
	setPusher(t, alice, pusherBody(slow.URL, "slowkey", nil))
	setPusher(t, carol, pusherBody(fast.URL, "fastkey", nil))

	first := bob.SendText(room, "one")
	fast.nextFor(first)
	// alice's gateway holds her first push; carol's keep coming, and the
	// notification worker (and so /sync's counts) keeps up.
	second := bob.SendText(room, "two")
	fast.nextFor(second)
	srv.Settle()
	wantUnread(t, alice, room, 2, 0)
}
