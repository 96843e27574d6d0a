package api_test

import (
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/testserver"
)

// fromAddress is an HTTP client whose connections come from a loopback
// address of its own (127.0.0.0/8 is all loopback on Linux), as the
// issue's reproduction spread its attempts over 30 addresses.
func fromAddress(t *testing.T, ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	tr := &http.Transport{DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Timeout: 30 * time.Second, Transport: tr}
}

func login(t *testing.T, srv *testserver.Server, c *http.Client, user, password string) *hsReply {
	t.Helper()
	return hsSend(t, c, hsRequest(t, srv, "POST", csAPI+"/login", hsLoginBody(user, password)))
}

// retryAfter is the retry_after_ms of a 429 M_LIMIT_EXCEEDED reply.
func retryAfter(t *testing.T, r *hsReply, what string) time.Duration {
	t.Helper()
	hsWantErr(t, r, http.StatusTooManyRequests, "M_LIMIT_EXCEEDED", what)
	ms, ok := r.Body["retry_after_ms"].(float64)
	if !ok || ms <= 0 {
		t.Fatalf("%s: no retry_after_ms in %s", what, r)
	}
	return time.Duration(ms) * time.Millisecond
}

// TestLoginLimitsPerAccount: 300 wrong passwords for one account from 30
// addresses (each within its per-address limit) cost three bcrypt checks,
// rc_login.failed_attempts' burst; the rest are refused with
// M_LIMIT_EXCEEDED and retry_after_ms before any check, the right password
// included, until the window has passed. rc_login.account bounds
// successful logins the same way, and failed passwords in
// user-interactive auth count as failed attempts.
func TestLoginLimitsPerAccount(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	srv := hsStart(t, testserver.Options{Clock: clk, Configure: func(c *configs.Config) {
		c.RateLimiting.Enabled = true // the defaults: failed_attempts 0.17/s burst 3, account 0.003/s burst 5
	}})
	victim := hsRegister(t, srv, hsName("victim"), nil)
	checks := srv.HS.API.PasswordChecks

	before := checks()
	var mu sync.Mutex
	refused, forbidden := 0, 0
	var wait time.Duration
	var wg sync.WaitGroup
	for i := range 30 {
		c := fromAddress(t, fmt.Sprintf("127.0.0.%d", 2+i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 { // the per-address burst: none of these is refused for its address
				r := login(t, srv, c, victim.UserID, "wrong password")
				mu.Lock()
				switch r.Status {
				case http.StatusForbidden:
					forbidden++
				case http.StatusTooManyRequests:
					refused++
					wait = max(wait, retryAfter(t, r, "over failed_attempts"))
				default:
					t.Errorf("wrong password: %s", r)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if forbidden != 3 || refused != 297 {
		t.Errorf("%d answered M_FORBIDDEN and %d M_LIMIT_EXCEEDED, want 3 and 297", forbidden, refused)
	}
	if got := checks() - before; got != 3 {
		t.Errorf("%d passwords checked, want 3 (failed_attempts' burst)", got)
	}

	// The right password waits for the window too, from a fresh address,
	// and costs no check while it does.
	fresh := fromAddress(t, "127.0.0.200")
	before = checks()
	retryAfter(t, login(t, srv, fresh, victim.UserID, hsPassword), "right password, account over failed_attempts")
	if got := checks() - before; got != 0 {
		t.Errorf("a refused login checked %d passwords", got)
	}
	// Another account is not affected.
	other := hsRegister(t, srv, hsName("bystander"), nil)
	hsSessionOf(t, login(t, srv, fresh, other.UserID, hsPassword), "another account")

	// Failed passwords in user-interactive auth hit the same limit: the
	// bystander tries the victim's password to change their own, and is
	// answered 429, not a new challenge.
	r := hsDo(t, srv, "POST", csAPI+"/account/password", other.Token, map[string]any{"new_password": "a new password 1"})
	session := hsChallenge(t, r, "m.login.password", "password change")
	r = hsDo(t, srv, "POST", csAPI+"/account/password", other.Token, map[string]any{"new_password": "a new password 1",
		"auth": hsPasswordAuth(victim.UserID, "guess", session)})
	retryAfter(t, r, "UIA for an account over failed_attempts")

	clk.Advance(wait)
	hsSessionOf(t, login(t, srv, fresh, victim.UserID, hsPassword), "right password after retry_after_ms")

	// rc_login.account: five logins at once, then one per 333 s, refused
	// before the password is checked. Wrong passwords do not count.
	busy := hsRegister(t, srv, hsName("busy"), nil)
	c := fromAddress(t, "127.0.0.201")
	hsWantErr(t, login(t, srv, c, busy.UserID, "wrong password"), http.StatusForbidden, "M_FORBIDDEN", "wrong password")
	for i := range 5 {
		hsSessionOf(t, login(t, srv, c, busy.UserID, hsPassword), fmt.Sprintf("login %d", i+1))
	}
	before = checks()
	wait = retryAfter(t, login(t, srv, c, busy.UserID, hsPassword), "sixth login")
	if got := checks() - before; got != 0 {
		t.Errorf("a login over rc_login.account checked %d passwords", got)
	}
	clk.Advance(wait)
	hsSessionOf(t, login(t, srv, c, busy.UserID, hsPassword), "login after retry_after_ms")
}
