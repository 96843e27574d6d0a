package api

import (
	"bytes"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestTokensNeverLogged: now that access tokens may come in the query
// string, what the handler adapter logs about a failed or panicking
// request must not carry the query. (STYLE.md: never log tokens.)
func TestTokensNeverLogged(t *testing.T) {
	const secret = "mat_s3cr3t_t0ken"
	var logs bytes.Buffer
	s := &Server{log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	for _, rt := range []route{
		{"GET", v3 + "/fails", func(*http.Request) (any, error) { return nil, errors.New("disk on fire") }, authNone, rateNone},
		{"GET", v3 + "/panics", func(*http.Request) (any, error) { panic("boom") }, authNone, rateNone},
	} {
		w := httptest.NewRecorder()
		s.wrap(rt)(w, httptest.NewRequest("GET", rt.path+"?since=s1&access_token="+secret+"&timeout=0", nil))
		if w.Code != http.StatusInternalServerError {
			t.Fatalf("%s: status %d, want 500", rt.path, w.Code)
		}
		if strings.Contains(w.Body.String(), secret) {
			t.Errorf("%s: the response carries the token: %s", rt.path, w.Body)
		}
	}
	out := logs.String()
	if !strings.Contains(out, "/fails") || !strings.Contains(out, "/panics") {
		t.Fatalf("the failures were not logged: %s", out)
	}
	if strings.Contains(out, secret) || strings.Contains(out, "access_token") {
		t.Errorf("the log carries the query string: %s", out)
	}
}
