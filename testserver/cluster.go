package testserver

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/configs"
)

// Cluster starts n processes of one homeserver in this test process: n
// servers on one PostgreSQL database, each with its own listener and data
// directory, all with the same server name and signing key, as an operator
// runs several processes behind a load balancer. opts applies to each. It
// skips the test when PostgresEnv is not set: SQLite has one process.
// Media files live in each server's data directory, not shared.
func Cluster(t testing.TB, n int, opts Options) []*Server {
	t.Helper()
	if Engine() != configs.EnginePostgres {
		t.Skipf("several processes share one database only on PostgreSQL: set %s to run this test", PostgresEnv)
	}
	first := Start(t, opts)
	out := []*Server{first}
	for range n - 1 {
		o := opts
		o.DataDir, o.ShareWith = "", first
		out = append(out, Start(t, o))
	}
	return out
}

// shareWith points cfg, for a server in a new data directory, at the
// database, server name and signing key of s.
func shareWith(t testing.TB, cfg *configs.Config, s *Server) {
	t.Helper()
	if s.Config.Database.Name != configs.EnginePostgres {
		t.Fatalf("ShareWith: the server runs on %s; only PostgreSQL is shared", s.Config.Database.Name)
	}
	cfg.Database = s.Config.Database
	cfg.ServerName = s.Config.ServerName
	cfg.PublicBaseURL = s.Config.PublicBaseURL
	key, err := os.ReadFile(s.Config.SigningKeyPath())
	if err != nil {
		t.Fatalf("ShareWith: %v", err)
	}
	if err := os.MkdirAll(filepath.Dir(cfg.SigningKeyPath()), 0o700); err != nil {
		t.Fatalf("ShareWith: %v", err)
	}
	if err := os.WriteFile(cfg.SigningKeyPath(), key, 0o600); err != nil {
		t.Fatalf("ShareWith: %v", err)
	}
}

// On is the same session as a client of s, another process of c's
// homeserver (Cluster).
func (c *Client) On(s *Server) *Client {
	d := *c
	d.Base = s.URL
	d.HTTP = &http.Client{Timeout: 60 * time.Second, Transport: s.transport}
	return &d
}
