package testserver

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/configs"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver, for the admin connection and SQL
	_ "github.com/mattn/go-sqlite3"    // the "sqlite3" driver, for SQL
)

// PostgresEnv is the environment variable that moves every test server to
// PostgreSQL: set it to the DSN of a role that may create databases (the
// file dsn that scripts/pgcluster.sh writes), and each Start gets a fresh
// database of its own, dropped when the test ends. Unset, test servers use
// SQLite in their data directory.
const PostgresEnv = "HOMESERVER_TEST_POSTGRES"

// Engine returns the engine test servers run on: configs.EnginePostgres
// when PostgresEnv is set, else configs.EngineSQLite.
func Engine() string {
	if os.Getenv(PostgresEnv) != "" {
		return configs.EnginePostgres
	}
	return configs.EngineSQLite
}

// postgresPool bounds each test server's pool: small, because the suite
// runs many servers at once against one cluster, whose max_connections
// must cover them all (scripts/pgcluster.sh sets it).
const postgresPool = 4

// dbNameFile, in a data directory, names the PostgreSQL database of the
// server that used it, so that a server restarted on the same DataDir
// finds its data again, as it finds its SQLite file.
const dbNameFile = "testserver-postgres-database"

// adminDB is the connection to the cluster under PostgresEnv, opened once
// for the test binary and never closed (the process's exit closes it).
var adminDB = gosync.OnceValues(func() (*sql.DB, error) {
	db, err := sql.Open("pgx", os.Getenv(PostgresEnv))
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(2)
	return db, nil
})

// usePostgres points cfg at the PostgreSQL database of dataDir, creating
// it if dataDir has none yet (or its database is gone). The test that
// creates the database drops it at its end; call this before starting the
// server, so that the drop comes after the server's Stop.
func usePostgres(t testing.TB, cfg *configs.Config, dataDir string) {
	t.Helper()
	// The server would make it; the name file comes first.
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		t.Fatalf("postgres: %v", err)
	}
	nameFile := filepath.Join(dataDir, dbNameFile)
	name := ""
	if b, err := os.ReadFile(nameFile); err == nil {
		name = strings.TrimSpace(string(b))
	} else if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("postgres: %v", err)
	}
	if name == "" {
		name = "hs_test_" + strings.ToLower(rand.Text()[:16])
		if err := os.WriteFile(nameFile, []byte(name+"\n"), 0o600); err != nil {
			t.Fatalf("postgres: %v", err)
		}
	}
	createPostgresDatabase(t, name)
	cfg.Database = configs.Database{Name: configs.EnginePostgres, Args: configs.DatabaseArgs{
		DSN: configs.NewSecret(postgresDSN(t, name)), CPMin: 1, CPMax: postgresPool,
	}}
}

// PostgresDatabase creates a fresh PostgreSQL database on the cluster under
// PostgresEnv, dropped when the test ends, and returns its DSN, for tests
// that configure a server themselves (operator commands). It fails the
// test when PostgresEnv is not set.
func PostgresDatabase(t testing.TB) string {
	t.Helper()
	if os.Getenv(PostgresEnv) == "" {
		t.Fatalf("PostgresDatabase: %s is not set", PostgresEnv)
	}
	name := "hs_test_" + strings.ToLower(rand.Text()[:16])
	createPostgresDatabase(t, name)
	return postgresDSN(t, name)
}

// createPostgresDatabase creates the database name unless it exists, and
// if it made it, drops it when the test ends.
func createPostgresDatabase(t testing.TB, name string) {
	t.Helper()
	db, err := adminDB()
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var exists bool
	if err := db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		t.Fatalf("postgres: %v", err)
	}
	if exists {
		return // a restart: the test that made it drops it
	}
	// Names are ours (hs_test_ and base32), so quoting is enough.
	// template0 and C collation, as an operator is told to make it.
	if _, err := db.ExecContext(ctx, `CREATE DATABASE "`+name+`" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'`); err != nil {
		t.Fatalf("postgres: creating database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// FORCE ends the sessions of a server that is still closing its
		// pool (PostgreSQL 13 and later).
		if _, err := db.ExecContext(ctx, `DROP DATABASE IF EXISTS "`+name+`" WITH (FORCE)`); err != nil {
			t.Errorf("postgres: dropping database %s: %v", name, err)
		}
	})
}

// postgresDSN is the admin DSN with its database replaced by name.
func postgresDSN(t testing.TB, name string) string {
	t.Helper()
	admin := os.Getenv(PostgresEnv)
	if strings.HasPrefix(admin, "postgres://") || strings.HasPrefix(admin, "postgresql://") {
		u, err := url.Parse(admin)
		if err != nil {
			t.Fatalf("%s is not a valid URL", PostgresEnv) // not quoted: it may hold a password
		}
		u.Path = "/" + name
		q := u.Query()
		if q.Has("dbname") {
			q.Del("dbname")
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	// key=value: a later key overrides an earlier one.
	return admin + " dbname=" + name
}

// SQL opens the server's database for a test that reads a table the store
// has no method for, with the engine's database/sql driver (SQLite read
// only). Its queries must be valid in both dialects: no placeholders, or
// written per engine (Config.Database.Name says which). It is closed when
// the test ends.
func (s *Server) SQL() *sql.DB {
	s.t.Helper()
	var db *sql.DB
	var err error
	switch s.Config.Database.Name {
	case configs.EnginePostgres:
		db, err = sql.Open("pgx", s.Config.Database.Postgres().DSN.Reveal())
	default:
		db, err = sql.Open("sqlite3", "file:"+s.Config.DatabasePath()+"?mode=ro")
	}
	if err != nil {
		s.t.Fatalf("opening the database: %v", err)
	}
	s.t.Cleanup(func() { db.Close() })
	return db
}
