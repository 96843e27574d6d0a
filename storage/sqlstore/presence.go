package sqlstore

import (
	"context"
	"database/sql"
	"strings"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// Presence storage (sync.PresenceStore): one row per user in the presence
// table, each change given the next position in the presence stream.

// PutPresence stores p (its Pos is ignored) as the user's presence and
// returns the change's position in the presence stream, once durable.
func (db *DB) PutPresence(ctx context.Context, p storage.Presence) (int64, error) {
	var pos int64
	err := db.write(func(tx *sql.Tx) error {
		// Only the writer assigns positions and rows only move up, so
		// MAX+1 is the next free one (an index lookup).
		if err := tx.QueryRow(`SELECT COALESCE(MAX(stream_pos), 0) + 1 FROM presence`).Scan(&pos); err != nil {
			return err
		}
		_, err := tx.Exec(`INSERT INTO presence (user_id, state, status_msg, last_active_ts, stream_pos) VALUES (?,?,?,?,?)
			ON CONFLICT (user_id) DO UPDATE SET state = excluded.state, status_msg = excluded.status_msg,
				last_active_ts = excluded.last_active_ts, stream_pos = excluded.stream_pos`,
			string(p.UserID), p.State, p.StatusMsg, p.LastActiveMS, pos)
		if err == nil {
			db.change.Presence = append(db.change.Presence, storage.UserPos{User: p.UserID, Pos: pos})
		}
		return err
	}, nil)
	if err != nil {
		return 0, err
	}
	return pos, nil
}

// Presence returns a user's stored presence, or storage.ErrNotFound if it
// was never set.
func (db *DB) Presence(ctx context.Context, user roomdag.UserID) (storage.Presence, error) {
	p := storage.Presence{UserID: user}
	err := db.r.QueryRowContext(ctx, `SELECT state, status_msg, last_active_ts, stream_pos FROM presence WHERE user_id = ?`,
		string(user)).Scan(&p.State, &p.StatusMsg, &p.LastActiveMS, &p.Pos)
	if err != nil {
		return storage.Presence{}, notFound(err)
	}
	return p, nil
}

// PresenceOf returns the stored presence of those of users who have one,
// in no particular order.
func (db *DB) PresenceOf(ctx context.Context, users []roomdag.UserID) ([]storage.Presence, error) {
	var out []storage.Presence
	for len(users) > 0 {
		n := min(len(users), 500) // well below SQLite's variable limit
		args := make([]any, n)
		for i, u := range users[:n] {
			args[i] = string(u)
		}
		users = users[n:]
		rows, err := db.r.QueryContext(ctx, `SELECT user_id, state, status_msg, last_active_ts, stream_pos FROM presence
			WHERE user_id IN (?`+strings.Repeat(",?", n-1)+`)`, args...)
		if err != nil {
			return nil, err
		}
		ps, err := scanPresence(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, ps...)
	}
	return out, nil
}

// PresenceSince returns the presence rows whose last change is in
// (after, upTo] of the presence stream, oldest change first.
func (db *DB) PresenceSince(ctx context.Context, after, upTo int64) ([]storage.Presence, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT user_id, state, status_msg, last_active_ts, stream_pos FROM presence
		WHERE stream_pos > ? AND stream_pos <= ? ORDER BY stream_pos`, after, upTo)
	if err != nil {
		return nil, err
	}
	return scanPresence(rows)
}

// scanPresence reads presence rows and closes them.
func scanPresence(rows *sql.Rows) ([]storage.Presence, error) {
	defer rows.Close()
	var out []storage.Presence
	for rows.Next() {
		var p storage.Presence
		var user string
		if err := rows.Scan(&user, &p.State, &p.StatusMsg, &p.LastActiveMS, &p.Pos); err != nil {
			return nil, err
		}
		p.UserID = roomdag.UserID(user)
		out = append(out, p)
	}
	return out, rows.Err()
}

// PresencePos is the newest position of the presence stream.
func (db *DB) PresencePos(ctx context.Context) (int64, error) {
	var pos int64
	err := db.r.QueryRowContext(ctx, `SELECT COALESCE(MAX(stream_pos), 0) FROM presence`).Scan(&pos)
	return pos, err
}

// RoomPeers returns the users who share a room with user, both joined,
// user included if they are joined anywhere: whose presence user sees.
func (db *DB) RoomPeers(ctx context.Context, user roomdag.UserID) (map[roomdag.UserID]bool, error) {
	ids, err := queryStrings(ctx, db.r, `SELECT DISTINCT b.user_id FROM memberships a
		JOIN memberships b ON b.room_nid = a.room_nid AND b.membership = 'join'
		WHERE a.user_id = ? AND a.membership = 'join'`, string(user))
	out := make(map[roomdag.UserID]bool, len(ids))
	for _, id := range ids {
		out[roomdag.UserID(id)] = true
	}
	return out, err
}

// SharesRoom reports whether users a and b are both joined to some room.
func (db *DB) SharesRoom(ctx context.Context, a, b roomdag.UserID) (bool, error) {
	var one int
	err := db.r.QueryRowContext(ctx, `SELECT 1 FROM memberships x
		JOIN memberships y ON y.room_nid = x.room_nid AND y.user_id = ? AND y.membership = 'join'
		WHERE x.user_id = ? AND x.membership = 'join' LIMIT 1`, string(b), string(a)).Scan(&one)
	if err == sql.ErrNoRows {
		return false, nil
	}
	return err == nil, err
}
