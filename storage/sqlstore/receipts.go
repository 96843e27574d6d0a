package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"maps"
	"slices"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// receiptRead is the one public receipt type; the table also keeps
// m.read.private (spec: "Receipts").
const receiptRead = "m.read"

// PutReceipt records user's receipt of type typ (m.read or
// m.read.private) in room at event, which sits at eventPos in the event
// stream; thread is "" for an unthreaded receipt. Receipts only move
// forward: a receipt for an event at or before the current one changes
// nothing and returns position 0. Otherwise it returns the receipt's new
// position in the receipt stream, once durable.
func (db *DB) PutReceipt(ctx context.Context, room roomdag.RoomID, typ string, user roomdag.UserID, thread string,
	event roomdag.EventID, eventPos roomdag.StreamPos, tsMS int64) (int64, error) {
	var pos int64
	err := db.write(func(tx *sql.Tx) error {
		// The writer is the only one assigning positions, and rows are
		// only ever replaced with higher ones, so MAX+1 is the next free
		// position (and an index lookup).
		var next int64
		if err := tx.QueryRow(`SELECT COALESCE(MAX(stream_pos), 0) + 1 FROM receipts`).Scan(&next); err != nil {
			return err
		}
		res, err := tx.Exec(`INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, event_pos, ts, stream_pos)
			VALUES (?,?,?,?,?,?,?,?)
			ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE SET
				event_id = excluded.event_id, event_pos = excluded.event_pos, ts = excluded.ts, stream_pos = excluded.stream_pos
			WHERE excluded.event_pos > receipts.event_pos`,
			string(room), typ, string(user), thread, string(event), int64(eventPos), tsMS, next)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n > 0 {
			pos = next
			db.change.Receipts = append(db.change.Receipts, storage.ReceiptChange{Room: room, User: user,
				Private: typ != receiptRead, Pos: pos})
		}
		return nil
	}, nil)
	return pos, err
}

// PutFullyRead moves user's fully read marker in room (the m.fully_read
// room account data, spec: "Fully read markers") to event, at eventPos in
// the event stream, unless it already points at that event or a later
// one. It returns the account data position of the change, or 0 when the
// marker did not move.
func (db *DB) PutFullyRead(ctx context.Context, user roomdag.UserID, room roomdag.RoomID, event roomdag.EventID, eventPos roomdag.StreamPos) (int64, error) {
	var pos int64
	err := db.write(func(tx *sql.Tx) error {
		var content string
		err := tx.QueryRow(`SELECT content FROM account_data WHERE user_id = ? AND room_id = ? AND type = 'm.fully_read'`,
			string(user), string(room)).Scan(&content)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return err
		default:
			var c struct {
				EventID string `json:"event_id"`
			}
			_ = json.Unmarshal([]byte(content), &c)
			var oldPos int64
			err := tx.QueryRow(`SELECT stream_pos FROM events WHERE event_id = ?`, c.EventID).Scan(&oldPos)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			if err == nil && oldPos >= int64(eventPos) {
				return nil
			}
		}
		b, _ := json.Marshal(map[string]string{"event_id": string(event)})
		pos, err = db.putAccountData(tx, user, room, "m.fully_read", string(b))
		return err
	}, nil)
	return pos, err
}

// Receipts returns, per room, the contents of the m.receipt events holding
// the receipts changed in (after, upTo] of the receipt stream: one event
// per thread (unthreaded first), so that a user's receipts in different
// threads never overwrite each other (spec: receipts are batched "into one
// event per room and thread"). viewer sees their own m.read.private
// receipts and nobody else's.
func (db *DB) Receipts(ctx context.Context, viewer roomdag.UserID, rooms []roomdag.RoomID, after, upTo int64) (map[roomdag.RoomID][]json.RawMessage, error) {
	type entry struct {
		TS       int64  `json:"ts"`
		ThreadID string `json:"thread_id,omitempty"`
	}
	// room -> thread -> event -> type -> user
	type content map[string]map[string]map[string]entry
	byRoom := map[roomdag.RoomID]map[string]content{}
	scan := func(rows *sql.Rows, want map[roomdag.RoomID]bool) error {
		defer rows.Close()
		for rows.Next() {
			var room, typ, user, thread, event string
			var ts int64
			if err := rows.Scan(&room, &typ, &user, &thread, &event, &ts); err != nil {
				return err
			}
			if want != nil && !want[roomdag.RoomID(room)] {
				continue
			}
			threads := byRoom[roomdag.RoomID(room)]
			if threads == nil {
				threads = map[string]content{}
				byRoom[roomdag.RoomID(room)] = threads
			}
			c := threads[thread]
			if c == nil {
				c = content{}
				threads[thread] = c
			}
			if c[event] == nil {
				c[event] = map[string]map[string]entry{}
			}
			if c[event][typ] == nil {
				c[event][typ] = map[string]entry{}
			}
			c[event][typ][user] = entry{TS: ts, ThreadID: thread}
		}
		return rows.Err()
	}
	const cols = `SELECT room_id, receipt_type, user_id, thread_id, event_id, ts FROM receipts `
	const private = ` AND (receipt_type = '` + receiptRead + `' OR user_id = ?)`
	err := db.readTx(ctx, func(tx *sql.Tx) error {
		if after == 0 {
			// Everything in these rooms (a first sync, a fresh join): one
			// indexed lookup per room.
			for _, room := range rooms {
				rows, err := tx.QueryContext(ctx, cols+`WHERE room_id = ? AND stream_pos <= ?`+private, string(room), upTo, string(viewer))
				if err != nil {
					return err
				}
				if err := scan(rows, nil); err != nil {
					return err
				}
			}
			return nil
		}
		// What changed since a recent token: a range of the stream.
		want := make(map[roomdag.RoomID]bool, len(rooms))
		for _, r := range rooms {
			want[r] = true
		}
		rows, err := tx.QueryContext(ctx, cols+`WHERE stream_pos > ? AND stream_pos <= ?`+private, after, upTo, string(viewer))
		if err != nil {
			return err
		}
		return scan(rows, want)
	})
	if err != nil {
		return nil, err
	}
	out := make(map[roomdag.RoomID][]json.RawMessage, len(byRoom))
	for room, threads := range byRoom {
		if c, ok := threads[""]; ok {
			b, _ := json.Marshal(c)
			out[room] = append(out[room], b)
		}
		for _, thread := range slices.Sorted(maps.Keys(threads)) {
			if thread != "" {
				b, _ := json.Marshal(threads[thread])
				out[room] = append(out[room], b)
			}
		}
	}
	return out, nil
}

// ReceiptPos is the newest committed receipt stream position.
func (db *DB) ReceiptPos(ctx context.Context) (int64, error) {
	var p int64
	err := db.r.QueryRowContext(ctx, `SELECT COALESCE(MAX(stream_pos), 0) FROM receipts`).Scan(&p)
	return p, err
}
