package main

// A minimal Matrix client: only the client-server API calls the scenarios
// make, against any homeserver (spec: https://spec.matrix.org/latest/client-server-api/).
// Identifiers are typed once decoded; secrets never print.

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

type (
	userID  string
	roomID  string
	eventID string
)

// secret holds a password, access token, shared secret or registration
// token. It prints, logs and marshals as "[redacted]" and cannot be compared
// with ==; reveal is called only where the value goes on the wire.
type secret struct {
	_ [0]func() // makes secret incomparable
	v string
}

func newSecret(s string) secret { return secret{v: s} }

func (s secret) reveal() string             { return s.v }
func (s secret) isZero() bool               { return s.v == "" }
func (secret) String() string               { return "[redacted]" }
func (secret) GoString() string             { return "[redacted]" }
func (secret) LogValue() slog.Value         { return slog.StringValue("[redacted]") }
func (secret) MarshalJSON() ([]byte, error) { return []byte(`"[redacted]"`), nil }
func (secret) Format(f fmt.State, _ rune)   { io.WriteString(f, "[redacted]") }

const (
	// defaultRequestTimeout bounds every request except sync long-polls.
	defaultRequestTimeout = 60 * time.Second
	// syncGrace is added to a long-poll's timeout to get its request
	// timeout: the server may take a moment beyond timeout to answer.
	syncGrace = 30 * time.Second
	// maxBodyBytes caps what is read of a response body.
	maxBodyBytes = 256 << 20
	// maxErrorBody is how much of an unexpected body an error quotes.
	maxErrorBody = 300
)

// homeserver is the target server. It is safe for concurrent use.
type homeserver struct {
	base string // scheme://host[:port][/prefix], without a trailing slash
	http *http.Client
}

// newHomeservers validates the URLs of the processes serving one
// homeserver and returns a client for each. They share one transport, which
// keeps up to conns idle connections to each process. The default
// transport keeps only 2, so with more concurrent requests than that
// connections would be closed and redialled all the time, and the tool
// would measure TCP setup.
func newHomeservers(rawURLs []string, conns int) ([]*homeserver, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil // measure the server, not a proxy picked up from the environment
	t.MaxIdleConns = 0
	t.MaxIdleConnsPerHost = conns
	t.IdleConnTimeout = 90 * time.Second
	client := &http.Client{Transport: t}
	out := make([]*homeserver, len(rawURLs))
	for i, raw := range rawURLs {
		base, err := baseURL(raw)
		if err != nil {
			return nil, err
		}
		out[i] = &homeserver{base: base, http: client}
	}
	return out, nil
}

// baseURL checks that rawURL is an http(s) URL without query or fragment and
// returns it without a trailing slash.
func baseURL(rawURL string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", fmt.Errorf("homeserver URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return "", fmt.Errorf("homeserver URL %q: want http://host[:port] or https://host[:port]", rawURL)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("homeserver URL %q: must not have user info, query or fragment", rawURL)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// request is one HTTP call to the homeserver.
type request struct {
	method  string
	path    string // escaped; build it with the *Path functions
	query   url.Values
	token   secret        // access token; zero for unauthenticated calls
	body    any           // JSON-encoded if non-nil
	timeout time.Duration // 0 means defaultRequestTimeout
}

// response is a complete HTTP response. took runs from just before the
// request is written until its body has been read, so it includes the
// server's time and the transfer but not JSON decoding on this side.
type response struct {
	status int
	body   []byte
	took   time.Duration
	done   time.Time // when the body had been read

	retryAfterHeader time.Duration // Retry-After of a 429, if any
}

// do performs req. It returns an error only if no complete response
// arrived; a non-200 status is reported by response.err.
func (hs *homeserver) do(ctx context.Context, req request) (response, error) {
	var body io.Reader
	if req.body != nil {
		b, err := json.Marshal(req.body)
		if err != nil {
			return response{}, fmt.Errorf("%s %s: encoding body: %w", req.method, req.path, err)
		}
		body = bytes.NewReader(b)
	}
	timeout := req.timeout
	if timeout == 0 {
		timeout = defaultRequestTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, req.method, hs.url(req.path, req.query), body)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: %w", req.method, req.path, err)
	}
	if body != nil {
		hreq.Header.Set("Content-Type", "application/json")
	}
	if !req.token.isZero() {
		hreq.Header.Set("Authorization", "Bearer "+req.token.reveal())
	}
	start := time.Now()
	hresp, err := hs.http.Do(hreq)
	if err != nil {
		// The *url.Error would repeat the whole URL, query and all.
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			err = ue.Err
		}
		return response{}, fmt.Errorf("%s %s: %w", req.method, req.path, err)
	}
	// Reading to EOF and closing lets the transport reuse the connection.
	b, err := io.ReadAll(io.LimitReader(hresp.Body, maxBodyBytes))
	hresp.Body.Close()
	done := time.Now()
	if err != nil {
		return response{}, fmt.Errorf("%s %s: reading body: %w", req.method, req.path, err)
	}
	resp := response{status: hresp.StatusCode, body: b, took: done.Sub(start), done: done}
	if hresp.StatusCode == http.StatusTooManyRequests {
		// Retry-After is the standard header since spec v1.10; the
		// body's retry_after_ms is parsed by err.
		if secs, err := strconv.Atoi(hresp.Header.Get("Retry-After")); err == nil && secs >= 0 {
			resp.retryAfterHeader = time.Duration(secs) * time.Second
		}
	}
	return resp, nil
}

func (hs *homeserver) url(path string, query url.Values) string {
	u := hs.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	return u
}

// matrixError is a non-200 response (spec: "Standard error response").
type matrixError struct {
	Status     int
	ErrCode    string
	Message    string
	RetryAfter time.Duration // from retry_after_ms or Retry-After; 0 if absent
	Body       string        // start of the body when it is not a Matrix error
}

func (e *matrixError) Error() string {
	if e.ErrCode != "" {
		return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.ErrCode, e.Message)
	}
	return fmt.Sprintf("HTTP %d: %q", e.Status, e.Body)
}

// err returns a *matrixError unless the status is 200. Every endpoint this
// tool calls answers 200 on success, so anything else is an error.
func (r response) err(what string) error {
	if r.status == http.StatusOK {
		return nil
	}
	e := &matrixError{Status: r.status, RetryAfter: r.retryAfterHeader}
	var std struct {
		ErrCode      string `json:"errcode"`
		Error        string `json:"error"`
		RetryAfterMS int64  `json:"retry_after_ms"`
	}
	if json.Unmarshal(r.body, &std) == nil && std.ErrCode != "" {
		e.ErrCode, e.Message = std.ErrCode, std.Error
		if std.RetryAfterMS > 0 {
			e.RetryAfter = time.Duration(std.RetryAfterMS) * time.Millisecond
		}
	} else {
		e.Body = truncate(string(r.body), maxErrorBody)
	}
	return fmt.Errorf("%s: %w", what, e)
}

// decode unmarshals a 200 response body into out.
func (r response) decode(what string, out any) error {
	if err := r.err(what); err != nil {
		return err
	}
	if err := json.Unmarshal(r.body, out); err != nil {
		return fmt.Errorf("%s: decoding response: %w (body %q)", what, err, truncate(string(r.body), maxErrorBody))
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// withRetry calls f until it succeeds, fails other than with HTTP 429, or
// ctx ends, sleeping as long as the server asks between attempts. Only setup
// calls (registration, room creation, joins) are retried: a 429 on a
// measured call is an error, since it means the server is rate limiting the
// test rather than serving it.
func withRetry(ctx context.Context, f func() error) error {
	for attempt := 1; ; attempt++ {
		err := f()
		var me *matrixError
		if err == nil || !errors.As(err, &me) || me.Status != http.StatusTooManyRequests || attempt == 100 {
			return err
		}
		wait := me.RetryAfter
		if wait <= 0 {
			wait = time.Second
		}
		wait = min(max(wait, 50*time.Millisecond), 10*time.Second)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

// Paths. Every variable segment is escaped: room IDs start with "!" and
// contain ":", and user IDs contain "@" and ":".

func sendPath(room roomID, txnID string) string {
	return "/_matrix/client/v3/rooms/" + url.PathEscape(string(room)) + "/send/m.room.message/" + url.PathEscape(txnID)
}

func joinPath(room roomID) string {
	return "/_matrix/client/v3/rooms/" + url.PathEscape(string(room)) + "/join"
}

func messagesPath(room roomID) string {
	return "/_matrix/client/v3/rooms/" + url.PathEscape(string(room)) + "/messages"
}

func overrideRatelimitPath(user userID) string {
	return "/_synapse/admin/v1/users/" + url.PathEscape(string(user)) + "/override_ratelimit"
}

const (
	versionsPath       = "/_matrix/client/versions"
	registerPath       = "/_matrix/client/v3/register"
	sharedRegisterPath = "/_synapse/admin/v1/register"
	createRoomPath     = "/_matrix/client/v3/createRoom"
	syncPath           = "/_matrix/client/v3/sync"
)

// versions returns the spec versions the server supports (spec: GET
// /_matrix/client/versions, which needs no authentication). It doubles as
// a check that the URL points at a Matrix homeserver.
func (hs *homeserver) versions(ctx context.Context) ([]string, error) {
	resp, err := hs.do(ctx, request{method: http.MethodGet, path: versionsPath})
	if err != nil {
		return nil, err
	}
	var out struct {
		Versions []string `json:"versions"`
	}
	if err := resp.decode("versions", &out); err != nil {
		return nil, err
	}
	if len(out.Versions) == 0 {
		return nil, errors.New("versions: no versions listed; is this a Matrix homeserver?")
	}
	return out.Versions, nil
}

// session is a logged-in user. Transaction IDs are unique per session.
type session struct {
	hs        *homeserver
	user      userID
	token     secret
	txnPrefix string
	txn       atomic.Uint64
}

func (s *session) String() string { return string(s.user) }

// nextTxnID returns a transaction ID not used before by this session (spec:
// "Transaction identifiers" are scoped to the access token's device).
func (s *session) nextTxnID() string {
	return s.txnPrefix + "." + strconv.FormatUint(s.txn.Add(1), 10)
}

// loginResponse is the part of a /register response this tool uses.
type loginResponse struct {
	UserID      userID `json:"user_id"`
	AccessToken string `json:"access_token"`
}

func (hs *homeserver) session(lr loginResponse, txnPrefix string) (*session, error) {
	if lr.UserID == "" || lr.AccessToken == "" {
		return nil, errors.New("registration response has no user_id or access_token")
	}
	return &session{hs: hs, user: lr.UserID, token: newSecret(lr.AccessToken), txnPrefix: txnPrefix}, nil
}

// uiaState is a 401 response of the user-interactive authentication API
// (spec: "User-Interactive Authentication API").
type uiaState struct {
	Flows []struct {
		Stages []string `json:"stages"`
	} `json:"flows"`
	Completed []string `json:"completed"`
	Session   string   `json:"session"`
	ErrCode   string   `json:"errcode"`
	Error     string   `json:"error"`
}

const (
	stageDummy = "m.login.dummy"
	stageToken = "m.login.registration_token"
)

// nextStage returns the next stage to complete: the first uncompleted stage
// of the first flow that has only stages this tool can complete and that
// starts with the stages already completed.
func nextStage(st uiaState, haveToken bool) (string, error) {
	can := func(stage string) bool { return stage == stageDummy || stage == stageToken && haveToken }
	for _, f := range st.Flows {
		if len(f.Stages) <= len(st.Completed) || !slices.Equal(f.Stages[:len(st.Completed)], st.Completed) {
			continue
		}
		if slices.IndexFunc(f.Stages, func(s string) bool { return !can(s) }) >= 0 {
			continue
		}
		return f.Stages[len(st.Completed)], nil
	}
	var flows []string
	for _, f := range st.Flows {
		flows = append(flows, "["+strings.Join(f.Stages, ",")+"]")
	}
	msg := fmt.Sprintf("no registration flow this tool can complete (server offers %s, completed %v)", strings.Join(flows, " "), st.Completed)
	if st.ErrCode != "" {
		msg += fmt.Sprintf("; last error %s: %s", st.ErrCode, st.Error)
	}
	return "", errors.New(msg + "; use -shared-secret, or -registration-token if the server wants one")
}

// register creates a user through POST /register, completing the
// user-interactive authentication flow with m.login.dummy (and
// m.login.registration_token if regToken is set).
func (hs *homeserver) register(ctx context.Context, username string, password, regToken secret, txnPrefix string) (*session, error) {
	body := struct {
		Auth                     map[string]string `json:"auth,omitempty"`
		Username                 string            `json:"username"`
		Password                 string            `json:"password"`
		InitialDeviceDisplayName string            `json:"initial_device_display_name"`
	}{Username: username, Password: password.reveal(), InitialDeviceDisplayName: "loadtest"}
	query := url.Values{"kind": {"user"}}
	// The first request has no auth and gets the flows and a session; each
	// further one completes one stage. A dummy-only flow takes two.
	for round := 0; round < 4; round++ {
		resp, err := hs.do(ctx, request{method: http.MethodPost, path: registerPath, query: query, body: body})
		if err != nil {
			return nil, err
		}
		if resp.status != http.StatusUnauthorized {
			var lr loginResponse
			if err := resp.decode("register "+username, &lr); err != nil {
				return nil, err
			}
			return hs.session(lr, txnPrefix)
		}
		var st uiaState
		if err := json.Unmarshal(resp.body, &st); err != nil || st.Session == "" && body.Auth == nil {
			return nil, resp.err("register " + username)
		}
		stage, err := nextStage(st, !regToken.isZero())
		if err != nil {
			return nil, fmt.Errorf("register %s: %w", username, err)
		}
		if st.Session == "" {
			st.Session = body.Auth["session"]
		}
		body.Auth = map[string]string{"type": stage, "session": st.Session}
		if stage == stageToken {
			body.Auth["token"] = regToken.reveal()
		}
	}
	return nil, fmt.Errorf("register %s: user-interactive auth did not finish", username)
}

// registrationMAC is Synapse's shared-secret registration MAC: hex
// HMAC-SHA1, keyed with the shared secret, of nonce, user, password and
// "admin" or "notadmin", separated by NUL bytes.
func registrationMAC(key secret, nonce, user string, password secret, admin bool) string {
	m := hmac.New(sha1.New, []byte(key.reveal()))
	role := "notadmin"
	if admin {
		role = "admin"
	}
	io.WriteString(m, nonce+"\x00"+user+"\x00"+password.reveal()+"\x00"+role)
	return hex.EncodeToString(m.Sum(nil))
}

// registerShared creates a user through Synapse's admin API
// (/_synapse/admin/v1/register), which needs registration_shared_secret
// but works with open registration off and is not rate limited.
func (hs *homeserver) registerShared(ctx context.Context, key secret, username string, password secret, admin bool, txnPrefix string) (*session, error) {
	resp, err := hs.do(ctx, request{method: http.MethodGet, path: sharedRegisterPath})
	if err != nil {
		return nil, err
	}
	var n struct {
		Nonce string `json:"nonce"`
	}
	if err := resp.decode("shared-secret registration nonce", &n); err != nil {
		return nil, err
	}
	body := map[string]any{
		"nonce":    n.Nonce,
		"username": username,
		"password": password.reveal(),
		"admin":    admin,
		"mac":      registrationMAC(key, n.Nonce, username, password, admin),
	}
	resp, err = hs.do(ctx, request{method: http.MethodPost, path: sharedRegisterPath, body: body})
	if err != nil {
		return nil, err
	}
	var lr loginResponse
	if err := resp.decode("shared-secret register "+username, &lr); err != nil {
		return nil, err
	}
	return hs.session(lr, txnPrefix)
}

// overrideRatelimit lifts Synapse's message rate limit for user; s must be a
// Synapse server admin. Zero means "no limit" to this API.
func (s *session) overrideRatelimit(ctx context.Context, user userID) error {
	resp, err := s.hs.do(ctx, request{method: http.MethodPost, path: overrideRatelimitPath(user), token: s.token,
		body: map[string]int{"messages_per_second": 0, "burst_count": 0}})
	if err != nil {
		return err
	}
	return resp.err("override rate limit of " + string(user))
}

// createRoom creates a public room with shared history, so that users who
// join later can read everything sent before (spec: history visibility
// "shared"); the room is kept out of the public directory.
func (s *session) createRoom(ctx context.Context, name string) (roomID, error) {
	body := map[string]any{
		"preset":     "public_chat",
		"visibility": "private",
		"name":       name,
		"initial_state": []map[string]any{{
			"type": "m.room.history_visibility", "state_key": "",
			"content": map[string]string{"history_visibility": "shared"},
		}},
	}
	resp, err := s.hs.do(ctx, request{method: http.MethodPost, path: createRoomPath, token: s.token, body: body})
	if err != nil {
		return "", err
	}
	var out struct {
		RoomID roomID `json:"room_id"`
	}
	if err := resp.decode("createRoom", &out); err != nil {
		return "", err
	}
	if out.RoomID == "" {
		return "", errors.New("createRoom: response has no room_id")
	}
	return out.RoomID, nil
}

// join joins room, which must be public.
func (s *session) join(ctx context.Context, room roomID) (response, error) {
	resp, err := s.hs.do(ctx, request{method: http.MethodPost, path: joinPath(room), token: s.token, body: struct{}{}})
	if err != nil {
		return response{}, err
	}
	return resp, resp.err(fmt.Sprintf("%s join %s", s.user, room))
}

// sendText sends an m.text message and returns its event ID.
func (s *session) sendText(ctx context.Context, room roomID, text string) (eventID, response, error) {
	body := struct {
		MsgType string `json:"msgtype"`
		Body    string `json:"body"`
	}{"m.text", text}
	resp, err := s.hs.do(ctx, request{method: http.MethodPut, path: sendPath(room, s.nextTxnID()), token: s.token, body: body})
	if err != nil {
		return "", response{}, err
	}
	var out struct {
		EventID eventID `json:"event_id"`
	}
	if err := resp.decode("send", &out); err != nil {
		return "", resp, err
	}
	if out.EventID == "" {
		return "", resp, errors.New("send: response has no event_id")
	}
	return out.EventID, resp, nil
}

// clientEvent is the part of a ClientEvent this tool looks at.
type clientEvent struct {
	EventID  eventID `json:"event_id"`
	Type     string  `json:"type"`
	Sender   userID  `json:"sender"`
	StateKey *string `json:"state_key"`
}

type timeline struct {
	Events    []clientEvent `json:"events"`
	Limited   bool          `json:"limited"`
	PrevBatch string        `json:"prev_batch"`
}

// syncResponse is the part of a /sync response this tool looks at.
type syncResponse struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[roomID]struct {
			Timeline timeline `json:"timeline"`
		} `json:"join"`
	} `json:"rooms"`
}

// hasEvent reports whether id is in room's timeline.
func (sr *syncResponse) hasEvent(room roomID, id eventID) bool {
	return slices.ContainsFunc(sr.Rooms.Join[room].Timeline.Events, func(e clientEvent) bool { return e.EventID == id })
}

// syncParams are the query parameters of one /sync call.
type syncParams struct {
	since   string        // empty for an initial sync
	filter  string        // inline JSON filter or filter ID; empty for none
	timeout time.Duration // long-poll timeout; 0 returns at once
}

// query encodes p. set_presence=offline keeps the test users' presence
// changes out of everyone's syncs.
func (p syncParams) query() url.Values {
	q := url.Values{"set_presence": {"offline"}}
	if p.since != "" {
		q.Set("since", p.since)
	}
	if p.filter != "" {
		q.Set("filter", p.filter)
	}
	if p.timeout > 0 {
		q.Set("timeout", strconv.FormatInt(p.timeout.Milliseconds(), 10))
	}
	return q
}

func (s *session) sync(ctx context.Context, p syncParams) (*syncResponse, response, error) {
	resp, err := s.hs.do(ctx, request{method: http.MethodGet, path: syncPath, query: p.query(), token: s.token, timeout: p.timeout + syncGrace})
	if err != nil {
		return nil, response{}, err
	}
	var out syncResponse
	if err := resp.decode(fmt.Sprintf("%s sync", s.user), &out); err != nil {
		return nil, resp, err
	}
	if out.NextBatch == "" {
		return nil, resp, fmt.Errorf("%s sync: response has no next_batch", s.user)
	}
	return &out, resp, nil
}

// messagesResponse is the part of a /messages response this tool looks at.
type messagesResponse struct {
	Start string        `json:"start"`
	End   string        `json:"end"` // absent when there is nothing further
	Chunk []clientEvent `json:"chunk"`
}

// messagesQuery pages backwards from "from", or from the most recent event
// when from is empty (allowed since spec v1.3).
func messagesQuery(from string, limit int) url.Values {
	q := url.Values{"dir": {"b"}, "limit": {strconv.Itoa(limit)}}
	if from != "" {
		q.Set("from", from)
	}
	return q
}

func (s *session) messages(ctx context.Context, room roomID, from string, limit int) (*messagesResponse, response, error) {
	resp, err := s.hs.do(ctx, request{method: http.MethodGet, path: messagesPath(room), query: messagesQuery(from, limit), token: s.token})
	if err != nil {
		return nil, response{}, err
	}
	var out messagesResponse
	if err := resp.decode("messages", &out); err != nil {
		return nil, resp, err
	}
	return &out, resp, nil
}

// Filters (spec: "Filtering"). An empty "types" list matches no event type.

// roomTimelineFilter returns only room's timeline, at most limit events,
// and nothing else that can be filtered out.
func roomTimelineFilter(room roomID, limit int) string {
	none := map[string][]string{"types": {}}
	return mustJSON(map[string]any{
		"room": map[string]any{
			"rooms":        []roomID{room},
			"timeline":     map[string]int{"limit": limit},
			"ephemeral":    none,
			"account_data": none,
		},
		"presence":     none,
		"account_data": none,
	})
}

// timelineLimitFilter sets only the timeline limit of every room.
func timelineLimitFilter(limit int) string {
	return mustJSON(map[string]any{"room": map[string]any{"timeline": map[string]int{"limit": limit}}})
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only called on maps of strings and ints
	}
	return string(b)
}
