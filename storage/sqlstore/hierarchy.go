package sqlstore

import (
	"context"
	"database/sql"

	"github.com/persistentchat/homeserver/roomdag"
)

// Space hierarchy walks (api/hierarchy.go) live in the database rather
// than in one process's memory: the next page of a /hierarchy walk may be
// asked of another process than the one that answered the last.

// PutHierarchySession stores a walk under token for user until expiresMS
// and, in the same transaction, forgets every walk expired at nowMS and
// the user's oldest beyond maxPerUser.
func (db *DB) PutHierarchySession(ctx context.Context, token string, user roomdag.UserID, walk []byte, expiresMS, nowMS int64, maxPerUser int) error {
	return db.write(func(tx *sql.Tx) error {
		if _, err := tx.Exec(`DELETE FROM hierarchy_sessions WHERE expires_ms <= ?`, nowMS); err != nil {
			return err
		}
		if _, err := tx.Exec(`INSERT INTO hierarchy_sessions (token, user_id, walk, expires_ms) VALUES (?, ?, ?, ?)`,
			token, string(user), string(walk), expiresMS); err != nil {
			return err
		}
		_, err := tx.Exec(`DELETE FROM hierarchy_sessions WHERE user_id = ? AND token NOT IN
			(SELECT token FROM hierarchy_sessions WHERE user_id = ? ORDER BY expires_ms DESC, token LIMIT ?)`,
			string(user), string(user), maxPerUser)
		return err
	}, nil)
}

// HierarchySession returns the walk stored under token and whose it is,
// unless it is unknown or expired at nowMS (storage.ErrNotFound).
func (db *DB) HierarchySession(ctx context.Context, token string, nowMS int64) (roomdag.UserID, []byte, error) {
	var user, walk string
	err := db.r.QueryRowContext(ctx, `SELECT user_id, walk FROM hierarchy_sessions WHERE token = ? AND expires_ms > ?`,
		token, nowMS).Scan(&user, &walk)
	if err != nil {
		return "", nil, notFound(err)
	}
	return roomdag.UserID(user), []byte(walk), nil
}
