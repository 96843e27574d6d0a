// Package sqlite is the embedded storage engine: one SQLite file in WAL mode,
// written by a single goroutine that commits in groups, read by a pool.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	sqlite3 "github.com/mattn/go-sqlite3"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// DB is the SQLite store. It implements the storage interfaces that roomdag,
// api and sync declare.
type DB struct {
	w         *sql.DB // one connection, used only by the writer goroutine
	r         *sql.DB // read pool
	jobs      chan *job
	quit      chan struct{}
	done      chan struct{}
	log       *slog.Logger
	closed    sync.Once
	rooms     roomIndex
	events    *eventCache
	snapshots *snapshotCache

	// Owned by the writer goroutine (jobs run there).
	accountDataPos int64
	// failedGen records, per room, the newest write generation whose event
	// failed to persist; later queued events of that generation were built
	// on it and must fail too (see roomdag's pipelined write path).
	failedGen map[string]uint64

	// Allocated by the room write path under its room lock, so atomic.
	snapshotMu     sync.Mutex
	nextSnapshotID int64

	// erased is every erased user (ErasedUsers): loaded at Open, replaced
	// by a copy after each erasure commits. This process is the only
	// writer of the database, so it never goes stale.
	erased atomic.Pointer[map[roomdag.UserID]bool]
}

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

// maxBatch bounds how many queued writes share one transaction (group
// commit): enough to amortise the fsync, small enough to keep latency low.
const maxBatch = 256

// Open opens (creating if needed) the database at path and migrates it.
func Open(path string, log *slog.Logger) (*DB, error) {
	if err := createPrivate(path, log); err != nil {
		return nil, err
	}
	// synchronous=FULL: a commit is on disk before the request that waited
	// for it returns, even across power loss. Group commit pays for it.
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
	db := &DB{w: w, r: r, jobs: make(chan *job, 4*maxBatch), quit: make(chan struct{}), done: make(chan struct{}),
		log: log, failedGen: map[string]uint64{}, events: newLRU[roomdag.EventID, *roomdag.StoredEvent](eventCacheSize),
		snapshots: newLRU[int64, map[roomdag.StateKey]roomdag.EventID](snapshotCacheSize),
		rooms:     roomIndex{nids: map[roomdag.RoomID]int64{}, versions: map[int64]*roomdag.RoomVersion{}}}
	if err := w.QueryRow(`SELECT COALESCE(MAX(stream_pos), 0) FROM account_data`).Scan(&db.accountDataPos); err != nil {
		db.Close()
		return nil, err
	}
	if err := w.QueryRow(`SELECT COALESCE(MAX(snapshot_id), 0) FROM state_snapshots`).Scan(&db.nextSnapshotID); err != nil {
		db.Close()
		return nil, err
	}
	if err := db.loadErased(); err != nil {
		db.Close()
		return nil, err
	}
	go db.writer()
	return db, nil
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

// Close waits for queued writes to commit, then closes the database. Writes
// submitted after Close fail.
func (db *DB) Close() error {
	db.closed.Do(func() {
		close(db.quit)
		<-db.done
	})
	err1 := db.w.Close()
	err2 := db.r.Close()
	return errors.Join(err1, err2)
}

type job struct {
	fn    func(tx *sql.Tx) error
	after func() // run in commit order, after the commit, on the writer goroutine
	// failed runs on the writer goroutine when the job's changes were not
	// committed, before its result is sent.
	failed func()
	done   chan error
}

var errClosed = errors.New("storage: database is closed")

// write runs fn in a write transaction shared with other queued writes and
// returns once that transaction is durable. after, if not nil, runs once fn's
// changes are committed, before any later write's after: callers use it to
// announce new stream positions in order.
func (db *DB) write(fn func(tx *sql.Tx) error, after func()) error {
	return <-db.enqueue(fn, after)
}

// enqueue is write without the wait: writes are committed in the order they
// are enqueued.
func (db *DB) enqueue(fn func(tx *sql.Tx) error, after func()) <-chan error {
	return db.enqueueJob(&job{fn: fn, after: after})
}

func (db *DB) enqueueJob(j *job) <-chan error {
	j.done = make(chan error, 1)
	select {
	case db.jobs <- j:
	case <-db.quit:
		j.done <- errClosed
	}
	return j.done
}

func (db *DB) writer() {
	defer close(db.done)
	batch := make([]*job, 0, maxBatch)
	for {
		var first *job
		select {
		case first = <-db.jobs:
		case <-db.quit:
			// Drain what was accepted before Close: no accepted write is lost.
			for {
				select {
				case j := <-db.jobs:
					db.commit([]*job{j})
				default:
					return
				}
			}
		}
		batch = append(batch[:0], first)
	fill:
		for len(batch) < maxBatch {
			select {
			case j := <-db.jobs:
				batch = append(batch, j)
			default:
				break fill
			}
		}
		db.commit(batch)
	}
}

// commit runs a batch in one transaction. Each job runs inside a savepoint
// so one job's error does not undo the others.
func (db *DB) commit(batch []*job) {
	errs := make([]error, len(batch))
	fail := func(err error) {
		for _, j := range batch {
			if j.failed != nil {
				j.failed()
			}
			j.done <- err
		}
	}
	tx, err := db.w.Begin()
	if err != nil {
		fail(err)
		return
	}
	for i, j := range batch {
		if _, err := tx.Exec(`SAVEPOINT job`); err != nil {
			tx.Rollback()
			fail(err)
			return
		}
		if errs[i] = j.fn(tx); errs[i] != nil {
			if _, err := tx.Exec(`ROLLBACK TO job`); err != nil {
				tx.Rollback()
				fail(err)
				return
			}
		}
		if _, err := tx.Exec(`RELEASE job`); err != nil {
			tx.Rollback()
			fail(err)
			return
		}
	}
	if err := tx.Commit(); err != nil {
		db.log.Error("commit failed", "err", err, "writes", len(batch))
		fail(err)
		return
	}
	for i, j := range batch {
		switch {
		case errs[i] != nil && j.failed != nil:
			j.failed()
		case errs[i] == nil && j.after != nil:
			j.after()
		}
		j.done <- errs[i]
	}
}

// isUniqueViolation reports whether err is SQLite's unique-constraint error.
func isUniqueViolation(err error) bool {
	var se sqlite3.Error
	return errors.As(err, &se) && se.ExtendedCode == sqlite3.ErrConstraintUnique ||
		errors.As(err, &se) && se.ExtendedCode == sqlite3.ErrConstraintPrimaryKey
}

// notFound maps sql.ErrNoRows to storage.ErrNotFound.
func notFound(err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return storage.ErrNotFound
	}
	return err
}

// readTx runs fn on a read snapshot, so several queries see one state.
func (db *DB) readTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := db.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	defer tx.Rollback()
	return fn(tx)
}
