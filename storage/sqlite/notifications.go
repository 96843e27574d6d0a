package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// The notification pipeline's tables (see the migration): the worker's
// position in the event stream and the notifications it wrote.

// NotifyPos is the newest event stream position the notification worker
// has processed.
func (db *DB) NotifyPos(ctx context.Context) (roomdag.StreamPos, error) {
	var p int64
	err := db.r.QueryRowContext(ctx, `SELECT event_pos FROM notify_position WHERE id = 1`).Scan(&p)
	return roomdag.StreamPos(p), err
}

// NotifyEvents returns up to limit committed events after pos, in stream
// order. Stream positions are assigned by the single writer in commit
// order, so what a reader sees is always a prefix of the stream.
func (db *DB) NotifyEvents(ctx context.Context, after roomdag.StreamPos, limit int) ([]storage.NotifyEvent, error) {
	epoch := db.events.currentEpoch()
	rows, err := db.r.QueryContext(ctx, `SELECT `+eventCols+`, e.state_after FROM events e
		WHERE e.stream_pos > ? ORDER BY e.stream_pos LIMIT ?`, int64(after), limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []storage.NotifyEvent
	for rows.Next() {
		var stateAfter int64
		ev, err := db.scanEvent(stateAfterScanner{rows, &stateAfter}, epoch)
		if err != nil {
			return nil, err
		}
		out = append(out, storage.NotifyEvent{StoredEvent: ev, StateAfter: stateAfter})
	}
	return out, rows.Err()
}

// stateAfterScanner adds the state_after column to an event row scan.
type stateAfterScanner struct {
	rows *sql.Rows
	dst  *int64
}

func (s stateAfterScanner) Scan(dest ...any) error { return s.rows.Scan(append(dest, s.dst)...) }

// PushRulesChangedSince lists the users whose push rules changed after
// account data position after (their m.push_rules account data moved),
// and the newest such position (after when none).
func (db *DB) PushRulesChangedSince(ctx context.Context, after int64) ([]roomdag.UserID, int64, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT user_id, stream_pos FROM account_data
		WHERE type = 'm.push_rules' AND stream_pos > ?`, after)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	var users []roomdag.UserID
	upTo := after
	for rows.Next() {
		var u string
		var p int64
		if err := rows.Scan(&u, &p); err != nil {
			return nil, 0, err
		}
		users = append(users, roomdag.UserID(u))
		upTo = max(upTo, p)
	}
	return users, upTo, rows.Err()
}

// errNotifyMoved: the stored worker position is not where the caller
// started, so another worker wrote in between.
var errNotifyMoved = errors.New("storage: the notification position moved under the worker")

// PutNotifications stores the notifications for the events in (from, to]
// and moves the worker's position from from to to, in one transaction: a
// crash leaves either both or neither. It fails, changing nothing, if the
// stored position is not from.
func (db *DB) PutNotifications(ctx context.Context, from, to roomdag.StreamPos, ns []storage.Notification) error {
	return db.write(func(tx *sql.Tx) error {
		var cur int64
		if err := tx.QueryRow(`SELECT event_pos FROM notify_position WHERE id = 1`).Scan(&cur); err != nil {
			return err
		}
		if cur != int64(from) {
			return fmt.Errorf("%w: at %d, expected %d", errNotifyMoved, cur, from)
		}
		// Many rows per statement: in a big room an event notifies every
		// member, and the per-statement cost (cgo, bind, step) dominates.
		const perInsert = 100
		for len(ns) > 0 {
			chunk := ns[:min(len(ns), perInsert)]
			ns = ns[len(chunk):]
			args := make([]any, 0, 6*len(chunk))
			for _, n := range chunk {
				args = append(args, string(n.User), int64(n.EventPos), string(n.Room), string(n.Actions), n.Highlight, n.TS)
			}
			q := `INSERT INTO notifications (user_id, event_pos, room_id, actions, highlight, ts) VALUES (?,?,?,?,?,?)` +
				strings.Repeat(`,(?,?,?,?,?,?)`, len(chunk)-1)
			if _, err := tx.Exec(q, args...); err != nil {
				return err
			}
		}
		_, err := tx.Exec(`UPDATE notify_position SET event_pos = ? WHERE id = 1`, int64(to))
		return err
	}, nil)
}

// readUpTo is the event position of the user's newest read receipt in a
// room (m.read or m.read.private, unthreaded or for the main timeline):
// notifications at or before it are read.
const readUpTo = `COALESCE((SELECT MAX(r.event_pos) FROM receipts r WHERE r.room_id = ? AND r.user_id = ?
	AND r.receipt_type IN ('m.read', 'm.read.private') AND r.thread_id IN ('', 'main')), 0)`

// UnreadCounts returns the user's unread notification and highlight counts
// in each of rooms; rooms without unread notifications are absent.
func (db *DB) UnreadCounts(ctx context.Context, user roomdag.UserID, rooms []roomdag.RoomID) (map[roomdag.RoomID]storage.UnreadCount, error) {
	out := map[roomdag.RoomID]storage.UnreadCount{}
	// One grouped query per chunk of rooms: this runs on every /sync, where
	// a transaction and a prepared statement per call cost more than the
	// counting itself.
	for len(rooms) > 0 {
		chunk := rooms[:min(len(rooms), 500)]
		rooms = rooms[len(chunk):]
		args := make([]any, 0, len(chunk)+1)
		args = append(args, string(user))
		for _, r := range chunk {
			args = append(args, string(r))
		}
		rows, err := db.r.QueryContext(ctx, `SELECT n.room_id, COUNT(*), COALESCE(SUM(n.highlight), 0) FROM notifications n
			WHERE n.user_id = ? AND n.room_id IN (?`+strings.Repeat(",?", len(chunk)-1)+`)
			AND n.event_pos > `+strings.ReplaceAll(readUpTo, "r.room_id = ? AND r.user_id = ?", "r.room_id = n.room_id AND r.user_id = n.user_id")+`
			GROUP BY n.room_id`, args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var room string
			var c storage.UnreadCount
			if err := rows.Scan(&room, &c.Notifications, &c.Highlights); err != nil {
				rows.Close()
				return nil, err
			}
			out[roomdag.RoomID(room)] = c
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// RoomsNotifiedSince returns the rooms where the user got notifications
// for events in (after, upTo].
func (db *DB) RoomsNotifiedSince(ctx context.Context, user roomdag.UserID, after, upTo roomdag.StreamPos) (map[roomdag.RoomID]bool, error) {
	ids, err := queryStrings(ctx, db.r, `SELECT DISTINCT room_id FROM notifications WHERE user_id = ? AND event_pos > ? AND event_pos <= ?`,
		string(user), int64(after), int64(upTo))
	if err != nil {
		return nil, err
	}
	out := make(map[roomdag.RoomID]bool, len(ids))
	for _, id := range ids {
		out[roomdag.RoomID(id)] = true
	}
	return out, nil
}

// Notifications lists the user's notifications for events before
// position before (0: from the newest), newest first, at most limit, only
// highlights if onlyHighlight. Read says whether the user's read receipt
// in the room is at or after the event.
func (db *DB) Notifications(ctx context.Context, user roomdag.UserID, before roomdag.StreamPos, limit int, onlyHighlight bool) ([]storage.Notification, error) {
	var q strings.Builder
	q.WriteString(`SELECT n.event_pos, n.room_id, n.actions, n.highlight, n.ts, e.event_id,
		n.event_pos <= ` + strings.ReplaceAll(readUpTo, "r.room_id = ? AND r.user_id = ?", "r.room_id = n.room_id AND r.user_id = n.user_id") + `
		FROM notifications n JOIN events e ON e.stream_pos = n.event_pos
		WHERE n.user_id = ?`)
	args := []any{string(user)}
	if before > 0 {
		q.WriteString(` AND n.event_pos < ?`)
		args = append(args, int64(before))
	}
	if onlyHighlight {
		q.WriteString(` AND n.highlight = 1`)
	}
	q.WriteString(` ORDER BY n.event_pos DESC LIMIT ?`)
	args = append(args, limit)
	rows, err := db.r.QueryContext(ctx, q.String(), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []storage.Notification
	for rows.Next() {
		n := storage.Notification{User: user}
		var pos int64
		var room, actions, id string
		if err := rows.Scan(&pos, &room, &actions, &n.Highlight, &n.TS, &id, &n.Read); err != nil {
			return nil, err
		}
		n.EventPos, n.Room, n.Actions, n.EventID = roomdag.StreamPos(pos), roomdag.RoomID(room), []byte(actions), roomdag.EventID(id)
		out = append(out, n)
	}
	return out, rows.Err()
}
