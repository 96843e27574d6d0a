// Package testserver boots whole homeservers on loopback for tests: a real
// HTTP listener on 127.0.0.1:0, a temporary database (a SQLite file, or a
// fresh PostgreSQL database when HOMESERVER_TEST_POSTGRES is set, see
// PostgresEnv), and a client that speaks the client-server API.
package testserver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/server"
)

// Options adjust the configuration of a test server.
type Options struct {
	// Configure, if set, edits the config before the server starts.
	Configure func(*configs.Config)
	// DataDir reuses a data directory (to test restarts); default a new one.
	DataDir string
	// Clock defaults to the real clock.
	Clock clock.Clock
	// LogOutput, if set, gets the server's log too, as the config's
	// log_format writes it (the test's log always gets it).
	LogOutput io.Writer
	// ShareWith, if set, makes the server another process of that one
	// (on PostgreSQL only): the same database, server name and signing
	// key, its own listener and data directory (see Cluster).
	ShareWith *Server

	// federationListener, set by Federation, is the bound federation
	// listener the server is named after.
	federationListener net.Listener
}

// Server is a running test homeserver.
type Server struct {
	t       testing.TB
	HS      *server.Homeserver
	URL     string
	DataDir string
	Config  *configs.Config
	stopped bool
	// transport is shared by every client of this server, so Stop can
	// close their idle connections: http.Server.Shutdown otherwise waits
	// seconds for connections that were opened but never used.
	transport *http.Transport
}

// Start boots a homeserver with open registration and rate limits off. It
// stops when the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	dir := opts.DataDir
	if dir == "" {
		dir = t.TempDir()
	}
	cfg := configs.Default()
	cfg.DataDir = dir
	cfg.Listen = "127.0.0.1:0"
	cfg.EnableRegistration = true
	cfg.BcryptRounds = 4 // the minimum: tests register many users
	cfg.RateLimiting.Enabled = false
	cfg.LogLevel = "warn"
	switch {
	case opts.ShareWith != nil:
		shareWith(t, &cfg, opts.ShareWith)
	case Engine() == configs.EnginePostgres:
		usePostgres(t, &cfg, dir)
	}
	if opts.Configure != nil {
		opts.Configure(&cfg)
	}
	clk := opts.Clock
	if clk == nil {
		clk = clock.Real{}
	}
	var out io.Writer = testWriter{t}
	if opts.LogOutput != nil {
		out = io.MultiWriter(out, opts.LogOutput)
	}
	log := server.NewLogger(&cfg, out)
	// The server name must be known before listening; with port 0 we pick
	// the port first by listening, then name the server after it.
	hs, err := start(&cfg, log, clk, opts.federationListener)
	if err != nil {
		t.Fatalf("starting homeserver: %v", err)
	}
	s := &Server{t: t, HS: hs, URL: "http://" + hs.Addr().String(), DataDir: dir, Config: &cfg,
		transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	t.Cleanup(s.Stop)
	return s
}

func start(cfg *configs.Config, log *slog.Logger, clk clock.Clock, fed net.Listener) (*server.Homeserver, error) {
	if cfg.ServerName == configs.Default().ServerName {
		cfg.ServerName = "localhost"
	}
	if cfg.PublicBaseURL == "" {
		cfg.PublicBaseURL = "http://127.0.0.1/"
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	hs, err := server.New(cfg, log, clk)
	if err != nil {
		if fed != nil {
			fed.Close()
		}
		return nil, err
	}
	if fed != nil {
		if err := hs.UseFederationListener(fed); err != nil {
			fed.Close()
			hs.Shutdown(context.Background())
			return nil, err
		}
	}
	if err := hs.Listen(); err != nil {
		hs.Shutdown(context.Background())
		return nil, err
	}
	go hs.Serve()
	return hs, nil
}

// Stop shuts the server down gracefully (idempotent).
func (s *Server) Stop() {
	if s.stopped {
		return
	}
	s.stopped = true
	s.transport.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.HS.Shutdown(ctx); err != nil {
		s.t.Errorf("shutdown: %v", err)
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Client is a logged-in (or anonymous) user of a test server.
type Client struct {
	t        testing.TB
	Base     string
	UserID   string
	DeviceID string
	Token    string
	HTTP     *http.Client
}

// Anonymous returns a client without a token.
func (s *Server) Anonymous() *Client {
	return &Client{t: s.t, Base: s.URL, HTTP: &http.Client{Timeout: 60 * time.Second, Transport: s.transport}}
}

var userCounter atomic.Int64

// Register makes a new user with a unique name from the prefix, through
// the real registration flow, and returns its client.
func (s *Server) Register(prefix string) *Client {
	s.t.Helper()
	name := fmt.Sprintf("%s%d", prefix, userCounter.Add(1))
	c := s.Anonymous()
	body := map[string]any{"username": name, "password": "correct horse battery", "auth": map[string]string{"type": "m.login.dummy"}}
	var out struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
		DeviceID    string `json:"device_id"`
	}
	c.MustDo("POST", "/_matrix/client/v3/register", body, &out)
	c.UserID, c.Token, c.DeviceID = out.UserID, out.AccessToken, out.DeviceID
	return c
}

// Response is a decoded reply.
type Response struct {
	Status int
	Body   []byte
}

// JSON decodes the body into v.
func (r *Response) JSON(v any) error { return json.Unmarshal(r.Body, v) }

// Errcode returns the Matrix errcode of an error reply.
func (r *Response) Errcode() string {
	var e struct {
		Errcode string `json:"errcode"`
	}
	_ = json.Unmarshal(r.Body, &e)
	return e.Errcode
}

// Do sends a request; body may be nil, []byte (sent as is) or a value to
// encode as JSON.
func (c *Client) Do(method, path string, body any) *Response {
	c.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			c.t.Fatalf("encoding body: %v", err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, c.Base+path, rd)
	if err != nil {
		c.t.Fatalf("request: %v", err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return &Response{Status: resp.StatusCode, Body: b}
}

// MustDo sends a request, fails the test unless it returns 200, and decodes
// the reply into out (if not nil).
func (c *Client) MustDo(method, path string, body, out any) {
	c.t.Helper()
	r := c.Do(method, path, body)
	if r.Status != http.StatusOK {
		c.t.Fatalf("%s %s: status %d: %s", method, path, r.Status, r.Body)
	}
	if out != nil {
		if err := r.JSON(out); err != nil {
			c.t.Fatalf("%s %s: decoding %s: %v", method, path, r.Body, err)
		}
	}
}

// CreateRoom creates a room with the given createRoom body.
func (c *Client) CreateRoom(body map[string]any) string {
	c.t.Helper()
	var out struct {
		RoomID string `json:"room_id"`
	}
	c.MustDo("POST", "/_matrix/client/v3/createRoom", body, &out)
	return out.RoomID
}

var txnCounter atomic.Int64

// SendText sends an m.room.message and returns its event ID.
func (c *Client) SendText(room, text string) string {
	c.t.Helper()
	var out struct {
		EventID string `json:"event_id"`
	}
	path := fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/t%d", url.PathEscape(room), txnCounter.Add(1))
	c.MustDo("PUT", path, map[string]any{"msgtype": "m.text", "body": text}, &out)
	return out.EventID
}

// Join joins a room by ID or alias.
func (c *Client) Join(roomOrAlias string) {
	c.t.Helper()
	c.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomOrAlias), map[string]any{}, nil)
}

// Sync runs /sync with the given query (e.g. "since=...&timeout=0").
func (c *Client) Sync(query string) map[string]any {
	c.t.Helper()
	var out map[string]any
	c.MustDo("GET", "/_matrix/client/v3/sync?"+query, nil, &out)
	return out
}

// DataFile is a path inside the server's data directory.
func (s *Server) DataFile(name string) string { return filepath.Join(s.DataDir, name) }

// Settle waits until background work (the notification worker) has caught
// up with every committed event, so the positions a test reads next are
// final: a later sync does not see the worker move on.
func (s *Server) Settle() {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.HS.Notifications.Wait(ctx, s.HS.Syncer.Notifier().Current().Events); err != nil {
		s.t.Fatalf("waiting for the notification worker: %v", err)
	}
}
