package api_test

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/pusher"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/testserver"
)

// waitPushersPos waits until the pushers' position reaches pos.
func waitPushersPos(t *testing.T, srv *testserver.Server, pos roomdag.StreamPos) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.HS.Pushers.WaitPos(ctx, pos); err != nil {
		t.Fatalf("waiting for the pushers to reach %d: %v (at %d)", pos, err, srv.HS.Pushers.Pos())
	}
}

// TestPushersPosition: the pushers' position (the metrics' worker
// "pushers") is the notification worker's while every gateway keeps up,
// stays below a notification its gateway refuses, and catches up once
// the gateway takes it.
func TestPushersPosition(t *testing.T) {
	gw := startPushGateway(t)
	var failing atomic.Bool
	failing.Store(true)
	gw.setAnswer(func(pushNotification) (int, string) {
		if failing.Load() {
			return http.StatusInternalServerError, "{}"
		}
		return http.StatusOK, `{"rejected":[]}`
	})
	srv := testserver.Start(t, loopbackPushOptions(nil, ""))
	alice, bob := srv.Register("alice"), srv.Register("bob")
	room := pushRoom(t, alice, "positions", bob)
	body := pusherBody(gw.URL, "key1", nil)
	setPusher(t, alice, body)
	srv.Settle()
	waitPushersPos(t, srv, srv.HS.Notifications.Pos())

	bob.SendText(room, "refused at first")
	srv.Settle()
	waitPushStats(t, srv, "a back-off", func(s pusher.Stats) bool { return s.Backoffs >= 1 })
	notified := srv.HS.Notifications.Pos()
	if got := srv.HS.Pushers.Pos(); got >= notified {
		t.Fatalf("pushers at %d with a notification at %d undelivered", got, notified)
	}

	failing.Store(false)
	setPusher(t, alice, body) // retry now
	waitPushersPos(t, srv, notified)
	if got, want := srv.HS.Pushers.Pos(), srv.HS.Notifications.Pos(); got != want {
		t.Errorf("pushers at %d once delivered, want the notification worker's %d", got, want)
	}
}

// TestPushersPositionHeldWhereCaughtUp: a pusher that had caught up, and
// gets a notification its gateway refuses, holds the pushers' position
// at where the notification worker was when it was woken, not back at
// its own last delivery: positions that notified only others stay
// counted.
func TestPushersPositionHeldWhereCaughtUp(t *testing.T) {
	gw := startPushGateway(t)
	var failing atomic.Bool
	gw.setAnswer(func(pushNotification) (int, string) {
		if failing.Load() {
			return http.StatusInternalServerError, "{}"
		}
		return http.StatusOK, `{"rejected":[]}`
	})
	srv := testserver.Start(t, loopbackPushOptions(nil, ""))
	alice, bob := srv.Register("alice"), srv.Register("bob")
	carol, dave := srv.Register("carol"), srv.Register("dave")
	mine := pushRoom(t, alice, "mine", bob)
	theirs := pushRoom(t, carol, "theirs", dave)
	setPusher(t, alice, pusherBody(gw.URL, "key1", nil))
	bob.SendText(mine, "delivered")
	srv.Settle()
	waitPushersPos(t, srv, srv.HS.Notifications.Pos())
	delivered := srv.HS.Notifications.Pos()

	// Notifications for carol only: alice's pusher is not woken.
	dave.SendText(theirs, "elsewhere")
	srv.Settle()
	quiet := srv.HS.Notifications.Pos()
	waitPushersPos(t, srv, quiet)
	if quiet <= delivered {
		t.Fatalf("the notification worker did not move: %d, then %d", delivered, quiet)
	}

	failing.Store(true)
	bob.SendText(mine, "refused")
	srv.Settle()
	waitPushStats(t, srv, "a back-off", func(s pusher.Stats) bool { return s.Backoffs >= 1 })
	notified := srv.HS.Notifications.Pos()
	if got := srv.HS.Pushers.Pos(); got < quiet || got >= notified {
		t.Errorf("pushers at %d with the refused notification up to %d; want at least %d, where alice's pusher was woken", got, notified, quiet)
	}
}
