// Package astest helps test application service support: a fake
// application service on loopback that records what the homeserver sends
// it, and registration files for test homeservers.
package astest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/testserver"
)

// Namespace is one entry of a namespace list.
type Namespace struct {
	Regex     string `json:"regex"`
	Exclusive bool   `json:"exclusive"`
}

// Registration is what a test registration file holds. URL "" writes
// url: null.
type Registration struct {
	ID, URL, ASToken, HSToken, SenderLocalpart string
	Users, Aliases, Rooms                      []Namespace
	RateLimited, ReceiveEphemeral              bool
	Protocols                                  []string
}

// YAML renders the registration. JSON is YAML, and quoting every string
// keeps tokens from being read as numbers.
func (r Registration) YAML() []byte {
	m := map[string]any{
		"id": r.ID, "as_token": r.ASToken, "hs_token": r.HSToken, "sender_localpart": r.SenderLocalpart,
		"namespaces":   map[string]any{"users": nonNil(r.Users), "aliases": nonNil(r.Aliases), "rooms": nonNil(r.Rooms)},
		"rate_limited": r.RateLimited, "receive_ephemeral": r.ReceiveEphemeral,
	}
	if r.URL != "" {
		m["url"] = r.URL
	} else {
		m["url"] = nil
	}
	if len(r.Protocols) > 0 {
		m["protocols"] = r.Protocols
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	return b
}

func nonNil(ns []Namespace) []Namespace {
	if ns == nil {
		return []Namespace{}
	}
	return ns
}

// Write writes the registration into dir and returns its path.
func (r Registration) Write(t testing.TB, dir string) string {
	t.Helper()
	p := filepath.Join(dir, strings.ReplaceAll(r.ID, "/", "_")+".yaml")
	if err := os.WriteFile(p, r.YAML(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Options returns testserver options for a server with the registrations
// (written into a new temporary directory); configure, if set, runs too.
func Options(t testing.TB, configure func(*configs.Config), regs ...Registration) testserver.Options {
	t.Helper()
	dir := t.TempDir()
	var files []string
	for _, r := range regs {
		files = append(files, r.Write(t, dir))
	}
	return testserver.Options{Configure: func(c *configs.Config) {
		c.AppServiceConfigFiles = append(c.AppServiceConfigFiles, files...)
		if configure != nil {
			configure(c)
		}
	}}
}

// Txn is one transaction request as the service received it.
type Txn struct {
	ID        string
	Status    int // what the fake answered
	Events    []Event
	Ephemeral []Event
	Raw       []byte
}

// Event is an event of a transaction, decoded loosely.
type Event struct {
	Type           string          `json:"type"`
	EventID        string          `json:"event_id"`
	RoomID         string          `json:"room_id"`
	Sender         string          `json:"sender"`
	StateKey       *string         `json:"state_key"`
	OriginServerTS int64           `json:"origin_server_ts"`
	Content        json.RawMessage `json:"content"`
}

// Body returns content.body of a message.
func (e Event) Body() string {
	var c struct {
		Body string `json:"body"`
	}
	_ = json.Unmarshal(e.Content, &c)
	return c.Body
}

// AS is a fake application service on loopback.
type AS struct {
	t       testing.TB
	srv     *httptest.Server
	URL     string
	HSToken string

	mu       sync.Mutex
	requests []Txn         // every transaction request, retries included
	paths    []string      // every request path, in order
	pings    []string      // transaction IDs of pings
	changed  chan struct{} // closed and replaced on every request
	// Handlers, set before the homeserver sends anything; nil answers 200
	// (queries: 404). They may call the homeserver.
	onTxn   func(id string) int
	onUser  func(user string) int
	onAlias func(alias string) int
	onThird func(path string, q url.Values) (int, any)
}

// NewAS starts a fake service that expects hsToken.
func NewAS(t testing.TB, hsToken string) *AS {
	a := &AS{t: t, HSToken: hsToken, changed: make(chan struct{})}
	a.srv = httptest.NewServer(http.HandlerFunc(a.serve))
	a.URL = a.srv.URL
	t.Cleanup(a.srv.Close)
	return a
}

// Close stops the fake service's own listener; requests then fail to
// connect (unless Handler is served elsewhere).
func (a *AS) Close() { a.srv.CloseClientConnections(); a.srv.Close() }

// Addr is the host:port the fake service listens on.
func (a *AS) Addr() string { return a.srv.Listener.Addr().String() }

// Handler is the fake service's HTTP handler, to serve it from another
// listener (one that is taken down and brought back).
func (a *AS) Handler() http.Handler { return http.HandlerFunc(a.serve) }

// OnTransaction sets the status answered to each transaction attempt.
func (a *AS) OnTransaction(f func(id string) int) { a.mu.Lock(); a.onTxn = f; a.mu.Unlock() }

// OnUser sets the handler of user queries (return the status).
func (a *AS) OnUser(f func(user string) int) { a.mu.Lock(); a.onUser = f; a.mu.Unlock() }

// OnAlias sets the handler of alias queries (return the status).
func (a *AS) OnAlias(f func(alias string) int) { a.mu.Lock(); a.onAlias = f; a.mu.Unlock() }

// OnThirdParty sets the handler of third-party lookups.
func (a *AS) OnThirdParty(f func(path string, q url.Values) (int, any)) {
	a.mu.Lock()
	a.onThird = f
	a.mu.Unlock()
}

func (a *AS) note(path string, txn *Txn, ping *string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.paths = append(a.paths, path)
	if txn != nil {
		a.requests = append(a.requests, *txn)
	}
	if ping != nil {
		a.pings = append(a.pings, *ping)
	}
	close(a.changed)
	a.changed = make(chan struct{})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (a *AS) serve(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+a.HSToken {
		a.note(r.URL.Path, nil, nil)
		writeJSON(w, http.StatusForbidden, map[string]string{"errcode": "M_FORBIDDEN", "error": "bad hs_token"})
		return
	}
	path := r.URL.EscapedPath()
	a.mu.Lock()
	onTxn, onUser, onAlias, onThird := a.onTxn, a.onUser, a.onAlias, a.onThird
	a.mu.Unlock()
	unescape := func(s string) string { u, _ := url.PathUnescape(s); return u }
	switch {
	case r.Method == http.MethodPut && strings.HasPrefix(path, "/_matrix/app/v1/transactions/"):
		id := unescape(strings.TrimPrefix(path, "/_matrix/app/v1/transactions/"))
		raw, _ := io.ReadAll(r.Body)
		var body struct {
			Events    []Event `json:"events"`
			Ephemeral []Event `json:"ephemeral"`
		}
		if err := json.Unmarshal(raw, &body); err != nil || body.Events == nil {
			a.t.Errorf("fake appservice: transaction %s: bad body %s", id, raw)
		}
		status := http.StatusOK
		if onTxn != nil {
			status = onTxn(id)
		}
		a.note(path, &Txn{ID: id, Status: status, Events: body.Events, Ephemeral: body.Ephemeral, Raw: raw}, nil)
		writeJSON(w, status, map[string]any{})
	case r.Method == http.MethodGet && strings.HasPrefix(path, "/_matrix/app/v1/users/"):
		status := http.StatusNotFound
		if onUser != nil {
			status = onUser(unescape(strings.TrimPrefix(path, "/_matrix/app/v1/users/")))
		}
		a.note(path, nil, nil)
		writeJSON(w, status, map[string]any{})
	case r.Method == http.MethodGet && strings.HasPrefix(path, "/_matrix/app/v1/rooms/"):
		status := http.StatusNotFound
		if onAlias != nil {
			status = onAlias(unescape(strings.TrimPrefix(path, "/_matrix/app/v1/rooms/")))
		}
		a.note(path, nil, nil)
		writeJSON(w, status, map[string]any{})
	case r.Method == http.MethodPost && path == "/_matrix/app/v1/ping":
		var body struct {
			TransactionID string `json:"transaction_id"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		a.note(path, nil, &body.TransactionID)
		writeJSON(w, http.StatusOK, map[string]any{})
	case r.Method == http.MethodGet && strings.HasPrefix(path, "/_matrix/app/v1/thirdparty/"):
		status, body := http.StatusNotFound, any(map[string]string{"errcode": "M_NOT_FOUND"})
		if onThird != nil {
			status, body = onThird(strings.TrimPrefix(path, "/_matrix/app/v1/thirdparty/"), r.URL.Query())
		}
		a.note(path, nil, nil)
		writeJSON(w, status, body)
	default:
		a.note(path, nil, nil)
		writeJSON(w, http.StatusNotFound, map[string]string{"errcode": "M_UNRECOGNIZED"})
	}
}

// Requests returns every transaction request so far, retries included.
func (a *AS) Requests() []Txn {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]Txn(nil), a.requests...)
}

// Paths returns the path of every request so far.
func (a *AS) Paths() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.paths...)
}

// Pings returns the transaction IDs of the pings so far.
func (a *AS) Pings() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.pings...)
}

// Distinct returns the transactions the fake accepted (answered 2xx),
// each ID once, in order: what a service that ignores repeated IDs
// processes.
func (a *AS) Distinct() []Txn {
	seen := map[string]bool{}
	var out []Txn
	for _, t := range a.Requests() {
		if t.Status/100 == 2 && !seen[t.ID] {
			seen[t.ID] = true
			out = append(out, t)
		}
	}
	return out
}

// Events returns the events of the distinct transactions, in order.
func (a *AS) Events() []Event {
	var out []Event
	for _, t := range a.Distinct() {
		out = append(out, t.Events...)
	}
	return out
}

// Ephemeral returns the ephemeral events of the distinct transactions.
func (a *AS) Ephemeral() []Event {
	var out []Event
	for _, t := range a.Distinct() {
		out = append(out, t.Ephemeral...)
	}
	return out
}

// Wait returns once cond holds, re-checking it after every request the
// service receives; it fails the test after a generous deadline (a
// deadline for a hang, not a sleep: nothing waits for it to pass).
func (a *AS) Wait(what string, cond func() bool) {
	a.t.Helper()
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for {
		a.mu.Lock()
		ch := a.changed
		a.mu.Unlock()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			a.t.Fatalf("fake appservice: timed out waiting for %s; paths %v", what, a.Paths())
		}
	}
}

// WaitEvent waits for an event matching f in a transaction and returns it.
func (a *AS) WaitEvent(what string, f func(Event) bool) Event {
	a.t.Helper()
	var found Event
	a.Wait(what, func() bool {
		for _, e := range a.Events() {
			if f(e) {
				found = e
				return true
			}
		}
		return false
	})
	return found
}

// String describes the transactions received, for failure messages.
func (a *AS) String() string {
	var b strings.Builder
	for _, t := range a.Requests() {
		fmt.Fprintf(&b, "txn %s:", t.ID)
		for _, e := range t.Events {
			fmt.Fprintf(&b, " %s/%s", e.Type, e.Body())
		}
		b.WriteString("\n")
	}
	return b.String()
}
