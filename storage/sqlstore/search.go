package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"math"
	"strings"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// Search (spec: "Server Side Search") over an engine's full-text index
// (Dialect's Search): this file decides what is indexed (searchText), which
// hits a query asks for and how they rank (Rank); the engine stores the
// text and matches phrases. The index row of an event carries, besides its
// text, what a search filters on without loading events: room, sender, the
// state snapshot before the event (for history visibility) and kind. Rows
// are written in the transaction that stores the event and deleted in the
// one that stores its redaction, so the index is exactly as durable as the
// events.

var kindKeys = map[int64]string{SearchKindBody: storage.SearchKeyBody, SearchKindName: storage.SearchKeyName, SearchKindTopic: storage.SearchKeyTopic}

// SearchText is what the index holds of an event: its kind and text, or ok
// false when the event is not searchable. Encrypted events are not: their
// text is in the ciphertext (spec: search does not include encrypted
// rooms).
// Engines' migrations that index already stored events must index what it
// does (storage/sqlite's TestSearchBackfillMatches checks SQLite's).
func SearchText(ev *roomdag.Event) (kind int64, text string, ok bool) {
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
		kind = SearchKindBody
	case ev.Type() == roomdag.TypeName && ev.StateKeyIs(""):
		kind = SearchKindName
	case ev.Type() == roomdag.TypeTopic && ev.StateKeyIs(""):
		kind = SearchKindTopic
	default:
		return 0, "", false
	}
	if json.Unmarshal(ev.Content(), &c) != nil {
		return 0, "", false
	}
	switch kind {
	case SearchKindBody:
		text, _ = str("body")
		if _, isURL := str("url"); isURL {
			kind |= SearchHasURL
		}
	case SearchKindName:
		text, _ = str("name")
	case SearchKindTopic:
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
func (db *DB) indexEvent(tx *sql.Tx, nid int64, p *roomdag.Persist, pos roomdag.StreamPos) error {
	kind, text, ok := SearchText(p.Event)
	if !ok {
		return nil
	}
	return db.d.IndexEvent(tx, SearchDoc{Pos: pos, RoomNID: nid, Sender: p.Event.Sender(), StateBefore: p.StateBefore, Kind: kind, Text: text})
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
	kinds := []int64{SearchKindBody, SearchKindName, SearchKindTopic}
	if len(q.Keys) > 0 {
		kinds = kinds[:0]
		for k, key := range kindKeys {
			for _, want := range q.Keys {
				if want == key {
					kinds = append(kinds, k)
				}
			}
		}
		if len(kinds) == 0 {
			return nil, nil
		}
	}
	upTo := q.UpTo
	if upTo == 0 {
		upTo = math.MaxInt64
	}
	senders := map[string]roomdag.UserID{} // one string per sender, not per hit
	var out []storage.SearchHit
	err := db.d.SearchIndex(ctx, db.r, IndexQuery{Phrases: q.Phrases, RoomNIDs: nids, Kinds: kinds, UpTo: upTo, Limit: max(q.Limit, 0)},
		func(m *IndexMatch) error {
			s, ok := senders[string(m.Sender)]
			if !ok {
				s = roomdag.UserID(m.Sender)
				senders[string(s)] = s
			}
			out = append(out, storage.SearchHit{Pos: m.Pos, Room: roomOf[m.RoomNID], Sender: s, StateBefore: m.StateBefore,
				Key: kindKeys[m.Kind&SearchKindMask], HasURL: m.Kind&SearchHasURL != 0, Rank: Rank(m.PhraseHits, m.Length)})
			return nil
		})
	return out, err
}

// SearchMatches returns the words, lower-cased, that matched phrases in
// the events at positions, as the index matched them: whole words where
// the query had a prefix, accented where the query was not.
func (db *DB) SearchMatches(ctx context.Context, phrases []storage.SearchPhrase, positions []roomdag.StreamPos) ([]string, error) {
	if len(phrases) == 0 || len(positions) == 0 {
		return nil, nil
	}
	return db.d.MatchedWords(ctx, db.r, phrases, positions)
}

// BM25 parameters (the usual ones).
const (
	bm25K1 = 1.2
	bm25B  = 0.75
	// bm25AvgLen stands in for the average length of what is indexed, in
	// characters: about a chat message.
	bm25AvgLen = 64
)

// Rank is the ranking contract of every engine: it scores a hit from how
// often each phrase occurs in its text (phraseHits) and the text's length
// in characters. It is BM25 over the text without the collection
// statistics: every hit matches every phrase, so inverse document
// frequencies would only weigh phrases against each other, while they and
// the average length would make ranks depend on every other event on the
// server (leaking how common words are in rooms the searcher cannot see)
// and change between two pages of one search. So more occurrences score
// higher, with diminishing returns, and in shorter texts.
func Rank(phraseHits []int, length int64) float64 {
	norm := bm25K1 * (1 - bm25B + bm25B*float64(length)/bm25AvgLen)
	var score float64
	for _, n := range phraseHits {
		tf := float64(n)
		score += tf * (bm25K1 + 1) / (tf + norm)
	}
	return score
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
			SELECT CAST(? AS BIGINT), 0
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
