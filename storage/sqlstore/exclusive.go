package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"hash/fnv"
)

// NamedLocker is a dialect whose database several processes share: it
// takes and releases a session-level lock on a key, which waits while any
// session (of any process) holds it (PostgreSQL advisory locks).
type NamedLocker interface {
	LockName(ctx context.Context, c *sql.Conn, key int32) error
	UnlockName(ctx context.Context, c *sql.Conn, key int32) error
}

// Exclusive runs fn while no other process sharing the database runs an
// Exclusive of the same name: a check-then-create that must happen once
// across processes (a user's server notices room). Names that hash alike
// exclude each other too, which only costs waiting. Where one process has
// the database to itself it runs fn at once. Either way the caller
// serialises its own goroutines (a mutex around the call): each call waits
// holding a connection, so many waiting in one process could starve the
// holder of one. fn must not call Exclusive.
func (db *DB) Exclusive(ctx context.Context, name string, fn func() error) error {
	l, ok := db.d.(NamedLocker)
	if !ok {
		return fn()
	}
	h := fnv.New32a()
	h.Write([]byte(name))
	key := int32(h.Sum32())
	// A connection holds the lock for fn's duration: the lock belongs to
	// its session. The engine's lock pool's if it has one, so that fn's
	// reads and the writes it waits for never wait for the connection
	// it holds.
	pool := db.r
	if db.locks != nil {
		pool = db.locks
	}
	c, err := pool.Conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := l.LockName(ctx, c, key); err != nil {
		return err
	}
	defer func() {
		if err := l.UnlockName(context.WithoutCancel(ctx), c, key); err != nil {
			// The session may hold the lock still: do not give it back
			// to the pool.
			_ = c.Raw(func(any) error { return driver.ErrBadConn })
			db.log.Error("releasing a named lock", "name", name, "err", err)
		}
	}()
	return fn()
}

// UseLockPool gives Exclusive a pool of its own for the connections that
// hold its locks (instead of the read pool's); Close closes it. Call it
// before the DB is shared.
func (db *DB) UseLockPool(p *sql.DB) { db.locks = p }
