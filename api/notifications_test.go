package api_test

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/sync"
	"github.com/persistentchat/homeserver/testserver"
)

// waitNotified waits until the notification worker has processed every
// committed event: no sleeping, the worker reports its position.
func waitNotified(t testing.TB, srv *testserver.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.HS.Notifications.Wait(ctx, srv.HS.Syncer.Notifier().Current().Events); err != nil {
		t.Fatalf("waiting for the notification worker: %v", err)
	}
}

type unreadCounts struct {
	NotificationCount int64 `json:"notification_count"`
	HighlightCount    int64 `json:"highlight_count"`
}

type unreadSync struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline struct {
				Events []clientEvent `json:"events"`
			} `json:"timeline"`
			Unread *unreadCounts `json:"unread_notifications"`
		} `json:"join"`
	} `json:"rooms"`
}

func syncUnread(t testing.TB, c *testserver.Client, since string) unreadSync {
	t.Helper()
	q := "timeout=0"
	if since != "" {
		q += "&since=" + url.QueryEscape(since)
	}
	var out unreadSync
	wantOK(t, c.Do("GET", csAPI+"/sync?"+q, nil), &out)
	return out
}

// unread is the room's counts in an initial sync.
func unread(t testing.TB, c *testserver.Client, room string) unreadCounts {
	t.Helper()
	jr, ok := syncUnread(t, c, "").Rooms.Join[room]
	if !ok || jr.Unread == nil {
		t.Fatalf("room %s without unread_notifications in sync", room)
	}
	return *jr.Unread
}

func wantUnread(t testing.TB, c *testserver.Client, room string, notifications, highlights int64) {
	t.Helper()
	got := unread(t, c, room)
	if got != (unreadCounts{notifications, highlights}) {
		t.Fatalf("%s unread = %+v, want %d notifications, %d highlights", c.UserID, got, notifications, highlights)
	}
}

type notificationsPage struct {
	Notifications []struct {
		Actions []any       `json:"actions"`
		Event   clientEvent `json:"event"`
		Read    bool        `json:"read"`
		RoomID  string      `json:"room_id"`
		TS      int64       `json:"ts"`
	} `json:"notifications"`
	NextToken string `json:"next_token"`
}

func getNotifications(t testing.TB, c *testserver.Client, query string) notificationsPage {
	t.Helper()
	var out notificationsPage
	wantOK(t, c.Do("GET", csAPI+"/notifications?"+query, nil), &out)
	return out
}

func (p notificationsPage) eventIDs() []string {
	var ids []string
	for _, n := range p.Notifications {
		ids = append(ids, n.Event.EventID)
	}
	return ids
}

func putRule(t testing.TB, c *testserver.Client, kind, id string, body any) {
	t.Helper()
	wantOK(t, c.Do("PUT", csAPI+"/pushrules/global/"+kind+"/"+url.PathEscape(id), body), nil)
}

// TestNotifications: keyword (content) and sender rules, a mention
// highlight, counts in /sync, clearing by a read receipt, and
// /notifications with paging and only=highlight.
func TestNotifications(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob, carol := srv.Register("alice"), srv.Register("bob"), srv.Register("carol")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, bob, room)
	joinRoom(t, carol, room)

	// Bob mutes room chatter but wants a keyword, and everything carol says.
	wantOK(t, bob.Do("PUT", csAPI+"/pushrules/global/underride/.m.rule.message/enabled", map[string]any{"enabled": false}), nil)
	putRule(t, bob, "content", "deploys", map[string]any{"pattern": "deploy", "actions": []any{"notify", map[string]any{"set_tweak": "sound", "value": "default"}}})
	putRule(t, bob, "sender", carol.UserID, map[string]any{"actions": []any{"notify"}})

	sendText(t, alice, room, "good morning")
	waitNotified(t, srv)
	wantUnread(t, bob, room, 0, 0)
	wantUnread(t, carol, room, 1, 0) // default rules: every message
	wantUnread(t, alice, room, 0, 0) // never for one's own events

	kw := sendText(t, alice, room, "we deploy at noon")
	sendText(t, alice, room, "redeployment is not a word match")
	waitNotified(t, srv)
	wantUnread(t, bob, room, 1, 0)

	fromCarol := sendText(t, carol, room, "hi all")
	waitNotified(t, srv)
	wantUnread(t, bob, room, 2, 0)

	mention := sendEvent(t, alice, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "bob: look",
		"m.mentions": map[string]any{"user_ids": []string{bob.UserID}}})
	waitNotified(t, srv)
	wantUnread(t, bob, room, 3, 1)

	all := getNotifications(t, bob, "")
	if got, want := all.eventIDs(), []string{mention, fromCarol, kw}; !slices.Equal(got, want) {
		t.Fatalf("notifications = %q, want %q", got, want)
	}
	n := all.Notifications[0]
	if n.RoomID != room || n.Read || n.TS <= 0 || n.Event.Sender != alice.UserID || n.Event.Content["body"] != "bob: look" ||
		!slices.ContainsFunc(n.Actions, func(a any) bool { m, ok := a.(map[string]any); return ok && m["set_tweak"] == "highlight" }) {
		t.Errorf("mention notification = %+v", n)
	}
	hl := getNotifications(t, bob, "only=highlight")
	if got := hl.eventIDs(); !slices.Equal(got, []string{mention}) {
		t.Fatalf("only=highlight = %q", got)
	}

	// Paging: newest first, next_token continues, absent at the end.
	p1 := getNotifications(t, bob, "limit=2")
	if got := p1.eventIDs(); !slices.Equal(got, []string{mention, fromCarol}) || p1.NextToken == "" {
		t.Fatalf("page 1 = %q, next %q", got, p1.NextToken)
	}
	p2 := getNotifications(t, bob, "limit=2&from="+url.QueryEscape(p1.NextToken))
	if got := p2.eventIDs(); !slices.Equal(got, []string{kw}) || p2.NextToken != "" {
		t.Fatalf("page 2 = %q, next %q", got, p2.NextToken)
	}

	// A read receipt at fromCarol reads it and what came before.
	wantOK(t, receipt(bob, room, "m.read", fromCarol, map[string]any{}), nil)
	wantUnread(t, bob, room, 1, 1)
	reads := map[string]bool{}
	for _, n := range getNotifications(t, bob, "").Notifications {
		reads[n.Event.EventID] = n.Read
	}
	if !reads[kw] || !reads[fromCarol] || reads[mention] {
		t.Errorf("read flags = %v", reads)
	}
	wantOK(t, receipt(bob, room, "m.read", mention, map[string]any{}), nil)
	wantUnread(t, bob, room, 0, 0)

	wantErr(t, bob.Do("GET", csAPI+"/notifications?only=everything", nil), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, bob.Do("GET", csAPI+"/notifications?from=x", nil), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, srv.Anonymous().Do("GET", csAPI+"/notifications", nil), http.StatusUnauthorized, "M_MISSING_TOKEN")
}

// TestNotificationsFollowMembership: a member with the default rules gets
// the room's default outcome only while joined: nothing for their own
// messages or for what was said while they were away, a highlight when
// mentioned, and counts that start again from their rejoin.
func TestNotificationsFollowMembership(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, carol := srv.Register("alice"), srv.Register("carol")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, carol, room)

	first := sendText(t, alice, room, "one")
	sendText(t, carol, room, "carol's own")
	mention := sendEvent(t, alice, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "carol?",
		"m.mentions": map[string]any{"user_ids": []string{carol.UserID}}})
	waitNotified(t, srv)
	wantUnread(t, carol, room, 2, 1)
	wantUnread(t, alice, room, 1, 0) // carol's message; not her own two

	leaveRoom(t, carol, room)
	sendText(t, alice, room, "while carol is away")
	sendEvent(t, alice, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "away mention",
		"m.mentions": map[string]any{"user_ids": []string{carol.UserID}}})
	joinRoom(t, carol, room)
	back := sendText(t, alice, room, "welcome back")
	waitNotified(t, srv)
	wantUnread(t, carol, room, 1, 0)

	got := getNotifications(t, carol, "")
	if ids, want := got.eventIDs(), []string{back, mention, first}; !slices.Equal(ids, want) {
		t.Fatalf("notifications = %q, want %q", ids, want)
	}
	if hl := getNotifications(t, carol, "only=highlight").eventIDs(); !slices.Equal(hl, []string{mention}) {
		t.Fatalf("only=highlight = %q", hl)
	}
	for _, page := range []string{"limit=1", "limit=2"} {
		var ids []string
		q := page
		for {
			p := getNotifications(t, carol, q)
			ids = append(ids, p.eventIDs()...)
			if p.NextToken == "" {
				break
			}
			q = page + "&from=" + url.QueryEscape(p.NextToken)
		}
		if want := []string{back, mention, first}; !slices.Equal(ids, want) {
			t.Fatalf("paging with %s = %q, want %q", page, ids, want)
		}
	}
}

// TestNotificationsIgnoreUsers: an ignored user's messages raise no
// notification, even a mention; after un-ignoring, they do again.
func TestNotificationsIgnoreUsers(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, bob, room)
	ignore := func(users ...string) {
		m := map[string]any{}
		for _, u := range users {
			m[u] = map[string]any{}
		}
		wantOK(t, alice.Do("PUT", csAPI+"/user/"+url.PathEscape(alice.UserID)+"/account_data/m.ignored_user_list",
			map[string]any{"ignored_users": m}), nil)
	}
	ignore(bob.UserID)
	sendText(t, bob, room, "ignored")
	sendEvent(t, bob, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "alice!",
		"m.mentions": map[string]any{"user_ids": []string{alice.UserID}}})
	waitNotified(t, srv)
	wantUnread(t, alice, room, 0, 0)
	if got := getNotifications(t, alice, "").eventIDs(); len(got) != 0 {
		t.Fatalf("notifications from an ignored user: %q", got)
	}
	ignore()
	heard := sendText(t, bob, room, "heard")
	waitNotified(t, srv)
	wantUnread(t, alice, room, 1, 0)
	if got := getNotifications(t, alice, "").eventIDs(); !slices.Equal(got, []string{heard}) {
		t.Fatalf("notifications after un-ignoring = %q", got)
	}
}

// TestThreadNotifications: thread replies count in their thread when the
// filter asks for unread_thread_notifications and in the room's count when
// not; a threaded receipt reads only its thread, a main one only the main
// timeline, an unthreaded one everything before it.
func TestThreadNotifications(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, bob, room)
	root := sendText(t, alice, room, "root")
	reply := func(body string) string {
		return sendEvent(t, alice, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": body,
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
	}
	reply("r1")
	r2 := reply("r2")
	main := sendText(t, alice, room, "main")
	waitNotified(t, srv)

	type counts struct {
		room    unreadCounts
		threads map[string]unreadCounts
	}
	get := func(threaded bool) counts {
		t.Helper()
		q := "timeout=0"
		if threaded {
			q += "&filter=" + url.QueryEscape(`{"room":{"timeline":{"unread_thread_notifications":true}}}`)
		}
		var out struct {
			Rooms struct {
				Join map[string]struct {
					Unread  unreadCounts            `json:"unread_notifications"`
					Threads map[string]unreadCounts `json:"unread_thread_notifications"`
				} `json:"join"`
			} `json:"rooms"`
		}
		wantOK(t, bob.Do("GET", csAPI+"/sync?"+q, nil), &out)
		jr := out.Rooms.Join[room]
		return counts{jr.Unread, jr.Threads}
	}
	want := func(step string, threaded bool, room unreadCounts, threads map[string]unreadCounts) {
		t.Helper()
		got := get(threaded)
		if got.room != room || len(got.threads) != len(threads) {
			t.Fatalf("%s: counts %+v, want %+v %+v", step, got, room, threads)
		}
		for k, v := range threads {
			if got.threads[k] != v {
				t.Fatalf("%s: thread counts %+v, want %+v", step, got.threads, threads)
			}
		}
	}
	want("unthreaded client", false, unreadCounts{4, 0}, nil)
	want("threaded client", true, unreadCounts{2, 0}, map[string]unreadCounts{root: {2, 0}})

	wantOK(t, receipt(bob, room, "m.read", r2, map[string]any{"thread_id": root}), nil)
	want("after the thread's receipt", true, unreadCounts{2, 0}, nil)
	want("after the thread's receipt, unthreaded client", false, unreadCounts{2, 0}, nil)
	wantOK(t, receipt(bob, room, "m.read", main, map[string]any{"thread_id": "main"}), nil)
	want("after the main receipt", true, unreadCounts{0, 0}, nil)

	r3 := reply("r3")
	sendText(t, alice, room, "main again")
	waitNotified(t, srv)
	want("new reply and message", true, unreadCounts{1, 0}, map[string]unreadCounts{root: {1, 0}})
	reads := map[string]bool{}
	for _, n := range getNotifications(t, bob, "").Notifications {
		reads[n.Event.EventID] = n.Read
	}
	if !reads[r2] || !reads[main] || reads[r3] {
		t.Errorf("read flags = %v", reads)
	}
	wantOK(t, receipt(bob, room, "m.read", r3, map[string]any{}), nil) // unthreaded: reads all before r3
	want("after an unthreaded receipt", true, unreadCounts{1, 0}, nil)
}

// TestNotificationsReachEarlierSync: a sync whose token was handed out
// after an event committed but before the worker processed it still gets
// the new counts, because the token carries the worker's position.
func TestNotificationsReachEarlierSync(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, bob, room)
	sendText(t, alice, room, "settle")
	waitNotified(t, srv)
	before := syncUnread(t, bob, "").NextBatch
	sendEvent(t, alice, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "hey",
		"m.mentions": map[string]any{"user_ids": []string{bob.UserID}}})
	waitNotified(t, srv)

	// The token a sync would have returned between the commit and the
	// worker: events at now, notifications at before.
	old, err := sync.ParseToken(before)
	if err != nil {
		t.Fatal(err)
	}
	tok := srv.HS.Syncer.Notifier().Current()
	tok.Notifications = old.Notifications
	s := syncUnread(t, bob, tok.String())
	jr, ok := s.Rooms.Join[room]
	if !ok || jr.Unread == nil || *jr.Unread != (unreadCounts{2, 1}) {
		t.Fatalf("incremental sync after the worker: room %v, counts %+v", ok, jr.Unread)
	}
	if len(jr.Timeline.Events) != 0 {
		t.Errorf("timeline repeated events the earlier sync had: %v", jr.Timeline.Events)
	}
	// And nothing new after that.
	if s2 := syncUnread(t, bob, s.NextBatch); len(s2.Rooms.Join) != 0 {
		t.Errorf("second incremental sync returned rooms: %+v", s2.Rooms.Join)
	}
	// The sender's counts did not move: the same token gives alice nothing.
	if s3 := syncUnread(t, alice, tok.String()); len(s3.Rooms.Join) != 0 {
		t.Errorf("the sender's incremental sync returned rooms: %+v", s3.Rooms.Join)
	}
}

// reconnect points a client at a restarted server.
func reconnect(srv *testserver.Server, c *testserver.Client) *testserver.Client {
	n := srv.Anonymous()
	n.UserID, n.DeviceID, n.Token = c.UserID, c.DeviceID, c.Token
	return n
}

// TestNotificationsSurviveRestart: events committed while the worker was
// down are processed after a restart, and none is processed twice.
func TestNotificationsSurviveRestart(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, bob, room)
	var sent []string
	for _, body := range []string{"one", "two"} {
		sent = append(sent, sendText(t, alice, room, body))
	}
	waitNotified(t, srv)
	wantUnread(t, bob, room, 2, 0)

	// The worker stops (as in a crash) while events keep committing.
	srv.HS.Notifications.Stop()
	for _, body := range []string{"three", "four"} {
		sent = append(sent, sendText(t, alice, room, body))
	}
	wantUnread(t, bob, room, 2, 0)
	srv.Stop()

	for restart := 0; restart < 2; restart++ {
		srv = testserver.Start(t, testserver.Options{DataDir: srv.DataDir})
		bob := reconnect(srv, bob)
		waitNotified(t, srv)
		wantUnread(t, bob, room, 4, 0)
		got := getNotifications(t, bob, "").eventIDs()
		slices.Reverse(got)
		if !slices.Equal(got, sent) {
			t.Fatalf("after restart %d: notifications %q, want %q", restart+1, got, sent)
		}
		srv.Stop()
	}
}

// TestLegacyMentionNotifications: messages without m.mentions (older
// clients and bots) highlight members whose display name or localpart is
// in the body, and @room from a moderator highlights everyone; with
// m.mentions they do not (spec v1.7). The members have default rules,
// which the worker does not evaluate unless the event names them.
func TestLegacyMentionNotifications(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob, carol := srv.Register("alice"), srv.Register("bob"), srv.Register("carol")
	wantOK(t, carol.Do("PUT", csAPI+"/profile/"+url.PathEscape(carol.UserID)+"/displayname", map[string]any{"displayname": "Carol Danvers"}), nil)
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, bob, room)
	joinRoom(t, carol, room)
	aliceLocal := strings.TrimPrefix(strings.Split(alice.UserID, ":")[0], "@")

	sendText(t, bob, room, "Carol Danvers, please review")                        // carol, by display name
	sendText(t, bob, room, "ping "+strings.ToUpper(aliceLocal)+"!")               // alice, by localpart
	sendEvent(t, bob, room, "m.room.message", map[string]any{"msgtype": "m.text", // m.mentions: no legacy rules
		"body": "carol danvers and " + aliceLocal + " again", "m.mentions": map[string]any{}})
	sendText(t, alice, room, "@room heads up") // alice has power 100
	sendText(t, bob, room, "@room me too")     // bob has not
	waitNotified(t, srv)
	wantUnread(t, carol, room, 5, 2)
	wantUnread(t, alice, room, 4, 1)
	wantUnread(t, bob, room, 1, 1)
	if got := len(getNotifications(t, carol, "only=highlight").Notifications); got != 2 {
		t.Errorf("carol has %d highlights in /notifications, want 2", got)
	}
}
