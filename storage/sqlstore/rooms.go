package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// roomIndex caches room_id ↔ room_nid and each room's version; rooms are
// never deleted, so entries never go stale.
type roomIndex struct {
	mu       sync.RWMutex
	nids     map[roomdag.RoomID]int64
	versions map[int64]*roomdag.RoomVersion
}

func (ri *roomIndex) get(id roomdag.RoomID) (int64, bool) {
	ri.mu.RLock()
	defer ri.mu.RUnlock()
	nid, ok := ri.nids[id]
	return nid, ok
}

func (ri *roomIndex) version(nid int64) *roomdag.RoomVersion {
	ri.mu.RLock()
	defer ri.mu.RUnlock()
	return ri.versions[nid]
}

func (ri *roomIndex) put(id roomdag.RoomID, nid int64, v *roomdag.RoomVersion) {
	ri.mu.Lock()
	defer ri.mu.Unlock()
	ri.nids[id] = nid
	ri.versions[nid] = v
}

// roomNID resolves a room ID, reading the database on a cache miss.
func (db *DB) roomNID(ctx context.Context, q querier, id roomdag.RoomID) (int64, *roomdag.RoomVersion, error) {
	if nid, ok := db.rooms.get(id); ok {
		return nid, db.rooms.version(nid), nil
	}
	var nid int64
	var ver string
	err := q.QueryRowContext(ctx, `SELECT room_nid, version FROM rooms WHERE room_id = ?`, string(id)).Scan(&nid, &ver)
	if err != nil {
		return 0, nil, notFound(err)
	}
	v, ok := roomdag.LookupRoomVersion(ver)
	if !ok {
		return 0, nil, fmt.Errorf("room %s has unsupported version %q", id, ver)
	}
	db.rooms.put(id, nid, v)
	return nid, v, nil
}

// querier is what *sql.DB and *sql.Tx share.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// NewSnapshotID allocates a state snapshot ID, unique across every process
// writing the database: from memory when this process is the only writer,
// else from the block last reserved from the database (one round trip per
// block, under snapshotMu).
func (db *DB) NewSnapshotID(ctx context.Context) (int64, error) {
	db.snapshotMu.Lock()
	defer db.snapshotMu.Unlock()
	if !db.d.ConcurrentWriters() {
		db.lastSnapshotID++
		return db.lastSnapshotID, nil
	}
	if db.nextSnapshotID >= db.endSnapshotID {
		first, n, err := db.d.ReserveSnapshotIDs(ctx, db.r)
		if err != nil {
			return 0, err
		}
		db.nextSnapshotID, db.endSnapshotID = first, first+n
	}
	id := db.nextSnapshotID
	db.nextSnapshotID++
	return id, nil
}

// LoadRoom reads a room's current state for the write path.
func (db *DB) LoadRoom(ctx context.Context, id roomdag.RoomID) (*roomdag.RoomState, error) {
	var st *roomdag.RoomState
	err := db.readTx(ctx, func(tx *sql.Tx) error {
		var err error
		st, err = db.loadRoom(ctx, tx, id)
		return err
	})
	return st, err
}

// loadRoom reads a room's current state in tx: a read snapshot, or the
// writer's transaction (EnqueueBuilt).
func (db *DB) loadRoom(ctx context.Context, tx *sql.Tx, id roomdag.RoomID) (*roomdag.RoomState, error) {
	nid, v, err := db.roomNID(ctx, tx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, roomdag.ErrUnknownRoom
	}
	if err != nil {
		return nil, err
	}
	st := &roomdag.RoomState{Version: v}
	err = func() error {
		if err := tx.QueryRowContext(ctx, `SELECT last_pos, cur_snapshot, chain_len, max_depth FROM rooms WHERE room_nid = ?`, nid).
			Scan(&st.LastPos, &st.Snapshot, &st.ChainLen, &st.Depth); err != nil {
			return err
		}
		ids, err := queryStrings(ctx, tx, `SELECT event_id FROM current_state WHERE room_nid = ?`, nid)
		if err != nil {
			return err
		}
		evs, err := db.stateEventsByID(ctx, tx, toEventIDs(ids))
		if err != nil {
			return err
		}
		st.State = make(roomdag.StateMap, len(evs))
		for _, ev := range evs {
			st.State[ev.Tuple()] = ev
		}
		ext, err := queryStrings(ctx, tx, `SELECT event_id FROM forward_extremities WHERE room_nid = ? ORDER BY event_id`, nid)
		if err != nil {
			return err
		}
		st.Extremities = toEventIDs(ext)
		if v.EventFormat == roomdag.EventFormatV1 {
			// v1 and v2 events cite their prev events with the events'
			// reference hashes, so the write path needs the events.
			evs, err := db.eventsByID(ctx, tx, st.Extremities)
			if err != nil {
				return err
			}
			for _, ev := range evs {
				st.ExtremityEvents = append(st.ExtremityEvents, ev.Event)
			}
		}
		return nil
	}()
	if err != nil {
		return nil, err
	}
	return st, nil
}

// errStaleGeneration: an earlier event of this room's generation failed.
var errStaleGeneration = roomdag.ErrStale

// EnqueueEvent queues an event and everything that goes with it.
func (db *DB) EnqueueEvent(p *roomdag.Persist) <-chan error {
	ev := p.Event
	room := string(ev.RoomID())
	var pos roomdag.StreamPos
	var nid int64
	j := &job{
		fn: func(tx *sql.Tx) error {
			if db.failedGen[room] > p.Generation {
				return errStaleGeneration
			}
			var err error
			pos, nid, err = db.insertEvent(tx, p)
			return err
		},
		after: func() { db.eventCommitted(p, nid, pos) },
		failed: func() {
			if db.failedGen[room] < p.Generation+1 {
				db.failedGen[room] = p.Generation + 1
			}
		},
	}
	return db.enqueueJob(j)
}

// eventCommitted runs on the writer goroutine once p is committed at pos
// in room nid.
func (db *DB) eventCommitted(p *roomdag.Persist, nid int64, pos roomdag.StreamPos) {
	ev := p.Event
	if p.NewRoom {
		// Only once committed: a rolled-back room's NID is
		// allocated again. Later jobs of this batch read it in tx.
		db.rooms.put(ev.RoomID(), nid, ev.Version())
	}
	if p.Redaction != nil {
		db.events.remove(p.Redaction.Target)
	}
	if p.Committed != nil {
		p.Committed(pos)
	}
}

// EnqueueBuilt queues a write whose event build makes in the writer's
// transaction, on the room as stored there: the batch holds the lock that
// orders every writer of the database (Dialect.BeginBatch), so the room
// cannot change between that read and the commit. Unlike EnqueueEvent it
// ignores the room's failed generations: the event is built on what is
// stored, not on an event that failed. It holds up every writer for a
// load of the room and a build: roomdag uses it only for a write that
// kept losing its room to other writers.
func (db *DB) EnqueueBuilt(id roomdag.RoomID, build func(*roomdag.RoomState) (*roomdag.Persist, error)) <-chan error {
	var p *roomdag.Persist
	var pos roomdag.StreamPos
	var nid int64
	return db.enqueueJob(&job{
		fn: func(tx *sql.Tx) error {
			st, err := db.loadRoom(context.Background(), tx, id)
			if err != nil {
				return err
			}
			if p, err = build(st); err != nil {
				return err
			}
			if p.NewRoom || p.Event.RoomID() != id {
				return fmt.Errorf("storage: EnqueueBuilt for %s built an event of room %s (new room %v)", id, p.Event.RoomID(), p.NewRoom)
			}
			pos, nid, err = db.insertEvent(tx, p)
			return err
		},
		after: func() { db.eventCommitted(p, nid, pos) },
	})
}

// insertEvent runs on the writer goroutine. It returns the event's
// stream position and its room's NID.
func (db *DB) insertEvent(tx *sql.Tx, p *roomdag.Persist) (roomdag.StreamPos, int64, error) {
	ctx := context.Background()
	ev := p.Event
	var nid int64
	if p.NewRoom {
		nid = next(&db.ctr.room)
		if _, err := tx.Exec(`INSERT INTO rooms (room_nid, room_id, version) VALUES (?, ?, ?)`, nid, string(ev.RoomID()), ev.Version().ID); err != nil {
			if db.d.IsUniqueViolation(err) {
				return 0, 0, roomdag.ErrRoomExists
			}
			return 0, 0, err
		}
	} else {
		var err error
		if nid, _, err = db.roomNID(ctx, tx, ev.RoomID()); err != nil {
			return 0, 0, err
		}
		if !p.KeepExtremities {
			if err := takeExtremities(tx, nid, p.ExtremitiesBefore); err != nil {
				return 0, 0, err
			}
		}
	}
	if p.OutOfBand {
		pos, err := db.insertOutOfBand(tx, nid, p)
		return pos, nid, err
	}
	if p.Received {
		return db.insertReceived(tx, nid, p)
	}
	var txnDevice, txnScope, txnID, unsigned any
	if p.Txn != nil {
		txnDevice, txnScope, txnID = p.Txn.DeviceID, p.Txn.Scope, p.Txn.TxnID
	}
	if len(p.Unsigned) > 0 {
		unsigned = string(p.Unsigned)
	}
	pos := roomdag.StreamPos(next(&db.ctr.event))
	db.change.NoteEvent(pos)
	if _, err := tx.Exec(`INSERT INTO events (stream_pos, event_id, room_nid, type, state_key, sender, depth, origin_ts, json,
		state_before, state_after, unsigned, txn_device, txn_scope, txn_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		int64(pos), string(ev.ID()), nid, ev.Type(), ev.StateKey(), string(ev.Sender()), ev.Depth(), ev.OriginServerTS(),
		ev.JSON(), p.StateBefore, p.StateAfter, unsigned, txnDevice, txnScope, txnID); err != nil {
		if db.d.IsUniqueViolation(err) {
			return 0, 0, storage.ErrConflict
		}
		return 0, 0, err
	}
	if ev.IsState() {
		if err := db.insertState(tx, nid, p, pos); err != nil {
			return 0, 0, err
		}
	}
	if err := insertEdges(tx, ev); err != nil {
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
	if err := setRoomHead(tx, nid, pos, p.Extremities, p.StateAfter, p.ChainLen, ev.Depth()); err != nil {
		return 0, 0, err
	}
	return pos, nid, nil
}

func (db *DB) insertState(tx *sql.Tx, nid int64, p *roomdag.Persist, pos roomdag.StreamPos) error {
	ev := p.Event
	var parent any
	if p.SnapshotParent != 0 {
		parent = p.SnapshotParent
	}
	if _, err := tx.Exec(`INSERT INTO state_snapshots (snapshot_id, room_nid, parent_id, chain_len) VALUES (?,?,?,?)`,
		p.StateAfter, nid, parent, p.ChainLen); err != nil {
		return err
	}
	for k, id := range p.Snapshot {
		if _, err := tx.Exec(`INSERT INTO state_snapshot_entries (snapshot_id, type, state_key, event_id) VALUES (?,?,?,?)`,
			p.StateAfter, k.Type, k.StateKey, string(id)); err != nil {
			return err
		}
	}
	if _, err := tx.Exec(`INSERT INTO current_state (room_nid, type, state_key, event_id) VALUES (?,?,?,?)
		ON CONFLICT (room_nid, type, state_key) DO UPDATE SET event_id = excluded.event_id`,
		nid, ev.Type(), *ev.StateKey(), string(ev.ID())); err != nil {
		return err
	}
	if ev.Type() == roomdag.TypeMember {
		if err := setMembership(tx, nid, ev, pos); err != nil {
			return err
		}
		if len(p.InviteState) > 0 {
			if _, err := tx.Exec(`INSERT INTO invite_state (event_pos, stripped) VALUES (?, ?)`, int64(pos), string(p.InviteState)); err != nil {
				return err
			}
		}
	}
	return nil
}

func queryStrings(ctx context.Context, q querier, query string, args ...any) ([]string, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

func toEventIDs(ss []string) []roomdag.EventID {
	out := make([]roomdag.EventID, len(ss))
	for i, s := range ss {
		out[i] = roomdag.EventID(s)
	}
	return out
}

// SetPublished lists or unlists a room in the public room directory.
func (db *DB) SetPublished(ctx context.Context, room roomdag.RoomID, published bool) error {
	nid, _, err := db.roomNID(ctx, db.r, room)
	if err != nil {
		return err
	}
	return db.write(func(tx *sql.Tx) error {
		_, err := tx.Exec(`UPDATE rooms SET published = ? WHERE room_nid = ?`, published, nid)
		return err
	}, nil)
}
