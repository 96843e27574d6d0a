// Package sqlstore is the engine-neutral SQL storage layer: every query and
// storage algorithm (the group-commit writer, state snapshots, notification
// totals, relations, search paging and ranking, caches), written once in SQL
// that SQLite and PostgreSQL both run. An engine (storage/sqlite,
// storage/postgres) opens the connections, migrates its schema and supplies
// a Dialect for the little that differs.
package sqlstore

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// DB is the SQL store. It implements the storage interfaces that roomdag,
// api and sync declare.
type DB struct {
	w         *sql.DB // one connection, used only by the writer goroutine
	r         *sql.DB // read pool
	locks     *sql.DB // Exclusive's sessions, if the engine has a pool for them (UseLockPool)
	d         Dialect
	jobs      chan *job
	quit      chan struct{}
	done      chan struct{}
	log       *slog.Logger
	closed    sync.Once
	rooms     roomIndex
	events    *eventCache
	snapshots *snapshotCache

	// Owned by the writer goroutine (jobs run there).
	ctr counters
	// failedGen records, per room, the newest write generation whose event
	// failed to persist; later queued events of that generation were built
	// on it and must fail too (see roomdag's pipelined write path).
	failedGen map[string]uint64

	// State snapshot IDs, allocated by the room write path under its
	// room lock, outside the writer (NewSnapshotID). With one writing
	// process, lastSnapshotID is the last one used (loaded at New);
	// with several, [nextSnapshotID, endSnapshotID) is what is left of
	// the block reserved from the database.
	snapshotMu     sync.Mutex
	lastSnapshotID int64
	nextSnapshotID int64
	endSnapshotID  int64

	// erased is every erased user (ErasedUsers): loaded at Open, replaced
	// by a copy after each erasure commits here, and reloaded
	// (ReloadErased) when another process sharing the database erased
	// someone.
	erased atomic.Pointer[map[roomdag.UserID]bool]

	// change is what the job running now changed (jobs record into it;
	// owned by the writer goroutine); commit merges it into the batch's
	// change when the job's savepoint is released.
	change storage.Change
	// origin names this process in the changes it announces to the other
	// processes sharing the database, so that each skips its own.
	origin string
	// onCommit hears of every committed batch's change (SetCommitHook).
	onCommit atomic.Pointer[func(*storage.Change)]
	// keep says whether redactions keep their target's original JSON for
	// the compliance archive (compliance.go).
	keep keepUnredacted
	// betweenDAGReads is BetweenDAGReads's hook (tests).
	betweenDAGReads func()
}

// CommitAnnouncer is implemented by an engine whose database other
// processes share (PostgreSQL): AnnounceCommit runs last in each writer
// transaction that changed something readers must hear of, with the
// change's wire form (storage.EncodeChange), so that the announcement is
// delivered when, and only if, the transaction commits, in commit order.
// SQLite has one process and does not implement it.
type CommitAnnouncer interface {
	AnnounceCommit(tx *sql.Tx, payload string) error
}

// SetCommitHook makes fn hear of the change of every batch that commits
// from now on, on the writer goroutine, in commit order, before any of the
// batch's writes returns. Set it once, before the server serves requests;
// fn must not block or write.
func (db *DB) SetCommitHook(fn func(*storage.Change)) { db.onCommit.Store(&fn) }

// Origin names this process in the changes it announces.
func (db *DB) Origin() string { return db.origin }

// maxBatch bounds how many queued writes share one transaction (group
// commit): enough to amortise the fsync, small enough to keep latency low.
const maxBatch = 256

// New wraps an opened, migrated database: w is the writer's connection
// (the caller limits it to one open connection: every write goes through
// the writer goroutine), r the read pool, d the engine's dialect. It loads
// the counters and the erased users and starts the writer; Close closes
// both pools.
func New(w, r *sql.DB, d Dialect, log *slog.Logger) (*DB, error) {
	db := &DB{w: w, r: r, d: d, jobs: make(chan *job, 4*maxBatch), quit: make(chan struct{}), done: make(chan struct{}),
		log: log, failedGen: map[string]uint64{}, events: newLRU[roomdag.EventID, *roomdag.StoredEvent](eventCacheSize),
		snapshots: newLRU[int64, map[roomdag.StateKey]roomdag.EventID](snapshotCacheSize),
		rooms:     roomIndex{nids: map[roomdag.RoomID]int64{}, versions: map[int64]*roomdag.RoomVersion{}},
		origin:    rand.Text()[:12]}
	if err := db.ctr.load(context.Background(), w); err != nil {
		return nil, errors.Join(err, w.Close(), r.Close())
	}
	if !d.ConcurrentWriters() {
		if err := w.QueryRow(`SELECT COALESCE(MAX(snapshot_id), 0) FROM state_snapshots`).Scan(&db.lastSnapshotID); err != nil {
			return nil, errors.Join(err, w.Close(), r.Close())
		}
	}
	if err := db.loadErased(); err != nil {
		return nil, errors.Join(err, w.Close(), r.Close())
	}
	go db.writer()
	return db, nil
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
	var err3 error
	if db.locks != nil {
		err3 = db.locks.Close()
	}
	return errors.Join(err1, err2, err3)
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
// so one job's error does not undo the others. The counters follow the
// transaction: what a rolled-back job (or a failed commit) allocated is
// given back, as a rolled-back rowid would be, so positions have no gaps
// and an allocated room NID is never cached for a room that was not stored.
//
// Why no reader ever sees position N+1 before N has committed, with any
// number of processes writing one database: positions are allocated only
// here, inside a batch, and every batch of every process runs under one
// lock that Dialect.BeginBatch takes first (SQLite: the database's write
// lock; PostgreSQL: one cluster-wide pg_advisory_xact_lock). A batch
// therefore begins only after the previous holder's transaction ended,
// and PostgreSQL releases a transaction's locks only after its commit is
// visible to every new snapshot (ProcArrayEndTransaction runs before the
// lock release in CommitTransaction), so our counter reload, a READ
// COMMITTED statement run after the lock was granted, sees every position
// allocated before ours and we allocate above all of them. Batches thus
// commit one at a time in position order: when a batch holding N+1 is
// visible, so is every batch holding lower positions, and a reader's
// snapshot (or single statement) that sees N+1 sees all of 1..N too. The
// positions within one batch become visible together, at its commit.
// Writes that take no stream position may bypass the lock; anything that
// allocates positions must come through here.
func (db *DB) commit(batch []*job) {
	errs := make([]error, len(batch))
	start := db.ctr
	var change storage.Change
	fail := func(err error) {
		db.ctr = start
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
	if err := db.d.BeginBatch(tx); err != nil {
		tx.Rollback()
		fail(err)
		return
	}
	if db.d.ConcurrentWriters() {
		// Other processes may have written since our last batch: only
		// now, under the lock, is what they allocated final.
		if err := db.ctr.load(context.Background(), tx); err != nil {
			tx.Rollback()
			fail(err)
			return
		}
	}
	start = db.ctr
	for i, j := range batch {
		if _, err := tx.Exec(`SAVEPOINT job`); err != nil {
			tx.Rollback()
			fail(err)
			return
		}
		before := db.ctr
		db.change = storage.Change{}
		if errs[i] = j.fn(tx); errs[i] != nil {
			db.ctr = before
			if _, err := tx.Exec(`ROLLBACK TO SAVEPOINT job`); err != nil {
				tx.Rollback()
				fail(err)
				return
			}
		}
		if _, err := tx.Exec(`RELEASE SAVEPOINT job`); err != nil {
			tx.Rollback()
			fail(err)
			return
		}
		if errs[i] == nil {
			change.Merge(&db.change)
		}
	}
	if a, ok := db.d.(CommitAnnouncer); ok && !change.Empty() {
		if err := a.AnnounceCommit(tx, storage.EncodeChange(db.origin, &change)); err != nil {
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
	if fn := db.onCommit.Load(); fn != nil && !change.Empty() {
		(*fn)(&change)
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

// NowAnnouncer is implemented by an engine whose database other processes
// share: AnnounceNow sends payload to them at once, outside any writer
// transaction (for what is not stored: typing).
type NowAnnouncer interface {
	AnnounceNow(ctx context.Context, r *sql.DB, payload string) error
}

// Shared reports whether other processes may share the database, so that
// changes must be announced to them (the engine announces commits).
func (db *DB) Shared() bool {
	_, ok := db.d.(CommitAnnouncer)
	return ok
}

// AnnounceNow sends payload to the other processes sharing the database;
// it does nothing on an engine no other process shares.
func (db *DB) AnnounceNow(ctx context.Context, payload string) error {
	if a, ok := db.d.(NowAnnouncer); ok {
		return a.AnnounceNow(ctx, db.r, payload)
	}
	return nil
}

// ReloadErased re-reads the erased users, after another process sharing
// the database erased someone.
func (db *DB) ReloadErased(ctx context.Context) error {
	ids, err := queryStrings(ctx, db.r, `SELECT user_id FROM users WHERE erased = 1`)
	if err != nil {
		return err
	}
	m := make(map[roomdag.UserID]bool, len(ids))
	for _, id := range ids {
		m[roomdag.UserID(id)] = true
	}
	db.erased.Store(&m)
	return nil
}

// ForgetEvent drops an event from the cache, after another process
// sharing the database redacted it.
func (db *DB) ForgetEvent(id roomdag.EventID) { db.events.remove(id) }

// StreamHeads is the newest committed position of each stream, read in
// one query: events, account data, receipts, presence, the
// notification worker's event position, and to-device messages.
func (db *DB) StreamHeads(ctx context.Context) (storage.StreamHeads, error) {
	var h storage.StreamHeads
	err := db.r.QueryRowContext(ctx, `SELECT
		(SELECT COALESCE(MAX(stream_pos), 0) FROM events),
		(SELECT COALESCE(MAX(stream_pos), 0) FROM account_data),
		(SELECT COALESCE(MAX(stream_pos), 0) FROM receipts),
		(SELECT COALESCE(MAX(stream_pos), 0) FROM presence),
		(SELECT event_pos FROM notify_position WHERE id = 1),
		(SELECT pos FROM to_device_position WHERE id = 1),
		(SELECT COALESCE(MAX(stream_pos), 0) FROM device_lists)`).Scan(&h.Events, &h.AccountData, &h.Receipts, &h.Presence, &h.Notifications,
		&h.ToDevice, &h.DeviceLists)
	return h, err
}
