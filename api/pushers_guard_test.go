package api_test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/pusher"
	"github.com/persistentchat/homeserver/testserver"
)

// TestPushGatewayOnDeniedAddressIsNeverContacted: with the default
// ip_range_blacklist, which covers loopback, a gateway on 127.0.0.1
// (named by address or by a host name that resolves there) is never
// connected to. Delivery fails like any other failure: it backs off and,
// after GiveUpAfter, gives up. The fake clock drives the back-off.
func TestPushGatewayOnDeniedAddressIsNeverContacted(t *testing.T) {
	t.Parallel()
	var hits atomic.Int64
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		t.Errorf("the gateway on a denied address was contacted: %s %s", r.Method, r.URL)
	}))
	t.Cleanup(gw.Close)
	_, port, _ := net.SplitHostPort(gw.Listener.Addr().String())

	clk := clock.NewFake(time.Now())
	srv := testserver.Start(t, testserver.Options{Clock: clk})
	alice, carol, bob := srv.Register("pushdenied"), srv.Register("pushdeniedname"), srv.Register("pushdeniedsend")
	room := pushRoom(t, bob, "Denied room", alice, carol)
	srv.Settle()
	setPusher(t, alice, pusherBody(gw.URL+pusher.NotifyPath, "byaddress", nil))
	setPusher(t, carol, pusherBody("http://localhost:"+port+pusher.NotifyPath, "byname", nil))

	bob.SendText(room, "this never leaves the server")
	// Each of the two pushers fails and backs off, again after its first
	// wait, and gives up once the failures have lasted GiveUpAfter.
	waitPushStats(t, srv, "both first back-offs", func(s pusher.Stats) bool { return s.Backoffs >= 2 })
	if s := srv.HS.Pushers.Stats(); s.Failed != 2 || s.Delivered != 0 {
		t.Errorf("after the first attempts stats = %+v, want 2 failed, none delivered", s)
	}
	clk.Advance(pusher.InitialBackoff)
	waitPushStats(t, srv, "both second back-offs", func(s pusher.Stats) bool { return s.Backoffs >= 4 })
	clk.Advance(pusher.GiveUpAfter + time.Minute)
	waitPushStats(t, srv, "giving up", func(s pusher.Stats) bool { return s.GivenUp >= 2 })
	if s := srv.HS.Pushers.Stats(); s.Failed != 6 || s.Delivered != 0 || s.Running != 2 {
		t.Errorf("after giving up stats = %+v, want 6 failed, none delivered, both pushers still there", s)
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the gateway was contacted %d times", n)
	}
}
