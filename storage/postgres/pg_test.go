package postgres

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// testDSN creates a database of its own on the server named by
// HOMESERVER_TEST_POSTGRES (a DSN whose user may create databases) and
// returns a DSN of it; the database is dropped when the test ends. Without
// the variable the test is skipped.
func testDSN(t testing.TB) string {
	t.Helper()
	admin := os.Getenv("HOMESERVER_TEST_POSTGRES")
	if admin == "" {
		t.Skip("HOMESERVER_TEST_POSTGRES is unset: set it to the DSN of a PostgreSQL server where tests may create databases")
	}
	cfg, err := pgx.ParseConfig(admin)
	if err != nil {
		t.Fatalf("HOMESERVER_TEST_POSTGRES: %v", err)
	}
	var b [6]byte
	rand.Read(b[:])
	name := "hs_test_" + hex.EncodeToString(b[:])
	ctx := context.Background()
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connecting to HOMESERVER_TEST_POSTGRES: %v", err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("creating test database: %v", err)
	}
	t.Cleanup(func() {
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Errorf("dropping test database %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("dropping test database %s: %v", name, err)
		}
	})
	return withDatabase(admin, name)
}

// withDatabase returns dsn (a URL or key=value DSN) naming database name.
func withDatabase(dsn, name string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err == nil {
			u.Path = "/" + name
			return u.String()
		}
	}
	return dsn + " dbname=" + name // a later key wins
}

func TestDriverRebinds(t *testing.T) {
	db, err := sql.Open(DriverName, testDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var a, lit, b string
	var j bool
	if err := db.QueryRow(`SELECT ?::text, '?' /* ? */, ?::text, '{"k":1}'::jsonb ?? 'k'`, "x", "y").Scan(&a, &lit, &b, &j); err != nil {
		t.Fatal(err)
	}
	if a != "x" || lit != "?" || b != "y" || !j {
		t.Errorf("got %q %q %q %v, want x ? y true", a, lit, b, j)
	}
	// Prepared statements and transactions go through the rewrite too.
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	st, err := tx.Prepare(`SELECT ?::bigint + ?`)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	if err := st.QueryRow(int64(2), int64(3)).Scan(&n); err != nil || n != 5 {
		t.Errorf("prepared ? + ? = %d, %v; want 5", n, err)
	}
}

// testPools are a migrated database's writer and read pool, for tests of
// this package's own parts.
type testPools struct{ w, r *sql.DB }

func openTestPools(opts Options, log *slog.Logger) (*testPools, error) {
	w, r, err := openMigrated(opts, log)
	if err != nil {
		return nil, err
	}
	return &testPools{w: w, r: r}, nil
}

func (p *testPools) Close() error { return errors.Join(p.w.Close(), p.r.Close()) }
