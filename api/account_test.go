package api_test

// Integration tests of the account endpoints through HTTP: registration
// (spec: client-server API "Account registration and management"), login,
// logout, whoami, refresh, password change and device management, plus
// Synapse's shared-secret registration. Expectations follow the spec's
// registration.yaml, login.yaml, logout.yaml, whoami.yaml, refresh.yaml,
// password_management.yaml and device_management.yaml, and Complement's
// tests/csapi/apidoc_*_test.go.

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	gosync "sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/testserver"
)

// The helpers below take the calling test's t (testserver.Client keeps the
// t of the test that started the server, which parallel subtests must not
// fail through).

const hsPassword = "correct horse battery"

var hsNames atomic.Int64

// hsName makes a localpart that is unique within the test binary.
func hsName(prefix string) string { return fmt.Sprintf("%s%d", prefix, hsNames.Add(1)) }

// hsClients holds one HTTP client per server started by hsStart.
var hsClients gosync.Map // *testserver.Server -> *http.Client

// hsStart starts a server with its own HTTP client, whose idle connections
// are closed before the server stops: http.Server.Shutdown waits up to five
// seconds for a connection that was dialled but never used, which parallel
// requests leave behind.
func hsStart(t testing.TB, opts testserver.Options) *testserver.Server {
	t.Helper()
	srv := testserver.Start(t, opts)
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{}}
	hsClients.Store(srv, c)
	t.Cleanup(func() { // runs before the server's Stop (cleanups are LIFO)
		c.CloseIdleConnections()
		hsClients.Delete(srv)
	})
	return srv
}

func hsClient(srv *testserver.Server) *http.Client {
	if c, ok := hsClients.Load(srv); ok {
		return c.(*http.Client)
	}
	return http.DefaultClient
}

// hsReply is one response: the status, headers, raw body and, when the
// body is a JSON object, its decoding.
type hsReply struct {
	Status int
	Header http.Header
	Raw    []byte
	Body   map[string]any
}

func (r *hsReply) errcode() string { s, _ := r.Body["errcode"].(string); return s }

// str returns a string field of the body, "" when absent or not a string.
func (r *hsReply) str(key string) string { s, _ := r.Body[key].(string); return s }

func (r *hsReply) String() string { return fmt.Sprintf("%d %s", r.Status, r.Raw) }

// hsDo sends a request with an optional bearer token. body is nil, a string
// or []byte sent as is, or a value sent as JSON.
func hsDo(t testing.TB, srv *testserver.Server, method, path, token string, body any) *hsReply {
	t.Helper()
	req := hsRequest(t, srv, method, path, body)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return hsSend(t, hsClient(srv), req)
}

func hsRequest(t testing.TB, srv *testserver.Server, method, path string, body any) *http.Request {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatalf("encoding body: %v", err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, srv.URL+path, rd)
	if err != nil {
		t.Fatalf("request %s %s: %v", method, path, err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req
}

func hsSend(t testing.TB, c *http.Client, req *http.Request) *hsReply {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", req.Method, req.URL, err)
	}
	r := &hsReply{Status: resp.StatusCode, Header: resp.Header, Raw: raw}
	_ = json.Unmarshal(raw, &r.Body)
	return r
}

// hsOK fails the test unless the reply is a 200 with a JSON object body.
func hsOK(t testing.TB, r *hsReply, what string) {
	t.Helper()
	if r.Status != http.StatusOK || r.Body == nil {
		t.Fatalf("%s: want 200 with a JSON object, got %s", what, r)
	}
}

// hsWantErr checks a standard error response (spec: "Standard error
// response"): the status, the errcode and a human-readable error string.
func hsWantErr(t testing.TB, r *hsReply, status int, errcode, what string) {
	t.Helper()
	if r.Status != status || r.errcode() != errcode {
		t.Fatalf("%s: want %d %s, got %s", what, status, errcode, r)
	}
	if _, ok := r.Body["error"].(string); !ok {
		t.Errorf("%s: error response has no \"error\" string: %s", what, r.Raw)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type %q, want application/json", what, ct)
	}
}

// hsSession is a logged-in device.
type hsSession struct {
	UserID, DeviceID, Token, RefreshToken string
}

// hsSessionOf checks and reads a login or registration reply.
func hsSessionOf(t testing.TB, r *hsReply, what string) hsSession {
	t.Helper()
	hsOK(t, r, what)
	s := hsSession{UserID: r.str("user_id"), DeviceID: r.str("device_id"), Token: r.str("access_token"), RefreshToken: r.str("refresh_token")}
	if s.UserID == "" || s.DeviceID == "" || s.Token == "" {
		t.Fatalf("%s: user_id, device_id and access_token are required: %s", what, r.Raw)
	}
	return s
}

// hsRegister registers localpart with hsPassword in one request (the
// m.login.dummy stage needs no session first). extra adds body fields.
func hsRegister(t testing.TB, srv *testserver.Server, localpart string, extra map[string]any) hsSession {
	t.Helper()
	body := map[string]any{"username": localpart, "password": hsPassword, "auth": map[string]any{"type": "m.login.dummy"}}
	for k, v := range extra {
		body[k] = v
	}
	return hsSessionOf(t, hsDo(t, srv, "POST", "/_matrix/client/v3/register", "", body), "register "+localpart)
}

// hsLoginBody is a password login by m.id.user identifier.
func hsLoginBody(user, password string) map[string]any {
	return map[string]any{
		"type":       "m.login.password",
		"identifier": map[string]any{"type": "m.id.user", "user": user},
		"password":   password,
	}
}

// hsLogin logs user in with hsPassword on a new device.
func hsLogin(t testing.TB, srv *testserver.Server, user string) hsSession {
	t.Helper()
	return hsSessionOf(t, hsDo(t, srv, "POST", "/_matrix/client/v3/login", "", hsLoginBody(user, hsPassword)), "login "+user)
}

// hsWhoami asserts that token belongs to user on device.
func hsWhoami(t testing.TB, srv *testserver.Server, s hsSession) {
	t.Helper()
	r := hsDo(t, srv, "GET", "/_matrix/client/v3/account/whoami", s.Token, nil)
	hsOK(t, r, "whoami")
	if r.str("user_id") != s.UserID || r.str("device_id") != s.DeviceID {
		t.Fatalf("whoami = %s, want user %s device %s", r.Raw, s.UserID, s.DeviceID)
	}
}

// hsTokenDead asserts that an access token no longer works.
func hsTokenDead(t testing.TB, srv *testserver.Server, token, what string) {
	t.Helper()
	r := hsDo(t, srv, "GET", "/_matrix/client/v3/account/whoami", token, nil)
	hsWantErr(t, r, http.StatusUnauthorized, "M_UNKNOWN_TOKEN", what)
}

// hsPasswordAuth is the m.login.password UIA stage for user.
func hsPasswordAuth(user, password, session string) map[string]any {
	a := map[string]any{
		"type":       "m.login.password",
		"identifier": map[string]any{"type": "m.id.user", "user": user},
		"password":   password,
	}
	if session != "" {
		a["session"] = session
	}
	return a
}

// hsChallenge checks a user-interactive auth 401: flows whose stages
// include stage, a session, and params. It returns the session.
func hsChallenge(t testing.TB, r *hsReply, stage, what string) string {
	t.Helper()
	if r.Status != http.StatusUnauthorized {
		t.Fatalf("%s: want a 401 UIA challenge, got %s", what, r)
	}
	flows, _ := r.Body["flows"].([]any)
	offered := false
	for _, f := range flows {
		fm, _ := f.(map[string]any)
		stages, ok := fm["stages"].([]any)
		if !ok {
			t.Fatalf("%s: flow without a stages array: %s", what, r.Raw)
		}
		for _, s := range stages {
			offered = offered || s == stage
		}
	}
	if !offered {
		t.Fatalf("%s: no flow offers %s: %s", what, stage, r.Raw)
	}
	if _, ok := r.Body["params"].(map[string]any); !ok {
		t.Errorf("%s: params must be an object: %s", what, r.Raw)
	}
	session := r.str("session")
	if session == "" {
		t.Fatalf("%s: no session in %s", what, r.Raw)
	}
	return session
}

func TestRegisterUserInteractiveAuth(t *testing.T) {
	t.Parallel()
	srv := hsStart(t, testserver.Options{})

	t.Run("empty body returns the flows", func(t *testing.T) {
		t.Parallel()
		// Complement: "POST {} returns a set of flows".
		r := hsDo(t, srv, "POST", "/_matrix/client/v3/register", "", map[string]any{})
		hsChallenge(t, r, "m.login.dummy", "POST {}")
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q", ct)
		}
		if _, ok := r.Body["errcode"]; ok {
			t.Errorf("a first challenge carries no errcode: %s", r.Raw)
		}
	})

	t.Run("two steps with the session", func(t *testing.T) {
		t.Parallel()
		name := hsName("uia")
		body := map[string]any{"username": name, "password": hsPassword}
		session := hsChallenge(t, hsDo(t, srv, "POST", "/_matrix/client/v3/register", "", body), "m.login.dummy", "first step")
		body["auth"] = map[string]any{"type": "m.login.dummy", "session": session}
		r := hsDo(t, srv, "POST", "/_matrix/client/v3/register", "", body)
		s := hsSessionOf(t, r, "second step")
		if want := "@" + name + ":localhost"; s.UserID != want {
			t.Errorf("user_id = %q, want %q", s.UserID, want)
		}
		if hs := r.str("home_server"); hs != "localhost" {
			t.Errorf("home_server = %q, want localhost", hs)
		}
		if _, ok := r.Body["refresh_token"]; ok {
			t.Errorf("refresh_token without asking: %s", r.Raw)
		}
		hsWhoami(t, srv, s)
		// The session is spent once the flow completed.
		body["username"] = hsName("uia")
		r = hsDo(t, srv, "POST", "/_matrix/client/v3/register", "", body)
		if r.Status == http.StatusOK {
			t.Fatalf("a completed UIA session was accepted again: %s", r)
		}
	})

	t.Run("unknown session", func(t *testing.T) {
		t.Parallel()
		body := map[string]any{"username": hsName("uia"), "password": hsPassword,
			"auth": map[string]any{"type": "m.login.dummy", "session": "NOSUCHSESSION"}}
		r := hsDo(t, srv, "POST", "/_matrix/client/v3/register", "", body)
		if r.Status == http.StatusOK || r.errcode() == "" {
			t.Fatalf("unknown session: want an error with an errcode, got %s", r)
		}
	})

	t.Run("r0 prefix", func(t *testing.T) {
		t.Parallel()
		body := map[string]any{"username": hsName("rzero"), "password": hsPassword, "auth": map[string]any{"type": "m.login.dummy"}}
		hsSessionOf(t, hsDo(t, srv, "POST", "/_matrix/client/r0/register", "", body), "r0 register")
	})
}

func TestRegisterRejects(t *testing.T) {
	t.Parallel()
	srv := hsStart(t, testserver.Options{})
	taken := hsName("taken")
	hsRegister(t, srv, taken, nil)

	tests := []struct {
		name     string
		query    string
		username string
		password string
		status   int
		errcode  string
	}{
		{"user in use", "", taken, hsPassword, 400, "M_USER_IN_USE"},
		{"space", "", "al ice", hsPassword, 400, "M_INVALID_USERNAME"},
		{"colon", "", "al:ice", hsPassword, 400, "M_INVALID_USERNAME"},
		{"at sign", "", "@alice", hsPassword, 400, "M_INVALID_USERNAME"},
		{"exclamation", "", "user-!-reject", hsPassword, 400, "M_INVALID_USERNAME"},
		{"question mark", "", "user-?-reject", hsPassword, 400, "M_INVALID_USERNAME"},
		{"backslash", "", `user-\-reject`, hsPassword, 400, "M_INVALID_USERNAME"},
		{"non-ascii", "", "usér", hsPassword, 400, "M_INVALID_USERNAME"},
		{"newline", "", "user\nname", hsPassword, 400, "M_INVALID_USERNAME"},
		{"quote", "", "user'name", hsPassword, 400, "M_INVALID_USERNAME"},
		// "@" + localpart + ":localhost" must fit in 255 bytes.
		{"too long", "", strings.Repeat("a", 250), hsPassword, 400, "M_INVALID_USERNAME"},
		// The default password policy: at least 8 characters.
		{"short password", "", hsName("weak"), "short", 400, "M_PASSWORD_TOO_SHORT"},
		{"guest", "?kind=guest", hsName("guest"), hsPassword, 403, "M_GUEST_ACCESS_FORBIDDEN"},
		{"unknown kind", "?kind=robot", hsName("robot"), hsPassword, 400, "M_INVALID_PARAM"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// The spec: "Homeservers MUST perform the relevant checks and
			// return these codes before performing User-Interactive
			// Authentication", so no auth is sent.
			body := map[string]any{"username": tc.username, "password": tc.password}
			r := hsDo(t, srv, "POST", "/_matrix/client/v3/register"+tc.query, "", body)
			hsWantErr(t, r, tc.status, tc.errcode, "without auth")
			// And the same with a complete flow.
			body["auth"] = map[string]any{"type": "m.login.dummy"}
			r = hsDo(t, srv, "POST", "/_matrix/client/v3/register"+tc.query, "", body)
			hsWantErr(t, r, tc.status, tc.errcode, "with auth")
		})
	}

	t.Run("longest valid localpart", func(t *testing.T) {
		t.Parallel()
		// 255 - len("@") - len(":localhost") = 244.
		long := strings.Repeat("b", 244)
		s := hsRegister(t, srv, long, nil)
		if len(s.UserID) != 255 {
			t.Errorf("user_id has %d bytes, want 255", len(s.UserID))
		}
	})

	t.Run("allowed characters", func(t *testing.T) {
		t.Parallel()
		for _, ch := range []string{"q", "3", ".", "_", "=", "-", "/", "+"} {
			name := hsName("chr" + ch)
			s := hsRegister(t, srv, name, nil)
			if s.UserID != "@"+name+":localhost" {
				t.Errorf("registered %q as %q", name, s.UserID)
			}
		}
	})

	t.Run("generated username", func(t *testing.T) {
		t.Parallel()
		body := map[string]any{"password": hsPassword, "auth": map[string]any{"type": "m.login.dummy"}}
		s := hsSessionOf(t, hsDo(t, srv, "POST", "/_matrix/client/v3/register", "", body), "register without username")
		local, server, ok := strings.Cut(strings.TrimPrefix(s.UserID, "@"), ":")
		if !ok || server != "localhost" || local == "" || strings.ToLower(local) != local {
			t.Errorf("generated user ID %q is not a valid local user ID", s.UserID)
		}
	})

	t.Run("missing password after auth", func(t *testing.T) {
		t.Parallel()
		body := map[string]any{"username": hsName("nopw"), "auth": map[string]any{"type": "m.login.dummy"}}
		r := hsDo(t, srv, "POST", "/_matrix/client/v3/register", "", body)
		hsWantErr(t, r, 400, "M_MISSING_PARAM", "register without a password")
	})
}

func TestRegistrationDisabled(t *testing.T) {
	t.Parallel()
	srv := hsStart(t, testserver.Options{Configure: func(c *configs.Config) { c.EnableRegistration = false }})
	body := map[string]any{"username": "nobody", "password": hsPassword, "auth": map[string]any{"type": "m.login.dummy"}}
	hsWantErr(t, hsDo(t, srv, "POST", "/_matrix/client/v3/register", "", body), 403, "M_FORBIDDEN", "register")
	hsWantErr(t, hsDo(t, srv, "POST", "/_matrix/client/v3/register", "", map[string]any{}), 403, "M_FORBIDDEN", "register {}")
	hsWantErr(t, hsDo(t, srv, "GET", "/_matrix/client/v3/register/available?username=nobody", "", nil), 403, "M_FORBIDDEN", "available")
	hsWantErr(t, hsDo(t, srv, "GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token=x", "", nil), 403, "M_FORBIDDEN", "token validity")
	// Login is not registration: it answers as it always does.
	hsWantErr(t, hsDo(t, srv, "POST", "/_matrix/client/v3/login", "", hsLoginBody("nobody", hsPassword)), 403, "M_FORBIDDEN", "login")
}

func TestRegistrationToken(t *testing.T) {
	t.Parallel()
	srv := hsStart(t, testserver.Options{Configure: func(c *configs.Config) {
		c.RegistrationRequiresToken = true
		c.RegistrationTokens = []configs.Secret{configs.NewSecret("tok")}
	}})

	t.Run("wrong then right token", func(t *testing.T) {
		t.Parallel()
		name := hsName("tok")
		body := map[string]any{"username": name, "password": hsPassword}
		session := hsChallenge(t, hsDo(t, srv, "POST", "/_matrix/client/v3/register", "", body), "m.login.registration_token", "first step")

		// The dummy stage is not offered, so it does not get in.
		body["auth"] = map[string]any{"type": "m.login.dummy", "session": session}
		r := hsDo(t, srv, "POST", "/_matrix/client/v3/register", "", body)
		if r.Status == http.StatusOK {
			t.Fatalf("m.login.dummy bypassed the token: %s", r)
		}

		body["auth"] = map[string]any{"type": "m.login.registration_token", "token": "wrong", "session": session}
		r = hsDo(t, srv, "POST", "/_matrix/client/v3/register", "", body)
		if got := hsChallenge(t, r, "m.login.registration_token", "wrong token"); got != session {
			t.Errorf("session changed from %q to %q", session, got)
		}
		if r.errcode() != "M_FORBIDDEN" {
			t.Errorf("a failed stage carries errcode M_FORBIDDEN, got %s", r.Raw)
		}

		body["auth"] = map[string]any{"type": "m.login.registration_token", "token": "tok", "session": session}
		s := hsSessionOf(t, hsDo(t, srv, "POST", "/_matrix/client/v3/register", "", body), "right token")
		if s.UserID != "@"+name+":localhost" {
			t.Errorf("user_id = %q", s.UserID)
		}
		hsWhoami(t, srv, s)
	})

	t.Run("token in one request", func(t *testing.T) {
		t.Parallel()
		body := map[string]any{"username": hsName("tok"), "password": hsPassword,
			"auth": map[string]any{"type": "m.login.registration_token", "token": "tok"}}
		hsSessionOf(t, hsDo(t, srv, "POST", "/_matrix/client/v3/register", "", body), "register with token")
	})

	t.Run("validity", func(t *testing.T) {
		t.Parallel()
		const path = "/_matrix/client/v1/register/m.login.registration_token/validity"
		for token, want := range map[string]bool{"tok": true, "wrong": false, "to": false, "tok2": false} {
			r := hsDo(t, srv, "GET", path+"?token="+url.QueryEscape(token), "", nil)
			hsOK(t, r, "validity of "+token)
			if got, ok := r.Body["valid"].(bool); !ok || got != want {
				t.Errorf("token %q: valid = %v, want %v", token, r.Body["valid"], want)
			}
		}
		hsWantErr(t, hsDo(t, srv, "GET", path, "", nil), 400, "M_MISSING_PARAM", "validity without token")
	})
}

func TestRegisterAvailable(t *testing.T) {
	t.Parallel()
	srv := hsStart(t, testserver.Options{})
	taken := hsName("avail")
	hsRegister(t, srv, taken, nil)
	const path = "/_matrix/client/v3/register/available"

	r := hsDo(t, srv, "GET", path+"?username="+hsName("free"), "", nil)
	hsOK(t, r, "free name")
	if r.Body["available"] != true {
		t.Errorf("available = %v, want true", r.Body["available"])
	}
	tests := []struct {
		query, errcode string
	}{
		{"?username=" + taken, "M_USER_IN_USE"},
		{"?username=" + strings.ToUpper(taken), "M_USER_IN_USE"}, // capitals fold to the taken name
		{"?username=" + url.QueryEscape("a b"), "M_INVALID_USERNAME"},
		{"", "M_MISSING_PARAM"},
	}
	for _, tc := range tests {
		hsWantErr(t, hsDo(t, srv, "GET", path+tc.query, "", nil), 400, tc.errcode, "available"+tc.query)
	}
	// The token endpoint answers 403 when tokens are not in use.
	hsWantErr(t, hsDo(t, srv, "GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token=x", "", nil),
		403, "M_FORBIDDEN", "token validity without tokens")
}

func TestRegisterOptions(t *testing.T) {
	t.Parallel()
	srv := hsStart(t, testserver.Options{})

	t.Run("inhibit_login", func(t *testing.T) {
		t.Parallel()
		name := hsName("inhibit")
		body := map[string]any{"username": name, "password": hsPassword, "inhibit_login": true, "auth": map[string]any{"type": "m.login.dummy"}}
		r := hsDo(t, srv, "POST", "/_matrix/client/v3/register", "", body)
		hsOK(t, r, "register")
		if r.str("user_id") != "@"+name+":localhost" {
			t.Errorf("user_id = %q", r.str("user_id"))
		}
		for _, k := range []string{"access_token", "device_id", "refresh_token"} {
			if _, ok := r.Body[k]; ok {
				t.Errorf("inhibit_login: %s returned: %s", k, r.Raw)
			}
		}
		s := hsLogin(t, srv, name)
		r = hsDo(t, srv, "GET", "/_matrix/client/v3/devices", s.Token, nil)
		hsOK(t, r, "devices")
		if devs, _ := r.Body["devices"].([]any); len(devs) != 1 {
			t.Errorf("inhibit_login made a device: %s", r.Raw)
		}
	})

	t.Run("device_id and display name", func(t *testing.T) {
		t.Parallel()
		s := hsRegister(t, srv, hsName("dev"), map[string]any{"device_id": "my_device_id", "initial_device_display_name": "Jungle Phone"})
		if s.DeviceID != "my_device_id" {
			t.Errorf("device_id = %q, want my_device_id", s.DeviceID)
		}
		hsWhoami(t, srv, s)
		r := hsDo(t, srv, "GET", "/_matrix/client/v3/devices/my_device_id", s.Token, nil)
		hsOK(t, r, "get device")
		if r.str("display_name") != "Jungle Phone" || r.str("device_id") != "my_device_id" {
			t.Errorf("device = %s", r.Raw)
		}
	})

	t.Run("device_id too long", func(t *testing.T) {
		t.Parallel()
		body := map[string]any{"username": hsName("longdev"), "password": hsPassword, "device_id": strings.Repeat("D", 256),
			"auth": map[string]any{"type": "m.login.dummy"}}
		r := hsDo(t, srv, "POST", "/_matrix/client/v3/register", "", body)
		hsWantErr(t, r, 400, "M_INVALID_PARAM", "long device_id")
	})

	t.Run("refresh_token", func(t *testing.T) {
		t.Parallel()
		r := hsDo(t, srv, "POST", "/_matrix/client/v3/register", "", map[string]any{
			"username": hsName("refresh"), "password": hsPassword, "refresh_token": true, "auth": map[string]any{"type": "m.login.dummy"}})
		s := hsSessionOf(t, r, "register")
		if s.RefreshToken == "" || s.RefreshToken == s.Token {
			t.Fatalf("no separate refresh_token: %s", r.Raw)
		}
		// RefreshableAccessTokenLifetime is 0: the token does not expire.
		if _, ok := r.Body["expires_in_ms"]; ok {
			t.Errorf("expires_in_ms without a lifetime: %s", r.Raw)
		}
		r = hsDo(t, srv, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": s.RefreshToken})
		hsOK(t, r, "refresh")
		hsWhoami(t, srv, hsSession{UserID: s.UserID, DeviceID: s.DeviceID, Token: r.str("access_token")})
	})
}

// adminRegister runs Synapse's shared-secret registration: fetch a nonce,
// then post the HMAC-SHA1 of nonce\0user\0password\0admin|notadmin.
func adminRegister(t testing.TB, srv *testserver.Server, secret, user string, admin bool) (*hsReply, string) {
	t.Helper()
	r := hsDo(t, srv, "GET", "/_synapse/admin/v1/register", "", nil)
	hsOK(t, r, "nonce")
	nonce := r.str("nonce")
	if nonce == "" {
		t.Fatalf("no nonce: %s", r.Raw)
	}
	return hsDo(t, srv, "POST", "/_synapse/admin/v1/register", "", map[string]any{
		"nonce": nonce, "username": user, "password": hsPassword, "admin": admin,
		"mac": adminMAC(secret, nonce, user, hsPassword, admin),
	}), nonce
}

func adminMAC(secret, nonce, user, password string, admin bool) string {
	m := hmac.New(sha1.New, []byte(secret))
	kind := "notadmin"
	if admin {
		kind = "admin"
	}
	m.Write([]byte(nonce + "\x00" + user + "\x00" + password + "\x00" + kind))
	return hex.EncodeToString(m.Sum(nil))
}

func TestAdminRegister(t *testing.T) {
	t.Parallel()
	const secret = "shared s3cret"
	// Registration is closed: the shared secret works regardless.
	srv := hsStart(t, testserver.Options{Configure: func(c *configs.Config) {
		c.EnableRegistration = false
		c.RegistrationSharedSecret = configs.NewSecret(secret)
	}})

	t.Run("user and admin", func(t *testing.T) {
		t.Parallel()
		for _, admin := range []bool{false, true} {
			name := hsName("shared")
			r, _ := adminRegister(t, srv, secret, name, admin)
			s := hsSessionOf(t, r, "shared-secret register")
			if s.UserID != "@"+name+":localhost" {
				t.Errorf("user_id = %q", s.UserID)
			}
			hsWhoami(t, srv, s)
			hsLogin(t, srv, name)
		}
	})

	t.Run("downcases capitals", func(t *testing.T) {
		t.Parallel()
		// Complement: "POST /_synapse/admin/v1/register with shared secret
		// downcases capitals"; the MAC covers the name as sent.
		name := hsName("User-UPPER-shared-SECRET")
		r, _ := adminRegister(t, srv, secret, name, false)
		s := hsSessionOf(t, r, "register with capitals")
		if want := "@" + strings.ToLower(name) + ":localhost"; s.UserID != want {
			t.Errorf("user_id = %q, want %q", s.UserID, want)
		}
	})

	t.Run("disallows symbols", func(t *testing.T) {
		t.Parallel()
		r, _ := adminRegister(t, srv, secret, "us,er", false)
		hsWantErr(t, r, 400, "M_INVALID_USERNAME", "us,er")
	})

	t.Run("wrong mac", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			name string
			// mac returns the mac and admin flag to send.
			mac func(nonce, user string) (string, bool)
		}{
			{"other secret", func(nonce, user string) (string, bool) {
				return adminMAC("not the secret", nonce, user, hsPassword, false), false
			}},
			{"admin flag flipped", func(nonce, user string) (string, bool) {
				return adminMAC(secret, nonce, user, hsPassword, false), true
			}},
			{"other password", func(nonce, user string) (string, bool) {
				return adminMAC(secret, nonce, user, "another password", false), false
			}},
			{"not hex", func(string, string) (string, bool) { return "zz", false }},
			{"empty", func(string, string) (string, bool) { return "", false }},
		}
		for _, tc := range tests {
			r := hsDo(t, srv, "GET", "/_synapse/admin/v1/register", "", nil)
			hsOK(t, r, "nonce")
			nonce, user := r.str("nonce"), hsName("badmac")
			mac, admin := tc.mac(nonce, user)
			body := map[string]any{"nonce": nonce, "username": user, "password": hsPassword, "admin": admin, "mac": mac}
			hsWantErr(t, hsDo(t, srv, "POST", "/_synapse/admin/v1/register", "", body), 403, "M_FORBIDDEN", tc.name)
			// The user was not made.
			hsWantErr(t, hsDo(t, srv, "POST", "/_matrix/client/v3/login", "", hsLoginBody(user, hsPassword)), 403, "M_FORBIDDEN", tc.name+": login")
			// And the nonce is spent: a right MAC with it is too late.
			body["admin"], body["mac"] = false, adminMAC(secret, nonce, user, hsPassword, false)
			r = hsDo(t, srv, "POST", "/_synapse/admin/v1/register", "", body)
			if r.Status != 400 || r.errcode() == "" {
				t.Errorf("%s: nonce reused after a failure: want 400 with an errcode, got %s", tc.name, r)
			}
		}
	})

	t.Run("nonce is single use", func(t *testing.T) {
		t.Parallel()
		name := hsName("once")
		r, nonce := adminRegister(t, srv, secret, name, false)
		hsSessionOf(t, r, "first use")
		other := hsName("twice")
		body := map[string]any{"nonce": nonce, "username": other, "password": hsPassword, "admin": false,
			"mac": adminMAC(secret, nonce, other, hsPassword, false)}
		r = hsDo(t, srv, "POST", "/_synapse/admin/v1/register", "", body)
		if r.Status != 400 || r.errcode() == "" {
			t.Fatalf("reused nonce: want 400 with an errcode, got %s", r)
		}
		// An unknown nonce is refused the same way.
		body["nonce"] = "made-up"
		body["mac"] = adminMAC(secret, "made-up", other, hsPassword, false)
		r = hsDo(t, srv, "POST", "/_synapse/admin/v1/register", "", body)
		if r.Status != 400 || r.errcode() == "" {
			t.Fatalf("unknown nonce: want 400 with an errcode, got %s", r)
		}
	})

	t.Run("user in use", func(t *testing.T) {
		t.Parallel()
		name := hsName("dup")
		r, _ := adminRegister(t, srv, secret, name, false)
		hsSessionOf(t, r, "first")
		r, _ = adminRegister(t, srv, secret, name, false)
		hsWantErr(t, r, 400, "M_USER_IN_USE", "second")
	})
}

func TestAdminRegisterDisabled(t *testing.T) {
	t.Parallel()
	srv := hsStart(t, testserver.Options{})
	hsWantErr(t, hsDo(t, srv, "GET", "/_synapse/admin/v1/register", "", nil), 404, "M_UNRECOGNIZED", "nonce")
	body := map[string]any{"nonce": "x", "username": "x", "password": hsPassword, "mac": adminMAC("", "x", "x", hsPassword, false)}
	hsWantErr(t, hsDo(t, srv, "POST", "/_synapse/admin/v1/register", "", body), 404, "M_UNRECOGNIZED", "register")
}

func TestLogin(t *testing.T) {
	t.Parallel()
	srv := hsStart(t, testserver.Options{})
	name := hsName("login_user")
	owner := hsRegister(t, srv, name, nil)

	t.Run("flows", func(t *testing.T) {
		t.Parallel()
		r := hsDo(t, srv, "GET", "/_matrix/client/v3/login", "", nil)
		hsOK(t, r, "GET /login")
		flows, _ := r.Body["flows"].([]any)
		found := false
		for _, f := range flows {
			fm, _ := f.(map[string]any)
			found = found || fm["type"] == "m.login.password"
		}
		if !found {
			t.Errorf("m.login.password not offered: %s", r.Raw)
		}
	})

	ok := []struct {
		name string
		body map[string]any
	}{
		{"localpart", hsLoginBody(name, hsPassword)},
		{"full user ID", hsLoginBody(owner.UserID, hsPassword)},
		// Complement: "Login with uppercase username works".
		{"upper-case user ID", hsLoginBody("@"+strings.ToUpper(name)+":localhost", hsPassword)},
		{"legacy user", map[string]any{"type": "m.login.password", "user": name, "password": hsPassword}},
		{"legacy full user ID", map[string]any{"type": "m.login.password", "user": owner.UserID, "password": hsPassword}},
	}
	for _, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := hsDo(t, srv, "POST", "/_matrix/client/v3/login", "", tc.body)
			s := hsSessionOf(t, r, "login")
			if s.UserID != owner.UserID {
				t.Errorf("user_id = %q, want %q", s.UserID, owner.UserID)
			}
			if s.DeviceID == owner.DeviceID {
				t.Errorf("login reused the registration device %q", s.DeviceID)
			}
			if hs := r.str("home_server"); hs != "localhost" {
				t.Errorf("home_server = %q", hs)
			}
			if wk, _ := r.Body["well_known"].(map[string]any); wk == nil || wk["m.homeserver"] == nil {
				t.Errorf("well_known missing: %s", r.Raw)
			}
			hsWhoami(t, srv, s)
		})
	}

	t.Run("device_id", func(t *testing.T) {
		t.Parallel()
		body := hsLoginBody(name, hsPassword)
		body["device_id"] = "test_device_id"
		body["initial_device_display_name"] = "device display"
		s := hsSessionOf(t, hsDo(t, srv, "POST", "/_matrix/client/v3/login", "", body), "login")
		if s.DeviceID != "test_device_id" {
			t.Errorf("device_id = %q", s.DeviceID)
		}
		hsWhoami(t, srv, s)
		r := hsDo(t, srv, "GET", "/_matrix/client/v3/devices/test_device_id", s.Token, nil)
		hsOK(t, r, "get device")
		if r.str("display_name") != "device display" {
			t.Errorf("display_name: %s", r.Raw)
		}
	})

	t.Run("no user enumeration", func(t *testing.T) {
		t.Parallel()
		// A wrong password and an unknown user get the same answer.
		wrong := hsDo(t, srv, "POST", "/_matrix/client/v3/login", "", hsLoginBody(name, "wrong password"))
		unknown := hsDo(t, srv, "POST", "/_matrix/client/v3/login", "", hsLoginBody(hsName("nobody"), "wrong password"))
		if wrong.Status != unknown.Status || string(wrong.Raw) != string(unknown.Raw) {
			t.Errorf("wrong password: %s\nunknown user: %s", wrong, unknown)
		}
	})

	bad := []struct {
		name    string
		body    map[string]any
		status  int
		errcode string
	}{
		{"wrong password", hsLoginBody(name, "wrong password"), 403, "M_FORBIDDEN"},
		{"empty password", hsLoginBody(name, ""), 403, "M_FORBIDDEN"},
		{"unknown user", hsLoginBody(hsName("i-dont-exist"), hsPassword), 403, "M_FORBIDDEN"},
		{"user on another server", hsLoginBody("@"+name+":elsewhere.example", hsPassword), 403, "M_FORBIDDEN"},
		{"invalid user ID", hsLoginBody("@:", hsPassword), 403, "M_FORBIDDEN"},
		{"legacy wrong password", map[string]any{"type": "m.login.password", "user": name, "password": "nope nope"}, 403, "M_FORBIDDEN"},
		{"unsupported type", map[string]any{"type": "m.login.token", "token": "abc"}, 400, "M_UNKNOWN"},
		{"no type", map[string]any{"user": name, "password": hsPassword}, 400, "M_UNKNOWN"},
		{"third-party identifier", map[string]any{"type": "m.login.password", "password": hsPassword,
			"identifier": map[string]any{"type": "m.id.thirdparty", "medium": "email", "address": "a@example.org"}}, 400, "M_UNKNOWN"},
		{"no user", map[string]any{"type": "m.login.password", "password": hsPassword}, 400, "M_MISSING_PARAM"},
		{"identifier not an object", map[string]any{"type": "m.login.password", "identifier": "alice", "password": hsPassword}, 400, "M_BAD_JSON"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := hsDo(t, srv, "POST", "/_matrix/client/v3/login", "", tc.body)
			hsWantErr(t, r, tc.status, tc.errcode, tc.name)
			if _, ok := r.Body["access_token"]; ok {
				t.Errorf("access_token in an error: %s", r.Raw)
			}
		})
	}
}

func TestWhoamiAndTokens(t *testing.T) {
	t.Parallel()
	srv := hsStart(t, testserver.Options{})
	s := hsRegister(t, srv, hsName("whoami"), nil)

	r := hsDo(t, srv, "GET", "/_matrix/client/v3/account/whoami", s.Token, nil)
	hsOK(t, r, "whoami")
	if r.str("user_id") != s.UserID || r.str("device_id") != s.DeviceID || r.Body["is_guest"] != false {
		t.Errorf("whoami = %s", r.Raw)
	}

	const whoami = "/_matrix/client/v3/account/whoami"
	tests := []struct {
		name    string
		path    string
		header  string
		errcode string
	}{
		{"no token", whoami, "", "M_MISSING_TOKEN"},
		{"unknown token", whoami, "Bearer mat_not_a_real_token", "M_UNKNOWN_TOKEN"},
		{"empty bearer", whoami, "Bearer ", "M_MISSING_TOKEN"},
		{"basic auth", whoami, "Basic " + s.Token, "M_MISSING_TOKEN"},
		{"lower-case scheme", whoami, "bearer " + s.Token, "M_MISSING_TOKEN"},
		// Query-string tokens: TestAccessTokenInQuery.
		{"query string unknown token", whoami + "?access_token=nope", "", "M_UNKNOWN_TOKEN"},
		{"query string empty token", whoami + "?access_token=", "", "M_MISSING_TOKEN"},
		{"bearer wins over a valid query token", whoami + "?access_token=" + url.QueryEscape(s.Token), "Basic " + s.Token, "M_MISSING_TOKEN"},
		{"devices without token", "/_matrix/client/v3/devices", "", "M_MISSING_TOKEN"},
		{"logout without token", "/_matrix/client/v3/logout", "", "M_MISSING_TOKEN"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			method := "GET"
			if strings.HasSuffix(tc.path, "/logout") {
				method = "POST"
			}
			req := hsRequest(t, srv, method, tc.path, nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			hsWantErr(t, hsSend(t, hsClient(srv), req), 401, tc.errcode, tc.name)
		})
	}
	// None of that harmed the real token.
	hsWhoami(t, srv, s)
}

func TestLogout(t *testing.T) {
	t.Parallel()
	srv := hsStart(t, testserver.Options{})

	t.Run("one device", func(t *testing.T) {
		t.Parallel()
		a := hsRegister(t, srv, hsName("logout"), nil)
		b := hsLogin(t, srv, a.UserID)
		r := hsDo(t, srv, "POST", "/_matrix/client/v3/logout", a.Token, map[string]any{})
		hsOK(t, r, "logout")
		if len(r.Body) != 0 {
			t.Errorf("logout body = %s, want {}", r.Raw)
		}
		hsTokenDead(t, srv, a.Token, "logged-out token")
		hsWantErr(t, hsDo(t, srv, "GET", "/_matrix/client/v3/sync?timeout=0", a.Token, nil), 401, "M_UNKNOWN_TOKEN", "sync after logout")
		hsWantErr(t, hsDo(t, srv, "POST", "/_matrix/client/v3/logout", a.Token, nil), 401, "M_UNKNOWN_TOKEN", "second logout")
		hsWhoami(t, srv, b)
		// The device went with its token.
		r = hsDo(t, srv, "GET", "/_matrix/client/v3/devices", b.Token, nil)
		hsOK(t, r, "devices")
		if ids := deviceIDs(r); len(ids) != 1 || ids[0] != b.DeviceID {
			t.Errorf("devices after logout = %v, want [%s]", ids, b.DeviceID)
		}
	})

	t.Run("all devices", func(t *testing.T) {
		t.Parallel()
		a := hsRegister(t, srv, hsName("logoutall"), nil)
		b := hsLogin(t, srv, a.UserID)
		c := hsLogin(t, srv, a.UserID)
		other := hsRegister(t, srv, hsName("bystander"), nil)
		hsOK(t, hsDo(t, srv, "POST", "/_matrix/client/v3/logout/all", b.Token, map[string]any{}), "logout/all")
		for _, s := range []hsSession{a, b, c} {
			hsTokenDead(t, srv, s.Token, "after logout/all "+s.DeviceID)
		}
		hsWhoami(t, srv, other)
		// The password still works.
		hsWhoami(t, srv, hsLogin(t, srv, a.UserID))
	})

	t.Run("refresh token dies with the device", func(t *testing.T) {
		t.Parallel()
		a := hsRegister(t, srv, hsName("logoutrefresh"), map[string]any{"refresh_token": true})
		hsOK(t, hsDo(t, srv, "POST", "/_matrix/client/v3/logout", a.Token, nil), "logout")
		r := hsDo(t, srv, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": a.RefreshToken})
		hsWantErr(t, r, 401, "M_UNKNOWN_TOKEN", "refresh after logout")
	})
}

func TestRefresh(t *testing.T) {
	t.Parallel()
	srv := hsStart(t, testserver.Options{})
	user := hsRegister(t, srv, hsName("refresher"), nil)
	body := hsLoginBody(user.UserID, hsPassword)
	body["refresh_token"] = true
	first := hsSessionOf(t, hsDo(t, srv, "POST", "/_matrix/client/v3/login", "", body), "login")
	if first.RefreshToken == "" {
		t.Fatalf("login with refresh_token:true returned no refresh token")
	}

	r := hsDo(t, srv, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": first.RefreshToken})
	hsOK(t, r, "refresh")
	second := hsSession{UserID: first.UserID, DeviceID: first.DeviceID, Token: r.str("access_token"), RefreshToken: r.str("refresh_token")}
	if second.Token == "" || second.Token == first.Token || second.RefreshToken == "" || second.RefreshToken == first.RefreshToken {
		t.Fatalf("refresh must return new tokens: %s", r.Raw)
	}
	hsWhoami(t, srv, second) // same user, same device
	hsTokenDead(t, srv, first.Token, "old access token")
	hsWantErr(t, hsDo(t, srv, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": first.RefreshToken}),
		401, "M_UNKNOWN_TOKEN", "old refresh token")
	// The failed attempt with the old one did not revoke the new one.
	r = hsDo(t, srv, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": second.RefreshToken})
	hsOK(t, r, "second refresh")
	hsWhoami(t, srv, hsSession{UserID: first.UserID, DeviceID: first.DeviceID, Token: r.str("access_token")})
	// The user's other device is untouched.
	hsWhoami(t, srv, user)

	hsWantErr(t, hsDo(t, srv, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": "mar_nope"}), 401, "M_UNKNOWN_TOKEN", "unknown")
	// An access token is not a refresh token.
	hsWantErr(t, hsDo(t, srv, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": user.Token}), 401, "M_UNKNOWN_TOKEN", "access token")
	hsWantErr(t, hsDo(t, srv, "POST", "/_matrix/client/v3/refresh", "", map[string]any{}), 400, "M_MISSING_PARAM", "missing")
	hsWantErr(t, hsDo(t, srv, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": 5}), 400, "M_BAD_JSON", "number")
}

func TestAccessTokenExpiry(t *testing.T) {
	t.Parallel()
	const lifetime = 5 * time.Minute
	clk := clock.NewFake(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))
	srv := hsStart(t, testserver.Options{Clock: clk, Configure: func(c *configs.Config) {
		c.RefreshableAccessTokenLifetime = configs.Duration(lifetime)
	}})
	// These subtests share the clock, so they run in order.
	refreshing := hsRegister(t, srv, hsName("expiring"), map[string]any{"refresh_token": true})
	plain := hsLogin(t, srv, refreshing.UserID) // no refresh token: never expires

	r := hsDo(t, srv, "POST", "/_matrix/client/v3/login", "", map[string]any{
		"type": "m.login.password", "user": refreshing.UserID, "password": hsPassword, "refresh_token": true})
	hsOK(t, r, "login")
	if got, _ := r.Body["expires_in_ms"].(float64); got != float64(lifetime.Milliseconds()) {
		t.Errorf("login expires_in_ms = %v, want %d", r.Body["expires_in_ms"], lifetime.Milliseconds())
	}
	if _, ok := hsDo(t, srv, "POST", "/_matrix/client/v3/login", "", hsLoginBody(refreshing.UserID, hsPassword)).Body["expires_in_ms"]; ok {
		t.Errorf("expires_in_ms on a login without refresh_token")
	}

	clk.Advance(lifetime - time.Millisecond)
	hsWhoami(t, srv, refreshing)

	clk.Advance(time.Millisecond)
	r = hsDo(t, srv, "GET", "/_matrix/client/v3/account/whoami", refreshing.Token, nil)
	hsWantErr(t, r, 401, "M_UNKNOWN_TOKEN", "expired token")
	if r.Body["soft_logout"] != true {
		t.Errorf("expired token: soft_logout = %v, want true: %s", r.Body["soft_logout"], r.Raw)
	}
	hsWhoami(t, srv, plain)

	// The refresh endpoint needs no access token, so an expired one does
	// not stop it.
	r = hsDo(t, srv, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": refreshing.RefreshToken})
	hsOK(t, r, "refresh")
	if got, _ := r.Body["expires_in_ms"].(float64); got != float64(lifetime.Milliseconds()) {
		t.Errorf("refresh expires_in_ms = %v", r.Body["expires_in_ms"])
	}
	renewed := hsSession{UserID: refreshing.UserID, DeviceID: refreshing.DeviceID, Token: r.str("access_token")}
	hsWhoami(t, srv, renewed)
	clk.Advance(lifetime)
	r = hsDo(t, srv, "GET", "/_matrix/client/v3/account/whoami", renewed.Token, nil)
	hsWantErr(t, r, 401, "M_UNKNOWN_TOKEN", "renewed token after its lifetime")
	if r.Body["soft_logout"] != true {
		t.Errorf("soft_logout missing: %s", r.Raw)
	}

	// A token that is simply unknown is a hard logout.
	r = hsDo(t, srv, "GET", "/_matrix/client/v3/account/whoami", "mat_unknown", nil)
	hsWantErr(t, r, 401, "M_UNKNOWN_TOKEN", "unknown token")
	if soft, ok := r.Body["soft_logout"]; ok && soft != false {
		t.Errorf("unknown token must not be a soft logout: %s", r.Raw)
	}

	clk.Advance(1000 * time.Hour)
	hsWhoami(t, srv, plain)
}

func TestChangePassword(t *testing.T) {
	t.Parallel()
	srv := hsStart(t, testserver.Options{})
	const path = "/_matrix/client/v3/account/password"
	const newPassword = "a new and better password"

	t.Run("logs out other devices", func(t *testing.T) {
		t.Parallel()
		me := hsRegister(t, srv, hsName("pw"), nil)
		other := hsLogin(t, srv, me.UserID)

		r := hsDo(t, srv, "POST", path, me.Token, map[string]any{"new_password": newPassword})
		session := hsChallenge(t, r, "m.login.password", "no auth")

		r = hsDo(t, srv, "POST", path, me.Token, map[string]any{"new_password": newPassword, "auth": hsPasswordAuth(me.UserID, "wrong password", session)})
		hsChallenge(t, r, "m.login.password", "wrong password")
		if r.errcode() != "M_FORBIDDEN" {
			t.Errorf("wrong password: errcode = %q, want M_FORBIDDEN: %s", r.errcode(), r.Raw)
		}
		hsLogin(t, srv, me.UserID) // unchanged so far

		r = hsDo(t, srv, "POST", path, me.Token, map[string]any{"new_password": newPassword, "auth": hsPasswordAuth(me.UserID, hsPassword, session)})
		hsOK(t, r, "right password")

		hsWhoami(t, srv, me)
		hsTokenDead(t, srv, other.Token, "other device")
		hsWantErr(t, hsDo(t, srv, "POST", "/_matrix/client/v3/login", "", hsLoginBody(me.UserID, hsPassword)), 403, "M_FORBIDDEN", "old password")
		hsSessionOf(t, hsDo(t, srv, "POST", "/_matrix/client/v3/login", "", hsLoginBody(me.UserID, newPassword)), "new password")
	})

	t.Run("logout_devices false", func(t *testing.T) {
		t.Parallel()
		me := hsRegister(t, srv, hsName("pwkeep"), nil)
		other := hsLogin(t, srv, me.UserID)
		r := hsDo(t, srv, "POST", path, me.Token, map[string]any{"new_password": newPassword, "logout_devices": false,
			"auth": hsPasswordAuth(strings.TrimPrefix(strings.Split(me.UserID, ":")[0], "@"), hsPassword, "")})
		hsOK(t, r, "change")
		hsWhoami(t, srv, me)
		hsWhoami(t, srv, other)
		hsSessionOf(t, hsDo(t, srv, "POST", "/_matrix/client/v3/login", "", hsLoginBody(me.UserID, newPassword)), "new password")
	})

	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		me := hsRegister(t, srv, hsName("pwbad"), nil)
		someoneElse := hsRegister(t, srv, hsName("pwother"), nil)

		r := hsDo(t, srv, "POST", path, me.Token, map[string]any{"new_password": "short", "auth": hsPasswordAuth(me.UserID, hsPassword, "")})
		hsWantErr(t, r, 400, "M_PASSWORD_TOO_SHORT", "short")

		// Someone else's (correct) password does not authenticate me: the
		// stage passes for its own account, and the request is then
		// refused with 403, as Synapse refuses it.
		r = hsDo(t, srv, "POST", path, me.Token, map[string]any{"new_password": newPassword, "auth": hsPasswordAuth(someoneElse.UserID, hsPassword, "")})
		hsWantErr(t, r, 403, "M_FORBIDDEN", "other user's password")
		hsWantErr(t, hsDo(t, srv, "POST", path, me.Token, map[string]any{"auth": hsPasswordAuth(me.UserID, hsPassword, "")}),
			400, "M_MISSING_PARAM", "no new_password")

		hsWantErr(t, hsDo(t, srv, "POST", path, "", map[string]any{"new_password": newPassword}), 401, "M_MISSING_TOKEN", "no token")

		// The password is unchanged.
		hsLogin(t, srv, me.UserID)
	})
}

// deviceIDs lists the device_id of each device in a GET /devices reply.
func deviceIDs(r *hsReply) []string {
	var ids []string
	devs, _ := r.Body["devices"].([]any)
	for _, d := range devs {
		dm, _ := d.(map[string]any)
		id, _ := dm["device_id"].(string)
		ids = append(ids, id)
	}
	return ids
}

func TestDevices(t *testing.T) {
	t.Parallel()
	srv := hsStart(t, testserver.Options{})

	t.Run("list get rename", func(t *testing.T) {
		t.Parallel()
		me := hsRegister(t, srv, hsName("devs"), map[string]any{"device_id": "AAA", "initial_device_display_name": "first"})
		body := hsLoginBody(me.UserID, hsPassword)
		body["device_id"] = "BBB"
		second := hsSessionOf(t, hsDo(t, srv, "POST", "/_matrix/client/v3/login", "", body), "login")
		stranger := hsRegister(t, srv, hsName("stranger"), map[string]any{"device_id": "CCC"})

		r := hsDo(t, srv, "GET", "/_matrix/client/v3/devices", me.Token, nil)
		hsOK(t, r, "list")
		if ids := deviceIDs(r); strings.Join(ids, ",") != "AAA,BBB" {
			t.Errorf("devices = %v, want [AAA BBB] (and not the stranger's)", ids)
		}

		r = hsDo(t, srv, "GET", "/_matrix/client/v3/devices/AAA", second.Token, nil)
		hsOK(t, r, "get")
		if r.str("device_id") != "AAA" || r.str("display_name") != "first" {
			t.Errorf("device AAA = %s", r.Raw)
		}

		hsOK(t, hsDo(t, srv, "PUT", "/_matrix/client/v3/devices/BBB", me.Token, map[string]any{"display_name": "renamed"}), "rename")
		r = hsDo(t, srv, "GET", "/_matrix/client/v3/devices/BBB", me.Token, nil)
		if r.str("display_name") != "renamed" {
			t.Errorf("after rename: %s", r.Raw)
		}
		// A PUT without display_name changes nothing.
		hsOK(t, hsDo(t, srv, "PUT", "/_matrix/client/v3/devices/BBB", me.Token, map[string]any{}), "empty PUT")
		r = hsDo(t, srv, "GET", "/_matrix/client/v3/devices/BBB", me.Token, nil)
		if r.str("display_name") != "renamed" {
			t.Errorf("after empty PUT: %s", r.Raw)
		}

		for _, tc := range []struct{ method, path string }{
			{"GET", "/_matrix/client/v3/devices/unknown_device"},
			{"PUT", "/_matrix/client/v3/devices/unknown_device"},
			// Another user's device is as unknown as a missing one.
			{"GET", "/_matrix/client/v3/devices/CCC"},
			{"PUT", "/_matrix/client/v3/devices/CCC"},
		} {
			var body any
			if tc.method != "GET" {
				body = map[string]any{"display_name": "x"}
			}
			hsWantErr(t, hsDo(t, srv, tc.method, tc.path, me.Token, body), 404, "M_NOT_FOUND", tc.method+" "+tc.path)
		}
		r = hsDo(t, srv, "GET", "/_matrix/client/v3/devices/CCC", stranger.Token, nil)
		if r.str("display_name") == "x" {
			t.Errorf("a stranger renamed CCC: %s", r.Raw)
		}
	})

	t.Run("delete one", func(t *testing.T) {
		t.Parallel()
		me := hsRegister(t, srv, hsName("devdel"), nil)
		victim := hsLogin(t, srv, me.UserID)
		path := "/_matrix/client/v3/devices/" + victim.DeviceID

		session := hsChallenge(t, hsDo(t, srv, "DELETE", path, me.Token, nil), "m.login.password", "no auth")
		r := hsDo(t, srv, "DELETE", path, me.Token, map[string]any{"auth": hsPasswordAuth(me.UserID, "wrong password", session)})
		hsChallenge(t, r, "m.login.password", "wrong password")
		if r.errcode() != "M_FORBIDDEN" {
			t.Errorf("wrong password: errcode %q", r.errcode())
		}
		hsWhoami(t, srv, victim)

		r = hsDo(t, srv, "DELETE", path, me.Token, map[string]any{"auth": hsPasswordAuth(me.UserID, hsPassword, session)})
		hsOK(t, r, "delete")
		hsTokenDead(t, srv, victim.Token, "deleted device")
		hsWantErr(t, hsDo(t, srv, "GET", path, me.Token, nil), 404, "M_NOT_FOUND", "deleted device")
		hsWhoami(t, srv, me)

		// The spec: 200 if the device "had been removed previously", so a
		// retry succeeds; it still needs the password first.
		for _, gone := range []string{path, "/_matrix/client/v3/devices/never_existed"} {
			session := hsChallenge(t, hsDo(t, srv, "DELETE", gone, me.Token, nil), "m.login.password", "again "+gone)
			r = hsDo(t, srv, "DELETE", gone, me.Token, map[string]any{"auth": hsPasswordAuth(me.UserID, hsPassword, session)})
			hsOK(t, r, "delete again "+gone)
		}
		hsWhoami(t, srv, me)
	})

	t.Run("delete another user's device", func(t *testing.T) {
		t.Parallel()
		me := hsRegister(t, srv, hsName("devthief"), nil)
		victim := hsRegister(t, srv, hsName("devowner"), nil)
		path := "/_matrix/client/v3/devices/" + victim.DeviceID
		// Device IDs are per user: this names a device of mine, which I do
		// not have, so there is nothing to delete (200, as in Synapse and
		// as for any device "removed previously").
		r := hsDo(t, srv, "DELETE", path, me.Token, map[string]any{"auth": hsPasswordAuth(me.UserID, hsPassword, "")})
		hsOK(t, r, "delete a device ID that is not mine")
		hsWhoami(t, srv, victim)
		// With the victim's token and my own password (Complement: "DELETE
		// /device/{deviceId} requires UI auth user to match device
		// owner"): 403, not a 401 challenge, and the device stays.
		stolen := hsLogin(t, srv, victim.UserID)
		r = hsDo(t, srv, "DELETE", path, stolen.Token, map[string]any{"auth": hsPasswordAuth(me.UserID, hsPassword, "")})
		hsWantErr(t, r, 403, "M_FORBIDDEN", "delete with another account's password")
		r = hsDo(t, srv, "POST", "/_matrix/client/v3/delete_devices", stolen.Token,
			map[string]any{"devices": []string{victim.DeviceID}, "auth": hsPasswordAuth(me.UserID, hsPassword, "")})
		hsWantErr(t, r, 403, "M_FORBIDDEN", "delete_devices with another account's password")
		hsWhoami(t, srv, victim)
		hsOK(t, hsDo(t, srv, "GET", path, stolen.Token, nil), "the device is still there")
		// The owner's password deletes it.
		hsOK(t, hsDo(t, srv, "DELETE", path, stolen.Token, map[string]any{"auth": hsPasswordAuth(victim.UserID, hsPassword, "")}), "owner deletes")
		hsTokenDead(t, srv, victim.Token, "deleted device")
	})

	t.Run("delete_devices", func(t *testing.T) {
		t.Parallel()
		me := hsRegister(t, srv, hsName("devsdel"), nil)
		a, b := hsLogin(t, srv, me.UserID), hsLogin(t, srv, me.UserID)
		const path = "/_matrix/client/v3/delete_devices"
		body := map[string]any{"devices": []string{a.DeviceID, b.DeviceID, "never_existed"}}
		session := hsChallenge(t, hsDo(t, srv, "POST", path, me.Token, body), "m.login.password", "no auth")
		hsWhoami(t, srv, a)
		body["auth"] = hsPasswordAuth(me.UserID, hsPassword, session)
		hsOK(t, hsDo(t, srv, "POST", path, me.Token, body), "delete_devices")
		hsTokenDead(t, srv, a.Token, "a")
		hsTokenDead(t, srv, b.Token, "b")
		hsWhoami(t, srv, me)
		r := hsDo(t, srv, "GET", "/_matrix/client/v3/devices", me.Token, nil)
		if ids := deviceIDs(r); len(ids) != 1 || ids[0] != me.DeviceID {
			t.Errorf("devices left = %v, want [%s]", ids, me.DeviceID)
		}

		hsWantErr(t, hsDo(t, srv, "POST", path, me.Token, map[string]any{}), 400, "M_MISSING_PARAM", "no devices")
		hsWantErr(t, hsDo(t, srv, "POST", path, me.Token, map[string]any{"devices": "AAA"}), 400, "M_BAD_JSON", "devices not a list")
	})

	t.Run("session bound to its request", func(t *testing.T) {
		t.Parallel()
		me := hsRegister(t, srv, hsName("devbind"), nil)
		victim := hsLogin(t, srv, me.UserID)
		// A session begun to change the password cannot delete a device.
		session := hsChallenge(t, hsDo(t, srv, "POST", "/_matrix/client/v3/account/password", me.Token,
			map[string]any{"new_password": "another long password"}), "m.login.password", "password change")
		r := hsDo(t, srv, "DELETE", "/_matrix/client/v3/devices/"+victim.DeviceID, me.Token,
			map[string]any{"auth": hsPasswordAuth(me.UserID, hsPassword, session)})
		if r.Status == http.StatusOK {
			t.Fatalf("a UIA session crossed endpoints: %s", r)
		}
		hsWhoami(t, srv, victim)
	})
}

// Complement: "POST /register downcases capitals in usernames".
func TestRegisterDowncasesCapitals(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	s := hsRegister(t, srv, "User-UPPER", nil)
	if s.UserID != "@user-upper:localhost" {
		t.Errorf("registered %s, want @user-upper:localhost", s.UserID)
	}
}
