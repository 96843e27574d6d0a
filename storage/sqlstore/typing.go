package sqlstore

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"slices"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// Typing storage (sync.TypingStore), used where several processes share
// the database: one row per room and user, each change given the next
// position of the typing stream. On a database that one process has to
// itself typing stays in memory (sync/typing.go) and these are unused.

// PutTyping stores that user types in room until expiresMS, or, with
// expiresMS 0, stopped, and returns the change's position in the typing
// stream, once durable. The change is announced with the batch
// (storage.Change.Typing).
func (db *DB) PutTyping(ctx context.Context, room roomdag.RoomID, user roomdag.UserID, expiresMS int64) (int64, error) {
	var pos int64
	err := db.write(func(tx *sql.Tx) error {
		// As PutPresence: the writer alone assigns positions (on
		// PostgreSQL under the lock that orders every process's
		// batches), so MAX+1 is the next free one, and positions are
		// dense and in commit order.
		if err := tx.QueryRow(`SELECT COALESCE(MAX(stream_pos), 0) + 1 FROM typing`).Scan(&pos); err != nil {
			return err
		}
		_, err := tx.Exec(`INSERT INTO typing (room_id, user_id, expires_ms, stream_pos) VALUES (?,?,?,?)
			ON CONFLICT (room_id, user_id) DO UPDATE SET expires_ms = excluded.expires_ms, stream_pos = excluded.stream_pos`,
			string(room), string(user), expiresMS, pos)
		if err == nil {
			db.change.Typing = append(db.change.Typing, storage.TypingRow{Room: room, User: user, ExpiresMS: expiresMS, Pos: pos})
		}
		return err
	}, nil)
	if err != nil {
		return 0, err
	}
	return pos, nil
}

// ExpireTyping stores that user stopped typing in room if their stored
// notification has run out at nowMS, and reports whether it did: every
// process sweeps the notifications it knows, and the first to store the
// expiry makes the one change the others then hear of.
func (db *DB) ExpireTyping(ctx context.Context, room roomdag.RoomID, user roomdag.UserID, nowMS int64) (bool, error) {
	changed := false
	err := db.write(func(tx *sql.Tx) error {
		var expires int64
		err := tx.QueryRow(`SELECT expires_ms FROM typing WHERE room_id = ? AND user_id = ?`, string(room), string(user)).Scan(&expires)
		if errors.Is(err, sql.ErrNoRows) || (err == nil && (expires == 0 || expires > nowMS)) {
			return nil // stopped, or renewed meanwhile
		}
		if err != nil {
			return err
		}
		var pos int64
		if err := tx.QueryRow(`SELECT COALESCE(MAX(stream_pos), 0) + 1 FROM typing`).Scan(&pos); err != nil {
			return err
		}
		if _, err := tx.Exec(`UPDATE typing SET expires_ms = 0, stream_pos = ? WHERE room_id = ? AND user_id = ?`,
			pos, string(room), string(user)); err != nil {
			return err
		}
		db.change.Typing = append(db.change.Typing, storage.TypingRow{Room: room, User: user, Pos: pos})
		changed = true
		return nil
	}, nil)
	return changed, err
}

// TypingSince returns the rows whose last change is above after, oldest
// change first, and the newest position of the typing stream, read in one
// statement (one snapshot): every change up to it is in the rows or
// overwritten by one of them.
func (db *DB) TypingSince(ctx context.Context, after int64) ([]storage.TypingRow, int64, error) {
	// The last row of the union is the head, marked by its empty room.
	rows, err := db.r.QueryContext(ctx, `SELECT room_id, user_id, expires_ms, stream_pos FROM typing WHERE stream_pos > ?
		UNION ALL SELECT '', '', 0, COALESCE(MAX(stream_pos), 0) FROM typing`, after)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	var out []storage.TypingRow
	var head int64
	for rows.Next() {
		var t storage.TypingRow
		var room, user string
		if err := rows.Scan(&room, &user, &t.ExpiresMS, &t.Pos); err != nil {
			return nil, 0, err
		}
		if room == "" {
			head = t.Pos
			continue
		}
		t.Room, t.User = roomdag.RoomID(room), roomdag.UserID(user)
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, err
	}
	slices.SortFunc(out, func(a, b storage.TypingRow) int { return cmp.Compare(a.Pos, b.Pos) })
	return out, head, nil
}
