package httpapi_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
)

type raw string

func (b raw) WriteBody(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(b)) }

var errOwn = errors.New("own error")

// The adapter's answers, by what the handler returned.
func TestAdapter(t *testing.T) {
	var logs bytes.Buffer
	a := httpapi.NewAdapter(slog.New(slog.NewTextHandler(&logs, nil)), func(_ *http.Request, err error) *httpapi.Error {
		if errors.Is(err, errOwn) {
			return httpapi.Errorf(http.StatusTeapot, "M_OWN", "mapped")
		}
		return nil
	})
	limited := httpapi.Errorf(http.StatusTooManyRequests, httpapi.CodeLimitExceeded, "slow down")
	limited.Extra = map[string]any{"retry_after_ms": int64(1500)}
	for _, tc := range []struct {
		name    string
		h       httpapi.Func
		status  int
		errcode string
		body    string
	}{
		{"value", func(*http.Request) (any, error) { return map[string]int{"a": 1}, nil }, 200, "", `{"a":1}`},
		{"status", func(*http.Request) (any, error) { return httpapi.WithStatus{Status: 201, Body: struct{}{}}, nil }, 201, "", `{}`},
		{"raw", func(*http.Request) (any, error) { return raw("bytes"), nil }, 200, "", `bytes`},
		{"matrix error", func(*http.Request) (any, error) { return nil, httpapi.Forbidden("no %s", "way") }, 403, "M_FORBIDDEN", ""},
		{"wrapped matrix error", func(*http.Request) (any, error) {
			return nil, errors.Join(errors.New("context"), httpapi.NotFound("gone"))
		}, 404, "M_NOT_FOUND", ""},
		{"API's own mapping", func(*http.Request) (any, error) { return nil, errOwn }, 418, "M_OWN", ""},
		{"room core error", func(*http.Request) (any, error) { return nil, roomdag.ErrUnknownRoom }, 404, "M_NOT_FOUND", ""},
		{"unknown error", func(*http.Request) (any, error) { return nil, errors.New("disk on fire") }, 500, "M_UNKNOWN", ""},
		{"panic", func(*http.Request) (any, error) { panic("boom") }, 500, "M_UNKNOWN", ""},
		{"rate limit", func(*http.Request) (any, error) { return nil, limited }, 429, "M_LIMIT_EXCEEDED", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs.Reset()
			w := httptest.NewRecorder()
			a.Serve(w, httptest.NewRequest("GET", "/x", nil), "/x", tc.h)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			var e struct{ Errcode, Error string }
			json.Unmarshal(w.Body.Bytes(), &e)
			if e.Errcode != tc.errcode {
				t.Errorf("errcode %q, want %q", e.Errcode, tc.errcode)
			}
			if tc.body != "" && w.Body.String() != tc.body {
				t.Errorf("body %s, want %s", w.Body, tc.body)
			}
			if tc.status == 500 {
				// The answer names the request, the log says what failed.
				if !strings.Contains(e.Error, "request ") || strings.Contains(e.Error, "fire") || strings.Contains(e.Error, "boom") {
					t.Errorf("500 answer %q", e.Error)
				}
				if !strings.Contains(logs.String(), "req=") {
					t.Errorf("log %q lacks the request id", logs.String())
				}
			}
			if tc.name == "rate limit" && w.Header().Get("Retry-After") != "2" {
				t.Errorf("Retry-After %q, want 2", w.Header().Get("Retry-After"))
			}
		})
	}
}

func TestDecodeBytes(t *testing.T) {
	var v struct {
		N int `json:"n"`
	}
	for _, tc := range []struct{ body, errcode string }{
		{``, ""},
		{` {"n": 1}`, ""},
		{`{"n":`, "M_NOT_JSON"},
		{"{\"n\":\"\xff\"}", "M_NOT_JSON"},
		{`[1]`, "M_BAD_JSON"},
		{`{"n":"one"}`, "M_BAD_JSON"},
	} {
		err := httpapi.DecodeBytes([]byte(tc.body), &v)
		var me *httpapi.Error
		switch {
		case tc.errcode == "" && err != nil:
			t.Errorf("%q: %v", tc.body, err)
		case tc.errcode != "" && (!errors.As(err, &me) || me.Code != tc.errcode || me.Status != 400):
			t.Errorf("%q: %v, want 400 %s", tc.body, err, tc.errcode)
		}
	}
}
