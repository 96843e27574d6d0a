package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// The room DAG (roomdag.Rooms.Receive): edges, events outside the
// timeline, backfill under negative stream positions.

// insertEdges records ev's prev_events and auth_events, one statement per
// table.
func insertEdges(tx *sql.Tx, ev *roomdag.Event) error {
	for _, t := range []struct {
		table string
		ids   []roomdag.EventID
	}{{`event_edges (event_id, prev_event_id)`, ev.PrevEvents()}, {`event_auth_edges (event_id, auth_event_id)`, ev.AuthEvents()}} {
		if len(t.ids) == 0 {
			continue
		}
		args := make([]any, 0, 2*len(t.ids))
		for _, id := range t.ids {
			args = append(args, string(ev.ID()), string(id))
		}
		if _, err := tx.Exec(`INSERT INTO `+t.table+` VALUES (?, ?)`+strings.Repeat(`, (?, ?)`, len(t.ids)-1)+
			` ON CONFLICT DO NOTHING`, args...); err != nil {
			return err
		}
	}
	return nil
}

// errEventExists: a received event another write stored first.
var errEventExists = fmt.Errorf("%w (%w)", storage.ErrConflict, roomdag.ErrEventExists)

// insertReceived stores an event of Receive's, after insertEvent has made
// the room and taken the extremities it replaces (a live timeline event
// only). It returns the event's stream position: positive for a live
// timeline event, negative for a backfilled one, 0 for the others.
func (db *DB) insertReceived(tx *sql.Tx, nid int64, p *roomdag.Persist) (roomdag.StreamPos, int64, error) {
	ev := p.Event
	if err := insertEdges(tx, ev); err != nil {
		return 0, 0, err
	}
	for _, s := range p.Snapshots {
		if err := writeSnapshot(tx, nid, s); err != nil {
			return 0, 0, err
		}
	}
	if p.Status != roomdag.StatusTimeline {
		var reason any
		if p.Reason != "" {
			reason = p.Reason
		}
		// An outlier may be received again with its history: it then
		// leaves dag_events for the timeline (below), never the reverse.
		if _, err := tx.Exec(`INSERT INTO dag_events (event_id, room_nid, kind, reason, depth, json, state_before, state_after)
			VALUES (?,?,?,?,?,?,?,?)`, string(ev.ID()), nid, p.Status.String(), reason, ev.Depth(), ev.JSON(),
			p.StateBefore, p.StateAfter); err != nil {
			if db.d.IsUniqueViolation(err) {
				return 0, 0, errEventExists
			}
			return 0, 0, err
		}
		return 0, nid, nil
	}
	if _, err := tx.Exec(`DELETE FROM dag_events WHERE event_id = ? AND kind = 'outlier'`, string(ev.ID())); err != nil {
		return 0, 0, err
	}
	live := p.Kind == roomdag.KindLive
	var pos roomdag.StreamPos
	if live {
		pos = roomdag.StreamPos(next(&db.ctr.event))
		db.change.NoteEvent(pos)
	} else {
		db.ctr.backfill--
		pos = roomdag.StreamPos(db.ctr.backfill)
	}
	var unsigned, dagAfter any
	if len(p.Unsigned) > 0 {
		unsigned = string(p.Unsigned)
	}
	shown := p.StateAfter
	if live && p.CurrentSnapshot != p.StateAfter {
		// The DAG is forked: clients see the resolved state after it.
		shown, dagAfter = p.CurrentSnapshot, p.StateAfter
	}
	if _, err := tx.Exec(`INSERT INTO events (stream_pos, event_id, room_nid, type, state_key, sender, depth, origin_ts, json,
		state_before, state_after, unsigned, dag_state_after) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		int64(pos), string(ev.ID()), nid, ev.Type(), ev.StateKey(), string(ev.Sender()), ev.Depth(), ev.OriginServerTS(),
		ev.JSON(), p.StateBefore, shown, unsigned, dagAfter); err != nil {
		if db.d.IsUniqueViolation(err) {
			return 0, 0, errEventExists
		}
		return 0, 0, err
	}
	if err := db.indexEvent(tx, nid, p, pos); err != nil {
		return 0, 0, err
	}
	if err := db.applyRedaction(tx, p); err != nil {
		return 0, 0, err
	}
	if err := db.insertRelation(tx, nid, p, pos); err != nil {
		return 0, 0, err
	}
	if !live {
		return pos, nid, nil
	}
	if ev.Type() == roomdag.TypeMember && len(p.InviteState) > 0 {
		if _, err := tx.Exec(`INSERT INTO invite_state (event_pos, stripped) VALUES (?, ?)`, int64(pos), string(p.InviteState)); err != nil {
			return 0, 0, err
		}
	}
	for _, k := range p.CurrentRemoved {
		if _, err := tx.Exec(`DELETE FROM current_state WHERE room_nid = ? AND type = ? AND state_key = ?`, nid, k.Type, k.StateKey); err != nil {
			return 0, 0, err
		}
		if k.Type == roomdag.TypeMember {
			if _, err := tx.Exec(`DELETE FROM memberships WHERE room_nid = ? AND user_id = ?`, nid, k.StateKey); err != nil {
				return 0, 0, err
			}
		}
	}
	for _, c := range p.CurrentChanges {
		if err := setCurrent(tx, nid, c, pos); err != nil {
			return 0, 0, err
		}
	}
	if err := setRoomHead(tx, nid, pos, p.Extremities, p.CurrentSnapshot, p.CurrentChainLen, ev.Depth()); err != nil {
		return 0, 0, err
	}
	return pos, nid, nil
}

// setRoomHead records a room write's new forward extremities (added to
// the set, the caller having removed those it replaces), its last stream
// position, current state snapshot and greatest depth.
func setRoomHead(tx *sql.Tx, nid int64, pos roomdag.StreamPos, extremities []roomdag.EventID, snapshot int64, chainLen int, depth int64) error {
	for _, id := range extremities {
		if _, err := tx.Exec(`INSERT INTO forward_extremities (room_nid, event_id) VALUES (?, ?)`, nid, string(id)); err != nil {
			return err
		}
	}
	_, err := tx.Exec(`UPDATE rooms SET last_pos = ?, cur_snapshot = ?, chain_len = ?,
		max_depth = CASE WHEN max_depth > ? THEN max_depth ELSE ? END WHERE room_nid = ?`,
		int64(pos), snapshot, chainLen, depth, depth, nid)
	return err
}

// setCurrent makes ev the room's current state for its key, as of pos.
func setCurrent(tx *sql.Tx, nid int64, ev *roomdag.Event, pos roomdag.StreamPos) error {
	if _, err := tx.Exec(`INSERT INTO current_state (room_nid, type, state_key, event_id) VALUES (?,?,?,?)
		ON CONFLICT (room_nid, type, state_key) DO UPDATE SET event_id = excluded.event_id`,
		nid, ev.Type(), *ev.StateKey(), string(ev.ID())); err != nil {
		return err
	}
	if ev.Type() == roomdag.TypeMember {
		return setMembership(tx, nid, ev, pos)
	}
	return nil
}

// setMembership records ev, a membership event at pos, as its user's
// membership in the room.
func setMembership(tx *sql.Tx, nid int64, ev *roomdag.Event, pos roomdag.StreamPos) error {
	_, err := tx.Exec(`INSERT INTO memberships (room_nid, user_id, membership, event_pos, forgotten) VALUES (?,?,?,?,0)
		ON CONFLICT (room_nid, user_id) DO UPDATE SET membership = excluded.membership, event_pos = excluded.event_pos, forgotten = 0`,
		nid, *ev.StateKey(), ev.Membership(), int64(pos))
	return err
}

// insertOutOfBand stores an out-of-band membership (roomdag.Persist
// OutOfBand): the event at a new stream position, without state, and the
// membership it sets, with its stripped state if any. The room's state
// and extremities stay as they are.
func (db *DB) insertOutOfBand(tx *sql.Tx, nid int64, p *roomdag.Persist) (roomdag.StreamPos, error) {
	ev := p.Event
	pos := roomdag.StreamPos(next(&db.ctr.event))
	db.change.NoteEvent(pos)
	if _, err := tx.Exec(`INSERT INTO events (stream_pos, event_id, room_nid, type, state_key, sender, depth, origin_ts, json,
		state_before, state_after) VALUES (?,?,?,?,?,?,?,?,?,0,0)`,
		int64(pos), string(ev.ID()), nid, ev.Type(), ev.StateKey(), string(ev.Sender()), ev.Depth(), ev.OriginServerTS(),
		ev.JSON()); err != nil {
		if db.d.IsUniqueViolation(err) {
			return 0, storage.ErrConflict
		}
		return 0, err
	}
	if err := setMembership(tx, nid, ev, pos); err != nil {
		return 0, err
	}
	if len(p.InviteState) > 0 {
		if _, err := tx.Exec(`INSERT INTO invite_state (event_pos, stripped) VALUES (?, ?)`, int64(pos), string(p.InviteState)); err != nil {
			return 0, err
		}
	}
	return pos, nil
}

// writeSnapshot writes one state snapshot.
func writeSnapshot(tx *sql.Tx, nid int64, s roomdag.SnapshotWrite) error {
	var parent any
	if s.Parent != 0 {
		parent = s.Parent
	}
	if _, err := tx.Exec(`INSERT INTO state_snapshots (snapshot_id, room_nid, parent_id, chain_len) VALUES (?,?,?,?)`,
		s.ID, nid, parent, s.ChainLen); err != nil {
		return err
	}
	for k, id := range s.Entries {
		if _, err := tx.Exec(`INSERT INTO state_snapshot_entries (snapshot_id, type, state_key, event_id) VALUES (?,?,?,?)`,
			s.ID, k.Type, k.StateKey, string(id)); err != nil {
			return err
		}
	}
	return nil
}

// applyRedaction stores the redacted copy of a redaction's target.
func (db *DB) applyRedaction(tx *sql.Tx, p *roomdag.Persist) error {
	rd := p.Redaction
	if rd == nil {
		return nil
	}
	// unsigned is {"redacted_because": <the redaction>}, built here
	// rather than with the engine's JSON functions.
	because := `{"redacted_because":` + string(rd.Because) + `}`
	if err := db.keepOriginal(tx, rd.Target); err != nil {
		return err
	}
	if _, err := tx.Exec(`UPDATE events SET json = ?, redacted = 1, unsigned = ? WHERE event_id = ?`,
		rd.JSON, because, string(rd.Target)); err != nil {
		return err
	}
	return db.d.UnindexEvent(tx, rd.Target)
}

// DAGEvents returns what is stored of the events among ids: timeline
// events first, then the others (dag_events), then the timeline again
// for those found in neither. The two tables are read by separate
// statements, and an outlier leaves dag_events for the timeline
// (insertReceived) in one commit: one that commits between the reads is
// in neither, and would be reported unknown though it was stored all
// along (a backfill taking the events a concurrent send_join answer has
// as outliers). Events only ever move that way, so the third read finds
// it.
func (db *DB) DAGEvents(ctx context.Context, ids []roomdag.EventID) (map[roomdag.EventID]*roomdag.DAGEvent, error) {
	return db.dagEvents(ctx, db.r, ids)
}

// dagEvents is DAGEvents through q: a read transaction's, for a read that
// holds one (a second connection of the read pool would be one more a
// reader waits for while holding one).
func (db *DB) dagEvents(ctx context.Context, q querier, ids []roomdag.EventID) (map[roomdag.EventID]*roomdag.DAGEvent, error) {
	out := make(map[roomdag.EventID]*roomdag.DAGEvent, len(ids))
	rest, err := db.timelineDAGEvents(ctx, q, ids, out)
	if err != nil {
		return nil, err
	}
	if len(rest) == 0 {
		return out, nil
	}
	if f := db.betweenDAGReads; f != nil {
		f()
	}
	if err := db.otherDAGEvents(ctx, q, rest, out); err != nil {
		return nil, err
	}
	var again []roomdag.EventID
	for _, id := range rest {
		if out[id] == nil {
			again = append(again, id)
		}
	}
	if _, err := db.timelineDAGEvents(ctx, q, again, out); err != nil {
		return nil, err
	}
	return out, nil
}

// BetweenDAGReads sets f to run in DAGEvents between its read of the
// timeline and its read of dag_events, for tests of a write that commits
// there. Set it before the DB is shared.
func (db *DB) BetweenDAGReads(f func()) { db.betweenDAGReads = f }

// timelineDAGEvents adds to out the timeline events among ids, and
// returns the others.
func (db *DB) timelineDAGEvents(ctx context.Context, q querier, ids []roomdag.EventID, out map[roomdag.EventID]*roomdag.DAGEvent) ([]roomdag.EventID, error) {
	var rest []roomdag.EventID
	for len(ids) > 0 {
		n := min(len(ids), 500)
		chunk := make([]any, n)
		for i, id := range ids[:n] {
			chunk[i] = string(id)
		}
		ids = ids[n:]
		epoch := db.events.currentEpoch()
		rows, err := q.QueryContext(ctx, `SELECT `+eventCols+`, COALESCE(e.dag_state_after, e.state_after), COALESCE(s.chain_len, 0)
			FROM events e LEFT JOIN state_snapshots s ON s.snapshot_id = COALESCE(e.dag_state_after, e.state_after)
			WHERE e.event_id IN (?`+strings.Repeat(",?", n-1)+`)`, chunk...)
		if err != nil {
			return nil, err
		}
		var rs []eventRow
		var after []int64
		var chain []int
		for rows.Next() {
			var a int64
			var c int
			r, err := scanEventRow(appendScanner{rows, []any{&a, &c}})
			if err != nil {
				rows.Close()
				return nil, err
			}
			rs, after, chain = append(rs, r), append(after, a), append(chain, c)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		evs, err := db.eventsOfRows(ctx, q, rs, epoch)
		if err != nil {
			return nil, err
		}
		for i, se := range evs {
			out[se.ID()] = &roomdag.DAGEvent{Event: se.Event, Status: roomdag.StatusTimeline, StateAfter: after[i], ChainLen: chain[i]}
		}
		for _, id := range chunk {
			if out[roomdag.EventID(id.(string))] == nil {
				rest = append(rest, roomdag.EventID(id.(string)))
			}
		}
	}
	return rest, nil
}

// otherDAGEvents adds to out the events among ids held in dag_events.
func (db *DB) otherDAGEvents(ctx context.Context, q querier, ids []roomdag.EventID, out map[roomdag.EventID]*roomdag.DAGEvent) error {
	rest := make([]any, len(ids))
	for i, id := range ids {
		rest[i] = string(id)
	}
	for len(rest) > 0 {
		n := min(len(rest), 500)
		chunk := rest[:n]
		rest = rest[n:]
		rows, err := q.QueryContext(ctx, `SELECT d.event_id, d.room_nid, d.kind, d.reason, d.json, d.state_after, COALESCE(s.chain_len, 0)
			FROM dag_events d LEFT JOIN state_snapshots s ON s.snapshot_id = d.state_after
			WHERE d.event_id IN (?`+strings.Repeat(",?", n-1)+`)`, chunk...)
		if err != nil {
			return err
		}
		type dagRow struct {
			id, kind   string
			reason     sql.NullString
			nid, after int64
			chain      int
			raw        []byte
		}
		var rs []dagRow
		var unknown []any
		for rows.Next() {
			var r dagRow
			if err := rows.Scan(&r.id, &r.nid, &r.kind, &r.reason, &r.raw, &r.after, &r.chain); err != nil {
				rows.Close()
				return err
			}
			if db.rooms.version(r.nid) == nil {
				unknown = append(unknown, r.nid)
			}
			rs = append(rs, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		// Room versions only now, the rows closed (see eventsOfRows).
		if len(unknown) > 0 {
			if err := db.loadRoomVersions(ctx, q, unknown); err != nil {
				return err
			}
		}
		for _, r := range rs {
			v := db.rooms.version(r.nid)
			if v == nil {
				return storage.ErrNotFound
			}
			ev, err := roomdag.EventFromTrustedJSON(v, roomdag.EventID(r.id), r.raw)
			if err != nil {
				return err
			}
			d := &roomdag.DAGEvent{Event: ev, StateAfter: r.after, ChainLen: r.chain, Reason: r.reason.String}
			switch r.kind {
			case "outlier":
				d.Status = roomdag.StatusOutlier
			case "rejected":
				d.Status = roomdag.StatusRejected
			default:
				d.Status = roomdag.StatusSoftFailed
			}
			out[ev.ID()] = d
		}
	}
	return nil
}

// HasChildren reports whether a stored timeline event cites id as a
// prev_event (rejected, soft-failed and outlier children do not count:
// none of them is an extremity in its parent's place).
func (db *DB) HasChildren(ctx context.Context, id roomdag.EventID) (bool, error) {
	var one int
	err := db.r.QueryRowContext(ctx, `SELECT 1 FROM event_edges ed JOIN events e ON e.event_id = ed.event_id
		WHERE ed.prev_event_id = ? LIMIT 1`, string(id)).Scan(&one)
	if err == sql.ErrNoRows {
		return false, nil
	}
	return err == nil, err
}

// PrevEvents returns the prev_events of a stored event (any status), from
// the edges table.
func (db *DB) PrevEvents(ctx context.Context, id roomdag.EventID) ([]roomdag.EventID, error) {
	ss, err := queryStrings(ctx, db.r, `SELECT prev_event_id FROM event_edges WHERE event_id = ? ORDER BY prev_event_id`, string(id))
	return toEventIDs(ss), err
}

// AuthEventIDs returns the auth_events of a stored event (any status),
// from the edges table.
func (db *DB) AuthEventIDs(ctx context.Context, id roomdag.EventID) ([]roomdag.EventID, error) {
	ss, err := queryStrings(ctx, db.r, `SELECT auth_event_id FROM event_auth_edges WHERE event_id = ? ORDER BY auth_event_id`, string(id))
	return toEventIDs(ss), err
}

// Extremities returns a room's forward extremities.
func (db *DB) Extremities(ctx context.Context, room roomdag.RoomID) ([]roomdag.EventID, error) {
	nid, _, err := db.roomNID(ctx, db.r, room)
	if err != nil {
		return nil, err
	}
	ss, err := queryStrings(ctx, db.r, `SELECT event_id FROM forward_extremities WHERE room_nid = ? ORDER BY event_id`, nid)
	return toEventIDs(ss), err
}

// EventsWithOutliers is Events that also finds events held as outliers
// (the state of a room joined over federation, which has no place in the
// timeline): those have stream position 0 and no state snapshot.
func (db *DB) EventsWithOutliers(ctx context.Context, ids []roomdag.EventID) ([]*roomdag.StoredEvent, error) {
	out, err := db.eventsByID(ctx, db.r, ids)
	if err != nil || len(out) == len(ids) {
		return out, err
	}
	found := make([]roomdag.EventID, 0, len(out))
	for _, ev := range out {
		found = append(found, ev.ID())
	}
	missing, m, err := db.dagEventsNotIn(ctx, db.r, ids, found)
	if err != nil {
		return nil, err
	}
	for _, id := range missing {
		if d := m[id]; d != nil && d.Status == roomdag.StatusOutlier {
			out = append(out, &roomdag.StoredEvent{Event: d.Event})
		}
	}
	return out, nil
}

// dagEventsNotIn reads from the DAG the ids that found does not hold
// (events outside the timeline), and returns those ids in order too.
func (db *DB) dagEventsNotIn(ctx context.Context, q querier, ids, found []roomdag.EventID) ([]roomdag.EventID, map[roomdag.EventID]*roomdag.DAGEvent, error) {
	have := make(map[roomdag.EventID]bool, len(found))
	for _, id := range found {
		have[id] = true
	}
	var missing []roomdag.EventID
	for _, id := range ids {
		if !have[id] {
			missing = append(missing, id)
		}
	}
	m, err := db.dagEvents(ctx, q, missing)
	return missing, m, err
}

// stateEventsByID is eventsByID for the events of a state, which may be
// outliers (state taken from another server with a gap behind it).
func (db *DB) stateEventsByID(ctx context.Context, q querier, ids []roomdag.EventID) ([]*roomdag.Event, error) {
	evs, err := db.eventsByID(ctx, q, ids)
	if err != nil {
		return nil, err
	}
	out := make([]*roomdag.Event, 0, len(ids))
	for _, ev := range evs {
		out = append(out, ev.Event)
	}
	if len(out) == len(ids) {
		return out, nil
	}
	found := make([]roomdag.EventID, 0, len(out))
	for _, ev := range out {
		found = append(found, ev.ID())
	}
	_, m, err := db.dagEventsNotIn(ctx, q, ids, found)
	if err != nil {
		return nil, err
	}
	for _, d := range m {
		out = append(out, d.Event)
	}
	return out, nil
}
