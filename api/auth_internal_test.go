package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/persistentchat/homeserver/httpapi"
)

// TestTokensNeverLogged: now that access tokens may come in the query
// string, what the handler adapter logs about a failed or panicking
// request must not carry the query, in either log format (log_format:
// text or json). (STYLE.md: never log tokens.)
func TestTokensNeverLogged(t *testing.T) {
	const secret = "mat_s3cr3t_t0ken"
	for _, format := range []struct {
		name    string
		handler func(io.Writer, *slog.HandlerOptions) slog.Handler
	}{
		{"text", func(w io.Writer, o *slog.HandlerOptions) slog.Handler { return slog.NewTextHandler(w, o) }},
		{"json", func(w io.Writer, o *slog.HandlerOptions) slog.Handler { return slog.NewJSONHandler(w, o) }},
	} {
		t.Run(format.name, func(t *testing.T) {
			var logs bytes.Buffer
			log := slog.New(format.handler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			s := &Server{log: log, http: httpapi.NewAdapter(log, mapError)}
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
			if format.name == "json" {
				for i, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
					var rec map[string]any
					if err := json.Unmarshal([]byte(line), &rec); err != nil {
						t.Errorf("line %d is not a JSON object: %v: %s", i+1, err, line)
					}
				}
			}
		})
	}
}
