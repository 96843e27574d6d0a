// Package sqlite is the embedded storage engine: one SQLite file in WAL
// mode, written by sqlstore's single writer goroutine (which commits in
// groups), read by a pool. It holds only what is SQLite's own: the driver
// and its connection settings, the schema and its migration runner
// (PRAGMA user_version), and the dialect (errors, JSON, FTS4 search); every
// query and algorithm lives in storage/sqlstore.
package sqlite

import (
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"

	sqlite3 "github.com/mattn/go-sqlite3"

	"github.com/persistentchat/homeserver/storage/sqlstore"
)

// driverName is go-sqlite3 with our per-connection settings: temporary
// b-trees (IN lists, materialised subqueries, sorts) in memory rather
// than in temporary files, which cost tens of microseconds per query.
const driverName = "sqlite3_homeserver"

func init() {
	sql.Register(driverName, &sqlite3.SQLiteDriver{ConnectHook: func(c *sqlite3.SQLiteConn) error {
		_, err := c.Exec("PRAGMA temp_store = memory", nil)
		return err
	}})
}

// Open opens (creating if needed) the database at path and migrates it.
func Open(path string, log *slog.Logger) (*sqlstore.DB, error) {
	if err := createPrivate(path, log); err != nil {
		return nil, err
	}
	// synchronous=FULL: a commit is on disk before the request that waited
	// for it returns, even across power loss. Group commit pays for it.
	// _txlock=immediate: the writer's transactions take SQLite's write
	// lock at BEGIN, so Dialect.BeginBatch has nothing to do.
	// _stmt_cache_size: the driver keeps prepared statements per
	// connection; preparing costs more than running most of our queries.
	dsn := "file:" + path + "?_journal_mode=WAL&_synchronous=FULL&_busy_timeout=10000&_txlock=immediate&_foreign_keys=off&_stmt_cache_size=256"
	w, err := sql.Open(driverName, dsn)
	if err != nil {
		return nil, err
	}
	w.SetMaxOpenConns(1)
	w.SetConnMaxLifetime(0)
	if err := migrate(w); err != nil {
		w.Close()
		return nil, fmt.Errorf("migrating %s: %w", path, err)
	}
	r, err := sql.Open(driverName, "file:"+path+"?_journal_mode=WAL&_busy_timeout=10000&_query_only=true&_stmt_cache_size=256")
	if err != nil {
		w.Close()
		return nil, err
	}
	r.SetMaxOpenConns(8)
	r.SetMaxIdleConns(8)
	return sqlstore.New(w, r, dialect{}, log)
}

// createPrivate creates the database file, readable and writable by its
// owner only, before SQLite opens it: it holds password hashes, tokens'
// hashes and every message, and SQLite would create it 0644 (less the
// umask). SQLite gives the -wal and -shm files it creates beside the
// database the database's mode, so they follow. An existing file keeps
// its mode (the operator may have chosen it), with a warning if others may
// read it.
func createPrivate(path string, log *slog.Logger) error {
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") {
		return nil
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		return f.Close()
	}
	if !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("the database file may be read by other users; chmod 600 it (and its -wal and -shm files)",
			"path", path, "mode", fi.Mode().Perm().String())
	}
	return nil
}

func migrate(w *sql.DB) error {
	var have int
	if err := w.QueryRow(`PRAGMA user_version`).Scan(&have); err != nil {
		return err
	}
	for i := have; i < len(migrations); i++ {
		tx, err := w.Begin()
		if err != nil {
			return err
		}
		if _, err := tx.Exec(migrations[i]); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
		if _, err := tx.Exec(fmt.Sprintf(`PRAGMA user_version = %d`, i+1)); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}
