package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"strings"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

const eventCols = `e.stream_pos, e.event_id, e.room_nid, e.json, e.unsigned, e.txn_device, e.txn_id, e.state_before`

type rowScanner interface{ Scan(dest ...any) error }

// eventRow is an event row as read, before it becomes an event: that may
// need its room's version, which is read only once the rows are closed.
type eventRow struct {
	pos, nid, before     int64
	id                   string
	raw                  []byte
	unsigned, dev, txnID sql.NullString
}

func scanEventRow(row rowScanner) (eventRow, error) {
	var r eventRow
	err := row.Scan(&r.pos, &r.id, &r.nid, &r.raw, &r.unsigned, &r.dev, &r.txnID, &r.before)
	return r, err
}

// eventsOfRows turns rows read by a query that is now closed into events,
// in order, cache first; epoch is the event cache's epoch read before the
// query ran. The versions of rooms this process has not seen yet (another
// process created them) are read through q in one query. Never while the
// rows are open: a reader holding a connection of the read pool while it
// waits for another deadlocks once every connection is held that way.
func (db *DB) eventsOfRows(ctx context.Context, q querier, rows []eventRow, epoch uint64) ([]*roomdag.StoredEvent, error) {
	out := make([]*roomdag.StoredEvent, len(rows))
	var unknown []any
	seen := map[int64]bool{}
	for i, r := range rows {
		if ev, ok := db.events.get(roomdag.EventID(r.id)); ok {
			out[i] = ev
		} else if db.rooms.version(r.nid) == nil && !seen[r.nid] {
			seen[r.nid] = true
			unknown = append(unknown, r.nid)
		}
	}
	if len(unknown) > 0 {
		if err := db.loadRoomVersions(ctx, q, unknown); err != nil {
			return nil, err
		}
	}
	for i, r := range rows {
		if out[i] != nil {
			continue
		}
		v := db.rooms.version(r.nid)
		if v == nil {
			return nil, storage.ErrNotFound
		}
		ev, err := roomdag.EventFromTrustedJSON(v, roomdag.EventID(r.id), r.raw)
		if err != nil {
			return nil, err
		}
		se := &roomdag.StoredEvent{Event: ev, Pos: roomdag.StreamPos(r.pos), TxnDevice: r.dev.String, TxnID: r.txnID.String, StateBefore: r.before}
		if r.unsigned.Valid {
			se.Unsigned = []byte(r.unsigned.String)
		}
		db.events.putIfEpoch(se.ID(), se, epoch)
		out[i] = se
	}
	return out, nil
}

// loadRoomVersions adds the rooms of nids to the room index (a room of an
// unknown version is left out).
func (db *DB) loadRoomVersions(ctx context.Context, q querier, nids []any) error {
	for len(nids) > 0 {
		n := min(len(nids), 500)
		chunk := nids[:n]
		nids = nids[n:]
		rows, err := q.QueryContext(ctx, `SELECT room_nid, version, room_id FROM rooms WHERE room_nid IN (?`+
			strings.Repeat(",?", n-1)+`)`, chunk...)
		if err != nil {
			return err
		}
		for rows.Next() {
			var nid int64
			var ver, rid string
			if err := rows.Scan(&nid, &ver, &rid); err != nil {
				rows.Close()
				return err
			}
			if v, ok := roomdag.LookupRoomVersion(ver); ok {
				db.rooms.put(roomdag.RoomID(rid), nid, v)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
	}
	return nil
}

// queryEvents runs an event query and scans its rows.
func (db *DB) queryEvents(ctx context.Context, q querier, query string, args ...any) ([]*roomdag.StoredEvent, error) {
	epoch := db.events.currentEpoch()
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	var rs []eventRow
	for rows.Next() {
		r, err := scanEventRow(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		rs = append(rs, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return db.eventsOfRows(ctx, q, rs, epoch)
}

// eventsByID returns the events that exist among ids, cache first.
func (db *DB) eventsByID(ctx context.Context, q querier, ids []roomdag.EventID) ([]*roomdag.StoredEvent, error) {
	out := make([]*roomdag.StoredEvent, 0, len(ids))
	var missing []any
	for _, id := range ids {
		if ev, ok := db.events.get(id); ok {
			out = append(out, ev)
		} else {
			missing = append(missing, string(id))
		}
	}
	// SQLite allows 32766 variables; stay well below.
	for len(missing) > 0 {
		n := min(len(missing), 500)
		chunk := missing[:n]
		missing = missing[n:]
		evs, err := db.queryEvents(ctx, q, `SELECT `+eventCols+` FROM events e WHERE e.event_id IN (?`+
			strings.Repeat(",?", len(chunk)-1)+`)`, chunk...)
		if err != nil {
			return nil, err
		}
		out = append(out, evs...)
	}
	return out, nil
}

// Events returns the stored events among ids (unknown ones are skipped).
func (db *DB) Events(ctx context.Context, ids []roomdag.EventID) ([]*roomdag.StoredEvent, error) {
	return db.eventsByID(ctx, db.r, ids)
}

// Event returns one stored event or storage.ErrNotFound.
func (db *DB) Event(ctx context.Context, id roomdag.EventID) (*roomdag.StoredEvent, error) {
	evs, err := db.eventsByID(ctx, db.r, []roomdag.EventID{id})
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 {
		return nil, storage.ErrNotFound
	}
	return evs[0], nil
}

// EventPlace returns where an event sits, or storage.ErrNotFound.
func (db *DB) EventPlace(ctx context.Context, id roomdag.EventID) (storage.EventPlace, error) {
	var p storage.EventPlace
	err := db.r.QueryRowContext(ctx, `SELECT stream_pos, depth, state_before, state_after FROM events WHERE event_id = ?`, string(id)).
		Scan(&p.Pos, &p.Depth, &p.StateBefore, &p.StateAfter)
	return p, notFound(err)
}

// RecentEvents returns up to limit of a room's newest events with stream
// positions in (after, upTo], oldest first, and whether older ones in the
// range were left out.
func (db *DB) RecentEvents(ctx context.Context, room roomdag.RoomID, after, upTo roomdag.StreamPos, limit int) ([]*roomdag.StoredEvent, bool, error) {
	nid, _, err := db.roomNID(ctx, db.r, room)
	if err != nil {
		return nil, false, err
	}
	evs, err := db.queryEvents(ctx, db.r, `SELECT `+eventCols+` FROM events e
		WHERE e.room_nid = ? AND e.stream_pos > ? AND e.stream_pos <= ? ORDER BY e.stream_pos DESC LIMIT ?`,
		nid, int64(after), int64(upTo), limit+1)
	if err != nil {
		return nil, false, err
	}
	limited := len(evs) > limit
	if limited {
		evs = evs[:limit]
	}
	reverse(evs)
	return evs, limited, nil
}

// RoomEventsTopo pages a room's events in topological order. Backwards
// returns events strictly before from, newest first; forwards strictly
// after from, oldest first. Events beyond limit are not returned; more tells
// whether any exist.
func (db *DB) RoomEventsTopo(ctx context.Context, room roomdag.RoomID, from storage.TopoPos, backwards bool, limit int) ([]*roomdag.StoredEvent, bool, error) {
	nid, _, err := db.roomNID(ctx, db.r, room)
	if err != nil {
		return nil, false, err
	}
	q := `SELECT ` + eventCols + ` FROM events e WHERE e.room_nid = ? AND (e.depth, e.stream_pos) > (?, ?)
		ORDER BY e.depth, e.stream_pos LIMIT ?`
	if backwards {
		q = `SELECT ` + eventCols + ` FROM events e WHERE e.room_nid = ? AND (e.depth, e.stream_pos) < (?, ?)
		ORDER BY e.depth DESC, e.stream_pos DESC LIMIT ?`
	}
	evs, err := db.queryEvents(ctx, db.r, q, nid, from.Depth, int64(from.Pos), limit+1)
	if err != nil {
		return nil, false, err
	}
	more := len(evs) > limit
	if more {
		evs = evs[:limit]
	}
	return evs, more, nil
}

// EventNearTimestamp returns the room's event closest to tsMS in one
// direction (spec: GET /timestamp_to_event): forwards the first event at or
// after it, backwards the last one at or before it; ties on the timestamp
// go by topological order. storage.ErrNotFound when there is none.
func (db *DB) EventNearTimestamp(ctx context.Context, room roomdag.RoomID, tsMS int64, forwards bool) (roomdag.EventID, int64, error) {
	nid, _, err := db.roomNID(ctx, db.r, room)
	if err != nil {
		return "", 0, err
	}
	q := `SELECT event_id, origin_ts FROM events WHERE room_nid = ? AND origin_ts >= ?
		ORDER BY origin_ts, depth, stream_pos LIMIT 1`
	if !forwards {
		q = `SELECT event_id, origin_ts FROM events WHERE room_nid = ? AND origin_ts <= ?
		ORDER BY origin_ts DESC, depth DESC, stream_pos DESC LIMIT 1`
	}
	var id string
	var ts int64
	if err := db.r.QueryRowContext(ctx, q, nid, tsMS).Scan(&id, &ts); err != nil {
		return "", 0, notFound(err)
	}
	return roomdag.EventID(id), ts, nil
}

// TopoAtStream returns the topological position just after the newest
// event of the room at or before stream position pos: where backwards
// pagination from a sync token starts.
func (db *DB) TopoAtStream(ctx context.Context, room roomdag.RoomID, pos roomdag.StreamPos) (storage.TopoPos, error) {
	nid, _, err := db.roomNID(ctx, db.r, room)
	if err != nil {
		return storage.TopoPos{}, err
	}
	var t storage.TopoPos
	err = db.r.QueryRowContext(ctx, `SELECT depth, stream_pos FROM events WHERE room_nid = ? AND stream_pos <= ?
		ORDER BY stream_pos DESC LIMIT 1`, nid, int64(pos)).Scan(&t.Depth, &t.Pos)
	if err != nil {
		return storage.TopoPos{}, notFound(err)
	}
	t.Pos++ // exclusive bound: the event itself is included when paging back
	return t, nil
}

// StateAtStream returns the snapshot of the room's state after its newest
// event at or before pos (0 if the room had no events then).
func (db *DB) StateAtStream(ctx context.Context, room roomdag.RoomID, pos roomdag.StreamPos) (int64, error) {
	nid, _, err := db.roomNID(ctx, db.r, room)
	if err != nil {
		return 0, err
	}
	var snap int64
	err = db.r.QueryRowContext(ctx, `SELECT state_after FROM events WHERE room_nid = ? AND stream_pos <= ?
		ORDER BY stream_pos DESC LIMIT 1`, nid, int64(pos)).Scan(&snap)
	if err == sql.ErrNoRows {
		return 0, nil
	}
	return snap, err
}

// Snapshot returns the state of a snapshot as event IDs.
func (db *DB) Snapshot(ctx context.Context, id int64) (map[roomdag.StateKey]roomdag.EventID, error) {
	if id == 0 {
		return map[roomdag.StateKey]roomdag.EventID{}, nil
	}
	epoch := db.snapshots.currentEpoch() // snapshots are never removed; kept for the API
	if m, ok := db.snapshots.get(id); ok {
		return m, nil
	}
	// Walk to the nearest full copy, then apply the deltas oldest first.
	var chain []int64
	for cur := id; ; {
		chain = append(chain, cur)
		var parent sql.NullInt64
		if err := db.r.QueryRowContext(ctx, `SELECT parent_id FROM state_snapshots WHERE snapshot_id = ?`, cur).Scan(&parent); err != nil {
			return nil, notFound(err)
		}
		if !parent.Valid {
			break
		}
		if base, ok := db.snapshots.get(parent.Int64); ok {
			m, err := db.applyDeltas(ctx, base, chain)
			if err == nil {
				db.snapshots.putIfEpoch(id, m, epoch)
			}
			return m, err
		}
		cur = parent.Int64
	}
	m, err := db.applyDeltas(ctx, nil, chain)
	if err == nil {
		db.snapshots.putIfEpoch(id, m, epoch)
	}
	return m, err
}

// applyDeltas applies chain (newest first) on top of base.
func (db *DB) applyDeltas(ctx context.Context, base map[roomdag.StateKey]roomdag.EventID, chain []int64) (map[roomdag.StateKey]roomdag.EventID, error) {
	m := make(map[roomdag.StateKey]roomdag.EventID, len(base)+len(chain))
	for k, v := range base {
		m[k] = v
	}
	for i := len(chain) - 1; i >= 0; i-- {
		rows, err := db.r.QueryContext(ctx, `SELECT type, state_key, event_id FROM state_snapshot_entries WHERE snapshot_id = ?`, chain[i])
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var k roomdag.StateKey
			var id string
			if err := rows.Scan(&k.Type, &k.StateKey, &id); err != nil {
				rows.Close()
				return nil, err
			}
			m[k] = roomdag.EventID(id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// StateEvents loads the events of a snapshot.
func (db *DB) StateEvents(ctx context.Context, snapshot int64) (roomdag.StateMap, error) {
	ids, err := db.Snapshot(ctx, snapshot)
	if err != nil {
		return nil, err
	}
	list := make([]roomdag.EventID, 0, len(ids))
	for _, id := range ids {
		list = append(list, id)
	}
	evs, err := db.stateEventsByID(ctx, db.r, list)
	if err != nil {
		return nil, err
	}
	m := make(roomdag.StateMap, len(evs))
	for _, ev := range evs {
		m[ev.Tuple()] = ev
	}
	return m, nil
}

// TxnEvent returns the event a client transaction created, if any.
func (db *DB) TxnEvent(ctx context.Context, user roomdag.UserID, txn roomdag.Txn) (roomdag.EventID, error) {
	var id string
	err := db.r.QueryRowContext(ctx, `SELECT event_id FROM events WHERE sender = ? AND txn_device = ? AND txn_scope = ? AND txn_id = ?`,
		string(user), txn.DeviceID, txn.Scope, txn.TxnID).Scan(&id)
	return roomdag.EventID(id), notFound(err)
}

func reverse[T any](s []T) {
	for i, j := 0, len(s)-1; i < j; i, j = i+1, j-1 {
		s[i], s[j] = s[j], s[i]
	}
}

// StreamEvents returns up to limit committed events after pos, in stream
// order, each with the state snapshot after it. Positions are assigned by
// the single writer in commit order, so a reader always sees a prefix of
// the stream.
func (db *DB) StreamEvents(ctx context.Context, after roomdag.StreamPos, limit int) ([]storage.StreamEvent, error) {
	epoch := db.events.currentEpoch()
	rows, err := db.r.QueryContext(ctx, `SELECT `+eventCols+`, e.state_after FROM events e
		WHERE e.stream_pos > ? ORDER BY e.stream_pos LIMIT ?`, int64(after), limit)
	if err != nil {
		return nil, err
	}
	var rs []eventRow
	var stateAfter []int64
	for rows.Next() {
		var sa int64
		r, err := scanEventRow(appendScanner{rows, []any{&sa}})
		if err != nil {
			rows.Close()
			return nil, err
		}
		rs, stateAfter = append(rs, r), append(stateAfter, sa)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	evs, err := db.eventsOfRows(ctx, db.r, rs, epoch)
	if err != nil {
		return nil, err
	}
	out := make([]storage.StreamEvent, len(evs))
	for i, ev := range evs {
		out[i] = storage.StreamEvent{StoredEvent: ev, StateAfter: stateAfter[i]}
	}
	return out, nil
}

// appendScanner adds columns after an event row's.
type appendScanner struct {
	rows  *sql.Rows
	extra []any
}

func (s appendScanner) Scan(dest ...any) error { return s.rows.Scan(append(dest, s.extra...)...) }

// MembershipChanges returns the user's membership events in the room,
// oldest first (none for a room they were never in, or one this server
// does not know).
func (db *DB) MembershipChanges(ctx context.Context, room roomdag.RoomID, user roomdag.UserID) (roomdag.MembershipTrail, error) {
	nid, _, err := db.roomNID(ctx, db.r, room)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	rows, err := db.r.QueryContext(ctx, `SELECT e.stream_pos, `+db.d.JSONText("e.json", "content", "membership")+`
		FROM events e WHERE e.room_nid = ? AND e.type = 'm.room.member' AND e.state_key = ? ORDER BY e.stream_pos`,
		nid, string(user))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out roomdag.MembershipTrail
	for rows.Next() {
		var c roomdag.MembershipChange
		var m sql.NullString
		if err := rows.Scan(&c.Pos, &m); err != nil {
			return nil, err
		}
		c.Membership = m.String
		out = append(out, c)
	}
	return out, rows.Err()
}
