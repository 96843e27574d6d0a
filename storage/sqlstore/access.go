package sqlstore

import "database/sql"

// Direct access for tools that copy tables between engines and for the
// conformance suite (storage/storagetest), which checks what was stored.
// Queries through these must be portable, as every query here is.

// Reader returns the read pool.
func (db *DB) Reader() *sql.DB { return db.r }

// Write runs fn in the writer's next group-commit transaction, in a
// savepoint of its own (fn's error rolls back only fn), and returns once
// that transaction is durable, or fn's or the commit's error.
func (db *DB) Write(fn func(tx *sql.Tx) error) error { return db.write(fn, nil) }

// Enqueue is Write without the wait: writes commit in the order they are
// enqueued, and the channel receives the result.
func (db *DB) Enqueue(fn func(tx *sql.Tx) error) <-chan error { return db.enqueue(fn, nil) }

// DropCaches forgets every cached event and state snapshot, so that reads
// go to the database as another process's would. (A change committed by
// another process will need the same for what it touched.)
func (db *DB) DropCaches() {
	db.events.clear()
	db.snapshots.clear()
}
