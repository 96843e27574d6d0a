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

// PushRulesChangedSince lists the users whose push rules or ignore list
// changed after account data position after (their m.push_rules or
// m.ignored_user_list account data moved),
// and the newest such position (after when none).
func (db *DB) PushRulesChangedSince(ctx context.Context, after int64) ([]roomdag.UserID, int64, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT user_id, stream_pos FROM account_data
		WHERE type IN ('m.push_rules', 'm.ignored_user_list') AND stream_pos > ?`, after)
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

// NotifyTotals returns the running totals of the room's newest default
// notification row (zeros when it has none).
func (db *DB) NotifyTotals(ctx context.Context, room roomdag.RoomID) (notify, highlight int64, err error) {
	err = db.r.QueryRowContext(ctx, `SELECT notify_total, highlight_total FROM event_notifications
		WHERE room_id = ? ORDER BY event_pos DESC LIMIT 1`, string(room)).Scan(&notify, &highlight)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, 0, nil
	}
	return notify, highlight, err
}

// PutNotifications stores a step of the notification worker and moves its
// position from b.From to b.To, in one transaction: a crash leaves either
// both or neither. It fails, changing nothing, if the stored position is
// not b.From.
func (db *DB) PutNotifications(ctx context.Context, b storage.NotifyBatch) error {
	return db.write(func(tx *sql.Tx) error {
		var cur int64
		if err := tx.QueryRow(`SELECT event_pos FROM notify_position WHERE id = 1`).Scan(&cur); err != nil {
			return err
		}
		if cur != int64(b.From) {
			return fmt.Errorf("%w: at %d, expected %d", errNotifyMoved, cur, b.From)
		}
		// Many rows per statement: the per-statement cost (cgo, bind,
		// step) dominates small rows.
		const perInsert = 100
		for evs := b.Events; len(evs) > 0; {
			chunk := evs[:min(len(evs), perInsert)]
			evs = evs[len(chunk):]
			args := make([]any, 0, 7*len(chunk))
			for _, e := range chunk {
				args = append(args, string(e.Room), int64(e.EventPos), string(e.Actions), e.Highlight, e.TS, e.NotifyTotal, e.HighlightTotal)
			}
			if _, err := tx.Exec(`INSERT INTO event_notifications (room_id, event_pos, actions, highlight, ts, notify_total, highlight_total)
				VALUES (?,?,?,?,?,?,?)`+strings.Repeat(`,(?,?,?,?,?,?,?)`, len(chunk)-1), args...); err != nil {
				return err
			}
		}
		for ns := b.Exceptions; len(ns) > 0; {
			chunk := ns[:min(len(ns), perInsert)]
			ns = ns[len(chunk):]
			args := make([]any, 0, 8*len(chunk))
			for _, n := range chunk {
				var actions any // NULL: not notified
				if n.Actions != nil {
					actions = string(n.Actions)
				}
				args = append(args, string(n.User), int64(n.EventPos), string(n.Room), actions, n.Highlight, n.TS, n.NotifyDelta, n.HighlightDelta)
			}
			if _, err := tx.Exec(`INSERT INTO notification_exceptions (user_id, event_pos, room_id, actions, highlight, ts, notify_delta, highlight_delta)
				VALUES (?,?,?,?,?,?,?,?)`+strings.Repeat(`,(?,?,?,?,?,?,?,?)`, len(chunk)-1), args...); err != nil {
				return err
			}
		}
		for _, j := range b.Joins {
			var err error
			if j.Joined {
				// At most one open span: a span the upgrade opened from the
				// current membership stays as it is.
				_, err = tx.Exec(`INSERT INTO notify_spans (user_id, room_id, joined_pos)
					SELECT ?1, ?2, ?3 WHERE NOT EXISTS (SELECT 1 FROM notify_spans
					WHERE user_id = ?1 AND room_id = ?2 AND left_pos IS NULL)`, string(j.User), string(j.Room), int64(j.Pos))
			} else {
				_, err = tx.Exec(`UPDATE notify_spans SET left_pos = ? WHERE user_id = ? AND room_id = ? AND left_pos IS NULL`,
					int64(j.Pos), string(j.User), string(j.Room))
			}
			if err != nil {
				return err
			}
		}
		_, err := tx.Exec(`UPDATE notify_position SET event_pos = ? WHERE id = 1`, int64(b.To))
		return err
	}, nil)
}

// readUpTo is the event position of the user's newest read receipt in a
// room (m.read or m.read.private, unthreaded or for the main timeline):
// notifications at or before it are read. It is written for a query
// with s.user_id and s.room_id in scope.
const readUpTo = `COALESCE((SELECT MAX(r.event_pos) FROM receipts r WHERE r.room_id = s.room_id AND r.user_id = s.user_id
	AND r.receipt_type IN ('m.read', 'm.read.private') AND r.thread_id IN ('', 'main')), 0)`

// totalAt is a room's running default total (column col) at the newest
// default row at or before position pos ("" for the newest row).
func totalAt(col, pos string) string {
	cond := ""
	if pos != "" {
		cond = ` AND e.event_pos <= ` + pos
	}
	return `COALESCE((SELECT e.` + col + ` FROM event_notifications e WHERE e.room_id = u.room_id` + cond +
		` ORDER BY e.event_pos DESC LIMIT 1), 0)`
}

// UnreadCounts returns the user's unread notification and highlight counts
// in each of rooms; rooms without unread notifications are absent. A
// count is the room's default notifications after the later of the user's
// join and read receipt, corrected by the user's exceptions there: a few
// index seeks per room, however much is unread.
func (db *DB) UnreadCounts(ctx context.Context, user roomdag.UserID, rooms []roomdag.RoomID) (map[roomdag.RoomID]storage.UnreadCount, error) {
	out := map[roomdag.RoomID]storage.UnreadCount{}
	// u is materialised: each room's since is then computed once, not once
	// per subquery that reads it.
	for len(rooms) > 0 {
		chunk := rooms[:min(len(rooms), 500)]
		rooms = rooms[len(chunk):]
		args := make([]any, 0, len(chunk)+1)
		args = append(args, string(user))
		for _, r := range chunk {
			args = append(args, string(r))
		}
		rows, err := db.r.QueryContext(ctx, `WITH u AS MATERIALIZED (
				SELECT s.user_id, s.room_id, MAX(s.joined_pos, `+readUpTo+`) AS since
				FROM notify_spans s WHERE s.user_id = ? AND s.left_pos IS NULL
				AND s.room_id IN (?`+strings.Repeat(",?", len(chunk)-1)+`))
			SELECT u.room_id,
				`+totalAt("notify_total", "")+` - `+totalAt("notify_total", "u.since")+`
				+ COALESCE((SELECT SUM(x.notify_delta) FROM notification_exceptions x
					WHERE x.user_id = u.user_id AND x.room_id = u.room_id AND x.event_pos > u.since), 0),
				`+totalAt("highlight_total", "")+` - `+totalAt("highlight_total", "u.since")+`
				+ COALESCE((SELECT SUM(x.highlight_delta) FROM notification_exceptions x
					WHERE x.user_id = u.user_id AND x.room_id = u.room_id AND x.event_pos > u.since), 0)
			FROM u`, args...)
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
			if c.Notifications > 0 || c.Highlights > 0 {
				out[roomdag.RoomID(room)] = c
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// RoomsNotifiedSince returns the rooms where the user got notifications
// for events in (after, upTo]: joined rooms with new default rows the
// user has no exception for, and rooms of the user's new exceptions that
// notify. (An exception that does not notify is the user's own message,
// or a rule that silences the default: the user's counts did not move.)
func (db *DB) RoomsNotifiedSince(ctx context.Context, user roomdag.UserID, after, upTo roomdag.StreamPos) (map[roomdag.RoomID]bool, error) {
	ids, err := queryStrings(ctx, db.r, `SELECT s.room_id FROM notify_spans s WHERE s.user_id = ?1 AND s.left_pos IS NULL
			AND EXISTS (SELECT 1 FROM event_notifications e WHERE e.room_id = s.room_id AND e.event_pos > ?2 AND e.event_pos <= ?3
				AND NOT EXISTS (SELECT 1 FROM notification_exceptions x WHERE x.user_id = ?1 AND x.event_pos = e.event_pos))
		UNION SELECT room_id FROM notification_exceptions WHERE user_id = ?1 AND event_pos > ?2 AND event_pos <= ?3
			AND actions IS NOT NULL`,
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

// notifyCursor reads one source of a user's notifications newest first,
// a page at a time: the default rows of one join span, or the user's
// exception rows.
type notifyCursor struct {
	fetch  func(before int64, n int) ([]storage.Notification, error) // rows before position before, newest first
	before int64
	buf    []storage.Notification
	done   bool
}

func (c *notifyCursor) head(page int) (*storage.Notification, error) {
	if len(c.buf) == 0 && !c.done {
		rows, err := c.fetch(c.before, page)
		if err != nil {
			return nil, err
		}
		c.done = len(rows) < page
		if len(rows) > 0 {
			c.before = int64(rows[len(rows)-1].EventPos)
		}
		c.buf = rows
	}
	if len(c.buf) == 0 {
		return nil, nil
	}
	return &c.buf[0], nil
}

// Notifications lists the user's notifications for events before
// position before (0: from the newest), newest first, at most limit, only
// highlights if onlyHighlight. It merges the default rows of each of the
// user's join spans with the user's exceptions, an exception replacing
// the default of its event. Read says whether the user's read receipt in
// the room is at or after the event.
func (db *DB) Notifications(ctx context.Context, user roomdag.UserID, before roomdag.StreamPos, limit int, onlyHighlight bool) ([]storage.Notification, error) {
	if limit <= 0 {
		return nil, nil
	}
	if before <= 0 {
		before = roomdag.StreamPos(1<<63 - 1)
	}
	scan := func(rows *sql.Rows, err error, room roomdag.RoomID) ([]storage.Notification, error) {
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		var out []storage.Notification
		for rows.Next() {
			n := storage.Notification{User: user, Room: room}
			var pos int64
			var r string
			var actions sql.NullString
			if err := rows.Scan(&pos, &r, &actions, &n.Highlight, &n.TS); err != nil {
				return nil, err
			}
			n.EventPos, n.Room = roomdag.StreamPos(pos), roomdag.RoomID(r)
			if actions.Valid {
				n.Actions = []byte(actions.String)
			}
			out = append(out, n)
		}
		return out, rows.Err()
	}
	spans, err := db.r.QueryContext(ctx, `SELECT room_id, joined_pos, COALESCE(left_pos, ?) FROM notify_spans
		WHERE user_id = ? AND joined_pos < ?`, int64(1<<63-1), string(user), int64(before))
	if err != nil {
		return nil, err
	}
	var defaults []*notifyCursor
	for spans.Next() {
		var room string
		var from, to int64
		if err := spans.Scan(&room, &from, &to); err != nil {
			spans.Close()
			return nil, err
		}
		q := `SELECT event_pos, room_id, actions, highlight, ts FROM event_notifications
			WHERE room_id = ? AND event_pos > ? AND event_pos <= ? AND event_pos < ?`
		if onlyHighlight {
			q += ` AND highlight = 1`
		}
		q += ` ORDER BY event_pos DESC LIMIT ?`
		defaults = append(defaults, &notifyCursor{before: int64(before), fetch: func(b int64, n int) ([]storage.Notification, error) {
			rows, err := db.r.QueryContext(ctx, q, room, from, to, b, n)
			return scan(rows, err, "")
		}})
	}
	spans.Close()
	if err := spans.Err(); err != nil {
		return nil, err
	}
	exceptions := &notifyCursor{before: int64(before), fetch: func(b int64, n int) ([]storage.Notification, error) {
		rows, err := db.r.QueryContext(ctx, `SELECT event_pos, room_id, actions, highlight, ts FROM notification_exceptions
			WHERE user_id = ? AND event_pos < ? ORDER BY event_pos DESC LIMIT ?`, string(user), b, n)
		return scan(rows, err, "")
	}}
	page := limit + 1
	var out []storage.Notification
	for len(out) < limit {
		var best *notifyCursor
		var bestPos roomdag.StreamPos
		for _, c := range defaults {
			h, err := c.head(page)
			if err != nil {
				return nil, err
			}
			if h != nil && h.EventPos > bestPos {
				best, bestPos = c, h.EventPos
			}
		}
		x, err := exceptions.head(page)
		if err != nil {
			return nil, err
		}
		if x != nil && x.EventPos >= bestPos {
			n := *x
			exceptions.buf = exceptions.buf[1:]
			if best != nil && bestPos == n.EventPos {
				best.buf = best.buf[1:] // the exception replaces the default
			}
			if n.Actions != nil && (!onlyHighlight || n.Highlight) {
				out = append(out, n)
			}
			continue
		}
		if best == nil {
			break
		}
		out = append(out, best.buf[0])
		best.buf = best.buf[1:]
	}
	return out, db.fillNotifications(ctx, user, out)
}

// fillNotifications sets EventID and Read on listed notifications.
func (db *DB) fillNotifications(ctx context.Context, user roomdag.UserID, ns []storage.Notification) error {
	if len(ns) == 0 {
		return nil
	}
	args := make([]any, len(ns))
	read := map[roomdag.RoomID]int64{}
	for i, n := range ns {
		args[i] = int64(n.EventPos)
		read[n.Room] = 0
	}
	rows, err := db.r.QueryContext(ctx, `SELECT stream_pos, event_id FROM events WHERE stream_pos IN (?`+
		strings.Repeat(",?", len(ns)-1)+`)`, args...)
	if err != nil {
		return err
	}
	ids := make(map[int64]string, len(ns))
	for rows.Next() {
		var pos int64
		var id string
		if err := rows.Scan(&pos, &id); err != nil {
			rows.Close()
			return err
		}
		ids[pos] = id
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for room := range read {
		var p int64
		if err := db.r.QueryRowContext(ctx, `SELECT `+readUpTo+` FROM (SELECT ? AS room_id, ? AS user_id) s`,
			string(room), string(user)).Scan(&p); err != nil {
			return err
		}
		read[room] = p
	}
	for i := range ns {
		ns[i].EventID = roomdag.EventID(ids[int64(ns[i].EventPos)])
		ns[i].Read = int64(ns[i].EventPos) <= read[ns[i].Room]
	}
	return nil
}
