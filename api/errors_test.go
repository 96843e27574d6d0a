package api_test

// Integration tests of error rendering (spec: client-server API "Standard
// error response", "Rate limiting"): bodies that are not JSON or do not fit,
// bodies over max_request_size, rate limits, and a table of garbage that
// must never produce a 500.

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/testserver"
)

func TestBodyErrors(t *testing.T) {
	t.Parallel()
	srv := hsStart(t, testserver.Options{Configure: func(c *configs.Config) {
		c.RegistrationSharedSecret = configs.NewSecret("shared")
	}})
	s := hsRegister(t, srv, hsName("body"), nil)

	endpoints := []struct {
		method, path string
		auth         bool
	}{
		{"POST", "/_matrix/client/v3/register", false},
		{"POST", "/_matrix/client/v3/login", false},
		{"POST", "/_matrix/client/v3/refresh", false},
		{"POST", "/_matrix/client/v3/account/password", true},
		{"PUT", "/_matrix/client/v3/devices/" + s.DeviceID, true},
		{"POST", "/_matrix/client/v3/delete_devices", true},
		{"POST", "/_synapse/admin/v1/register", false},
	}
	bodies := []struct {
		name, body, errcode string
	}{
		{"not JSON", "this is not JSON", "M_NOT_JSON"},
		{"truncated", `{"type": "m.login.password"`, "M_NOT_JSON"},
		{"trailing garbage", `{} x`, "M_NOT_JSON"},
		{"single quotes", `{'a': 1}`, "M_NOT_JSON"},
		{"array", `[]`, "M_BAD_JSON"},
		{"string", `"hello"`, "M_BAD_JSON"},
		{"number", `42`, "M_BAD_JSON"},
		{"null", `null`, "M_BAD_JSON"},
	}
	for _, ep := range endpoints {
		for _, b := range bodies {
			t.Run(ep.path+"/"+b.name, func(t *testing.T) {
				t.Parallel()
				token := ""
				if ep.auth {
					token = s.Token
				}
				r := hsDo(t, srv, ep.method, ep.path, token, b.body)
				hsWantErr(t, r, 400, b.errcode, ep.method+" "+ep.path+" "+b.body)
			})
		}
	}

	// Fields of the wrong type are M_BAD_JSON, not a 500 and not ignored.
	wrongType := []struct {
		method, path string
		auth         bool
		body         string
	}{
		{"POST", "/_matrix/client/v3/register", false, `{"username": 5, "password": "long enough pw"}`},
		{"POST", "/_matrix/client/v3/register", false, `{"password": ["x"]}`},
		{"POST", "/_matrix/client/v3/register", false, `{"inhibit_login": "yes", "password": "long enough pw"}`},
		{"POST", "/_matrix/client/v3/register", false, `{"auth": "m.login.dummy", "password": "long enough pw"}`},
		{"POST", "/_matrix/client/v3/register", false, `{"initial_device_display_name": 1, "password": "long enough pw"}`},
		{"POST", "/_matrix/client/v3/login", false, `{"type": 5}`},
		{"POST", "/_matrix/client/v3/login", false, `{"type": "m.login.password", "password": 12345678}`},
		{"POST", "/_matrix/client/v3/login", false, `{"type": "m.login.password", "user": {}}`},
		{"POST", "/_matrix/client/v3/login", false, `{"type": "m.login.password", "refresh_token": "yes"}`},
		{"POST", "/_matrix/client/v3/refresh", false, `{"refresh_token": ["a"]}`},
		{"POST", "/_matrix/client/v3/account/password", true, `{"new_password": 12345678}`},
		{"POST", "/_matrix/client/v3/account/password", true, `{"new_password": "long enough pw", "logout_devices": "no"}`},
		{"PUT", "/_matrix/client/v3/devices/" + s.DeviceID, true, `{"display_name": 5}`},
		{"POST", "/_matrix/client/v3/delete_devices", true, `{"devices": [1, 2]}`},
		{"DELETE", "/_matrix/client/v3/devices/" + s.DeviceID, true, `{"auth": []}`},
	}
	for _, tc := range wrongType {
		t.Run(tc.path+"/"+tc.body, func(t *testing.T) {
			t.Parallel()
			token := ""
			if tc.auth {
				token = s.Token
			}
			hsWantErr(t, hsDo(t, srv, tc.method, tc.path, token, tc.body), 400, "M_BAD_JSON", tc.method+" "+tc.path+" "+tc.body)
		})
	}
	// The device survived all of that.
	hsWhoami(t, srv, s)
}

func TestRequestTooLarge(t *testing.T) {
	t.Parallel()
	const limit = 512
	srv := hsStart(t, testserver.Options{Configure: func(c *configs.Config) { c.MaxRequestSize = limit }})
	s := hsRegister(t, srv, hsName("large"), nil)

	padding := strings.Repeat("x", limit)
	tests := []struct {
		method, path string
		auth         bool
	}{
		{"POST", "/_matrix/client/v3/register", false},
		{"POST", "/_matrix/client/v3/login", false},
		{"PUT", "/_matrix/client/v3/devices/" + s.DeviceID, true},
		{"POST", "/_matrix/client/v3/account/password", true},
		{"POST", "/_matrix/client/v3/createRoom", true},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			t.Parallel()
			token := ""
			if tc.auth {
				token = s.Token
			}
			body := `{"display_name": "` + padding + `"}`
			hsWantErr(t, hsDo(t, srv, tc.method, tc.path, token, body), 413, "M_TOO_LARGE", "over the limit")
		})
	}

	// Just under the limit is accepted.
	name := strings.Repeat("n", limit-len(`{"display_name":""}`))
	body := `{"display_name":"` + name + `"}`
	if len(body) != limit {
		t.Fatalf("body is %d bytes", len(body))
	}
	hsOK(t, hsDo(t, srv, "PUT", "/_matrix/client/v3/devices/"+s.DeviceID, s.Token, body), "at the limit")
	r := hsDo(t, srv, "GET", "/_matrix/client/v3/devices/"+s.DeviceID, s.Token, nil)
	if r.str("display_name") != name {
		t.Errorf("display name not stored: %s", r.Raw)
	}
	hsWantErr(t, hsDo(t, srv, "PUT", "/_matrix/client/v3/devices/"+s.DeviceID, s.Token, body+" "), 413, "M_TOO_LARGE", "one byte over")
}

func TestRateLimit(t *testing.T) {
	t.Parallel()
	// A fake clock: buckets refill only when the test says so.
	clk := clock.NewFake(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	srv := hsStart(t, testserver.Options{Clock: clk, Configure: func(c *configs.Config) {
		c.RateLimiting.Enabled = true
		c.RateLimiting.Login.PerSecond, c.RateLimiting.Login.BurstCount = 0.5, 2
		c.RateLimiting.Registration = configs.RateLimit{PerSecond: 0.5, BurstCount: 3}
	}})
	// Registering spends registration tokens, not login tokens.
	user := hsRegister(t, srv, hsName("limited"), nil)
	login := hsLoginBody(user.UserID, "wrong password")

	wantLimited := func(r *hsReply, what string) int64 {
		t.Helper()
		hsWantErr(t, r, http.StatusTooManyRequests, "M_LIMIT_EXCEEDED", what)
		ms, ok := r.Body["retry_after_ms"].(float64)
		if !ok || ms <= 0 {
			t.Fatalf("%s: retry_after_ms = %v, want a positive integer", what, r.Body["retry_after_ms"])
		}
		ra, err := strconv.Atoi(r.Header.Get("Retry-After"))
		if err != nil || ra < 1 || int64(ra)*1000 < int64(ms) {
			t.Errorf("%s: Retry-After %q does not cover retry_after_ms %v", what, r.Header.Get("Retry-After"), ms)
		}
		return int64(ms)
	}

	// The burst, then refusals that do not reach the handler.
	for i := range 2 {
		hsWantErr(t, hsDo(t, srv, "POST", "/_matrix/client/v3/login", "", login), 403, "M_FORBIDDEN", fmt.Sprintf("attempt %d", i))
	}
	ms := wantLimited(hsDo(t, srv, "POST", "/_matrix/client/v3/login", "", login), "third login")
	if ms > 2500 {
		t.Errorf("retry_after_ms = %d, want about 2000 at 0.5/s", ms)
	}
	// A right password is refused as well: the limit is per address.
	wantLimited(hsDo(t, srv, "POST", "/_matrix/client/v3/login", "", hsLoginBody(user.UserID, hsPassword)), "right password")

	// Unlimited endpoints and other classes are not affected.
	hsOK(t, hsDo(t, srv, "GET", "/_matrix/client/v3/login", "", nil), "GET /login")
	hsWhoami(t, srv, user)
	// Registration has its own bucket of 3: the first user, this check and
	// the next user take it all.
	hsOK(t, hsDo(t, srv, "GET", "/_matrix/client/v3/register/available?username="+hsName("free"), "", nil), "available")
	hsRegister(t, srv, hsName("limited"), nil)
	wantLimited(hsDo(t, srv, "POST", "/_matrix/client/v3/register", "", map[string]any{}), "registration")

	// Time passes by the advertised amount: one more attempt, no more.
	clk.Advance(time.Duration(ms) * time.Millisecond)
	hsSessionOf(t, hsDo(t, srv, "POST", "/_matrix/client/v3/login", "", hsLoginBody(user.UserID, hsPassword)), "after waiting")
	wantLimited(hsDo(t, srv, "POST", "/_matrix/client/v3/login", "", login), "right after")
	// The same wait refilled a registration token.
	hsChallenge(t, hsDo(t, srv, "POST", "/_matrix/client/v3/register", "", map[string]any{}), "m.login.dummy", "registration after waiting")
}

// TestGarbageNeverFails throws malformed bodies, paths and tokens at the
// API: whatever it says, it must be a Matrix error or success, never a 500
// (which would mean an unhandled error or a panic).
func TestGarbageNeverFails(t *testing.T) {
	t.Parallel()
	srv := hsStart(t, testserver.Options{Configure: func(c *configs.Config) { c.MaxRequestSize = 64 << 10 }})
	s := hsRegister(t, srv, hsName("fuzz"), nil)
	room := url.PathEscape("!nosuchroom:localhost")
	user := url.PathEscape(s.UserID)

	targets := []struct{ method, path string }{
		{"POST", "/_matrix/client/v3/register"},
		{"POST", "/_matrix/client/v3/register?kind=user"},
		{"GET", "/_matrix/client/v3/register/available?username=%00"},
		{"GET", "/_matrix/client/v3/register/available?username=" + strings.Repeat("z", 5000)},
		{"GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token=%ff"},
		{"POST", "/_matrix/client/v3/login"},
		{"POST", "/_matrix/client/v3/refresh"},
		{"POST", "/_matrix/client/v3/account/password"},
		{"GET", "/_matrix/client/v3/devices/%2F..%2F"},
		{"PUT", "/_matrix/client/v3/devices/%00"},
		{"PUT", "/_matrix/client/v3/devices/" + strings.Repeat("d", 300)},
		{"DELETE", "/_matrix/client/v3/devices/nodevice"},
		{"POST", "/_matrix/client/v3/delete_devices"},
		{"GET", "/_synapse/admin/v1/register"},
		{"POST", "/_synapse/admin/v1/register"},
		{"GET", "/_matrix/client/v3/capabilities"},
		{"POST", "/_matrix/client/v3/createRoom"},
		{"POST", "/_matrix/client/v3/join/" + url.PathEscape("#nowhere:localhost")},
		{"POST", "/_matrix/client/v3/join/%23"},
		{"POST", "/_matrix/client/v3/join/!"},
		{"PUT", "/_matrix/client/v3/rooms/" + room + "/send/m.room.message/t1"},
		{"PUT", "/_matrix/client/v3/rooms/!/state/m.room.name/"},
		{"GET", "/_matrix/client/v3/rooms/" + room + "/messages?from=garbage&dir=x&limit=-5"},
		{"GET", "/_matrix/client/v3/rooms/" + room + "/event/%24nope"},
		{"GET", "/_matrix/client/v3/rooms/" + room + "/context/x?limit=abc"},
		{"GET", "/_matrix/client/v3/rooms/" + room + "/state"},
		{"GET", "/_matrix/client/v3/rooms/" + room + "/members?at=zzz"},
		{"PUT", "/_matrix/client/v3/rooms/" + room + "/redact/x/t2"},
		{"POST", "/_matrix/client/v3/rooms/" + room + "/invite"},
		{"POST", "/_matrix/client/v3/rooms/" + room + "/leave"},
		{"GET", "/_matrix/client/v3/sync?since=garbage&timeout=0"},
		{"GET", "/_matrix/client/v3/sync?timeout=-1&filter=%7B"},
		{"GET", "/_matrix/client/v3/sync?timeout=0&filter=99999999999999999999"},
		{"POST", "/_matrix/client/v3/user/" + user + "/filter"},
		{"GET", "/_matrix/client/v3/user/" + user + "/filter/abc"},
		{"PUT", "/_matrix/client/v3/user/" + user + "/account_data/m.x"},
		{"PUT", "/_matrix/client/v3/user/%40other%3Alocalhost/account_data/m.x"},
		{"GET", "/_matrix/client/v3/profile/notauser"},
		{"PUT", "/_matrix/client/v3/profile/" + user + "/displayname"},
		{"PUT", "/_matrix/client/v3/profile/" + user + "/unknown_field"},
		{"PUT", "/_matrix/client/v3/directory/room/" + url.PathEscape("#alias:localhost")},
		{"GET", "/_matrix/client/v3/directory/room/noalias"},
		{"GET", "/_matrix/client/v3/rooms/" + room + "/aliases"},
	}
	bodies := []string{
		"",
		"{",
		"}",
		"null",
		"[]",
		"[{}]",
		"0",
		"-1e999",
		`"str"`,
		"{}",
		`{"":""}`,
		`{"auth": null}`,
		`{"auth": {"type": "m.login.password", "identifier": 5}}`,
		`{"auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "@:"}, "password": "x"}}`,
		`{"auth": {"session": 5}}`,
		`{"identifier": {"type": "m.id.user", "user": null}, "type": "m.login.password"}`,
		`{"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "@\u0000:localhost"}, "password": "x"}`,
		`{"username": "\ud800", "password": "xxxxxxxxxxxx"}`,
		`{"username": "a", "password": "` + strings.Repeat("p", 600) + `"}`,
		`{"devices": null}`,
		`{"devices": [null]}`,
		`{"display_name": null}`,
		`{"refresh_token": ""}`,
		`{"new_password": "` + strings.Repeat("p", 600) + `"}`,
		`{"nonce": "", "mac": "00", "username": "", "password": ""}`,
		`{"preset": "nonsense", "room_version": "999", "invite": [5]}`,
		`{"initial_state": [{"type": 5}], "creation_content": []}`,
		`{"body": {"deep": ` + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + `}}`,
		`{"msgtype": "m.text", "body": 1e400}`,
		`{"displayname": "x", "avatar_url": 7}`,
		`{"room_id": "!x:y", "user_id": "@"}`,
		`{"a": "` + "\xff\xfe" + `"}`,
		`{"a": 1, "a": 2}`,
		`{"filter": {"room": {"timeline": {"limit": "many"}}}}`,
		`{"room": {"timeline": {"limit": -1}, "rooms": [1]}, "event_fields": "x"}`,
	}
	for _, target := range targets {
		t.Run(target.method+" "+target.path, func(t *testing.T) {
			t.Parallel()
			for _, token := range []string{s.Token, "", "mat_bogus"} {
				for _, body := range bodies {
					var b any
					if body != "" {
						b = body
					}
					r := hsDo(t, srv, target.method, target.path, token, b)
					if r.Status >= 500 {
						t.Errorf("%s %s (token %q) with %.80q: %s", target.method, target.path, token, body, r)
						continue
					}
					_, challenge := r.Body["flows"] // a UIA 401 may lack an errcode
					if r.Status != http.StatusOK && r.errcode() == "" && !challenge {
						t.Errorf("%s %s with %.80q: an error without errcode: %s", target.method, target.path, body, r)
					}
				}
			}
		})
	}
	// The user's session survived (nothing above may log it out).
	hsWhoami(t, srv, s)
}
