package postgres

import (
	"context"
	"database/sql"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"github.com/persistentchat/homeserver/storage/sqlstore"
)

// The search index (spec: "Server Side Search") is event_search: one row
// per indexed event, keyed by its stream position (docid, as in SQLite's
// FTS4 table), with the text, what a search filters on without loading
// events (room, sender, the state snapshot before the event, kind) and
// the text's words as a tsvector under a GIN index.
//
// The words are cut and folded here, in Go, not by to_tsvector: the
// contract is the one storage.ParseSearchTerm and SQLite's unicode61
// tokenizer share (words are runs of letters, digits and marks; a word
// matches the words equal to it after folding case and diacritics), while
// PostgreSQL's parser has its own ideas (e-mail addresses, host names,
// file names such as "notes.pdf" as one token, hyphenated words twice)
// and its diacritic folding needs the unaccent extension, which an
// operator may not be allowed to create. So the vector is written as a
// tsvector literal of folded words with their positions, and a query as
// a tsquery of the same folded words: phrases with <->, prefixes with :*.
// Nothing a client typed reaches the tsquery parser as syntax: words hold
// only letters, digits and marks, and are quoted anyway.
//
// How often each phrase occurs (for the shared ranking) and which words
// matched are counted in Go from the stored text with the same cutting,
// so they agree with the match.
const searchSchema = `
CREATE TABLE event_search (
	docid        BIGINT PRIMARY KEY, -- the event's stream position
	value        TEXT COLLATE "C" NOT NULL,
	room_nid     BIGINT NOT NULL,
	sender       TEXT COLLATE "C" NOT NULL,
	state_before BIGINT NOT NULL,
	kind         INTEGER NOT NULL,
	words        tsvector NOT NULL
);
CREATE INDEX event_search_words ON event_search USING GIN (words);
`

// Limits of tsvector: a lexeme is at most 2046 bytes and positions end
// at 16383 (later words share the last position, so phrases beyond it
// may match loosely; chat events, at most 64 KiB, rarely get there).
const (
	maxLexemeBytes = 2046
	maxWordPos     = 16383
)

// searchToken is one word of a text: folded, and where it is.
type searchToken struct {
	folded     string
	start, end int // byte offsets in the text
}

// searchTokens cuts text into words as storage.SearchWords does (runs of
// letters, digits and marks) and folds each.
func searchTokens(text string) []searchToken {
	var out []searchToken
	start := -1
	for i, r := range text {
		if isWordRune(r) {
			if start < 0 {
				start = i
			}
			continue
		}
		if start >= 0 {
			out = appendToken(out, text, start, i)
			start = -1
		}
	}
	if start >= 0 {
		out = appendToken(out, text, start, len(text))
	}
	return out
}

func appendToken(out []searchToken, text string, start, end int) []searchToken {
	if f := foldWord(text[start:end]); f != "" {
		out = append(out, searchToken{folded: f, start: start, end: end})
	}
	return out
}

func isWordRune(r rune) bool {
	return unicode.IsLetter(r) || unicode.IsNumber(r) || unicode.IsMark(r)
}

// foldWord lower-cases a word and removes the diacritics of its Latin
// letters (é is e, ß stays), as SQLite's unicode61 tokenizer with
// remove_diacritics=2 does; marks on letters of other scripts are part of
// their spelling and stay.
func foldWord(w string) string {
	w = strings.ToLower(w)
	ascii := true
	for i := 0; i < len(w); i++ {
		if w[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		return w
	}
	d := norm.NFD.String(w)
	var b strings.Builder
	b.Grow(len(d))
	latinBase := false
	for _, r := range d {
		if unicode.Is(unicode.Mn, r) {
			if latinBase {
				continue
			}
		} else {
			latinBase = unicode.Is(unicode.Latin, r)
		}
		b.WriteRune(r)
	}
	return norm.NFC.String(b.String())
}

// quoteLexeme writes w as a quoted lexeme of tsvector and tsquery syntax.
func quoteLexeme(b *strings.Builder, w string) {
	b.WriteByte('\'')
	for _, r := range w {
		switch r {
		case '\'':
			b.WriteString("''")
		case '\\':
			b.WriteString(`\\`)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('\'')
}

// tsvectorText is the tsvector literal of text's words, with positions.
func tsvectorText(tokens []searchToken) string {
	positions := map[string][]int{}
	var order []string
	for i, t := range tokens {
		if len(t.folded) > maxLexemeBytes {
			continue
		}
		if _, ok := positions[t.folded]; !ok {
			order = append(order, t.folded)
		}
		p := min(i+1, maxWordPos)
		if ps := positions[t.folded]; len(ps) == 0 || ps[len(ps)-1] != p {
			positions[t.folded] = append(ps, p)
		}
	}
	var b strings.Builder
	for i, w := range order {
		if i > 0 {
			b.WriteByte(' ')
		}
		quoteLexeme(&b, w)
		for j, p := range positions[w] {
			if j == 0 {
				b.WriteByte(':')
			} else {
				b.WriteByte(',')
			}
			b.WriteString(strconv.Itoa(p))
		}
	}
	return b.String()
}

// foldedPhrase is a search phrase's words folded as the index folds them.
type foldedPhrase struct {
	words  []string
	prefix bool
}

func foldPhrases(phrases []storage.SearchPhrase) []foldedPhrase {
	out := make([]foldedPhrase, 0, len(phrases))
	for _, p := range phrases {
		var fp foldedPhrase
		for _, w := range p.Words {
			// A word of the query may itself hold several words of the
			// index's cutting only if the caller did not use
			// storage.ParseSearchTerm; cut it the same way regardless.
			for _, t := range searchTokens(w) {
				fp.words = append(fp.words, t.folded)
			}
		}
		fp.prefix = p.Prefix
		out = append(out, fp)
	}
	return out
}

// tsqueryText is the tsquery that matches texts holding every phrase, or
// ok false if no text can (a phrase without words, or with a word too
// long to be indexed).
func tsqueryText(phrases []foldedPhrase) (q string, ok bool) {
	var b strings.Builder
	for i, p := range phrases {
		if len(p.words) == 0 {
			return "", false
		}
		if i > 0 {
			b.WriteString(" & ")
		}
		b.WriteByte('(')
		for j, w := range p.words {
			if len(w) > maxLexemeBytes {
				return "", false
			}
			if j > 0 {
				b.WriteString(" <-> ")
			}
			quoteLexeme(&b, w)
			if p.prefix && j == len(p.words)-1 {
				b.WriteString(":*")
			}
		}
		b.WriteByte(')')
	}
	return b.String(), true
}

// occurrences calls at with the index of the first token of every place
// where p occurs in tokens.
func occurrences(tokens []searchToken, p foldedPhrase, at func(i int)) {
	n := len(p.words)
	for i := 0; i+n <= len(tokens); i++ {
		match := true
		for j, w := range p.words {
			t := tokens[i+j].folded
			if j == n-1 && p.prefix {
				match = strings.HasPrefix(t, w)
			} else {
				match = t == w
			}
			if !match {
				break
			}
		}
		if match {
			at(i)
		}
	}
}

// phraseHits counts each phrase's occurrences in tokens.
func phraseHits(tokens []searchToken, phrases []foldedPhrase, into []int) []int {
	into = into[:0]
	for _, p := range phrases {
		n := 0
		occurrences(tokens, p, func(int) { n++ })
		into = append(into, n)
	}
	return into
}

// indexSearchDoc adds an event's text to the index in tx, the transaction
// that stores the event.
func indexSearchDoc(tx *sql.Tx, pos, roomNID int64, sender string, stateBefore, kind int64, text string) error {
	_, err := tx.Exec(`INSERT INTO event_search (docid, value, room_nid, sender, state_before, kind, words)
		VALUES (?, ?, ?, ?, ?, ?, ?::tsvector)`, pos, text, roomNID, sender, stateBefore, kind, tsvectorText(searchTokens(text)))
	return err
}

// unindexSearchDoc removes a redacted event from the index, in the
// transaction that stores the redaction.
func unindexSearchDoc(tx *sql.Tx, eventID string) error {
	_, err := tx.Exec(`DELETE FROM event_search WHERE docid = (SELECT stream_pos FROM events WHERE event_id = ?)`, eventID)
	return err
}

// searchMatch is one row that searchDocs found.
type searchMatch struct {
	pos, roomNID, stateBefore, kind int64
	sender                          []byte
	phraseHits                      []int
	length                          int64
}

// searchDocs calls each for every indexed event of roomNIDs and kinds at
// positions up to upTo whose text holds every phrase, newest first, at
// most limit of them (0: no limit). m and its slices are reused between
// calls.
func searchDocs(ctx context.Context, r *sql.DB, phrases []storage.SearchPhrase, roomNIDs, kinds []int64, upTo int64, limit int,
	each func(m *searchMatch) error) error {
	folded := foldPhrases(phrases)
	query, ok := tsqueryText(folded)
	if !ok || len(roomNIDs) == 0 || len(kinds) == 0 {
		return nil
	}
	var lim any // NULL: LIMIT ALL
	if limit > 0 {
		lim = int64(limit)
	}
	// The GIN index finds the matching rows; the room, kind and position
	// tests and the ordering read them.
	rows, err := r.QueryContext(ctx, `SELECT docid, room_nid, sender, state_before, kind, value FROM event_search
		WHERE words @@ ?::tsquery AND docid <= ? AND room_nid = ANY(?) AND (kind & 3) = ANY(?)
		ORDER BY docid DESC LIMIT ?`, query, upTo, roomNIDs, kinds, lim)
	if err != nil {
		return err
	}
	defer rows.Close()
	var m searchMatch
	var value sql.RawBytes
	for rows.Next() {
		if err := rows.Scan(&m.pos, &m.roomNID, &m.sender, &m.stateBefore, &m.kind, &value); err != nil {
			return err
		}
		text := string(value)
		m.phraseHits = phraseHits(searchTokens(text), folded, m.phraseHits)
		m.length = int64(utf8.RuneCountInString(text))
		if err := each(&m); err != nil {
			return err
		}
	}
	return rows.Err()
}

// matchedWords returns the words of the texts at positions that phrases
// matched, lower-cased but not folded, each once.
func matchedWords(ctx context.Context, r *sql.DB, phrases []storage.SearchPhrase, positions []int64) ([]string, error) {
	folded := foldPhrases(phrases)
	query, ok := tsqueryText(folded)
	if !ok || len(positions) == 0 {
		return nil, nil
	}
	rows, err := r.QueryContext(ctx, `SELECT value FROM event_search WHERE docid = ANY(?) AND words @@ ?::tsquery`, positions, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	seen := map[string]bool{}
	var out []string
	for rows.Next() {
		var text string
		if err := rows.Scan(&text); err != nil {
			return nil, err
		}
		tokens := searchTokens(text)
		for _, p := range folded {
			occurrences(tokens, p, func(i int) {
				for _, t := range tokens[i : i+len(p.words)] {
					if w := strings.ToLower(text[t.start:t.end]); !seen[w] {
						seen[w] = true
						out = append(out, w)
					}
				}
			})
		}
	}
	return out, rows.Err()
}

// IndexEvent adds doc to the index in tx (sqlstore.Search).
func (Dialect) IndexEvent(tx *sql.Tx, d sqlstore.SearchDoc) error {
	return indexSearchDoc(tx, int64(d.Pos), d.RoomNID, string(d.Sender), d.StateBefore, d.Kind, d.Text)
}

// UnindexEvent removes a redacted event from the index in tx (sqlstore.Search).
func (Dialect) UnindexEvent(tx *sql.Tx, target roomdag.EventID) error {
	return unindexSearchDoc(tx, string(target))
}

// SearchIndex finds indexed events (sqlstore.Search).
func (Dialect) SearchIndex(ctx context.Context, r *sql.DB, q sqlstore.IndexQuery, each func(m *sqlstore.IndexMatch) error) error {
	var out sqlstore.IndexMatch
	return searchDocs(ctx, r, q.Phrases, q.RoomNIDs, q.Kinds, int64(q.UpTo), q.Limit, func(m *searchMatch) error {
		out = sqlstore.IndexMatch{Pos: roomdag.StreamPos(m.pos), RoomNID: m.roomNID, Sender: m.sender, StateBefore: m.stateBefore,
			Kind: m.kind, PhraseHits: m.phraseHits, Length: m.length}
		return each(&out)
	})
}

// MatchedWords returns the words that phrases matched (sqlstore.Search).
func (Dialect) MatchedWords(ctx context.Context, r *sql.DB, phrases []storage.SearchPhrase, positions []roomdag.StreamPos) ([]string, error) {
	pos := make([]int64, len(positions))
	for i, p := range positions {
		pos[i] = int64(p)
	}
	return matchedWords(ctx, r, phrases, pos)
}

var _ sqlstore.Dialect = Dialect{}
