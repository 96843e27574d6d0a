package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"

	"github.com/persistentchat/homeserver/appservice"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/sync"
)

// handlerFunc is every endpoint's shape: return a value to send as JSON
// with status 200, or an error.
type handlerFunc func(r *http.Request) (any, error)

// withStatus wraps a response that needs a status other than 200.
type withStatus struct {
	status int
	body   any
}

// rawBody is a response that is not JSON (media downloads): wrap hands it
// the ResponseWriter instead of encoding it.
type rawBody interface {
	writeBody(w http.ResponseWriter, r *http.Request)
}

// authMode says what credentials a route needs.
type authMode int

const (
	authNone     authMode = iota // public
	authRequired                 // a valid access token
	authOptional                 // used if present
)

// rateClass picks the rate limit bucket of a route.
type rateClass int

const (
	rateNone rateClass = iota
	rateMessage
	rateLogin
	rateRegistration
	// Per account, not per route: logins into an account, and failed
	// password checks for it (api/account.go, checkUserPassword).
	rateLoginAccount
	rateLoginFailed
)

// route is one row of a route table.
type route struct {
	method  string
	path    string
	handler handlerFunc
	auth    authMode
	rate    rateClass
}

type ctxKey int

const (
	ctxRequester ctxKey = iota
	ctxRequestID
)

// Requester is who made an authenticated request.
type Requester struct {
	UserID   roomdag.UserID
	DeviceID string
	// TokenHash identifies the access token used (for logout).
	TokenHash []byte
	// AppService is the application service whose as_token made the
	// request, acting as UserID (nil for a user's own token).
	AppService *appservice.Registration
	// sessionMark is the notifier's session mark, taken before the token
	// was looked up (sync.SessionCheck).
	sessionMark uint64
	// Locked and Suspended: the account is on hold (api/moderation.go).
	Locked, Suspended bool
}

func requester(r *http.Request) *Requester {
	rq, _ := r.Context().Value(ctxRequester).(*Requester)
	return rq
}

var requestCounter atomic.Uint64

// wrap adapts a handlerFunc: authentication, rate limits, panics, errors.
func (s *Server) wrap(rt route) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		reqID := requestCounter.Add(1)
		ctx := context.WithValue(r.Context(), ctxRequestID, reqID)
		r = r.WithContext(ctx)
		defer func() {
			if p := recover(); p != nil {
				s.log.Error("panic in handler", "req", reqID, "path", rt.path, "panic", p, "stack", string(debug.Stack()))
				writeJSON(w, http.StatusInternalServerError, map[string]string{"errcode": CodeUnknown, "error": fmt.Sprintf("internal error (request %d)", reqID)})
			}
		}()
		if rt.auth == authNone {
			// Public routes read an application service's as_token from
			// the header (register, login): a bad query token beside it
			// fails as on every other route.
			if t, _ := requestToken(r); t != "" {
				if err := s.checkQueryToken(r, t); err != nil {
					s.writeError(w, r, err)
					return
				}
			}
		}
		if rt.auth != authNone {
			rq, err := s.authenticate(r)
			if errors.Is(err, errNoToken) && rt.auth == authRequired {
				err = errorf(http.StatusUnauthorized, CodeMissingToken, "missing access token")
			}
			if err != nil && !errors.Is(err, errNoToken) {
				s.writeError(w, r, err)
				return
			}
			if rq != nil {
				r = r.WithContext(context.WithValue(r.Context(), ctxRequester, rq))
				if err := checkHolds(rt, r, rq); err != nil {
					s.writeError(w, r, err)
					return
				}
			}
		}
		if rt.rate != rateNone && !s.rateExempt(r) {
			if err := s.limits.allow(r.Context(), rt.rate, rateKey(r)); err != nil {
				s.writeError(w, r, err)
				return
			}
		}
		r.Body = http.MaxBytesReader(w, r.Body, s.bodyLimit(rt.path))
		out, err := rt.handler(r)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if rb, ok := out.(rawBody); ok {
			rb.writeBody(w, r)
			return
		}
		if ws, ok := out.(withStatus); ok {
			writeJSON(w, ws.status, ws.body)
			return
		}
		writeJSON(w, http.StatusOK, out)
	}
}

// rateKey is the authenticated user, else the client address.
func rateKey(r *http.Request) string {
	if rq := requester(r); rq != nil {
		return string(rq.UserID)
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// writeError renders any error as a Matrix error.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var me *Error
	if !errors.As(err, &me) {
		me = s.mapError(r, err)
	}
	body := map[string]any{}
	if me.Code != "" { // a user-interactive auth challenge has only Extra
		body["errcode"], body["error"] = me.Code, me.Message
	}
	for k, v := range me.Extra {
		body[k] = v
	}
	if me.Code == CodeLimitExceeded {
		if ms, ok := me.Extra["retry_after_ms"].(int64); ok {
			w.Header().Set("Retry-After", strconv.FormatInt((ms+999)/1000, 10))
		}
	}
	writeJSON(w, me.Status, body)
}

// mapError turns errors from the core into Matrix errors; anything unknown
// is logged and answered with M_UNKNOWN.
func (s *Server) mapError(r *http.Request, err error) *Error {
	var ae *roomdag.AuthError
	var mbe *http.MaxBytesError
	var be *bodyError
	switch {
	case errors.As(err, &ae) && ae.Malformed:
		// Content that is invalid whoever sends it (Synapse: 400).
		return badJSON("%s", ae.Error())
	case errors.As(err, &ae):
		return forbidden("%s", ae.Error())
	case errors.As(err, &mbe):
		return errorf(http.StatusRequestEntityTooLarge, CodeTooLarge, "request body is larger than %d bytes", mbe.Limit)
	case errors.As(err, &be):
		return be.matrixError()
	case errors.Is(err, roomdag.ErrTooLarge):
		return errorf(http.StatusRequestEntityTooLarge, CodeTooLarge, "event is larger than %d bytes", roomdag.MaxEventBytes)
	case errors.Is(err, roomdag.ErrEventFormat):
		return badJSON("%v", err)
	case errors.Is(err, roomdag.ErrUnknownRoom):
		return notFoundErr("unknown room")
	case errors.Is(err, roomdag.ErrRoomBusy):
		// Nothing was stored: the client retries (its transaction ID
		// keeps the retry idempotent), as after a rate limit.
		e := errorf(http.StatusTooManyRequests, CodeLimitExceeded, "the room is busy, try again")
		e.Extra = map[string]any{"retry_after_ms": int64(100)}
		return e
	case errors.Is(err, sync.ErrSessionEnded):
		// A long-poll whose session was logged out, deleted or deactivated
		// while it waited: no soft logout, the session is gone.
		e := errorf(http.StatusUnauthorized, CodeUnknownToken, "the access token was revoked while this request waited")
		e.Extra = map[string]any{"soft_logout": false}
		return e
	case errors.Is(err, context.Canceled):
		return errorf(499, CodeUnknown, "request cancelled")
	}
	id, _ := r.Context().Value(ctxRequestID).(uint64)
	s.log.Error("request failed", "req", id, "method", r.Method, "path", r.URL.Path, "err", err)
	return errorf(http.StatusInternalServerError, CodeUnknown, "internal error (request %d)", id)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"errcode":"M_UNKNOWN","error":"could not encode response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(status)
	w.Write(b)
}

// decodeJSON reads a JSON object body into v: M_NOT_JSON when it is not
// JSON, M_BAD_JSON when it does not fit v, M_TOO_LARGE past the limit.
func decodeJSON(r *http.Request, v any) error {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		var be *bodyError
		if errors.As(err, &mbe) || errors.As(err, &be) {
			return err
		}
		return badJSON("could not read body: %v", err)
	}
	return decodeBytes(body, v)
}

func decodeBytes(body []byte, v any) error {
	body = bytes.TrimLeft(body, " \t\r\n")
	if len(body) == 0 {
		body = []byte("{}")
	}
	if err := checkJSON(body); err != nil {
		return err
	}
	if body[0] != '{' {
		return errorf(http.StatusBadRequest, CodeBadJSON, "body must be a JSON object")
	}
	if err := json.Unmarshal(body, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return badJSON("field %q has the wrong type: expected %s", te.Field, te.Type)
		}
		return badJSON("%v", err)
	}
	return nil
}

// checkJSON answers M_NOT_JSON for a body that is not JSON text. JSON
// text is UTF-8 (RFC 8259, section 8.1), and encoding/json accepts
// invalid UTF-8 in strings, replacing it, so that is checked first:
// Complement's "POST rejects invalid utf-8 in JSON".
func checkJSON(body []byte) error {
	if !utf8.Valid(body) {
		return errorf(http.StatusBadRequest, CodeNotJSON, "body is not valid UTF-8")
	}
	if !json.Valid(body) {
		return errorf(http.StatusBadRequest, CodeNotJSON, "body is not valid JSON")
	}
	return nil
}

// readObject reads a body that must be a JSON object (event content).
func readObject(r *http.Request) (json.RawMessage, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		var be *bodyError
		if errors.As(err, &mbe) || errors.As(err, &be) {
			return nil, err
		}
		return nil, badJSON("could not read body: %v", err)
	}
	if len(body) == 0 {
		return nil, errorf(http.StatusBadRequest, CodeNotJSON, "body is empty")
	}
	if err := checkJSON(body); err != nil {
		return nil, err
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(body, &obj) != nil || obj == nil { // also skips leading white space
		return nil, badJSON("body must be a JSON object")
	}
	return body, nil
}

// Path parameters are URL-decoded by chi for the raw path; Matrix IDs carry
// characters such as '#' and ':' that clients escape.
func pathParam(r *http.Request, name string) string {
	v := chi.URLParam(r, name)
	if r.URL.RawPath != "" {
		// chi routed on the escaped path, so the parameter is still escaped.
		if u, err := url.PathUnescape(v); err == nil {
			return u
		}
	}
	return v
}
