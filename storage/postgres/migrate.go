package postgres

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
)

// Migrations are numbered and forward-only, as SQLite's: schema_version
// holds how many have run, and each of the rest runs in a transaction of
// its own together with the update of that count, so a failure leaves the
// database at the last migration that completed. PostgreSQL's DDL is
// transactional, so a migration is all or nothing.
//
// Several processes may start together against one database: the runner
// holds a session-level advisory lock (migrateLockKey) from reading the
// version to the last commit, so one process migrates and the others,
// once they get the lock, find nothing left to do.

// migrateLockKey is the advisory lock key of the migration runner. It is
// an arbitrary constant ("hsmigrat" in ASCII) that must differ from the
// other advisory keys of this package (batchLockKey).
const migrateLockKey int64 = 0x68736d6967726174

func migrate(ctx context.Context, w *sql.DB, migrations []string, log *slog.Logger) error {
	c, err := w.Conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.ExecContext(ctx, `SELECT pg_advisory_lock(?)`, migrateLockKey); err != nil {
		return fmt.Errorf("taking the migration lock: %w", err)
	}
	// The session lock outlives a failed transaction; release it whatever
	// happens (closing the connection would release it too).
	defer c.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(?)`, migrateLockKey)
	if _, err := c.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
		id      INTEGER PRIMARY KEY CHECK (id = 1),
		version INTEGER NOT NULL
	)`); err != nil {
		return err
	}
	if _, err := c.ExecContext(ctx, `INSERT INTO schema_version (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING`); err != nil {
		return err
	}
	var have int
	if err := c.QueryRowContext(ctx, `SELECT version FROM schema_version WHERE id = 1`).Scan(&have); err != nil {
		return err
	}
	if have > len(migrations) {
		return fmt.Errorf("the database's schema is at version %d, newer than this build's %d: run a newer build", have, len(migrations))
	}
	for i := have; i < len(migrations); i++ {
		if err := migrateOne(ctx, c, i+1, migrations[i]); err != nil {
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
		log.Info("database migrated", "engine", "postgres", "version", i+1)
	}
	return nil
}

func migrateOne(ctx context.Context, c *sql.Conn, version int, migration string) error {
	tx, err := c.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	// A migration that rewrites a large table may take longer than a
	// request's statement timeout.
	if _, err := tx.ExecContext(ctx, `SET LOCAL statement_timeout = 0`); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, migration); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE schema_version SET version = ? WHERE id = 1`, version); err != nil {
		return err
	}
	return tx.Commit()
}
