package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// The compliance archive's tables (package compliance). The archiver is
// their one writer of records; requests only queue entries; the
// retention purge (PurgeCompliance) is the only thing that changes a
// record, and then only drops its payload.

// ErrComplianceMoved is AppendCompliance's refusal: the stored position
// or the chain head is not the one the batch was built on (another
// process archived meanwhile).
var ErrComplianceMoved = errors.New("storage: compliance archive moved on")

// keepUnredacted, set while compliance is on, has a redaction copy the
// original JSON of its target aside in its own transaction.
type keepUnredacted struct{ on atomic.Bool }

// SetKeepUnredacted makes every later redaction copy the original JSON of
// the event it overwrites into compliance_unredacted, in the redaction's
// transaction (the archive reads it there). Set it before serving.
func (db *DB) SetKeepUnredacted(on bool) { db.keep.on.Store(on) }

// keepOriginal runs in the redaction's transaction, before the target is
// overwritten.
func (db *DB) keepOriginal(tx *sql.Tx, target roomdag.EventID) error {
	if !db.keep.on.Load() {
		return nil
	}
	// Read and written as text: the engines store events.json as
	// different types (BLOB, BYTEA).
	var raw []byte
	err := tx.QueryRow(`SELECT json FROM events WHERE event_id = ? AND redacted = 0`, string(target)).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return nil // already redacted, or unknown
	}
	if err != nil {
		return err
	}
	_, err = tx.Exec(`INSERT INTO compliance_unredacted (event_id, json) VALUES (?, ?) ON CONFLICT (event_id) DO NOTHING`,
		string(target), string(raw))
	return err
}

// CompliancePos is the archiver's stored position in the event stream.
func (db *DB) CompliancePos(ctx context.Context) (roomdag.StreamPos, error) {
	var p int64
	err := db.r.QueryRowContext(ctx, `SELECT event_pos FROM compliance_position WHERE id = 1`).Scan(&p)
	return roomdag.StreamPos(p), err
}

// ComplianceHead is the chain's last record's sequence number and hash
// (0 and "" for an empty chain) and the last checkpoint's (0, 0 when
// none).
func (db *DB) ComplianceHead(ctx context.Context) (seq int64, hash string, cp storage.ComplianceCheckpoint, err error) {
	err = db.r.QueryRowContext(ctx, `SELECT seq, hash FROM compliance_records ORDER BY seq DESC LIMIT 1`).Scan(&seq, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		err = nil
	}
	if err != nil {
		return 0, "", cp, err
	}
	c, err := db.ComplianceCheckpointCovering(ctx, 0, true)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return 0, "", cp, err
	}
	if c != nil {
		cp = *c
	}
	return seq, hash, cp, nil
}

// ComplianceBackfillPos is the archiver's stored position among
// backfilled events (negative, going down; 0 before the first).
func (db *DB) ComplianceBackfillPos(ctx context.Context) (roomdag.StreamPos, error) {
	var p int64
	err := db.r.QueryRowContext(ctx, `SELECT backfill_pos FROM compliance_position WHERE id = 1`).Scan(&p)
	return roomdag.StreamPos(p), err
}

const complianceEventColumns = `SELECT e.stream_pos, e.event_id, r.room_id, e.type, e.sender, e.origin_ts, e.json, e.redacted, u.json
		FROM events e JOIN rooms r ON r.room_nid = e.room_nid
		LEFT JOIN compliance_unredacted u ON u.event_id = e.event_id`

// ComplianceEvents returns up to limit committed events after pos, in
// stream order, with the original JSON of those since redacted.
func (db *DB) ComplianceEvents(ctx context.Context, after roomdag.StreamPos, limit int) ([]storage.ComplianceEvent, error) {
	return db.complianceEvents(ctx, complianceEventColumns+` WHERE e.stream_pos > ? ORDER BY e.stream_pos LIMIT ?`, int64(after), limit)
}

// ComplianceBackfill returns up to limit backfilled events below pos
// (negative positions), in the order they were stored (going down), as
// ComplianceEvents does. Backfill positions are allocated in commit
// order too, so a reader that sees one sees every one above it.
func (db *DB) ComplianceBackfill(ctx context.Context, below roomdag.StreamPos, limit int) ([]storage.ComplianceEvent, error) {
	return db.complianceEvents(ctx, complianceEventColumns+` WHERE e.stream_pos < ? ORDER BY e.stream_pos DESC LIMIT ?`, int64(min(below, 0)), limit)
}

func (db *DB) complianceEvents(ctx context.Context, q string, args ...any) ([]storage.ComplianceEvent, error) {
	rows, err := db.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []storage.ComplianceEvent
	for rows.Next() {
		var (
			e                storage.ComplianceEvent
			pos, redacted    int64
			id, room, sender string
			orig             sql.NullString
		)
		if err := rows.Scan(&pos, &id, &room, &e.Type, &sender, &e.TS, &e.JSON, &redacted, &orig); err != nil {
			return nil, err
		}
		e.Pos, e.ID, e.Room, e.Sender, e.Redacted = roomdag.StreamPos(pos), roomdag.EventID(id), roomdag.RoomID(room), roomdag.UserID(sender), redacted != 0
		if orig.Valid {
			e.Original = []byte(orig.String)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// ComplianceReceived returns up to limit received events outside the
// timeline (dag_events) not archived yet, in room and depth order. They
// have no position: AppendCompliance marks those it archives.
func (db *DB) ComplianceReceived(ctx context.Context, limit int) ([]storage.ComplianceReceived, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT d.event_id, r.room_id, d.kind, d.reason, d.json
		FROM dag_events d JOIN rooms r ON r.room_nid = d.room_nid
		WHERE d.archived = 0 ORDER BY d.room_nid, d.depth, d.event_id LIMIT ?`, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []storage.ComplianceReceived
	for rows.Next() {
		var (
			e        storage.ComplianceReceived
			id, room string
			reason   sql.NullString
		)
		if err := rows.Scan(&id, &room, &e.Status, &reason, &e.JSON); err != nil {
			return nil, err
		}
		e.ID, e.Room, e.Reason = roomdag.EventID(id), roomdag.RoomID(room), reason.String
		out = append(out, e)
	}
	return out, rows.Err()
}

// ComplianceOriginal returns the original JSON of a redacted event, or
// storage.ErrNotFound.
func (db *DB) ComplianceOriginal(ctx context.Context, id roomdag.EventID) ([]byte, error) {
	var s string
	err := db.r.QueryRowContext(ctx, `SELECT json FROM compliance_unredacted WHERE event_id = ?`, string(id)).Scan(&s)
	if err != nil {
		return nil, notFound(err)
	}
	return []byte(s), nil
}

// QueueCompliance stores an entry for the archiver; it returns once the
// entry is durable.
func (db *DB) QueueCompliance(ctx context.Context, e storage.ComplianceEntry) error {
	return db.write(func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO compliance_queue (ts, kind, actor, room, payload) VALUES (?,?,?,?,?)`,
			e.TS, e.Kind, e.Actor, e.Room, e.Payload)
		return err
	}, nil)
}

// ComplianceQueued returns up to limit queued entries, oldest first.
func (db *DB) ComplianceQueued(ctx context.Context, limit int) ([]storage.ComplianceEntry, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT id, ts, kind, actor, room, payload FROM compliance_queue ORDER BY id LIMIT ?`, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []storage.ComplianceEntry
	for rows.Next() {
		var e storage.ComplianceEntry
		if err := rows.Scan(&e.ID, &e.TS, &e.Kind, &e.Actor, &e.Room, &e.Payload); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// AppendCompliance commits an archiver step (storage.ComplianceBatch):
// its records, the removal of the entries it drained, its checkpoint and
// its new position, in one transaction, or nothing with
// ErrComplianceMoved when the position or head moved.
func (db *DB) AppendCompliance(ctx context.Context, b storage.ComplianceBatch) error {
	return db.write(func(tx *sql.Tx) error {
		var pos, backfill int64
		if err := tx.QueryRow(`SELECT event_pos, backfill_pos FROM compliance_position WHERE id = 1`).Scan(&pos, &backfill); err != nil {
			return err
		}
		if roomdag.StreamPos(pos) != b.From || roomdag.StreamPos(backfill) != b.BackfillFrom {
			return ErrComplianceMoved
		}
		if len(b.Records) > 0 || b.Checkpoint != nil {
			var head int64
			if err := tx.QueryRow(`SELECT COALESCE(MAX(seq), 0) FROM compliance_records`).Scan(&head); err != nil {
				return err
			}
			// A batch of records follows the head; a checkpoint alone
			// (the archiver's timer) seals the head itself.
			if len(b.Records) > 0 && head != b.Records[0].Seq-1 || len(b.Records) == 0 && head != b.Checkpoint.Seq {
				return ErrComplianceMoved
			}
		}
		for _, r := range b.Records {
			if _, err := tx.Exec(`INSERT INTO compliance_records (seq, ts, kind, actor, room, payload, record_hash, prev_hash, hash)
				VALUES (?,?,?,?,?,?,?,?,?)`, r.Seq, r.TS, r.Kind, r.Actor, r.Room, r.Payload, r.RecordHash, r.PrevHash, r.Hash); err != nil {
				return err
			}
		}
		for _, id := range b.Received {
			// An outlier that has since entered the timeline is gone
			// from dag_events: the live or backfill position archives it.
			if _, err := tx.Exec(`UPDATE dag_events SET archived = 1 WHERE event_id = ?`, string(id)); err != nil {
				return err
			}
		}
		for _, id := range b.Drained {
			if _, err := tx.Exec(`DELETE FROM compliance_queue WHERE id = ?`, id); err != nil {
				return err
			}
		}
		if c := b.Checkpoint; c != nil {
			if _, err := tx.Exec(`INSERT INTO compliance_checkpoints (seq, head, ts, key_id, signature) VALUES (?,?,?,?,?)`,
				c.Seq, c.Head, c.TS, c.KeyID, c.Signature); err != nil {
				return err
			}
		}
		_, err := tx.Exec(`UPDATE compliance_position SET event_pos = ?, backfill_pos = ? WHERE id = 1`, int64(b.To), int64(b.BackfillTo))
		return err
	}, nil)
}

// complianceRecordPage bounds the rows one query of ScanCompliance reads:
// a scan holds one page in memory, whatever the archive's size.
const complianceRecordPage = 1000

// ScanCompliance calls fn with every record f selects, in sequence
// order, reading a page at a time, so memory stays constant on any
// archive. fn's error stops the scan and is returned.
func (db *DB) ScanCompliance(ctx context.Context, f storage.ComplianceFilter, fn func(storage.ComplianceRecord) error) error {
	where := []string{"seq > ?"}
	var args []any
	if f.Actor != "" {
		where, args = append(where, "actor = ?"), append(args, f.Actor)
	}
	if f.Room != "" {
		where, args = append(where, "room = ?"), append(args, f.Room)
	}
	if f.FromTS != 0 {
		where, args = append(where, "ts >= ?"), append(args, f.FromTS)
	}
	if f.ToTS != 0 {
		where, args = append(where, "ts < ?"), append(args, f.ToTS)
	}
	if f.ToSeq != 0 {
		where, args = append(where, "seq <= ?"), append(args, f.ToSeq)
	}
	q := `SELECT seq, ts, kind, actor, room, payload, record_hash, prev_hash, hash FROM compliance_records WHERE ` +
		strings.Join(where, " AND ") + fmt.Sprintf(` ORDER BY seq LIMIT %d`, complianceRecordPage)
	after := max(f.FromSeq-1, 0)
	for {
		n := 0
		rows, err := db.r.QueryContext(ctx, q, append([]any{after}, args...)...)
		if err != nil {
			return err
		}
		for rows.Next() {
			var r storage.ComplianceRecord
			var payload sql.NullString
			if err := rows.Scan(&r.Seq, &r.TS, &r.Kind, &r.Actor, &r.Room, &payload, &r.RecordHash, &r.PrevHash, &r.Hash); err != nil {
				rows.Close()
				return err
			}
			r.Payload, r.Purged = payload.String, !payload.Valid
			n++
			after = r.Seq
			if err := fn(r); err != nil {
				rows.Close()
				return err
			}
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return err
		}
		if n < complianceRecordPage {
			return nil
		}
	}
}

// ComplianceCheckpoints calls fn with every checkpoint from seq on, in
// order.
func (db *DB) ComplianceCheckpoints(ctx context.Context, from int64, fn func(storage.ComplianceCheckpoint) error) error {
	rows, err := db.r.QueryContext(ctx, `SELECT seq, head, ts, key_id, signature FROM compliance_checkpoints WHERE seq >= ? ORDER BY seq`, from)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var c storage.ComplianceCheckpoint
		if err := rows.Scan(&c.Seq, &c.Head, &c.TS, &c.KeyID, &c.Signature); err != nil {
			return err
		}
		if err := fn(c); err != nil {
			return err
		}
	}
	return rows.Err()
}

// ComplianceCheckpointCovering returns the first checkpoint whose Seq is
// at least seq, or with last the newest checkpoint; storage.ErrNotFound
// when there is none.
func (db *DB) ComplianceCheckpointCovering(ctx context.Context, seq int64, last bool) (*storage.ComplianceCheckpoint, error) {
	q := `SELECT seq, head, ts, key_id, signature FROM compliance_checkpoints WHERE seq >= ? ORDER BY seq LIMIT 1`
	if last {
		q = `SELECT seq, head, ts, key_id, signature FROM compliance_checkpoints WHERE seq >= ? ORDER BY seq DESC LIMIT 1`
	}
	var c storage.ComplianceCheckpoint
	if err := db.r.QueryRowContext(ctx, q, seq).Scan(&c.Seq, &c.Head, &c.TS, &c.KeyID, &c.Signature); err != nil {
		return nil, notFound(err)
	}
	return &c, nil
}

// ComplianceStats summarises the archive.
func (db *DB) ComplianceStats(ctx context.Context) (storage.ComplianceStats, error) {
	var s storage.ComplianceStats
	err := db.readTx(ctx, func(tx *sql.Tx) error {
		if err := tx.QueryRow(`SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0), COALESCE(MIN(seq), 0), COALESCE(MAX(seq), 0),
			COALESCE(MIN(ts), 0) FROM compliance_records`).Scan(&s.Records, &s.Bytes, &s.FirstSeq, &s.HeadSeq, &s.OldestTS); err != nil {
			return err
		}
		if err := tx.QueryRow(`SELECT COUNT(*) FROM compliance_queue`).Scan(&s.Queued); err != nil {
			return err
		}
		if err := tx.QueryRow(`SELECT COUNT(*) FROM dag_events WHERE archived = 0`).Scan(&s.Received); err != nil {
			return err
		}
		if err := tx.QueryRow(`SELECT COUNT(*), COALESCE(MAX(seq), 0) FROM compliance_checkpoints`).Scan(&s.Checkpoints, &s.LastCheckSeq); err != nil {
			return err
		}
		var p, bf, low int64
		if err := tx.QueryRow(`SELECT COALESCE(MIN(stream_pos), 0) FROM events`).Scan(&low); err != nil {
			return err
		}
		err := tx.QueryRow(`SELECT event_pos, backfill_pos FROM compliance_position WHERE id = 1`).Scan(&p, &bf)
		s.Pos, s.BackfillPos, s.Lowest = roomdag.StreamPos(p), roomdag.StreamPos(bf), roomdag.StreamPos(min(low, 0))
		return err
	})
	return s, err
}

// EncryptedRooms lists the rooms whose current state holds
// m.room.encryption: their messages reach the archive unreadable.
func (db *DB) EncryptedRooms(ctx context.Context) ([]roomdag.RoomID, error) {
	ss, err := queryStrings(ctx, db.r, `SELECT r.room_id FROM current_state c JOIN rooms r ON r.room_nid = c.room_nid
		WHERE c.type = 'm.room.encryption' AND c.state_key = '' ORDER BY r.room_id`)
	out := make([]roomdag.RoomID, len(ss))
	for i, s := range ss {
		out[i] = roomdag.RoomID(s)
	}
	return out, err
}

// PurgeCompliance is the retention purge's one entry point into the
// archive: it drops the payload of every record older than beforeTS (ms)
// for which keep(kind, actor, room) is false, and returns how many it
// dropped. room, when not "", limits it to the records of that room.
// The record's sequence number, time, kind, actor, room and hashes stay,
// so the chain and its checkpoints still verify (a purged record's
// record_hash stands for its content) and a hold can still be checked
// against it. keep is called on the caller's goroutine, outside any
// transaction; it must be quick (an in-memory set of held users and
// rooms). Records are purged a page at a time.
func (db *DB) PurgeCompliance(ctx context.Context, room string, beforeTS int64, keep func(kind, actor, room string) bool) (int, error) {
	total := 0
	q := `SELECT seq, kind, actor, room FROM compliance_records
			WHERE seq > ? AND ts < ? AND payload IS NOT NULL ORDER BY seq LIMIT ?`
	if room != "" {
		q = `SELECT seq, kind, actor, room FROM compliance_records
			WHERE seq > ? AND ts < ? AND payload IS NOT NULL AND room = ? ORDER BY seq LIMIT ?`
	}
	for after := int64(0); ; {
		args := []any{after, beforeTS, complianceRecordPage}
		if room != "" {
			args = []any{after, beforeTS, room, complianceRecordPage}
		}
		rows, err := db.r.QueryContext(ctx, q, args...)
		if err != nil {
			return total, err
		}
		var drop []int64
		n := 0
		for rows.Next() {
			var seq int64
			var kind, actor, room string
			if err := rows.Scan(&seq, &kind, &actor, &room); err != nil {
				rows.Close()
				return total, err
			}
			n++
			after = seq
			if keep == nil || !keep(kind, actor, room) {
				drop = append(drop, seq)
			}
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return total, err
		}
		if len(drop) > 0 {
			if err := db.write(func(tx *sql.Tx) error {
				for _, seq := range drop {
					if _, err := tx.Exec(`UPDATE compliance_records SET payload = NULL WHERE seq = ?`, seq); err != nil {
						return err
					}
				}
				return nil
			}, nil); err != nil {
				return total, err
			}
			total += len(drop)
		}
		if n < complianceRecordPage {
			return total, nil
		}
	}
}

// ComplianceDistinct returns the distinct values of column ("room" or
// "actor") among the records f selects, sorted: an export's
// conversations and participants.
func (db *DB) ComplianceDistinct(ctx context.Context, column string, f storage.ComplianceFilter) ([]string, error) {
	if column != "room" && column != "actor" {
		return nil, fmt.Errorf("storage: no compliance column %q", column)
	}
	where, args := []string{"seq >= ?"}, []any{f.FromSeq}
	if f.Actor != "" {
		where, args = append(where, "actor = ?"), append(args, f.Actor)
	}
	if f.Room != "" {
		where, args = append(where, "room = ?"), append(args, f.Room)
	}
	if f.FromTS != 0 {
		where, args = append(where, "ts >= ?"), append(args, f.FromTS)
	}
	if f.ToTS != 0 {
		where, args = append(where, "ts < ?"), append(args, f.ToTS)
	}
	if f.ToSeq != 0 {
		where, args = append(where, "seq <= ?"), append(args, f.ToSeq)
	}
	return queryStrings(ctx, db.r, `SELECT DISTINCT `+column+` FROM compliance_records WHERE `+strings.Join(where, " AND ")+` ORDER BY `+column, args...)
}
