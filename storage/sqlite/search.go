package sqlite

import (
	"context"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// The search index (spec: "Server Side Search") is an FTS4 table,
// event_search, whose docid is the event's stream position. Why FTS4 and
// not FTS5: mattn/go-sqlite3 compiles FTS3/FTS4 in by default but FTS5 only
// with the build tag sqlite_fts5, which every go build, test, vet and
// staticcheck invocation (Makefile, .ci, conformance, e2e, anyone's IDE)
// would then need; forgetting it anywhere fails at run time ("no such
// module: fts5"), not at build time. FTS4 has what search needs: the
// unicode61 tokenizer (case and diacritic folding), prefix and phrase
// queries, docid order and range, deletes, and matchinfo() for ranking,
// which is computed here in Go.
//
// The table keeps its own copy of the text (not contentless: a contentless
// FTS4 table cannot delete rows, and a redacted event must leave the
// index) and, unindexed, what a search filters on without loading events:
// room, sender, the state snapshot before the event (for history
// visibility) and kind. Rows are written in the transaction that stores
// the event and deleted in the one that stores its redaction, so the index
// is exactly as durable as the events.

// kind codes in event_search.kind: the key, plus searchURL when the
// event's content.url is a string.
const (
	kindBody  = 1
	kindName  = 2
	kindTopic = 3
	kindMask  = 3
	searchURL = 4
)

var kindKeys = map[int64]string{kindBody: storage.SearchKeyBody, kindName: storage.SearchKeyName, kindTopic: storage.SearchKeyTopic}

// searchMigration creates the index and fills it from the events already
// stored. Its SQL extraction mirrors searchText (TestSearchBackfillMatches
// checks that both index the same). automerge makes FTS4 merge segments a
// little on each write instead of all at once when a level fills, which
// would stall the single writer for seconds on a large index.
const searchMigration = `
CREATE VIRTUAL TABLE event_search USING fts4(
	value, room_nid, sender, state_before, kind,
	notindexed=room_nid, notindexed=sender, notindexed=state_before, notindexed=kind,
	tokenize=unicode61 "remove_diacritics=2"
);
INSERT INTO event_search(event_search) VALUES ('automerge=8');
` + searchBackfill

const searchBackfill = `
INSERT INTO event_search (docid, value, room_nid, sender, state_before, kind)
SELECT stream_pos, value, room_nid, sender, state_before, kind FROM (
	SELECT stream_pos, room_nid, sender, state_before,
		json_extract(j, '$.content.body') AS value,
		1 + CASE WHEN json_type(j, '$.content.url') = 'text' THEN 4 ELSE 0 END AS kind
	FROM (SELECT *, CAST(json AS TEXT) AS j FROM events
		WHERE type = 'm.room.message' AND state_key IS NULL AND redacted = 0)
	WHERE json_type(j, '$.content.body') = 'text'
	UNION ALL
	SELECT stream_pos, room_nid, sender, state_before, json_extract(j, '$.content.name'), 2
	FROM (SELECT *, CAST(json AS TEXT) AS j FROM events
		WHERE type = 'm.room.name' AND state_key = '' AND redacted = 0)
	WHERE json_type(j, '$.content.name') = 'text'
	UNION ALL
	SELECT stream_pos, room_nid, sender, state_before,
		concat_ws(char(10), CASE WHEN json_type(j, '$.content.topic') = 'text' THEN json_extract(j, '$.content.topic') END,
			(SELECT group_concat(json_extract(t.value, '$.body'), char(10)) FROM json_each(j, '$.content."m.topic"."m.text"') t
			WHERE json_type(j, '$.content."m.topic"."m.text"') = 'array' AND t.type = 'object'
				AND json_type(t.value, '$.body') = 'text'
				AND coalesce(json_extract(t.value, '$.mimetype'), 'text/plain') = 'text/plain'
				AND json_extract(t.value, '$.body') IS NOT
					CASE WHEN json_type(j, '$.content.topic') = 'text' THEN json_extract(j, '$.content.topic') END)),
		3
	FROM (SELECT *, CAST(json AS TEXT) AS j FROM events
		WHERE type = 'm.room.topic' AND state_key = '' AND redacted = 0)
) WHERE value != '';
`

// searchText is what the index holds of an event: its kind and text, or ok
// false when the event is not searchable. Encrypted events are not: their
// text is in the ciphertext (spec: search does not include encrypted
// rooms).
func searchText(ev *roomdag.Event) (kind int64, text string, ok bool) {
	var c map[string]json.RawMessage
	str := func(field string) (string, bool) {
		var s string
		raw, found := c[field]
		if !found || len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
			return "", false
		}
		return s, true
	}
	switch {
	case ev.Type() == roomdag.TypeMessage && !ev.IsState():
		kind = kindBody
	case ev.Type() == roomdag.TypeName && ev.StateKeyIs(""):
		kind = kindName
	case ev.Type() == roomdag.TypeTopic && ev.StateKeyIs(""):
		kind = kindTopic
	default:
		return 0, "", false
	}
	if json.Unmarshal(ev.Content(), &c) != nil {
		return 0, "", false
	}
	switch kind {
	case kindBody:
		text, _ = str("body")
		if _, isURL := str("url"); isURL {
			kind |= searchURL
		}
	case kindName:
		text, _ = str("name")
	case kindTopic:
		// spec (m.room.topic, v1.15): the topic, and the text/plain
		// representations of m.topic; the plain one usually repeats the
		// topic and is indexed once.
		topic, hasTopic := str("topic")
		parts := []string{}
		if hasTopic {
			parts = append(parts, topic)
		}
		var block struct {
			Text []json.RawMessage `json:"m.text"`
		}
		if raw, found := c["m.topic"]; found && json.Unmarshal(raw, &block) == nil {
			for _, rep := range block.Text {
				if c = nil; json.Unmarshal(rep, &c) != nil || c == nil {
					continue // not an object
				}
				body, isText := str("body")
				// The mimetype defaults to text/plain (an explicit null too).
				mime, isMime := str("mimetype")
				if m, set := c["mimetype"]; set && string(m) != "null" && (!isMime || mime != "text/plain") {
					continue
				}
				if !isText || hasTopic && body == topic {
					continue
				}
				parts = append(parts, body)
			}
		}
		text = strings.Join(parts, "\n")
	}
	return kind, text, text != ""
}

// indexEvent adds a stored event to the search index, in its transaction.
func indexEvent(tx *sql.Tx, nid int64, p *roomdag.Persist, pos roomdag.StreamPos) error {
	kind, text, ok := searchText(p.Event)
	if !ok {
		return nil
	}
	_, err := tx.Exec(`INSERT INTO event_search (docid, value, room_nid, sender, state_before, kind) VALUES (?,?,?,?,?,?)`,
		int64(pos), text, nid, string(p.Event.Sender()), p.StateBefore, kind)
	return err
}

// unindexEvent removes a redacted event from the search index, in the
// transaction that stores the redaction.
func unindexEvent(tx *sql.Tx, target roomdag.EventID) error {
	_, err := tx.Exec(`DELETE FROM event_search WHERE docid = (SELECT stream_pos FROM events WHERE event_id = ?)`, string(target))
	return err
}

// matchExpr writes phrases in FTS4 query syntax. Every phrase is quoted
// and words hold only letters, digits and marks (storage.ParseSearchTerm),
// so a term cannot inject operators (AND, OR, NOT, NEAR, column filters,
// parentheses); quotes are dropped anyway so that this holds for any input.
// Phrases side by side must all match.
func matchExpr(phrases []storage.SearchPhrase) string {
	var b strings.Builder
	for i, p := range phrases {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteByte('"')
		b.WriteString(strings.ReplaceAll(strings.Join(p.Words, " "), `"`, ""))
		if p.Prefix {
			b.WriteByte('*')
		}
		b.WriteByte('"')
	}
	return b.String()
}

// SearchEvents returns every indexed event of q.Rooms that matches all of
// q.Phrases, newest first. It leaves history visibility and the client's
// filter to the caller, which decides with what each hit carries.
func (db *DB) SearchEvents(ctx context.Context, q storage.SearchQuery) ([]storage.SearchHit, error) {
	if len(q.Phrases) == 0 {
		return nil, nil
	}
	roomOf := map[int64]roomdag.RoomID{}
	nids := make([]int64, 0, len(q.Rooms))
	for _, r := range q.Rooms {
		nid, _, err := db.roomNID(ctx, db.r, r)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		roomOf[nid] = r
		nids = append(nids, nid)
	}
	if len(nids) == 0 {
		return nil, nil
	}
	kinds := []int64{kindBody, kindName, kindTopic}
	if len(q.Keys) > 0 {
		kinds = kinds[:0]
		for k, key := range kindKeys {
			for _, want := range q.Keys {
				if want == key {
					kinds = append(kinds, k)
				}
			}
		}
	}
	upTo := int64(q.UpTo)
	if upTo == 0 {
		upTo = math.MaxInt64
	}
	limit := int64(q.Limit)
	if limit <= 0 {
		limit = -1 // none
	}
	roomsJSON, _ := json.Marshal(nids)
	kindsJSON, _ := json.Marshal(kinds)
	// FTS4 walks the doclists newest first and stops at the limit; the
	// room and kind tests read each match's stored row.
	rows, err := db.r.QueryContext(ctx, `SELECT docid, room_nid, sender, state_before, kind, matchinfo(event_search, 'pcy'), length(value)
		FROM event_search
		WHERE event_search MATCH ? AND docid <= ?
			AND room_nid IN (SELECT value FROM json_each(?)) AND (kind & 3) IN (SELECT value FROM json_each(?))
		ORDER BY docid DESC LIMIT ?`, matchExpr(q.Phrases), upTo, string(roomsJSON), string(kindsJSON), limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	senders := map[string]roomdag.UserID{} // one string per sender, not per hit
	var out []storage.SearchHit
	for rows.Next() {
		var (
			h                 storage.SearchHit
			nid, kind, length int64
			sender            sql.RawBytes
			info              sql.RawBytes
		)
		if err := rows.Scan(&h.Pos, &nid, &sender, &h.StateBefore, &kind, &info, &length); err != nil {
			return nil, err
		}
		s, ok := senders[string(sender)]
		if !ok {
			s = roomdag.UserID(sender)
			senders[string(s)] = s
		}
		h.Room, h.Sender, h.Key, h.HasURL = roomOf[nid], s, kindKeys[kind&kindMask], kind&searchURL != 0
		if h.Rank, err = rank(info, length); err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, rows.Err()
}

// SearchMatches returns the words, lower-cased, that matched phrases in
// the events at positions, as the index matched them: whole words where
// the query had a prefix, accented where the query was not.
func (db *DB) SearchMatches(ctx context.Context, phrases []storage.SearchPhrase, positions []roomdag.StreamPos) ([]string, error) {
	if len(phrases) == 0 || len(positions) == 0 {
		return nil, nil
	}
	lo, hi := positions[0], positions[0]
	for _, p := range positions {
		lo, hi = min(lo, p), max(hi, p)
	}
	posJSON, _ := json.Marshal(positions)
	// The docid range lets FTS4 skip most of each doclist; offsets() is
	// "column term byte-offset size", four numbers per match.
	rows, err := db.r.QueryContext(ctx, `SELECT offsets(event_search), value FROM event_search
		WHERE event_search MATCH ? AND docid BETWEEN ? AND ? AND docid IN (SELECT value FROM json_each(?))`,
		matchExpr(phrases), int64(lo), int64(hi), string(posJSON))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	seen := map[string]bool{}
	var out []string
	for rows.Next() {
		var offsets, value string
		if err := rows.Scan(&offsets, &value); err != nil {
			return nil, err
		}
		f := strings.Fields(offsets)
		for i := 0; i+3 < len(f); i += 4 {
			off, err1 := strconv.Atoi(f[i+2])
			size, err2 := strconv.Atoi(f[i+3])
			if err := errors.Join(err1, err2); err != nil {
				return nil, fmt.Errorf("offsets %q: %w", offsets, err)
			}
			if f[i] != "0" || off < 0 || size <= 0 || off+size > len(value) {
				continue
			}
			if w := strings.ToLower(value[off : off+size]); !seen[w] {
				seen[w] = true
				out = append(out, w)
			}
		}
	}
	return out, rows.Err()
}

// BM25 parameters (the usual ones).
const (
	bm25K1 = 1.2
	bm25B  = 0.75
	// bm25AvgLen stands in for the average length of what is indexed, in
	// characters: about a chat message.
	bm25AvgLen = 64
)

// rank scores a hit from matchinfo(event_search, 'pcy') (the phrase and
// column counts, then the hits of each phrase in each column) and the
// length of its text in characters. It is BM25 over the value column
// without the collection statistics: every hit matches every phrase, so
// inverse document frequencies would only weigh phrases against each
// other, while they and the average length would make ranks depend on
// every other event on the server (leaking how common words are in rooms
// the searcher cannot see) and change between two pages of one search.
// So more occurrences score higher, with diminishing returns, and in
// shorter texts. The length is in characters, not matchinfo's 'l' tokens,
// which cost a second row lookup per hit and doubled search times.
func rank(info []byte, length int64) (float64, error) {
	if len(info) < 8 {
		return 0, fmt.Errorf("matchinfo: %d bytes", len(info))
	}
	u := func(i int) float64 { return float64(binary.NativeEndian.Uint32(info[4*i:])) }
	p, c := int(u(0)), int(u(1))
	if c < 1 || len(info) != 4*(2+p*c) {
		return 0, fmt.Errorf("matchinfo: %d bytes for %d phrases and %d columns", len(info), p, c)
	}
	norm := bm25K1 * (1 - bm25B + bm25B*float64(length)/bm25AvgLen)
	var score float64
	for i := 0; i < p; i++ {
		tf := u(2 + i*c)
		score += tf * (bm25K1 + 1) / (tf + norm)
	}
	return score, nil
}

// StateEntries returns the event IDs of some state keys in a snapshot
// (keys the snapshot lacks are absent) without building the whole
// snapshot as Snapshot does: search checks history visibility at many old
// snapshots of rooms whose state may have thousands of entries, and needs
// two of them. It reads the delta chain nearest first, in one query.
func (db *DB) StateEntries(ctx context.Context, snapshot int64, keys []roomdag.StateKey) (map[roomdag.StateKey]roomdag.EventID, error) {
	out := make(map[roomdag.StateKey]roomdag.EventID, len(keys))
	if len(keys) == 0 || snapshot == 0 {
		return out, nil
	}
	if m, ok := db.snapshots.get(snapshot); ok {
		for _, k := range keys {
			if id, ok := m[k]; ok {
				out[k] = id
			}
		}
		return out, nil
	}
	args := []any{snapshot}
	for _, k := range keys {
		args = append(args, k.Type, k.StateKey)
	}
	rows, err := db.r.QueryContext(ctx, `WITH RECURSIVE chain(id, depth) AS (
			SELECT ?, 0
			UNION ALL
			SELECT s.parent_id, chain.depth + 1 FROM state_snapshots s JOIN chain ON s.snapshot_id = chain.id
			WHERE s.parent_id IS NOT NULL
		)
		SELECT e.type, e.state_key, e.event_id FROM chain JOIN state_snapshot_entries e ON e.snapshot_id = chain.id
		WHERE (e.type, e.state_key) IN (VALUES (?, ?)`+strings.Repeat(", (?, ?)", len(keys)-1)+`)
		ORDER BY chain.depth DESC`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var k roomdag.StateKey
		var id string
		if err := rows.Scan(&k.Type, &k.StateKey, &id); err != nil {
			return nil, err
		}
		out[k] = roomdag.EventID(id) // nearer deltas come later and win
	}
	return out, rows.Err()
}

// EventsAt returns the stored events at the given stream positions
// (positions without an event are skipped), in no particular order.
func (db *DB) EventsAt(ctx context.Context, positions []roomdag.StreamPos) ([]*roomdag.StoredEvent, error) {
	var out []*roomdag.StoredEvent
	for len(positions) > 0 {
		n := min(len(positions), 500)
		args := make([]any, n)
		for i, p := range positions[:n] {
			args[i] = int64(p)
		}
		positions = positions[n:]
		evs, err := db.queryEvents(ctx, db.r, `SELECT `+eventCols+` FROM events e WHERE e.stream_pos IN (?`+
			strings.Repeat(",?", n-1)+`)`, args...)
		if err != nil {
			return nil, err
		}
		out = append(out, evs...)
	}
	return out, nil
}
