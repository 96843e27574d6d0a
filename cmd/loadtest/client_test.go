package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestBaseURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:8008":       "http://127.0.0.1:8008",
		"http://127.0.0.1:8008/":      "http://127.0.0.1:8008",
		"https://matrix.example.org":  "https://matrix.example.org",
		"https://example.org/matrix/": "https://example.org/matrix",
		"http://[::1]:8008":           "http://[::1]:8008",
	} {
		got, err := baseURL(in)
		if err != nil || got != want {
			t.Errorf("baseURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "127.0.0.1:8008", "ftp://h", "http://", "http://h/?x=1", "http://h/#f", "http://u:p@h"} {
		if got, err := baseURL(bad); err == nil {
			t.Errorf("baseURL(%q) = %q, want an error", bad, got)
		}
	}
}

// TestRequestURIs checks the URIs that go on the wire: the escaped path
// must survive net/http's URL parsing unchanged.
func TestRequestURIs(t *testing.T) {
	hs := &homeserver{base: "http://127.0.0.1:8008"}
	room := roomID("!abc/def+g:example.org")
	for _, tc := range []struct {
		path  string
		query map[string][]string
		want  string
	}{
		{sendPath(room, "lt1a2b.7"), nil,
			"/_matrix/client/v3/rooms/%21abc%2Fdef+g:example.org/send/m.room.message/lt1a2b.7"},
		{joinPath("!r:h"), nil, "/_matrix/client/v3/rooms/%21r:h/join"},
		{messagesPath("!r:h"), messagesQuery("t1-2_3", 1000),
			"/_matrix/client/v3/rooms/%21r:h/messages?dir=b&from=t1-2_3&limit=1000"},
		{messagesPath("!r:h"), messagesQuery("", 10), "/_matrix/client/v3/rooms/%21r:h/messages?dir=b&limit=10"},
		{overrideRatelimitPath("@loadtest_1:h"), nil, "/_synapse/admin/v1/users/@loadtest_1:h/override_ratelimit"},
		{registerPath, map[string][]string{"kind": {"user"}}, "/_matrix/client/v3/register?kind=user"},
	} {
		req, err := http.NewRequest(http.MethodGet, hs.url(tc.path, tc.query), nil)
		if err != nil {
			t.Fatalf("NewRequest(%q): %v", tc.path, err)
		}
		if got := req.URL.RequestURI(); got != tc.want {
			t.Errorf("request URI\n got %s\nwant %s", got, tc.want)
		}
	}
}

func TestSyncQuery(t *testing.T) {
	for _, tc := range []struct {
		p    syncParams
		want string
	}{
		{syncParams{}, "set_presence=offline"},
		{syncParams{since: "s72_4", filter: `{"room":{}}`, timeout: 30 * time.Second},
			"filter=%7B%22room%22%3A%7B%7D%7D&set_presence=offline&since=s72_4&timeout=30000"},
		{syncParams{timeout: 1500 * time.Millisecond}, "set_presence=offline&timeout=1500"},
	} {
		if got := tc.p.query().Encode(); got != tc.want {
			t.Errorf("%+v: query %s, want %s", tc.p, got, tc.want)
		}
	}
}

func TestFilters(t *testing.T) {
	var f map[string]any
	if err := json.Unmarshal([]byte(roomTimelineFilter("!r:h", 10)), &f); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"room": map[string]any{
			"rooms":        []any{"!r:h"},
			"timeline":     map[string]any{"limit": 10.0},
			"ephemeral":    map[string]any{"types": []any{}},
			"account_data": map[string]any{"types": []any{}},
		},
		"presence":     map[string]any{"types": []any{}},
		"account_data": map[string]any{"types": []any{}},
	}
	if !reflect.DeepEqual(f, want) {
		t.Errorf("roomTimelineFilter = %v\nwant %v", f, want)
	}
	if got, want := timelineLimitFilter(50), `{"room":{"timeline":{"limit":50}}}`; got != want {
		t.Errorf("timelineLimitFilter = %s, want %s", got, want)
	}
}

func TestTxnIDsUnique(t *testing.T) {
	s := &session{txnPrefix: "ltabcd"}
	seen := map[string]bool{}
	for range 1000 {
		id := s.nextTxnID()
		if seen[id] || !strings.HasPrefix(id, "ltabcd.") {
			t.Fatalf("txn ID %q repeated or badly formed", id)
		}
		seen[id] = true
	}
}

// The MACs were computed independently with Python's hmac module, as in
// Synapse's register_api documentation.
func TestRegistrationMAC(t *testing.T) {
	key, pw := newSecret("sekrit"), newSecret("pw")
	if got, want := registrationMAC(key, "abcnonce", "loadtest_x_1", pw, false), "65772e2ec78b4eec380c5d1b956a379d371313bd"; got != want {
		t.Errorf("notadmin MAC = %s, want %s", got, want)
	}
	if got, want := registrationMAC(key, "abcnonce", "loadtest_x_admin", pw, true), "fa945f9e3fda359046c8f6e007279f6536d77f69"; got != want {
		t.Errorf("admin MAC = %s, want %s", got, want)
	}
}

func TestNextStage(t *testing.T) {
	parse := func(s string) uiaState {
		var st uiaState
		if err := json.Unmarshal([]byte(s), &st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	for _, tc := range []struct {
		name      string
		body      string
		haveToken bool
		want      string // "" means an error
	}{
		{"dummy only", `{"session":"s","flows":[{"stages":["m.login.dummy"]}]}`, false, stageDummy},
		{"skips flows needing email", `{"session":"s","flows":[{"stages":["m.login.email.identity"]},{"stages":["m.login.dummy"]}]}`, false, stageDummy},
		{"recaptcha only", `{"session":"s","flows":[{"stages":["m.login.recaptcha","m.login.dummy"]}]}`, false, ""},
		{"token without a token", `{"session":"s","flows":[{"stages":["m.login.registration_token"]}]}`, false, ""},
		{"token first", `{"session":"s","flows":[{"stages":["m.login.registration_token","m.login.dummy"]}]}`, true, stageToken},
		{"token done, then dummy", `{"session":"s","completed":["m.login.registration_token"],"flows":[{"stages":["m.login.registration_token","m.login.dummy"]}]}`, true, stageDummy},
		{"completed does not fit the flow", `{"session":"s","completed":["m.login.terms"],"flows":[{"stages":["m.login.dummy"]}]}`, true, ""},
		{"every stage done", `{"session":"s","completed":["m.login.dummy"],"flows":[{"stages":["m.login.dummy"]}]}`, false, ""},
		{"no flows", `{"errcode":"M_FORBIDDEN","error":"Registration has been disabled"}`, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := nextStage(parse(tc.body), tc.haveToken)
			if tc.want == "" {
				if err == nil {
					t.Errorf("nextStage = %q, want an error", got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("nextStage = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestResponseErr(t *testing.T) {
	ok := response{status: 200, body: []byte(`{}`)}
	if err := ok.err("x"); err != nil {
		t.Errorf("200: %v", err)
	}

	limited := response{status: 429, body: []byte(`{"errcode":"M_LIMIT_EXCEEDED","error":"Too many","retry_after_ms":1500}`)}
	err := limited.err("send")
	var me *matrixError
	if !errors.As(err, &me) || me.Status != 429 || me.ErrCode != "M_LIMIT_EXCEEDED" || me.RetryAfter != 1500*time.Millisecond {
		t.Errorf("429 error = %#v", err)
	}
	if got, want := err.Error(), "send: HTTP 429 M_LIMIT_EXCEEDED: Too many"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}

	header := response{status: 429, body: []byte(`{"errcode":"M_LIMIT_EXCEEDED"}`), retryAfterHeader: 2 * time.Second}
	if !errors.As(header.err("send"), &me) || me.RetryAfter != 2*time.Second {
		t.Errorf("Retry-After header not used: %#v", me)
	}

	html := response{status: 502, body: []byte(strings.Repeat("<html>", 100))}
	if got := html.err("sync").Error(); !strings.HasPrefix(got, `sync: HTTP 502: "<html>`) || len(got) > maxErrorBody+40 {
		t.Errorf("non-Matrix error = %q", got)
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s := newSecret("hunter2")
	var log strings.Builder
	slog.New(slog.NewTextHandler(&log, nil)).Info("x", "token", s)
	b, _ := json.Marshal(struct{ T secret }{s})
	for _, out := range []string{
		fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s %q %x", s, s, s, s, s, s),
		fmt.Sprintf("%v", struct{ T secret }{s}), log.String(), string(b),
	} {
		if strings.Contains(out, "hunter2") {
			t.Errorf("secret leaked: %s", out)
		}
	}
	if s.reveal() != "hunter2" {
		t.Error("reveal lost the value")
	}
}
