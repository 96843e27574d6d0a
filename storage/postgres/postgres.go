// Package postgres is the storage engine for deployments past one machine:
// PostgreSQL through pgx, shared by one or more homeserver processes. It
// holds only what differs from SQLite: the driver (placeholders),
// connection set-up, the schema and its migration runner, and the dialect
// the shared SQL layer asks for.
package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/persistentchat/homeserver/storage/sqlstore"
)

// Options says how to reach the database: Synapse's database section
// (name: postgres, args: {..., cp_min, cp_max}) maps onto it.
type Options struct {
	// DSN is a PostgreSQL connection string, as a URL
	// (postgres://user:pass@host:5432/dbname?sslmode=disable) or as
	// key=value pairs (host=... user=... dbname=...).
	DSN string
	// MinConns is how many read connections are opened at start and
	// kept idle (Synapse's cp_min). 0 means DefaultMinConns.
	MinConns int
	// MaxConns bounds this process's connections, the writer's included
	// (Synapse's cp_max). 0 means DefaultMaxConns; at least 2.
	MaxConns int
}

// Defaults of Options, Synapse's.
const (
	DefaultMinConns = 5
	DefaultMaxConns = 10
)

// Server-side limits set on every connection unless the DSN sets them:
// a statement or an idle transaction that runs away is cancelled instead
// of holding locks (and the writers' batch lock) for ever.
const (
	statementTimeout         = "60s"
	idleInTransactionTimeout = "60s"
)

// Open connects to the database, migrates it to this build's schema and
// returns the shared SQL layer over it: one writer connection (as SQLite's
// single writer, so this process's writes commit in order, in batches;
// several processes take turns through Dialect.BeginBatch) and a read
// pool whose transactions are REPEATABLE READ, so a reader's read-only
// transaction sees one snapshot throughout.
func Open(opts Options, log *slog.Logger) (*sqlstore.DB, error) {
	w, r, err := openMigrated(opts, log)
	if err != nil {
		return nil, err
	}
	locks, err := openLockPool(opts)
	if err != nil {
		w.Close()
		r.Close()
		return nil, err
	}
	db, err := sqlstore.New(w, r, Dialect{}, log)
	if err != nil {
		locks.Close()
		return nil, err
	}
	db.UseLockPool(locks)
	return db, nil
}

// openLockPool opens the connections that hold sqlstore.DB.Exclusive's
// session locks. They are not the read pool's: a holder runs reads and
// waits for writes, and a read connection held that way is one the
// writer (which reserves snapshot IDs through the read pool) and every
// reader may be waiting for. Exclusive is rare: no connection is kept
// idle for it for long.
func openLockPool(opts Options) (*sql.DB, error) {
	base, err := pgx.ParseConfig(opts.DSN)
	if err != nil {
		return nil, fmt.Errorf("postgres: DSN: %w", err)
	}
	db := sql.OpenDB(newConnector(withParams(base, map[string]string{
		"application_name":              "homeserver-locks",
		"default_transaction_isolation": "read committed",
	})))
	db.SetMaxOpenConns(lockConns)
	db.SetMaxIdleConns(1)
	db.SetConnMaxIdleTime(time.Minute)
	return db, nil
}

// lockConns bounds the lock pool: one Exclusive per name at a time per
// process, and a few names at once (room upgrades, server notices).
const lockConns = 4

// withParams is base with the server-side settings every connection of
// ours has, unless the DSN sets them, and then params.
func withParams(base *pgx.ConnConfig, params map[string]string) *pgx.ConnConfig {
	cfg := base.Copy()
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	for k, v := range map[string]string{
		"application_name":                    "homeserver",
		"statement_timeout":                   statementTimeout,
		"idle_in_transaction_session_timeout": idleInTransactionTimeout,
	} {
		if _, set := cfg.RuntimeParams[k]; !set {
			cfg.RuntimeParams[k] = v
		}
	}
	for k, v := range params {
		cfg.RuntimeParams[k] = v
	}
	return cfg
}

// openMigrated opens the pools and migrates the database.
func openMigrated(opts Options, log *slog.Logger) (w, r *sql.DB, err error) {
	w, r, err = openPools(opts)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := migrate(ctx, w, migrations, log); err != nil {
		w.Close()
		r.Close()
		return nil, nil, fmt.Errorf("migrating the PostgreSQL database: %w", err)
	}
	return w, r, nil
}

// openPools opens the writer and the read pool (without migrating), and
// checks that the server answers.
func openPools(opts Options) (w, r *sql.DB, err error) {
	if opts.DSN == "" {
		return nil, nil, errors.New("postgres: no DSN")
	}
	minConns, maxConns := opts.MinConns, opts.MaxConns
	if maxConns == 0 {
		maxConns = DefaultMaxConns
	}
	if minConns == 0 {
		minConns = min(DefaultMinConns, maxConns-1)
	}
	if maxConns < 2 || minConns < 0 || minConns > maxConns {
		return nil, nil, fmt.Errorf("postgres: pool sizes min %d, max %d: need 0 <= min <= max and max >= 2 (one writer, one reader)", minConns, maxConns)
	}
	base, err := pgx.ParseConfig(opts.DSN)
	if err != nil {
		return nil, nil, fmt.Errorf("postgres: DSN: %w", err)
	}
	w = sql.OpenDB(newConnector(withParams(base, map[string]string{
		// The writer's transactions are READ COMMITTED (the default), like
		// every PostgreSQL application's: it sees other processes' commits
		// as they land, and the batch lock orders the writers.
		"default_transaction_isolation": "read committed",
	})))
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	r = sql.OpenDB(newConnector(withParams(base, map[string]string{
		"default_transaction_isolation": "repeatable read",
	})))
	r.SetMaxOpenConns(maxConns - 1)
	r.SetMaxIdleConns(max(minConns, 1))
	r.SetConnMaxLifetime(time.Hour) // lets connections follow a failover or a pooler's rebalancing
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		r.Close()
		return nil, nil, fmt.Errorf("postgres: connecting: %w", err)
	}
	if err := warm(ctx, r, minConns); err != nil {
		w.Close()
		r.Close()
		return nil, nil, fmt.Errorf("postgres: opening read connections: %w", err)
	}
	return w, r, nil
}

// warm opens n connections of db at once and returns them to its idle
// pool, so the first requests after start do not each pay a connection
// set-up (database/sql has no minimum pool size of its own).
func warm(ctx context.Context, db *sql.DB, n int) error {
	conns := make([]*sql.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := db.Conn(ctx)
		if err != nil {
			return err
		}
		conns = append(conns, c)
	}
	return nil
}
