package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"sort"
	"strings"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// Event relationships: the event_relations and threads tables (see the
// migration in schema.go).

// insertRelation indexes the relationship of a new event and, for a
// redaction, forgets the relationship of its target: "when a child event
// is redacted then the relationship is broken" (spec: "Aggregations of
// child events"). It runs on the writer goroutine, in the transaction that
// stores the event.
func (db *DB) insertRelation(tx *sql.Tx, nid int64, p *roomdag.Persist, pos roomdag.StreamPos) error {
	ev := p.Event
	if rel, ok := ev.Relation(); ok {
		var key any
		if rel.RelType == roomdag.RelAnnotation && rel.Key != "" {
			key = rel.Key
		}
		if _, err := tx.Exec(`INSERT INTO event_relations (event_pos, event_id, room_nid, relates_to, rel_type, type,
			is_state, sender, depth, origin_ts, key) VALUES (?,?,?,?,?,?,?,?,?,?,?)`,
			int64(pos), string(ev.ID()), nid, string(rel.Parent), rel.RelType, ev.Type(), ev.IsState(),
			string(ev.Sender()), ev.Depth(), ev.OriginServerTS(), key); err != nil {
			return err
		}
		if rel.RelType == roomdag.RelThread {
			// The thread's latest event is the topologically newest one.
			if _, err := tx.Exec(`INSERT INTO threads (room_nid, root_id, latest_id, latest_depth, latest_pos) VALUES (?,?,?,?,?)
				ON CONFLICT (room_nid, root_id) DO UPDATE SET latest_id = excluded.latest_id,
					latest_depth = excluded.latest_depth, latest_pos = excluded.latest_pos
				WHERE (excluded.latest_depth, excluded.latest_pos) > (threads.latest_depth, threads.latest_pos)`,
				nid, string(rel.Parent), string(ev.ID()), ev.Depth(), int64(pos)); err != nil {
				return err
			}
		}
	}
	if p.Redaction == nil {
		return nil
	}
	var parent, relType string
	var rnid int64
	err := tx.QueryRow(`DELETE FROM event_relations WHERE event_id = ? RETURNING relates_to, rel_type, room_nid`,
		string(p.Redaction.Target)).Scan(&parent, &relType, &rnid)
	if errors.Is(err, sql.ErrNoRows) || err == nil && relType != roomdag.RelThread {
		return nil
	}
	if err != nil {
		return err
	}
	// The redacted event may have been the thread's latest: recompute it,
	// and drop the thread when nothing is left of it.
	if _, err := tx.Exec(`DELETE FROM threads WHERE room_nid = ? AND root_id = ?`, rnid, parent); err != nil {
		return err
	}
	_, err = tx.Exec(`INSERT INTO threads (room_nid, root_id, latest_id, latest_depth, latest_pos)
		SELECT room_nid, relates_to, event_id, depth, event_pos FROM event_relations
		WHERE relates_to = ? AND rel_type = ? AND room_nid = ? ORDER BY depth DESC, event_pos DESC LIMIT 1`,
		parent, roomdag.RelThread, rnid)
	return err
}

// Relations pages the children of q.Parent in q.Room (storage.RelationsQuery
// documents the bounds) and reports whether more lie beyond the page.
func (db *DB) Relations(ctx context.Context, q storage.RelationsQuery) ([]storage.RelatedEvent, bool, error) {
	nid, _, err := db.roomNID(ctx, db.r, q.Room)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	// filter applies the type filters to the rows of alias t.
	filter := func(t string) (string, []any) {
		var w strings.Builder
		var args []any
		if q.RelType != "" {
			w.WriteString(` AND ` + t + `.rel_type = ?`)
			args = append(args, q.RelType)
		}
		if q.EventType != "" {
			w.WriteString(` AND ` + t + `.type = ?`)
			args = append(args, q.EventType)
		}
		return w.String(), args
	}
	direct, args := filter("r")
	args = append([]any{string(q.Parent), nid}, args...)
	if q.NoEdits {
		direct += ` AND r.rel_type <> '` + roomdag.RelReplace + `'`
	}
	var query string
	if q.Recurse {
		deeper, dargs := filter("c")
		query = `WITH RECURSIVE tree(event_id, level) AS (
				SELECT r.event_id, 1 FROM event_relations r WHERE r.relates_to = ? AND r.room_nid = ?` + direct + `
				UNION
				SELECT c.event_id, tree.level + 1 FROM event_relations c JOIN tree ON c.relates_to = tree.event_id
				WHERE tree.level < ? AND c.room_nid = ?` + deeper + `)
			SELECT r.event_id, r.depth, r.event_pos FROM tree JOIN event_relations r ON r.event_id = tree.event_id WHERE 1 = 1`
		args = append(args, storage.MaxRelationDepth, nid)
		args = append(args, dargs...)
	} else {
		query = `SELECT r.event_id, r.depth, r.event_pos FROM event_relations r
			WHERE r.relates_to = ? AND r.room_nid = ?` + direct
	}
	older, newer := `(r.depth, r.event_pos) < (?, ?)`, `(r.depth, r.event_pos) >= (?, ?)`
	bound := func(cond string, t *storage.TopoPos) {
		if t != nil {
			query += ` AND ` + cond
			args = append(args, t.Depth, int64(t.Pos))
		}
	}
	if q.Backwards {
		bound(older, q.From)
		bound(newer, q.To)
		query += ` ORDER BY r.depth DESC, r.event_pos DESC LIMIT ?`
	} else {
		bound(newer, q.From)
		bound(older, q.To)
		query += ` ORDER BY r.depth, r.event_pos LIMIT ?`
	}
	args = append(args, q.Limit+1)
	rows, err := db.r.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, false, err
	}
	defer rows.Close()
	var out []storage.RelatedEvent
	for rows.Next() {
		var id string
		var e storage.RelatedEvent
		var pos int64
		if err := rows.Scan(&id, &e.Place.Depth, &pos); err != nil {
			return nil, false, err
		}
		e.EventID, e.Place.Pos = roomdag.EventID(id), roomdag.StreamPos(pos)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, false, err
	}
	more := len(out) > q.Limit
	if more {
		out = out[:q.Limit]
	}
	return out, more, nil
}

// Threads lists a room's threads, those with the newest latest event
// first, starting strictly before `before` (nil: from the newest). With a
// participant, only threads the participant started or replied in (spec:
// "current_user_participated"). It reports whether more threads follow.
func (db *DB) Threads(ctx context.Context, room roomdag.RoomID, participant roomdag.UserID, before *storage.TopoPos, limit int) ([]storage.ThreadRoot, bool, error) {
	nid, _, err := db.roomNID(ctx, db.r, room)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	query := `SELECT t.root_id, t.latest_depth, t.latest_pos FROM threads t WHERE t.room_nid = ?`
	args := []any{nid}
	if before != nil {
		query += ` AND (t.latest_depth, t.latest_pos) < (?, ?)`
		args = append(args, before.Depth, int64(before.Pos))
	}
	if participant != "" {
		query += ` AND (EXISTS (SELECT 1 FROM events e WHERE e.event_id = t.root_id AND e.sender = ?)
			OR EXISTS (SELECT 1 FROM event_relations r WHERE r.relates_to = t.root_id AND r.rel_type = ?
				AND r.room_nid = t.room_nid AND r.sender = ?))`
		args = append(args, string(participant), roomdag.RelThread, string(participant))
	}
	query += ` ORDER BY t.latest_depth DESC, t.latest_pos DESC LIMIT ?`
	args = append(args, limit+1)
	rows, err := db.r.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, false, err
	}
	defer rows.Close()
	var out []storage.ThreadRoot
	for rows.Next() {
		var id string
		var t storage.ThreadRoot
		var pos int64
		if err := rows.Scan(&id, &t.Latest.Depth, &pos); err != nil {
			return nil, false, err
		}
		t.Root, t.Latest.Pos = roomdag.EventID(id), roomdag.StreamPos(pos)
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, false, err
	}
	more := len(out) > limit
	if more {
		out = out[:limit]
	}
	return out, more, nil
}

// RelationAggregates reads what the bundled aggregations of parents need
// (storage.RelationAggregates documents it): thread summaries of parents
// for viewer, and the edits and references of parents and of the latest
// event of each of their threads, which is bundled with its own
// aggregations. Children from ignored users count for nothing but edits
// (an ignored user's edits only change their own, hidden, events). A few
// grouped queries on one read snapshot, however many parents.
func (db *DB) RelationAggregates(ctx context.Context, parents []roomdag.EventID, viewer roomdag.UserID, ignored []roomdag.UserID) (*storage.RelationAggregates, error) {
	agg := &storage.RelationAggregates{Threads: map[roomdag.EventID]storage.ThreadSummary{},
		Edits: map[roomdag.EventID][]roomdag.EventID{}, References: map[roomdag.EventID][]roomdag.EventID{}}
	if len(parents) == 0 {
		return agg, nil
	}
	notIgnored, ignoredArgs := "", []any{}
	if len(ignored) > 0 {
		notIgnored = ` AND r.sender NOT IN (?` + strings.Repeat(",?", len(ignored)-1) + `)`
		for _, u := range ignored {
			ignoredArgs = append(ignoredArgs, string(u))
		}
	}
	err := db.readTx(ctx, func(tx *sql.Tx) error {
		more := map[roomdag.EventID]bool{}
		for _, chunk := range idChunks(parents) {
			args := append([]any{string(viewer)}, chunk...)
			args = append(args, roomdag.RelThread)
			args = append(args, ignoredArgs...)
			rows, err := tx.QueryContext(ctx, `SELECT relates_to, event_id, n, participated FROM (
					SELECT r.relates_to, r.event_id, COUNT(*) OVER w AS n, MAX(CASE WHEN r.sender = ? THEN 1 ELSE 0 END) OVER w AS participated,
						ROW_NUMBER() OVER (PARTITION BY r.relates_to ORDER BY r.depth DESC, r.event_pos DESC) AS k
					FROM event_relations r JOIN events p ON p.event_id = r.relates_to AND p.room_nid = r.room_nid
					WHERE r.relates_to IN (?`+strings.Repeat(",?", len(chunk)-1)+`) AND r.rel_type = ?`+notIgnored+`
					WINDOW w AS (PARTITION BY r.relates_to)) latest
				WHERE k = 1`, args...)
			if err != nil {
				return err
			}
			for rows.Next() {
				var root, latest string
				var s storage.ThreadSummary
				if err := rows.Scan(&root, &latest, &s.Count, &s.Participated); err != nil {
					rows.Close()
					return err
				}
				s.Latest = roomdag.EventID(latest)
				agg.Threads[roomdag.EventID(root)] = s
				more[s.Latest] = true
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
		}
		all := append([]roomdag.EventID(nil), parents...)
		for id := range more {
			all = append(all, id)
		}
		type edit struct {
			id roomdag.EventID
			ts int64
		}
		edits := map[roomdag.EventID][]edit{}
		for _, chunk := range idChunks(all) {
			args := append([]any{}, chunk...)
			args = append(args, roomdag.RelReplace, roomdag.RelReference)
			args = append(args, ignoredArgs...)
			rows, err := tx.QueryContext(ctx, `SELECT r.relates_to, r.event_id, r.rel_type, r.origin_ts
				FROM event_relations r JOIN events p ON p.event_id = r.relates_to AND p.room_nid = r.room_nid
				WHERE r.relates_to IN (?`+strings.Repeat(",?", len(chunk)-1)+`) AND (
					(r.rel_type = ? AND r.sender = p.sender AND r.type = p.type AND r.is_state = 0 AND p.state_key IS NULL)
					OR (r.rel_type = ?`+notIgnored+`))
				ORDER BY r.depth, r.event_pos`, args...)
			if err != nil {
				return err
			}
			for rows.Next() {
				var parent, id, relType string
				var ts int64
				if err := rows.Scan(&parent, &id, &relType, &ts); err != nil {
					rows.Close()
					return err
				}
				p := roomdag.EventID(parent)
				if relType == roomdag.RelReplace {
					edits[p] = append(edits[p], edit{roomdag.EventID(id), ts})
				} else {
					agg.References[p] = append(agg.References[p], roomdag.EventID(id))
				}
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
		}
		for p, es := range edits {
			// spec: the most recent edit by origin_server_ts, ties broken
			// by the lexicographically largest event ID.
			sort.Slice(es, func(i, j int) bool {
				return es[i].ts > es[j].ts || es[i].ts == es[j].ts && es[i].id > es[j].id
			})
			ids := make([]roomdag.EventID, len(es))
			for i, e := range es {
				ids[i] = e.id
			}
			agg.Edits[p] = ids
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return agg, nil
}

// idChunks splits event IDs into query arguments, 500 at a time: SQLite
// allows 32766 variables, and the ignored users come on top.
func idChunks(ids []roomdag.EventID) [][]any {
	var out [][]any
	for len(ids) > 0 {
		n := min(len(ids), 500)
		chunk := make([]any, n)
		for i, id := range ids[:n] {
			chunk[i] = string(id)
		}
		out = append(out, chunk)
		ids = ids[n:]
	}
	return out
}

// HasAnnotation reports whether sender already annotated parent with an
// event of type evType and this key (spec: "Avoiding duplicate
// annotations"); redacted annotations no longer count.
func (db *DB) HasAnnotation(ctx context.Context, parent roomdag.EventID, sender roomdag.UserID, evType, key string) (bool, error) {
	var one int
	err := db.r.QueryRowContext(ctx, `SELECT 1 FROM event_relations WHERE relates_to = ? AND rel_type = ?
		AND sender = ? AND type = ? AND key = ? LIMIT 1`,
		string(parent), roomdag.RelAnnotation, string(sender), evType, key).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}
