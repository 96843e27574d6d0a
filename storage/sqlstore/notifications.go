package sqlstore

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

var notifyTotals = numberedQuery(`SELECT
		COALESCE((SELECT notify_total FROM event_notifications WHERE room_id = ?1 ORDER BY event_pos DESC LIMIT 1), 0),
		COALESCE((SELECT highlight_total FROM event_notifications WHERE room_id = ?1 ORDER BY event_pos DESC LIMIT 1), 0),
		COALESCE((SELECT thread_notify_total FROM event_notifications WHERE room_id = ?1 AND thread_id = ?2 ORDER BY event_pos DESC LIMIT 1), 0),
		COALESCE((SELECT thread_highlight_total FROM event_notifications WHERE room_id = ?1 AND thread_id = ?2 ORDER BY event_pos DESC LIMIT 1), 0)`)

// NotifyTotals returns the running totals of the room's newest default
// notification row and of the newest in the thread ("" for the main
// timeline); zeros where there is none.
func (db *DB) NotifyTotals(ctx context.Context, room roomdag.RoomID, thread roomdag.EventID) (roomTotals, threadTotals [2]int64, err error) {
	err = db.r.QueryRowContext(ctx, notifyTotals.query, notifyTotals.args(string(room), string(thread))...).Scan(&roomTotals[0], &roomTotals[1], &threadTotals[0], &threadTotals[1])
	return roomTotals, threadTotals, err
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
		threads := map[[2]string]int64{} // room, thread -> newest position
		// Many rows per statement: the per-statement cost (cgo, bind,
		// step) dominates small rows.
		const perInsert = 100
		for evs := b.Events; len(evs) > 0; {
			chunk := evs[:min(len(evs), perInsert)]
			evs = evs[len(chunk):]
			args := make([]any, 0, 10*len(chunk))
			for _, e := range chunk {
				args = append(args, string(e.Room), int64(e.EventPos), string(e.Thread), string(e.Actions), e.Highlight, e.TS,
					e.NotifyTotal, e.HighlightTotal, e.ThreadNotifyTotal, e.ThreadHighlightTotal)
				if e.Thread != "" {
					threads[[2]string{string(e.Room), string(e.Thread)}] = int64(e.EventPos)
				}
			}
			if _, err := tx.Exec(`INSERT INTO event_notifications (room_id, event_pos, thread_id, actions, highlight, ts,
				notify_total, highlight_total, thread_notify_total, thread_highlight_total)
				VALUES (?,?,?,?,?,?,?,?,?,?)`+strings.Repeat(`,(?,?,?,?,?,?,?,?,?,?)`, len(chunk)-1), args...); err != nil {
				return err
			}
		}
		for ns := b.Exceptions; len(ns) > 0; {
			chunk := ns[:min(len(ns), perInsert)]
			ns = ns[len(chunk):]
			args := make([]any, 0, 9*len(chunk))
			for _, n := range chunk {
				var actions any // NULL: not notified
				if n.Actions != nil {
					actions = string(n.Actions)
				}
				args = append(args, string(n.User), int64(n.EventPos), string(n.Room), string(n.Thread), actions, n.Highlight, n.TS,
					n.NotifyDelta, n.HighlightDelta)
				if n.Thread != "" {
					k := [2]string{string(n.Room), string(n.Thread)}
					threads[k] = max(threads[k], int64(n.EventPos))
				}
			}
			if _, err := tx.Exec(`INSERT INTO notification_exceptions (user_id, event_pos, room_id, thread_id, actions, highlight, ts,
				notify_delta, highlight_delta)
				VALUES (?,?,?,?,?,?,?,?,?)`+strings.Repeat(`,(?,?,?,?,?,?,?,?,?)`, len(chunk)-1), args...); err != nil {
				return err
			}
		}
		for k, pos := range threads {
			if _, err := tx.Exec(`INSERT INTO notify_threads (room_id, thread_id, last_pos) VALUES (?, ?, ?)
				ON CONFLICT (room_id, thread_id) DO UPDATE SET last_pos = CASE WHEN notify_threads.last_pos > excluded.last_pos
					THEN notify_threads.last_pos ELSE excluded.last_pos END`, k[0], k[1], pos); err != nil {
				return err
			}
		}
		for _, j := range b.Joins {
			var err error
			if j.Joined {
				// At most one open span: a span the upgrade opened from the
				// current membership stays as it is.
				_, err = tx.Exec(`INSERT INTO notify_spans (user_id, room_id, joined_pos)
					SELECT ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM notify_spans
					WHERE user_id = ? AND room_id = ? AND left_pos IS NULL)`,
					string(j.User), string(j.Room), int64(j.Pos), string(j.User), string(j.Room))
			} else {
				_, err = tx.Exec(`UPDATE notify_spans SET left_pos = ? WHERE user_id = ? AND room_id = ? AND left_pos IS NULL`,
					int64(j.Pos), string(j.User), string(j.Room))
			}
			if err != nil {
				return err
			}
		}
		_, err := tx.Exec(`UPDATE notify_position SET event_pos = ? WHERE id = 1`, int64(b.To))
		if err == nil {
			db.change.Notifications = &storage.NotificationsChange{Pos: b.To, Users: b.Wake}
		}
		return err
	}, nil)
}

// readReceipts returns, per room of rooms, the user's newest read
// receipt position (m.read or m.read.private) per thread ID: "" for an
// unthreaded receipt, "main" for the main timeline, else a thread root.
func (db *DB) readReceipts(ctx context.Context, user roomdag.UserID, rooms []roomdag.RoomID) (map[roomdag.RoomID]map[string]int64, error) {
	out := map[roomdag.RoomID]map[string]int64{}
	for len(rooms) > 0 {
		chunk := rooms[:min(len(rooms), 500)]
		rooms = rooms[len(chunk):]
		args := []any{string(user)}
		for _, r := range chunk {
			args = append(args, string(r))
		}
		rows, err := db.r.QueryContext(ctx, `SELECT room_id, thread_id, MAX(event_pos) FROM receipts
			WHERE user_id = ? AND room_id IN (?`+strings.Repeat(",?", len(chunk)-1)+`)
			AND receipt_type IN ('m.read', 'm.read.private') GROUP BY room_id, thread_id`, args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var room, thread string
			var pos int64
			if err := rows.Scan(&room, &thread, &pos); err != nil {
				rows.Close()
				return nil, err
			}
			if out[roomdag.RoomID(room)] == nil {
				out[roomdag.RoomID(room)] = map[string]int64{}
			}
			out[roomdag.RoomID(room)][thread] = pos
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// readUpTo is the position up to which a notification in thread ("" for
// the main timeline) is read: an unthreaded receipt reads every thread,
// a threaded one only its own (spec: "Threaded read receipts").
func readUpTo(receipts map[string]int64, thread roomdag.EventID) int64 {
	own := "main"
	if thread != "" {
		own = string(thread)
	}
	return max(receipts[""], receipts[own])
}

// countSince counts a user's notifications in one thread of a room after
// position ?3: the thread's default notifications there, by their running
// totals, corrected by the user's exceptions.
var countSince = numberedQuery(`SELECT
	COALESCE((SELECT thread_notify_total FROM event_notifications WHERE room_id = ?1 AND thread_id = ?2 ORDER BY event_pos DESC LIMIT 1), 0)
	- COALESCE((SELECT thread_notify_total FROM event_notifications WHERE room_id = ?1 AND thread_id = ?2 AND event_pos <= ?3 ORDER BY event_pos DESC LIMIT 1), 0)
	+ COALESCE((SELECT SUM(notify_delta) FROM notification_exceptions WHERE user_id = ?4 AND room_id = ?1 AND thread_id = ?2 AND event_pos > ?3), 0),
	COALESCE((SELECT thread_highlight_total FROM event_notifications WHERE room_id = ?1 AND thread_id = ?2 ORDER BY event_pos DESC LIMIT 1), 0)
	- COALESCE((SELECT thread_highlight_total FROM event_notifications WHERE room_id = ?1 AND thread_id = ?2 AND event_pos <= ?3 ORDER BY event_pos DESC LIMIT 1), 0)
	+ COALESCE((SELECT SUM(highlight_delta) FROM notification_exceptions WHERE user_id = ?4 AND room_id = ?1 AND thread_id = ?2 AND event_pos > ?3), 0)`)

// UnreadCounts returns the user's unread notification and highlight counts
// in each of rooms, for the main timeline and per thread; rooms without
// unread notifications are absent. Counting starts after the later of the
// user's join and the read receipt that covers the thread: a few index
// seeks per thread, however much is unread.
func (db *DB) UnreadCounts(ctx context.Context, user roomdag.UserID, rooms []roomdag.RoomID) (map[roomdag.RoomID]storage.UnreadCount, error) {
	joined := map[roomdag.RoomID]int64{}
	for left := rooms; len(left) > 0; {
		chunk := left[:min(len(left), 500)]
		left = left[len(chunk):]
		args := []any{string(user)}
		for _, r := range chunk {
			args = append(args, string(r))
		}
		rows, err := db.r.QueryContext(ctx, `SELECT room_id, joined_pos FROM notify_spans WHERE user_id = ? AND left_pos IS NULL
			AND room_id IN (?`+strings.Repeat(",?", len(chunk)-1)+`)`, args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var room string
			var pos int64
			if err := rows.Scan(&room, &pos); err != nil {
				rows.Close()
				return nil, err
			}
			joined[roomdag.RoomID(room)] = pos
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	if len(joined) == 0 {
		return map[roomdag.RoomID]storage.UnreadCount{}, nil
	}
	inRooms := make([]roomdag.RoomID, 0, len(joined))
	for r := range joined {
		inRooms = append(inRooms, r)
	}
	receipts, err := db.readReceipts(ctx, user, inRooms)
	if err != nil {
		return nil, err
	}
	count := func(room roomdag.RoomID, thread roomdag.EventID, after int64) (storage.UnreadCount, error) {
		var c storage.UnreadCount
		err := db.r.QueryRowContext(ctx, countSince.query, countSince.args(string(room), string(thread), after, string(user))...).Scan(&c.Notifications, &c.Highlights)
		return c, err
	}
	out := map[roomdag.RoomID]storage.UnreadCount{}
	for room, join := range joined {
		rc := receipts[room]
		base := max(join, rc[""])
		c, err := count(room, "", max(join, readUpTo(rc, "")))
		if err != nil {
			return nil, err
		}
		threads, err := queryStrings(ctx, db.r, `SELECT thread_id FROM notify_threads WHERE room_id = ? AND last_pos > ?`, string(room), base)
		if err != nil {
			return nil, err
		}
		for _, t := range threads {
			tc, err := count(room, roomdag.EventID(t), max(join, readUpTo(rc, roomdag.EventID(t))))
			if err != nil {
				return nil, err
			}
			if tc.Notifications > 0 || tc.Highlights > 0 {
				if c.Threads == nil {
					c.Threads = map[roomdag.EventID]storage.UnreadCount{}
				}
				c.Threads[roomdag.EventID(t)] = tc
			}
		}
		if c.Notifications > 0 || c.Highlights > 0 || c.Threads != nil {
			out[room] = c
		}
	}
	return out, nil
}

var roomsNotifiedSince = numberedQuery(`SELECT s.room_id FROM notify_spans s WHERE s.user_id = ?1 AND s.left_pos IS NULL
			AND EXISTS (SELECT 1 FROM event_notifications e WHERE e.room_id = s.room_id AND e.event_pos > ?2 AND e.event_pos <= ?3
				AND NOT EXISTS (SELECT 1 FROM notification_exceptions x WHERE x.user_id = ?1 AND x.event_pos = e.event_pos))
		UNION SELECT room_id FROM notification_exceptions WHERE user_id = ?1 AND event_pos > ?2 AND event_pos <= ?3
			AND actions IS NOT NULL`)

// RoomsNotifiedSince returns the rooms where the user got notifications
// for events in (after, upTo]: joined rooms with new default rows the
// user has no exception for, and rooms of the user's new exceptions that
// notify. (An exception that does not notify is the user's own message,
// or a rule that silences the default: the user's counts did not move.)
func (db *DB) RoomsNotifiedSince(ctx context.Context, user roomdag.UserID, after, upTo roomdag.StreamPos) (map[roomdag.RoomID]bool, error) {
	ids, err := queryStrings(ctx, db.r, roomsNotifiedSince.query, roomsNotifiedSince.args(string(user), int64(after), int64(upTo))...)
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
			var thread string
			if err := rows.Scan(&pos, &r, &actions, &n.Highlight, &n.TS, &thread); err != nil {
				return nil, err
			}
			n.EventPos, n.Room, n.Thread = roomdag.StreamPos(pos), roomdag.RoomID(r), roomdag.EventID(thread)
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
		q := `SELECT event_pos, room_id, actions, highlight, ts, thread_id FROM event_notifications
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
		rows, err := db.r.QueryContext(ctx, `SELECT event_pos, room_id, actions, highlight, ts, thread_id FROM notification_exceptions
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
	read := map[roomdag.RoomID]bool{}
	for i, n := range ns {
		args[i] = int64(n.EventPos)
		read[n.Room] = true
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
	rooms := make([]roomdag.RoomID, 0, len(read))
	for room := range read {
		rooms = append(rooms, room)
	}
	receipts, err := db.readReceipts(ctx, user, rooms)
	if err != nil {
		return err
	}
	for i := range ns {
		ns[i].EventID = roomdag.EventID(ids[int64(ns[i].EventPos)])
		ns[i].Read = int64(ns[i].EventPos) <= readUpTo(receipts[ns[i].Room], ns[i].Thread)
	}
	return nil
}
