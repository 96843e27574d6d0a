package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"slices"
	"strings"

	"github.com/persistentchat/homeserver/media"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// Retention (package retention): purging expired history and the media
// nothing refers to any more, and legal holds.
//
// What a purge keeps follows Synapse's purge_history: state events are
// never deleted (they make up the room's state, at every point of its
// history, and memberships), only events without a state key; and the
// room's newest event and its forward extremities stay, so that the next
// event has prev_events and the room keeps working.

// RetentionRooms lists every room with the content of its current
// m.room.retention event, if any.
func (db *DB) RetentionRooms(ctx context.Context) ([]storage.RetentionRoom, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT r.room_id, e.json FROM rooms r
		LEFT JOIN current_state cs ON cs.room_nid = r.room_nid AND cs.type = 'm.room.retention' AND cs.state_key = ''
		LEFT JOIN events e ON e.event_id = cs.event_id
		ORDER BY r.room_nid`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []storage.RetentionRoom
	for rows.Next() {
		var room string
		var raw []byte
		if err := rows.Scan(&room, &raw); err != nil {
			return nil, err
		}
		rr := storage.RetentionRoom{Room: roomdag.RoomID(room)}
		if raw != nil {
			var ev struct {
				Content json.RawMessage `json:"content"`
			}
			if json.Unmarshal(raw, &ev) == nil {
				rr.Content = ev.Content
			}
		}
		out = append(out, rr)
	}
	return out, rows.Err()
}

// PurgeHistory deletes, in one write transaction, up to limit of the
// events of room sent (origin_server_ts) before beforeMS, oldest first,
// with their search index entries and relations: never state events,
// the room's newest event or its forward extremities (see the top of this
// file), nor events sent by a user in keep (legal holds). It returns what
// it deleted; More when it stopped at limit. An unknown room deletes
// nothing.
func (db *DB) PurgeHistory(ctx context.Context, room roomdag.RoomID, beforeMS int64, keep []roomdag.UserID, limit int) (storage.PurgeResult, error) {
	var res storage.PurgeResult
	nid, _, err := db.roomNID(ctx, db.r, room)
	if err != nil {
		if err == storage.ErrNotFound {
			return res, nil
		}
		return res, err
	}
	var purged []roomdag.EventID
	err = db.write(func(tx *sql.Tx) error {
		res, purged = storage.PurgeResult{}, nil
		q := `SELECT stream_pos, event_id, json FROM events
			WHERE room_nid = ? AND origin_ts < ? AND state_key IS NULL
			AND stream_pos < (SELECT last_pos FROM rooms WHERE room_nid = ?)
			AND event_id NOT IN (SELECT event_id FROM forward_extremities WHERE room_nid = ?)`
		args := []any{nid, beforeMS, nid, nid}
		if len(keep) > 0 {
			q += ` AND sender NOT IN (` + placeholders(len(keep)) + `)`
			for _, u := range keep {
				args = append(args, string(u))
			}
		}
		q += ` ORDER BY stream_pos LIMIT ?`
		args = append(args, limit+1)
		rows, err := tx.Query(q, args...)
		if err != nil {
			return err
		}
		var positions []any
		uris := map[string]bool{}
		for rows.Next() {
			var pos int64
			var id string
			var raw []byte
			if err := rows.Scan(&pos, &id, &raw); err != nil {
				rows.Close()
				return err
			}
			if len(positions) == limit {
				res.More = true
				break
			}
			positions = append(positions, pos)
			purged = append(purged, roomdag.EventID(id))
			for _, u := range mediaURIs(raw) {
				if !uris[u] {
					uris[u] = true
					res.MediaURIs = append(res.MediaURIs, u)
				}
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(positions) == 0 {
			return nil
		}
		in := placeholders(len(positions))
		ids := make([]any, len(purged))
		for i, id := range purged {
			ids[i] = string(id)
		}
		for _, stmt := range []struct {
			q    string
			args []any
		}{
			{`DELETE FROM event_search WHERE docid IN (` + in + `)`, positions},
			{`DELETE FROM event_relations WHERE event_pos IN (` + in + `)`, positions},
			// A thread whose root is gone has no root to show; one whose
			// latest event is gone points at the newest reply left.
			{`DELETE FROM threads WHERE room_nid = ? AND root_id IN (` + in + `)`, append([]any{nid}, ids...)},
			{`UPDATE threads SET latest_id = (SELECT r.event_id FROM event_relations r WHERE r.relates_to = threads.root_id AND r.rel_type = 'm.thread' ORDER BY r.depth DESC, r.event_pos DESC LIMIT 1),
				latest_depth = (SELECT r.depth FROM event_relations r WHERE r.relates_to = threads.root_id AND r.rel_type = 'm.thread' ORDER BY r.depth DESC, r.event_pos DESC LIMIT 1),
				latest_pos = (SELECT r.event_pos FROM event_relations r WHERE r.relates_to = threads.root_id AND r.rel_type = 'm.thread' ORDER BY r.depth DESC, r.event_pos DESC LIMIT 1)
				WHERE room_nid = ? AND latest_id IN (` + in + `) AND EXISTS (SELECT 1 FROM event_relations r WHERE r.relates_to = threads.root_id AND r.rel_type = 'm.thread')`, append([]any{nid}, ids...)},
			{`DELETE FROM threads WHERE room_nid = ? AND latest_id IN (` + in + `)`, append([]any{nid}, ids...)},
			// The DAG's edges out of purged events go with them, as in
			// Synapse's purge; edges into them from events kept remain,
			// so the kept events' prev_events still name them.
			{`DELETE FROM event_edges WHERE event_id IN (` + in + `)`, ids},
			{`DELETE FROM event_auth_edges WHERE event_id IN (` + in + `)`, ids},
			{`DELETE FROM events WHERE stream_pos IN (` + in + `)`, positions},
		} {
			if _, err := tx.Exec(stmt.q, stmt.args...); err != nil {
				return err
			}
		}
		res.Events = len(positions)
		return nil
	}, func() {
		for _, id := range purged {
			db.events.remove(id)
		}
	})
	return res, err
}

// PurgeMedia deletes the records of the local media among ids (media
// IDs of this server) that no stored event, user avatar or profile field
// refers to any more and that no user in keep uploaded (legal holds). The
// deletion and the check of the events stored since the main scan are
// one write transaction, so that no event stored meanwhile can start
// referring to a deleted one. server is this server's name. It
// returns the deleted IDs and the SHA-256 sums of the content files no
// record uses any more, which the caller deletes from disk.
func (db *DB) PurgeMedia(ctx context.Context, server roomdag.ServerName, ids []media.ID, keep []roomdag.UserID) (deleted []media.ID, unusedFiles []string, err error) {
	if len(ids) == 0 {
		return nil, nil, nil
	}
	uris := make([]any, len(ids))
	byURI := map[string]media.ID{}
	for i, id := range ids {
		u := "mxc://" + string(server) + "/" + string(id)
		uris[i] = u
		byURI[u] = id
	}
	in := placeholders(len(uris))
	// The scan of every event runs on a read snapshot, outside the
	// writer, up to the newest position it sees; the write transaction
	// scans only the events stored since. Events up to that position can
	// only lose references meanwhile (redactions, purges).
	var upTo int64
	var early map[string]bool
	err = db.readTx(ctx, func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(stream_pos), 0) FROM events`).Scan(&upTo); err != nil {
			return err
		}
		var err error
		early, err = db.mediaRefs(tx, uris, `stream_pos <= ?`, upTo)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	err = db.write(func(tx *sql.Tx) error {
		deleted, unusedFiles = nil, nil
		used, err := db.mediaRefs(tx, uris, `stream_pos > ?`, upTo)
		if err != nil {
			return err
		}
		for u := range early {
			used[u] = true
		}
		for _, q := range []string{`SELECT avatar_url FROM users WHERE avatar_url IN (` + in + `)`,
			`SELECT value FROM profile_fields WHERE value IN (` + in + `)`} {
			qargs := uris
			if strings.Contains(q, "profile_fields") {
				qargs = make([]any, len(uris))
				for i, u := range uris {
					b, _ := json.Marshal(u)
					qargs[i] = string(b)
				}
			}
			rows, err := tx.Query(q, qargs...)
			if err != nil {
				return err
			}
			for rows.Next() {
				var s string
				if err := rows.Scan(&s); err != nil {
					rows.Close()
					return err
				}
				var u string
				if json.Unmarshal([]byte(s), &u) == nil {
					s = u
				}
				used[s] = true
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
		}
		sums := map[string]bool{}
		for _, u := range uris {
			id := byURI[u.(string)]
			if used[u.(string)] {
				continue
			}
			var sum, uploader string
			err := tx.QueryRow(`SELECT sha256, uploader FROM media WHERE media_id = ?`, string(id)).Scan(&sum, &uploader)
			if err == sql.ErrNoRows {
				continue
			}
			if err != nil {
				return err
			}
			if slices.Contains(keep, roomdag.UserID(uploader)) {
				continue
			}
			if _, err := tx.Exec(`DELETE FROM media WHERE media_id = ?`, string(id)); err != nil {
				return err
			}
			deleted = append(deleted, id)
			if sum != "" {
				sums[sum] = true
			}
		}
		for sum := range sums {
			var n int
			if err := tx.QueryRow(`SELECT COUNT(*) FROM media WHERE sha256 = ?`, sum).Scan(&n); err != nil {
				return err
			}
			if n == 0 {
				unusedFiles = append(unusedFiles, sum)
			}
		}
		return nil
	}, nil)
	return deleted, unusedFiles, err
}

// mediaRefs returns which of uris the events matching where (with its
// one argument) refer to, in one scan for the whole batch.
func (db *DB) mediaRefs(tx *sql.Tx, uris []any, where string, arg any) (map[string]bool, error) {
	in := placeholders(len(uris))
	var conds []string
	args := []any{arg}
	paths := [][]string{{"content", "url"}, {"content", "info", "thumbnail_url"}, {"content", "file", "url"}, {"content", "info", "thumbnail_file", "url"}}
	var cols []string
	for _, path := range paths {
		col := db.d.JSONText("json", path...)
		cols = append(cols, col)
		conds = append(conds, col+` IN (`+in+`)`)
		args = append(args, uris...)
	}
	rows, err := tx.Query(`SELECT `+strings.Join(cols, ", ")+` FROM events WHERE `+where+` AND (`+strings.Join(conds, " OR ")+`)`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	used := map[string]bool{}
	for rows.Next() {
		var a, b, c, d sql.NullString
		if err := rows.Scan(&a, &b, &c, &d); err != nil {
			return nil, err
		}
		for _, s := range []sql.NullString{a, b, c, d} {
			used[s.String] = true
		}
	}
	return used, rows.Err()
}

// HasEventsBy reports whether room holds an event sent by one of users.
func (db *DB) HasEventsBy(ctx context.Context, room roomdag.RoomID, users []roomdag.UserID) (bool, error) {
	if len(users) == 0 {
		return false, nil
	}
	nid, _, err := db.roomNID(ctx, db.r, room)
	if err == storage.ErrNotFound {
		return false, nil
	} else if err != nil {
		return false, err
	}
	args := []any{nid}
	for _, u := range users {
		args = append(args, string(u))
	}
	var one int
	err = db.r.QueryRowContext(ctx, `SELECT 1 FROM events WHERE room_nid = ? AND sender IN (`+placeholders(len(users))+`) LIMIT 1`, args...).Scan(&one)
	if err == sql.ErrNoRows {
		return false, nil
	}
	return err == nil, err
}

// CreateHold stores a new hold and returns it with its ID.
func (db *DB) CreateHold(ctx context.Context, h storage.Hold) (storage.Hold, error) {
	err := db.write(func(tx *sql.Tx) error {
		if err := tx.QueryRow(`SELECT COALESCE(MAX(hold_id), 0) + 1 FROM legal_holds`).Scan(&h.ID); err != nil {
			return err
		}
		_, err := tx.Exec(`INSERT INTO legal_holds (hold_id, user_id, room_id, reason, created_by, created_ts) VALUES (?,?,?,?,?,?)`,
			h.ID, string(h.User), string(h.Room), h.Reason, string(h.CreatedBy), h.CreatedMS)
		return err
	}, nil)
	return h, err
}

// ReleaseHold releases the hold id, recording who released it and when,
// and returns it: storage.ErrNotFound for an unknown ID,
// storage.ErrConflict when it was released already.
func (db *DB) ReleaseHold(ctx context.Context, id int64, by roomdag.UserID, atMS int64) (storage.Hold, error) {
	var h storage.Hold
	err := db.write(func(tx *sql.Tx) error {
		var err error
		h, err = scanHold(tx.QueryRow(`SELECT `+holdColumns+` FROM legal_holds WHERE hold_id = ?`, id))
		if err != nil {
			return notFound(err)
		}
		if !h.Active() {
			return storage.ErrConflict
		}
		h.ReleasedBy, h.ReleasedMS = by, atMS
		_, err = tx.Exec(`UPDATE legal_holds SET released_by = ?, released_ts = ? WHERE hold_id = ?`, string(by), atMS, id)
		return err
	}, nil)
	return h, err
}

// Holds lists the holds, oldest first; released ones too unless
// activeOnly.
func (db *DB) Holds(ctx context.Context, activeOnly bool) ([]storage.Hold, error) {
	q := `SELECT ` + holdColumns + ` FROM legal_holds`
	if activeOnly {
		q += ` WHERE released_ts = 0`
	}
	rows, err := db.r.QueryContext(ctx, q+` ORDER BY hold_id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []storage.Hold
	for rows.Next() {
		h, err := scanHold(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, rows.Err()
}

const holdColumns = `hold_id, user_id, room_id, reason, created_by, created_ts, released_by, released_ts`

func scanHold(row rowScanner) (storage.Hold, error) {
	var h storage.Hold
	var user, room, by, relBy string
	err := row.Scan(&h.ID, &user, &room, &h.Reason, &by, &h.CreatedMS, &relBy, &h.ReleasedMS)
	h.User, h.Room, h.CreatedBy, h.ReleasedBy = roomdag.UserID(user), roomdag.RoomID(room), roomdag.UserID(by), roomdag.UserID(relBy)
	return h, err
}

// placeholders is n comma-separated parameters.
func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?,", n), ",")
}

// mediaURIs are the mxc:// URIs an event's content refers to, in the
// fields PurgeMedia looks at.
func mediaURIs(raw []byte) []string {
	var ev struct {
		Content struct {
			URL  any `json:"url"`
			File struct {
				URL any `json:"url"`
			} `json:"file"`
			Info struct {
				ThumbnailURL  any `json:"thumbnail_url"`
				ThumbnailFile struct {
					URL any `json:"url"`
				} `json:"thumbnail_file"`
			} `json:"info"`
		} `json:"content"`
	}
	if json.Unmarshal(raw, &ev) != nil {
		return nil
	}
	var out []string
	for _, v := range []any{ev.Content.URL, ev.Content.File.URL, ev.Content.Info.ThumbnailURL, ev.Content.Info.ThumbnailFile.URL} {
		if s, ok := v.(string); ok && strings.HasPrefix(s, "mxc://") {
			out = append(out, s)
		}
	}
	return out
}
