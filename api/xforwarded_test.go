package api_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/testserver"
)

// loginVia sends a login with a wrong password for a user of its own (so
// no account's limit is reached) through c, the load balancer's one
// connection, with the X-Forwarded-For header xff ("" for none).
func loginVia(t *testing.T, srv *testserver.Server, c *http.Client, xff string, n int) *hsReply {
	t.Helper()
	req := hsRequest(t, srv, "POST", csAPI+"/login", hsLoginBody(fmt.Sprintf("@nobody%d:%s", n, srv.Config.ServerName), "wrong"))
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	return hsSend(t, c, req)
}

// TestXForwardedRateLimits: with x_forwarded on, the per-address login
// limit (rc_login.address, burst 10) counts the address the proxy reports
// as the last of X-Forwarded-For: every request arrives from the proxy's
// one address, yet one client's eleventh attempt is refused and another
// client's first is not; addresses a client writes itself before the
// proxy's entry are not believed. With x_forwarded off the header is
// ignored: the attempts of every "client" count against the proxy's
// address.
func TestXForwardedRateLimits(t *testing.T) {
	t.Parallel()
	start := func(on bool) *testserver.Server {
		return hsStart(t, testserver.Options{Clock: clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)),
			Configure: func(c *configs.Config) {
				c.RateLimiting.Enabled = true
				c.XForwarded = on
			}})
	}
	srv := start(true)
	proxy := fromAddress(t, "127.0.0.50")
	for i := range 10 {
		// The client's own claim (first) is ignored: the proxy's entry
		// (last) is 198.51.100.1 each time.
		xff := fmt.Sprintf("203.0.113.%d, 198.51.100.1", i)
		hsWantErr(t, loginVia(t, srv, proxy, xff, i), http.StatusForbidden, "M_FORBIDDEN", fmt.Sprintf("attempt %d from .1", i))
	}
	retryAfter(t, loginVia(t, srv, proxy, "198.51.100.1", 10), "eleventh attempt from .1")
	hsWantErr(t, loginVia(t, srv, proxy, "198.51.100.2", 11), http.StatusForbidden, "M_FORBIDDEN", "first attempt from .2")
	hsWantErr(t, loginVia(t, srv, proxy, "2001:db8::1", 12), http.StatusForbidden, "M_FORBIDDEN", "first attempt from an IPv6 client")
	// A header that ends in no address leaves the proxy's own address,
	// which has made no attempt yet.
	hsWantErr(t, loginVia(t, srv, proxy, "198.51.100.1, unknown", 13), http.StatusForbidden, "M_FORBIDDEN", "unparsable header")

	off := start(false)
	for i := range 10 {
		hsWantErr(t, loginVia(t, off, proxy, fmt.Sprintf("198.51.100.%d", i), i), http.StatusForbidden, "M_FORBIDDEN",
			fmt.Sprintf("attempt %d without x_forwarded", i))
	}
	retryAfter(t, loginVia(t, off, proxy, "198.51.100.99", 10), "eleventh attempt through the proxy without x_forwarded")
}
