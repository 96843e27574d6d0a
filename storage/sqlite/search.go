package sqlite

import (
	"context"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"github.com/persistentchat/homeserver/storage/sqlstore"
)

// The search index (spec: "Server Side Search") is an FTS4 table,
// event_search, whose docid is the event's stream position. Why FTS4 and
// not FTS5: mattn/go-sqlite3 compiles FTS3/FTS4 in by default but FTS5 only
// with the build tag sqlite_fts5, which every go build, test, vet and
// staticcheck invocation (Makefile, .ci, conformance, e2e, anyone's IDE)
// would then need; forgetting it anywhere fails at run time ("no such
// module: fts5"), not at build time. FTS4 has what search needs: the
// unicode61 tokenizer (case and diacritic folding), prefix and phrase
// queries, docid order and range, deletes, and matchinfo(), from which
// each hit's phrase counts for sqlstore.Rank are read.
//
// The table keeps its own copy of the text (not contentless: a contentless
// FTS4 table cannot delete rows, and a redacted event must leave the
// index) and, unindexed, what a search filters on without loading events:
// room, sender, the state snapshot before the event (for history
// visibility) and kind. Rows are written in the transaction that stores
// the event and deleted in the one that stores its redaction, so the index
// is exactly as durable as the events.

// searchMigration creates the index and fills it from the events already
// stored. Its SQL extraction mirrors sqlstore.SearchText (TestSearchBackfillMatches
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

// IndexEvent adds an event to the index, in the transaction that stores it.
func (dialect) IndexEvent(tx *sql.Tx, d sqlstore.SearchDoc) error {
	_, err := tx.Exec(`INSERT INTO event_search (docid, value, room_nid, sender, state_before, kind) VALUES (?,?,?,?,?,?)`,
		int64(d.Pos), d.Text, d.RoomNID, string(d.Sender), d.StateBefore, d.Kind)
	return err
}

// UnindexEvent removes a redacted event from the index, in the transaction
// that stores the redaction.
func (dialect) UnindexEvent(tx *sql.Tx, target roomdag.EventID) error {
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

// SearchIndex matches q in the FTS4 table (sqlstore.Search documents).
func (dialect) SearchIndex(ctx context.Context, r *sql.DB, q sqlstore.IndexQuery, each func(m *sqlstore.IndexMatch) error) error {
	limit := int64(q.Limit)
	if limit <= 0 {
		limit = -1 // none
	}
	roomsJSON, _ := json.Marshal(q.RoomNIDs)
	kindsJSON, _ := json.Marshal(q.Kinds)
	// FTS4 walks the doclists newest first and stops at the limit; the
	// room and kind tests read each match's stored row.
	rows, err := r.QueryContext(ctx, `SELECT docid, room_nid, sender, state_before, kind, matchinfo(event_search, 'pcy'), length(value)
		FROM event_search
		WHERE event_search MATCH ? AND docid <= ?
			AND room_nid IN (SELECT value FROM json_each(?)) AND (kind & 3) IN (SELECT value FROM json_each(?))
		ORDER BY docid DESC LIMIT ?`, matchExpr(q.Phrases), int64(q.UpTo), string(roomsJSON), string(kindsJSON), limit)
	if err != nil {
		return err
	}
	defer rows.Close()
	var m sqlstore.IndexMatch
	for rows.Next() {
		var (
			sender sql.RawBytes
			info   sql.RawBytes
		)
		if err := rows.Scan(&m.Pos, &m.RoomNID, &sender, &m.StateBefore, &m.Kind, &info, &m.Length); err != nil {
			return err
		}
		m.Sender = sender
		if m.PhraseHits, err = phraseHits(info, m.PhraseHits[:0]); err != nil {
			return err
		}
		if err := each(&m); err != nil {
			return err
		}
	}
	return rows.Err()
}

// MatchedWords reads the matched words from offsets() (sqlstore.Search
// documents).
func (dialect) MatchedWords(ctx context.Context, r *sql.DB, phrases []storage.SearchPhrase, positions []roomdag.StreamPos) ([]string, error) {
	lo, hi := positions[0], positions[0]
	for _, p := range positions {
		lo, hi = min(lo, p), max(hi, p)
	}
	posJSON, _ := json.Marshal(positions)
	// The docid range lets FTS4 skip most of each doclist; offsets() is
	// "column term byte-offset size", four numbers per match.
	rows, err := r.QueryContext(ctx, `SELECT offsets(event_search), value FROM event_search
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

// phraseHits reads, from matchinfo(event_search, 'pcy') (the phrase and
// column counts, then the hits of each phrase in each column), the hits of
// each phrase in the value column, appended to dst. (The text's length for
// sqlstore.Rank is length(value), in characters: matchinfo's 'l' tokens
// cost a second row lookup per hit and doubled search times.)
func phraseHits(info []byte, dst []int) ([]int, error) {
	if len(info) < 8 {
		return nil, fmt.Errorf("matchinfo: %d bytes", len(info))
	}
	u := func(i int) int { return int(binary.NativeEndian.Uint32(info[4*i:])) }
	p, c := u(0), u(1)
	if c < 1 || len(info) != 4*(2+p*c) {
		return nil, fmt.Errorf("matchinfo: %d bytes for %d phrases and %d columns", len(info), p, c)
	}
	for i := 0; i < p; i++ {
		dst = append(dst, u(2+i*c))
	}
	return dst, nil
}
