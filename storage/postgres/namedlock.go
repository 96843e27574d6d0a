package postgres

import (
	"context"
	"database/sql"
)

// namedLockClass is the first key of the two-key advisory locks that
// sqlstore.DB.Exclusive takes ("hsex" in ASCII). PostgreSQL keeps the
// two-key locks apart from the one-key ones (batchLockKey,
// migrateLockKey), so they cannot collide.
const namedLockClass int32 = 0x68736578

// LockName takes the session-level advisory lock on key for c's session,
// waiting for the process that holds it (sqlstore.NamedLocker).
func (Dialect) LockName(ctx context.Context, c *sql.Conn, key int32) error {
	_, err := c.ExecContext(ctx, `SELECT pg_advisory_lock(?, ?)`, namedLockClass, key)
	return err
}

// UnlockName releases what LockName took.
func (Dialect) UnlockName(ctx context.Context, c *sql.Conn, key int32) error {
	_, err := c.ExecContext(ctx, `SELECT pg_advisory_unlock(?, ?)`, namedLockClass, key)
	return err
}
