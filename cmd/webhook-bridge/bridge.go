package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"log/slog"
	"math"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	gosync "sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

type bridgeConfig struct {
	Registration  *registration
	HomeserverURL string
	PublicURL     string // base of the hook URLs
	MaxBody       int64  // bytes
	Rate          float64
	Burst         int
	MinPower      int
}

type bridge struct {
	cfg   bridgeConfig
	reg   *registration
	store *store
	mx    *matrix
	log   *slog.Logger

	ready  chan struct{} // closed once the server name is known
	server atomic.Value  // string: the homeserver's name, from whoami
	bot    atomic.Value  // string: the bot's user ID

	ghostMu gosync.Mutex // serialises making virtual users and joining them
	limits  *limiter
	txnSeq  atomic.Int64
}

func newBridge(cfg bridgeConfig, st *store, log *slog.Logger) *bridge {
	return &bridge{cfg: cfg, reg: cfg.Registration, store: st, log: log,
		mx:    &matrix{base: cfg.HomeserverURL, token: cfg.Registration.ASToken, http: &http.Client{}},
		ready: make(chan struct{}), limits: newLimiter(cfg.Rate, cfg.Burst)}
}

// setUp learns the server name (whoami as the bot), makes sure the bot
// exists with a display name, and pings the homeserver so that a
// misconfiguration shows in the log at start. It retries until the
// homeserver answers.
func (b *bridge) setUp(ctx context.Context) {
	delay := time.Second
	for {
		var who struct {
			UserID string `json:"user_id"`
		}
		err := b.mx.do(ctx, "GET", "/_matrix/client/v3/account/whoami", "", nil, &who)
		if err == nil {
			_, server, ok := strings.Cut(who.UserID, ":")
			if ok {
				b.server.Store(server)
				b.bot.Store(who.UserID)
				close(b.ready)
				break
			}
			err = fmt.Errorf("whoami answered %q", who.UserID)
		}
		b.log.Warn("homeserver not reachable yet", "err", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Minute)
	}
	// The homeserver creates a service's sender itself; register it anyway
	// for homeservers that do not (M_USER_IN_USE is the usual answer).
	err := b.mx.do(ctx, "POST", "/_matrix/client/v3/register", "", map[string]any{
		"type": "m.login.application_service", "username": b.reg.SenderLocalpart, "inhibit_login": true}, nil)
	if err != nil && !isErrcode(err, "M_USER_IN_USE") {
		b.log.Warn("registering the bot", "err", err)
	}
	if err := b.mx.do(ctx, "PUT", "/_matrix/client/v3/profile/"+url.PathEscape(b.botID())+"/displayname", "",
		map[string]string{"displayname": "Webhooks"}, nil); err != nil {
		b.log.Warn("setting the bot's display name", "err", err)
	}
	var pong struct {
		DurationMS int64 `json:"duration_ms"`
	}
	if err := b.mx.do(ctx, "POST", "/_matrix/client/v1/appservice/"+url.PathEscape(b.reg.ID)+"/ping", "",
		map[string]string{"transaction_id": "webhook-bridge-start"}, &pong); err != nil {
		b.log.Warn("the homeserver could not reach the bridge (check the registration's url)", "err", err)
	} else {
		b.log.Info("connected to the homeserver", "bot", b.botID(), "ping_ms", pong.DurationMS)
	}
}

func (b *bridge) botID() string {
	s, _ := b.bot.Load().(string)
	return s
}

func (b *bridge) serverName() string {
	s, _ := b.server.Load().(string)
	return s
}

// waitReady waits for setUp to learn the server name.
func (b *bridge) waitReady(ctx context.Context) error {
	select {
	case <-b.ready:
		return nil
	case <-ctx.Done():
		return errors.New("the bridge is not connected to the homeserver yet")
	}
}

func (b *bridge) isGhost(user string) bool {
	return strings.HasPrefix(user, "@"+b.reg.Prefix) && strings.HasSuffix(user, ":"+b.serverName())
}

// Handler serves the Application Service API and the hook URLs.
func (b *bridge) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, prefix := range []string{"/_matrix/app/v1", ""} { // "" : the legacy unversioned paths
		mux.HandleFunc("PUT "+prefix+"/transactions/{txnId}", b.hsAuth(b.transaction))
		mux.HandleFunc("GET "+prefix+"/users/{userId}", b.hsAuth(b.queryUser))
		mux.HandleFunc("GET "+prefix+"/rooms/{alias}", b.hsAuth(func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusNotFound, matrixErr("M_NOT_FOUND", "the bridge hosts no aliases"))
		}))
	}
	mux.HandleFunc("POST /_matrix/app/v1/ping", b.hsAuth(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, struct{}{})
	}))
	mux.HandleFunc("POST /hooks/{secret}", b.postHook)
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]bool{"connected": b.serverName() != ""})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, matrixErr("M_UNRECOGNIZED", "unrecognized request"))
	})
	return mux
}

func matrixErr(code, msg string) map[string]string {
	return map[string]string{"errcode": code, "error": msg}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// hsAuth checks the homeserver's hs_token (spec: "Authorization"): the
// Authorization header, or the access_token parameter of older servers.
func (b *bridge) hsAuth(next http.HandlerFunc) http.HandlerFunc {
	want := sha256.Sum256([]byte(b.reg.HSToken))
	return func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			token = r.URL.Query().Get("access_token")
		}
		if token == "" {
			writeJSON(w, http.StatusUnauthorized, matrixErr("M_UNAUTHORIZED", "missing hs_token"))
			return
		}
		got := sha256.Sum256([]byte(token))
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			writeJSON(w, http.StatusForbidden, matrixErr("M_FORBIDDEN", "bad hs_token"))
			return
		}
		next(w, r)
	}
}

func (b *bridge) queryUser(w http.ResponseWriter, r *http.Request) {
	if _, ok, err := b.store.ghost(r.Context(), r.PathValue("userId")); err == nil && ok {
		writeJSON(w, http.StatusOK, struct{}{})
		return
	}
	writeJSON(w, http.StatusNotFound, matrixErr("M_NOT_FOUND", "not a user of the bridge"))
}

// event is the part of a client event the bridge reads.
type event struct {
	Type     string  `json:"type"`
	EventID  string  `json:"event_id"`
	RoomID   string  `json:"room_id"`
	Sender   string  `json:"sender"`
	StateKey *string `json:"state_key"`
	Content  struct {
		Membership string `json:"membership"`
		MsgType    string `json:"msgtype"`
		Body       string `json:"body"`
	} `json:"content"`
}

// transaction handles PUT /transactions/{txnId}: each ID once, even when
// the homeserver sends it again. A failure the homeserver can fix by
// retrying (storage, the homeserver itself) answers 500 so it does.
func (b *bridge) transaction(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id := r.PathValue("txnId")
	done, err := b.store.txnDone(ctx, id)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, matrixErr("M_UNKNOWN", err.Error()))
		return
	}
	if done {
		writeJSON(w, http.StatusOK, struct{}{})
		return
	}
	var body struct {
		Events []event `json:"events"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 32<<20)).Decode(&body); err != nil {
		writeJSON(w, http.StatusBadRequest, matrixErr("M_NOT_JSON", err.Error()))
		return
	}
	if err := b.waitReady(ctx); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, matrixErr("M_UNKNOWN", err.Error()))
		return
	}
	for _, ev := range body.Events {
		if err := b.handleEvent(ctx, ev); err != nil {
			b.log.Error("handling an event; the homeserver will send the transaction again", "txn", id, "event", ev.EventID, "err", err)
			writeJSON(w, http.StatusInternalServerError, matrixErr("M_UNKNOWN", "try again"))
			return
		}
	}
	if err := b.store.markTxn(ctx, id); err != nil {
		writeJSON(w, http.StatusInternalServerError, matrixErr("M_UNKNOWN", err.Error()))
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// handleEvent reacts to one event. Errors returned are worth a retry of
// the transaction; problems with the event itself are only logged.
func (b *bridge) handleEvent(ctx context.Context, ev event) error {
	bot := b.botID()
	switch {
	case ev.Type == "m.room.member" && ev.StateKey != nil:
		target := *ev.StateKey
		switch {
		case target == bot && ev.Content.Membership == "invite":
			if err := b.mx.do(ctx, "POST", "/_matrix/client/v3/join/"+url.PathEscape(ev.RoomID), "", map[string]any{}, nil); err != nil {
				b.log.Warn("joining a room the bot was invited to", "room", ev.RoomID, "err", err)
			}
		case target == bot || b.isGhost(target):
			return b.store.setMember(ctx, ev.RoomID, target, ev.Content.Membership == "join")
		}
	case ev.Type == "m.room.message" && ev.Sender != bot && !b.isGhost(ev.Sender):
		body := strings.TrimSpace(ev.Content.Body)
		if body == "!hook" || strings.HasPrefix(body, "!hook ") {
			return b.command(ctx, ev, strings.Fields(body)[1:])
		}
	}
	return nil
}

var hookNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

const commandHelp = "Webhook commands (moderators): `!hook create <name>` makes a hook and answers with its secret URL; " +
	"`!hook revoke <name>` turns it off; `!hook list` lists this room's hooks. POST JSON " +
	`{"text": "...", "html": "...", "username": "..."} or plain text to the URL.`

// command runs a !hook command and answers in the room.
func (b *bridge) command(ctx context.Context, ev event, args []string) error {
	reply := func(text string) error {
		return b.notice(ctx, ev.RoomID, text)
	}
	if len(args) == 0 || args[0] == "help" {
		return reply(commandHelp)
	}
	switch args[0] {
	case "list":
		hooks, err := b.store.liveHooks(ctx, ev.RoomID)
		if err != nil {
			return err
		}
		if len(hooks) == 0 {
			return reply("This room has no hooks.")
		}
		var lines []string
		for _, h := range hooks {
			lines = append(lines, fmt.Sprintf("%s (created by %s)", h.Name, h.Creator))
		}
		return reply("Hooks of this room: " + strings.Join(lines, ", "))
	case "create", "revoke":
		if len(args) != 2 || !hookNameRE.MatchString(args[1]) {
			return reply("Usage: `!hook " + args[0] + " <name>`, the name being 1 to 32 of a-z 0-9 _ - .")
		}
		ok, err := b.isModerator(ctx, ev.RoomID, ev.Sender)
		if err != nil {
			b.log.Warn("reading power levels", "room", ev.RoomID, "err", err)
			return reply("I could not read this room's power levels, so I cannot tell whether you may do that.")
		}
		if !ok {
			return reply(fmt.Sprintf("Only room moderators (power level %d or more) may %s hooks.", b.cfg.MinPower, args[0]))
		}
		if args[0] == "revoke" {
			switch err := b.store.revokeHook(ctx, ev.RoomID, args[1]); {
			case errors.Is(err, errNoHook):
				return reply(fmt.Sprintf("This room has no hook named %s.", args[1]))
			case err != nil:
				return err
			}
			return reply(fmt.Sprintf("Hook %s is revoked: its URL no longer works.", args[1]))
		}
		secret, err := newSecret()
		if err != nil {
			return err
		}
		switch _, err := b.store.createHook(ctx, ev.RoomID, args[1], ev.Sender, secret); {
		case errors.Is(err, errNameTaken):
			return reply(fmt.Sprintf("This room already has a hook named %s.", args[1]))
		case err != nil:
			return err
		}
		return reply(fmt.Sprintf("Hook %s created. POST to %s/hooks/%s — JSON "+
			`{"text": "...", "html": "...", "username": "..."} or plain text. Keep the URL secret; `+
			"`!hook revoke %s` turns it off.", args[1], b.cfg.PublicURL, secret, args[1]))
	}
	return reply(commandHelp)
}

func newSecret() (string, error) {
	s := make([]byte, 32)
	if _, err := rand.Read(s); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(s), nil
}

// notice sends an m.notice as the bot.
func (b *bridge) notice(ctx context.Context, room, text string) error {
	err := b.mx.do(ctx, "PUT", roomPath(room)+"/send/m.room.message/"+b.newTxnID(), "",
		map[string]string{"msgtype": "m.notice", "body": text}, nil)
	if err != nil {
		b.log.Warn("answering in a room", "room", room, "err", err)
	}
	return nil // an answer that cannot be sent is not worth a retry
}

func (b *bridge) newTxnID() string {
	r := make([]byte, 6)
	_, _ = rand.Read(r)
	return fmt.Sprintf("wb%d-%d-%s", time.Now().UnixNano(), b.txnSeq.Add(1), hex.EncodeToString(r))
}

// isModerator reads the room's state as the bot: the user's power level
// must reach MinPower. Without power levels the creator has 100; in room
// versions with privileged creators (v12) the creators outrank everyone.
func (b *bridge) isModerator(ctx context.Context, room, user string) (bool, error) {
	var state []struct {
		Type     string          `json:"type"`
		StateKey string          `json:"state_key"`
		Sender   string          `json:"sender"`
		Content  json.RawMessage `json:"content"`
	}
	if err := b.mx.do(ctx, "GET", roomPath(room)+"/state", "", nil, &state); err != nil {
		return false, err
	}
	var creator string
	var create struct {
		RoomVersion        string   `json:"room_version"`
		AdditionalCreators []string `json:"additional_creators"`
	}
	var pl *struct {
		Users        map[string]json.Number `json:"users"`
		UsersDefault json.Number            `json:"users_default"`
	}
	for _, ev := range state {
		switch {
		case ev.Type == "m.room.create" && ev.StateKey == "":
			creator = ev.Sender
			_ = json.Unmarshal(ev.Content, &create)
		case ev.Type == "m.room.power_levels" && ev.StateKey == "":
			if err := json.Unmarshal(ev.Content, &pl); err != nil {
				return false, err
			}
		}
	}
	if create.RoomVersion == "12" && (user == creator || slices.Contains(create.AdditionalCreators, user)) {
		return true, nil
	}
	if pl == nil {
		return user == creator, nil
	}
	level := pl.UsersDefault
	if l, ok := pl.Users[user]; ok {
		level = l
	}
	if level == "" {
		level = "0"
	}
	n, err := strconv.ParseInt(string(level), 10, 64)
	return err == nil && n >= int64(b.cfg.MinPower), nil
}

// hookMessage is the JSON a hook accepts.
type hookMessage struct {
	Text     string `json:"text"`
	HTML     string `json:"html"`
	Username string `json:"username"`
}

// postHook handles POST /hooks/{secret}: check the hook, the rate and the
// body, then post the message as the virtual user named after username.
func (b *bridge) postHook(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	h, err := b.store.hookBySecret(ctx, r.PathValue("secret"))
	switch {
	case errors.Is(err, errNoHook):
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "unknown hook"})
		return
	case err != nil:
		b.log.Error("reading hooks", "err", err)
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "internal error"})
		return
	case h.Revoked:
		writeJSON(w, http.StatusGone, map[string]string{"error": "this hook was revoked"})
		return
	}
	if wait, ok := b.limits.allow(h.ID, time.Now()); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
		writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": "too many posts to this hook; slow down"})
		return
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, b.cfg.MaxBody))
	if err != nil {
		writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": fmt.Sprintf("the body is larger than %d bytes", b.cfg.MaxBody)})
		return
	}
	msg, err := parseHookBody(r.Header.Get("Content-Type"), raw)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	if err := b.waitReady(ctx); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
		return
	}
	eventID, err := b.post(ctx, h, msg)
	if err != nil {
		b.log.Warn("posting a webhook message", "hook", h.Name, "room", h.RoomID, "err", err)
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": "the homeserver refused the message: " + err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"event_id": eventID})
}

// maxField bounds the text fields of a message (the homeserver bounds
// whole events at 64 KiB).
const maxField = 30000

// parseHookBody reads JSON (by content type, or a body that is a JSON
// object) or plain text.
func parseHookBody(contentType string, raw []byte) (hookMessage, error) {
	var msg hookMessage
	mt, _, _ := mime.ParseMediaType(contentType)
	trimmed := strings.TrimSpace(string(raw))
	if mt == "application/json" || mt == "" && strings.HasPrefix(trimmed, "{") {
		if err := json.Unmarshal(raw, &msg); err != nil {
			return msg, fmt.Errorf("the body is not a JSON object of text, html and username: %v", err)
		}
	} else {
		if !utf8.ValidString(trimmed) {
			return msg, errors.New("the body is not UTF-8 text")
		}
		msg.Text = trimmed
	}
	msg.Text, msg.HTML, msg.Username = strings.TrimSpace(msg.Text), strings.TrimSpace(msg.HTML), strings.TrimSpace(msg.Username)
	if msg.Text == "" && msg.HTML != "" {
		msg.Text = stripTags(msg.HTML)
	}
	switch {
	case msg.Text == "":
		return msg, errors.New("nothing to post: give text (or html)")
	case len(msg.Text) > maxField || len(msg.HTML) > maxField:
		return msg, fmt.Errorf("text and html are limited to %d bytes", maxField)
	case len(msg.Username) > 100:
		return msg, errors.New("username is limited to 100 bytes")
	}
	return msg, nil
}

var (
	tagRE   = regexp.MustCompile(`<[^>]*>`)
	breakRE = regexp.MustCompile(`(?i)<br\s*/?>|</p>`)
)

// stripTags makes a plain body from HTML for clients that show no HTML.
func stripTags(s string) string {
	s = breakRE.ReplaceAllString(s, "\n")
	return strings.TrimSpace(html.UnescapeString(tagRE.ReplaceAllString(s, "")))
}

// ghostLocalpart maps a username to a virtual user's localpart: the
// prefix, then the name lower-cased with anything outside a-z 0-9 . _ -
// written as =xx (hex), so different names never share a user.
func (b *bridge) ghostLocalpart(username string) string {
	if username == "" {
		username = "webhook"
	}
	var sb strings.Builder
	sb.WriteString(b.reg.Prefix)
	for _, c := range []byte(username) {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '-':
			sb.WriteByte(c)
		case c >= 'A' && c <= 'Z':
			sb.WriteByte('_')
			sb.WriteByte(c + 'a' - 'A')
		default:
			fmt.Fprintf(&sb, "=%02x", c)
		}
	}
	l := sb.String()
	if len(l) > 100 {
		sum := sha256.Sum256([]byte(username))
		l = l[:80] + "=" + hex.EncodeToString(sum[:8])
	}
	return l
}

// post sends the message into the hook's room as its virtual user, making
// the user and joining it first when needed.
func (b *bridge) post(ctx context.Context, h *hook, msg hookMessage) (string, error) {
	// Without a username, the hook's name speaks.
	name := msg.Username
	if name == "" {
		name = h.Name
	}
	user := "@" + b.ghostLocalpart(name) + ":" + b.serverName()
	if err := b.ensureGhost(ctx, user, name, h.RoomID); err != nil {
		return "", err
	}
	content := map[string]string{"msgtype": "m.text", "body": msg.Text}
	if msg.HTML != "" {
		content["format"], content["formatted_body"] = "org.matrix.custom.html", msg.HTML
	}
	var out struct {
		EventID string `json:"event_id"`
	}
	send := func() error {
		return b.mx.do(ctx, "PUT", roomPath(h.RoomID)+"/send/m.room.message/"+b.newTxnID(), user, content, &out)
	}
	err := send()
	if isStatus(err, http.StatusForbidden) {
		// Perhaps kicked since: forget the membership and join again.
		if err := b.store.setMember(ctx, h.RoomID, user, false); err != nil {
			return "", err
		}
		if err := b.ensureGhost(ctx, user, name, h.RoomID); err != nil {
			return "", err
		}
		err = send()
	}
	return out.EventID, err
}

// ensureGhost registers the virtual user, keeps its display name, and
// joins it to the room (with an invite from the bot when the room is not
// public).
func (b *bridge) ensureGhost(ctx context.Context, user, displayname, room string) error {
	b.ghostMu.Lock()
	defer b.ghostMu.Unlock()
	have, known, err := b.store.ghost(ctx, user)
	if err != nil {
		return err
	}
	if !known {
		local := strings.TrimPrefix(strings.SplitN(user, ":", 2)[0], "@")
		err := b.mx.do(ctx, "POST", "/_matrix/client/v3/register", "", map[string]any{
			"type": "m.login.application_service", "username": local, "inhibit_login": true}, nil)
		if err != nil && !isErrcode(err, "M_USER_IN_USE") {
			return fmt.Errorf("registering %s: %w", user, err)
		}
	}
	if !known || have != displayname {
		if err := b.mx.do(ctx, "PUT", "/_matrix/client/v3/profile/"+url.PathEscape(user)+"/displayname", user,
			map[string]string{"displayname": displayname}, nil); err != nil {
			return fmt.Errorf("setting the display name of %s: %w", user, err)
		}
		if err := b.store.putGhost(ctx, user, displayname); err != nil {
			return err
		}
	}
	member, err := b.store.isMember(ctx, room, user)
	if err != nil || member {
		return err
	}
	join := func() error {
		return b.mx.do(ctx, "POST", "/_matrix/client/v3/join/"+url.PathEscape(room), user, map[string]any{}, nil)
	}
	if err := join(); err != nil {
		if !isStatus(err, http.StatusForbidden) {
			return fmt.Errorf("joining %s to %s: %w", user, room, err)
		}
		if err := b.mx.do(ctx, "POST", roomPath(room)+"/invite", "", map[string]string{"user_id": user}, nil); err != nil {
			return fmt.Errorf("inviting %s to %s: %w", user, room, err)
		}
		if err := join(); err != nil {
			return fmt.Errorf("joining %s to %s after an invite: %w", user, room, err)
		}
	}
	return b.store.setMember(ctx, room, user, true)
}

// limiter keeps a token bucket per hook.
type limiter struct {
	rate  float64
	burst float64
	mu    gosync.Mutex
	b     map[int64]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(rate float64, burst int) *limiter {
	return &limiter{rate: rate, burst: float64(burst), b: map[int64]*bucket{}}
}

// allow takes a token for the hook, or says how long until one is free.
func (l *limiter) allow(id int64, now time.Time) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	bk := l.b[id]
	if bk == nil {
		bk = &bucket{tokens: l.burst, last: now}
		l.b[id] = bk
	}
	bk.tokens = min(l.burst, bk.tokens+now.Sub(bk.last).Seconds()*l.rate)
	bk.last = now
	if bk.tokens < 1 {
		return time.Duration((1 - bk.tokens) / l.rate * float64(time.Second)), false
	}
	bk.tokens--
	return 0, true
}
