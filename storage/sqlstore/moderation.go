package sqlstore

import (
	"context"
	"database/sql"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// SetUserLocked locks or unlocks an account (spec: "Account locking");
// storage.ErrNotFound if there is no such user.
func (db *DB) SetUserLocked(ctx context.Context, user roomdag.UserID, locked bool) error {
	return db.setUserFlag(user, `UPDATE users SET locked = ? WHERE user_id = ?`, locked)
}

// SetUserSuspended suspends or unsuspends an account (spec: "Account
// suspension"); storage.ErrNotFound if there is no such user.
func (db *DB) SetUserSuspended(ctx context.Context, user roomdag.UserID, suspended bool) error {
	return db.setUserFlag(user, `UPDATE users SET suspended = ? WHERE user_id = ?`, suspended)
}

func (db *DB) setUserFlag(user roomdag.UserID, query string, on bool) error {
	return db.write(func(tx *sql.Tx) error {
		res, err := tx.Exec(query, on, string(user))
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return storage.ErrNotFound
		}
		return nil
	}, nil)
}
