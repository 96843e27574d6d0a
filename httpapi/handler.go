package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"

	"github.com/persistentchat/homeserver/roomdag"
)

// Func is every endpoint's shape: return a value to send as JSON with
// status 200, or an error.
type Func func(r *http.Request) (any, error)

// WithStatus wraps a response that needs a status other than 200.
type WithStatus struct {
	Status int
	Body   any
}

// RawBody is a response that is not JSON (media downloads): the adapter
// hands it the ResponseWriter instead of encoding it.
type RawBody interface {
	WriteBody(w http.ResponseWriter, r *http.Request)
}

// MatrixErrorer is an error that knows its Matrix error (a request body
// cut by its read deadline, api/body.go): the adapter answers with it, and
// the body readers below pass it through unchanged.
type MatrixErrorer interface {
	error
	MatrixError() *Error
}

type ctxKey int

const ctxRequestID ctxKey = iota

// RequestID is the id the adapter gave the request, 0 outside one. It is
// what an M_UNKNOWN answer names and what the log line of its cause carries.
func RequestID(ctx context.Context) uint64 {
	id, _ := ctx.Value(ctxRequestID).(uint64)
	return id
}

// Adapter runs Funcs: it numbers requests, writes values as JSON, renders
// errors as Matrix errors and turns unknown errors and panics into
// M_UNKNOWN 500s whose request id is in the log. Request ids count the
// requests of one adapter (each API has its own; the log line names the
// path too).
type Adapter struct {
	log *slog.Logger
	// mapErr maps an API's own errors (nil for none); see NewAdapter.
	mapErr func(*http.Request, error) *Error
	ids    atomic.Uint64
}

// NewAdapter returns an adapter logging to log. mapErr, if not nil, is
// asked first for errors that are not an *Error: it returns the Matrix
// error for one it knows, or nil to leave it to the common mapping
// (MapError).
func NewAdapter(log *slog.Logger, mapErr func(*http.Request, error) *Error) *Adapter {
	return &Adapter{log: log, mapErr: mapErr}
}

// Serve runs h for the request and writes its result. route names the
// route in the log of a panic.
func (a *Adapter) Serve(w http.ResponseWriter, r *http.Request, route string, h Func) {
	reqID := a.ids.Add(1)
	r = r.WithContext(context.WithValue(r.Context(), ctxRequestID, reqID))
	defer func() {
		if p := recover(); p != nil {
			a.log.Error("panic in handler", "req", reqID, "path", route, "panic", p, "stack", string(debug.Stack()))
			WriteJSON(w, http.StatusInternalServerError, map[string]string{"errcode": CodeUnknown, "error": fmt.Sprintf("internal error (request %d)", reqID)})
		}
	}()
	out, err := h(r)
	if err != nil {
		a.WriteError(w, r, err)
		return
	}
	switch out := out.(type) {
	case RawBody:
		out.WriteBody(w, r)
	case WithStatus:
		WriteJSON(w, out.Status, out.Body)
	default:
		WriteJSON(w, http.StatusOK, out)
	}
}

// Handler is Serve as an http.HandlerFunc.
func (a *Adapter) Handler(route string, h Func) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { a.Serve(w, r, route, h) }
}

// WriteError renders any error as a Matrix error.
func (a *Adapter) WriteError(w http.ResponseWriter, r *http.Request, err error) {
	me := a.MatrixError(r, err)
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
	WriteJSON(w, me.Status, body)
}

// MatrixError is the Matrix error that answers err: err itself if it is
// one, else the API's own mapping, else the common one; anything unknown
// is logged with the request id and answered with M_UNKNOWN 500.
func (a *Adapter) MatrixError(r *http.Request, err error) *Error {
	var me *Error
	if errors.As(err, &me) {
		return me
	}
	if a.mapErr != nil {
		if me := a.mapErr(r, err); me != nil {
			return me
		}
	}
	if me := MapError(err); me != nil {
		return me
	}
	id := RequestID(r.Context())
	a.log.Error("request failed", "req", id, "method", r.Method, "path", r.URL.Path, "err", err)
	return Errorf(http.StatusInternalServerError, CodeUnknown, "internal error (request %d)", id)
}

// MapError maps the errors both APIs meet (the room core's, body limits,
// a cancelled request) to Matrix errors, and returns nil for others.
func MapError(err error) *Error {
	var ae *roomdag.AuthError
	var mbe *http.MaxBytesError
	var mer MatrixErrorer
	switch {
	case errors.As(err, &ae) && ae.Malformed:
		// Content that is invalid whoever sends it (Synapse: 400).
		return BadJSON("%s", ae.Error())
	case errors.As(err, &ae):
		return Forbidden("%s", ae.Error())
	case errors.As(err, &mbe):
		return Errorf(http.StatusRequestEntityTooLarge, CodeTooLarge, "request body is larger than %d bytes", mbe.Limit)
	case errors.As(err, &mer):
		return mer.MatrixError()
	case errors.Is(err, roomdag.ErrTooLarge):
		return Errorf(http.StatusRequestEntityTooLarge, CodeTooLarge, "event is larger than %d bytes", roomdag.MaxEventBytes)
	case errors.Is(err, roomdag.ErrEventFormat):
		return BadJSON("%v", err)
	case errors.Is(err, roomdag.ErrUnknownRoom):
		return NotFound("unknown room")
	case errors.Is(err, roomdag.ErrRoomBusy):
		// Nothing was stored: the client retries (its transaction ID
		// keeps the retry idempotent), as after a rate limit.
		e := Errorf(http.StatusTooManyRequests, CodeLimitExceeded, "the room is busy, try again")
		e.Extra = map[string]any{"retry_after_ms": int64(100)}
		return e
	case errors.Is(err, context.Canceled):
		return Errorf(499, CodeUnknown, "request cancelled")
	}
	return nil
}

// WriteJSON writes v as a JSON response with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
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

// ReadBody reads a request body: a body over its limit or cut by its
// deadline keeps its error (for MapError), any other failure is
// M_BAD_JSON.
func ReadBody(r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		var mer MatrixErrorer
		if errors.As(err, &mbe) || errors.As(err, &mer) {
			return nil, err
		}
		return nil, BadJSON("could not read body: %v", err)
	}
	return body, nil
}

// DecodeJSON reads a JSON object body into v: M_NOT_JSON when it is not
// JSON, M_BAD_JSON when it does not fit v, M_TOO_LARGE past the limit.
// An empty body is an empty object.
func DecodeJSON(r *http.Request, v any) error {
	body, err := ReadBody(r)
	if err != nil {
		return err
	}
	return DecodeBytes(body, v)
}

// DecodeBytes is DecodeJSON for a body already read.
func DecodeBytes(body []byte, v any) error {
	body = bytes.TrimLeft(body, " \t\r\n")
	if len(body) == 0 {
		body = []byte("{}")
	}
	if err := CheckJSON(body); err != nil {
		return err
	}
	if body[0] != '{' {
		return Errorf(http.StatusBadRequest, CodeBadJSON, "body must be a JSON object")
	}
	if err := json.Unmarshal(body, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return BadJSON("field %q has the wrong type: expected %s", te.Field, te.Type)
		}
		return BadJSON("%v", err)
	}
	return nil
}

// CheckJSON answers M_NOT_JSON for a body that is not JSON text. JSON
// text is UTF-8 (RFC 8259, section 8.1), and encoding/json accepts
// invalid UTF-8 in strings, replacing it, so that is checked first:
// Complement's "POST rejects invalid utf-8 in JSON".
func CheckJSON(body []byte) error {
	if !utf8.Valid(body) {
		return Errorf(http.StatusBadRequest, CodeNotJSON, "body is not valid UTF-8")
	}
	if !json.Valid(body) {
		return Errorf(http.StatusBadRequest, CodeNotJSON, "body is not valid JSON")
	}
	return nil
}

// ReadObject reads a body that must be a JSON object (event content).
func ReadObject(r *http.Request) (json.RawMessage, error) {
	body, err := ReadBody(r)
	if err != nil {
		return nil, err
	}
	return CheckObject(body)
}

// CheckObject checks that a body read is a JSON object: M_NOT_JSON when it
// is empty or not JSON, M_BAD_JSON when it is JSON but not an object.
func CheckObject(body []byte) (json.RawMessage, error) {
	if len(body) == 0 {
		return nil, Errorf(http.StatusBadRequest, CodeNotJSON, "body is empty")
	}
	if err := CheckJSON(body); err != nil {
		return nil, err
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(body, &obj) != nil || obj == nil { // also skips leading white space
		return nil, BadJSON("body must be a JSON object")
	}
	return body, nil
}

// PathParam returns a path parameter, URL-decoded. Matrix IDs carry
// characters such as '#' and ':' that clients escape, and chi routes on
// the escaped path when there is one, leaving its parameters escaped.
func PathParam(r *http.Request, name string) string {
	v := chi.URLParam(r, name)
	if r.URL.RawPath != "" {
		if u, err := url.PathUnescape(v); err == nil {
			return u
		}
	}
	return v
}
