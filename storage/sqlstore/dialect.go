package sqlstore

import (
	"context"
	"database/sql"
	"strings"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// Dialect is what an engine supplies for the little SQL that differs
// between engines. Every other query in this package is written once, in
// SQL both SQLite and PostgreSQL run, with ? placeholders (an engine whose
// driver wants $n rewrites them).
type Dialect interface {
	// Name is the engine's name in the config: "sqlite3" or "postgres".
	Name() string
	// IsUniqueViolation reports whether err is the engine's error for a
	// unique or primary-key constraint. Callers only turn it into an
	// error of their own that ends the job (its savepoint is rolled back),
	// never carry on in the same transaction: PostgreSQL refuses every
	// statement after an error until the rollback.
	IsUniqueViolation(err error) bool
	// JSONText returns an SQL expression for the string at path (object
	// keys, outermost first) in the JSON document that expr holds (a TEXT
	// or BLOB column of UTF-8 JSON), NULL where path is absent. What it
	// gives for a value that is not a string is the engine's (SQLite: the
	// value, PostgreSQL: its text), so callers compare it with strings or
	// read fields that are strings wherever the event is valid. Path
	// elements are trusted constants, never user input.
	JSONText(expr string, path ...string) string
	// BeginBatch runs first in each of the writer's transactions, before
	// any job. PostgreSQL takes the cluster-wide writer lock here; SQLite's
	// transactions are already exclusive (BEGIN IMMEDIATE) and do nothing.
	BeginBatch(tx *sql.Tx) error
	// ConcurrentWriters reports whether other processes may write the
	// database while this one does (PostgreSQL: yes; SQLite: no, one
	// process owns the file). If so the writer reloads its counters at
	// the start of every batch, and state snapshot IDs, which the write
	// path allocates outside the writer, come from ReserveSnapshotIDs;
	// otherwise both stay in this process's memory and cost nothing.
	ConcurrentWriters() bool
	// ReserveSnapshotIDs reserves a block of state snapshot IDs that no
	// other process will ever use and returns its first ID and its size.
	// It is called only when ConcurrentWriters; IDs need not be dense nor
	// in order (a block left unused at exit is a harmless gap).
	ReserveSnapshotIDs(ctx context.Context, db *sql.DB) (first, n int64, err error)
	Search
}

// Search is an engine's full-text index of events (spec: "Server Side
// Search"). What is indexed (searchText), how hits are filtered for
// visibility, ranked (Rank) and paged stays here; the engine keeps the
// index and matches phrases in it. The index is exactly as durable as the
// events: rows are written and deleted in the writer's transactions.
type Search interface {
	// IndexEvent adds doc to the index in tx, the transaction that stores
	// the event.
	IndexEvent(tx *sql.Tx, doc SearchDoc) error
	// UnindexEvent removes the event from the index (if it is there) in
	// tx, the transaction that stores its redaction.
	UnindexEvent(tx *sql.Tx, event roomdag.EventID) error
	// SearchIndex calls each for every indexed event that matches all of
	// q.Phrases, in q's rooms and of q's kinds, at positions up to q.UpTo,
	// newest (highest position) first, stopping after q.Limit hits (0: no
	// limit) or at the first error each returns. A word matches the
	// words that equal it after folding case and diacritics; a prefix
	// phrase's last word also matches the words that start with it; the
	// words of a phrase must follow each other. m is valid only during the
	// call.
	SearchIndex(ctx context.Context, r *sql.DB, q IndexQuery, each func(m *IndexMatch) error) error
	// MatchedWords returns the words of the indexed text of the events at
	// positions that phrases matched, lower-cased, each once: whole words
	// where a phrase had a prefix, accented where the phrase was not.
	MatchedWords(ctx context.Context, r *sql.DB, phrases []storage.SearchPhrase, positions []roomdag.StreamPos) ([]string, error)
}

// SearchDoc is what the index holds of one event.
type SearchDoc struct {
	Pos         roomdag.StreamPos
	RoomNID     int64
	Sender      roomdag.UserID
	StateBefore int64 // the state snapshot before the event, for history visibility
	Kind        int64 // SearchKindBody, -Name or -Topic, plus SearchHasURL
	Text        string
}

// Kind codes of SearchDoc.Kind: the key, plus SearchHasURL when a message's
// content.url is a string.
const (
	SearchKindBody  = 1
	SearchKindName  = 2
	SearchKindTopic = 3
	SearchKindMask  = 3
	SearchHasURL    = 4
)

// IndexQuery is what SearchIndex matches.
type IndexQuery struct {
	Phrases  []storage.SearchPhrase // all must match; never empty
	RoomNIDs []int64                // never empty
	Kinds    []int64                // key kinds (Kind & SearchKindMask) wanted; never empty
	UpTo     roomdag.StreamPos      // inclusive
	Limit    int                    // 0: no limit
}

// IndexMatch is one hit of SearchIndex.
type IndexMatch struct {
	Pos         roomdag.StreamPos
	RoomNID     int64
	Sender      []byte // the sender's user ID
	StateBefore int64
	Kind        int64
	// PhraseHits is how many times each of q.Phrases occurs in the text,
	// in q.Phrases' order; Length is the text's length in characters.
	// Rank scores a hit from them.
	PhraseHits []int
	Length     int64
}

// positional rewrites a query written with numbered parameters (?1, ?2:
// clearer where one value is used several times) to plain ? parameters,
// which every engine's driver takes, and returns the arguments in the
// order they now need. It is for queries built at run time; constants use
// numberedQuery once.
func positional(query string, args ...any) (string, []any) {
	q := numberedQuery(query)
	return q.query, q.args(args...)
}

// numbered is a query with numbered parameters rewritten to plain ones.
type numbered struct {
	query string
	order []int // order[i] is the index in args of the i'th ?
}

// numberedQuery rewrites ?N parameters to ?; a ? without a number takes
// the argument after the previous parameter's, as in SQLite.
func numberedQuery(query string) numbered {
	var b strings.Builder
	var order []int
	last := -1
	for i := 0; i < len(query); i++ {
		c := query[i]
		b.WriteByte(c)
		if c != '?' {
			continue
		}
		j := i + 1
		n := 0
		for j < len(query) && query[j] >= '0' && query[j] <= '9' {
			n = n*10 + int(query[j]-'0')
			j++
		}
		if j > i+1 {
			last = n - 1
		} else {
			last++
		}
		order = append(order, last)
		i = j - 1
	}
	return numbered{query: b.String(), order: order}
}

func (n numbered) args(args ...any) []any {
	out := make([]any, len(n.order))
	for i, k := range n.order {
		if k >= 0 && k < len(args) {
			out[i] = args[k]
		}
	}
	return out
}
