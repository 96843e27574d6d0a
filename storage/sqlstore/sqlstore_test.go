package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	_ "github.com/mattn/go-sqlite3" // the fixture's engine

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// Unit tests of this package's own helpers, on a fixture database with
// only the tables they and New touch. Behaviour over a whole schema is in
// storage/storagetest, which every engine runs.

// fixtureDialect is enough of a Dialect for the fixture: no search.
type fixtureDialect struct{}

func (fixtureDialect) Name() string                                { return "fixture" }
func (fixtureDialect) IsUniqueViolation(error) bool                { return false }
func (fixtureDialect) JSONText(expr string, path ...string) string { return "NULL" }
func (fixtureDialect) BeginBatch(*sql.Tx) error                    { return nil }
func (fixtureDialect) ConcurrentWriters() bool                     { return false }
func (fixtureDialect) ReserveSnapshotIDs(context.Context, *sql.DB) (int64, int64, error) {
	return 0, 0, errors.New("fixture: one writer")
}
func (fixtureDialect) IndexEvent(*sql.Tx, SearchDoc) error         { return nil }
func (fixtureDialect) UnindexEvent(*sql.Tx, roomdag.EventID) error { return nil }
func (fixtureDialect) SearchIndex(context.Context, *sql.DB, IndexQuery, func(*IndexMatch) error) error {
	return errors.New("fixture: no search")
}
func (fixtureDialect) MatchedWords(context.Context, *sql.DB, []storage.SearchPhrase, []roomdag.StreamPos) ([]string, error) {
	return nil, errors.New("fixture: no search")
}

const fixtureSchema = `
CREATE TABLE events (stream_pos INTEGER PRIMARY KEY);
CREATE TABLE rooms (room_nid INTEGER PRIMARY KEY);
CREATE TABLE account_data (stream_pos INTEGER);
CREATE TABLE reports (report_id INTEGER PRIMARY KEY);
CREATE TABLE state_snapshots (snapshot_id INTEGER PRIMARY KEY);
CREATE TABLE users (user_id TEXT PRIMARY KEY, erased INTEGER NOT NULL DEFAULT 0);
CREATE TABLE forward_extremities (room_nid INTEGER NOT NULL, event_id TEXT NOT NULL, PRIMARY KEY (room_nid, event_id));
`

func openFixture(t *testing.T) *DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fixture.db")
	w, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	w.SetMaxOpenConns(1)
	if _, err := w.Exec(fixtureSchema); err != nil {
		t.Fatal(err)
	}
	r, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_query_only=true")
	if err != nil {
		t.Fatal(err)
	}
	db, err := New(w, r, fixtureDialect{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestTakeExtremities(t *testing.T) {
	for _, tc := range []struct {
		name          string
		stored, built []roomdag.EventID
		changed       bool
	}{
		{"same", []roomdag.EventID{"$a"}, []roomdag.EventID{"$a"}, false},
		{"same two, other order", []roomdag.EventID{"$a", "$b"}, []roomdag.EventID{"$b", "$a"}, false},
		{"moved on", []roomdag.EventID{"$b"}, []roomdag.EventID{"$a"}, true},
		{"one more stored", []roomdag.EventID{"$a", "$b"}, []roomdag.EventID{"$a"}, true},
		{"one fewer stored", []roomdag.EventID{"$a"}, []roomdag.EventID{"$a", "$b"}, true},
		{"none built", []roomdag.EventID{"$a"}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := openFixture(t)
			if err := db.write(func(tx *sql.Tx) error {
				for _, id := range tc.stored {
					if _, err := tx.Exec(`INSERT INTO forward_extremities (room_nid, event_id) VALUES (1, ?)`, string(id)); err != nil {
						return err
					}
				}
				return nil
			}, nil); err != nil {
				t.Fatal(err)
			}
			err := db.write(func(tx *sql.Tx) error { return takeExtremities(tx, 1, tc.built) }, nil)
			if got := errors.Is(err, roomdag.ErrRoomChanged); got != tc.changed || (err != nil && !got) {
				t.Fatalf("err = %v, want changed %v", err, tc.changed)
			}
			left, _ := queryStrings(context.Background(), db.r, `SELECT event_id FROM forward_extremities ORDER BY event_id`)
			if want := len(tc.stored); tc.changed && len(left) != want || !tc.changed && len(left) != 0 {
				t.Errorf("left %v after the check (changed %v)", left, tc.changed)
			}
		})
	}
}

func TestNumberedQuery(t *testing.T) {
	for _, tc := range []struct {
		in, out string
		order   []int
	}{
		{"SELECT 1", "SELECT 1", nil},
		{"a = ? AND b = ?", "a = ? AND b = ?", []int{0, 1}},
		{"a = ?1 AND b = ?2 OR c = ?1", "a = ? AND b = ? OR c = ?", []int{0, 1, 0}},
		{"x > ?3 AND y = ?12 LIMIT ?2", "x > ? AND y = ? LIMIT ?", []int{2, 11, 1}},
		{"a = ?2, b = ?", "a = ?, b = ?", []int{1, 2}},
	} {
		q := numberedQuery(tc.in)
		if q.query != tc.out || fmt.Sprint(q.order) != fmt.Sprint(tc.order) {
			t.Errorf("numberedQuery(%q) = %q %v, want %q %v", tc.in, q.query, q.order, tc.out, tc.order)
		}
	}
	if got := numberedQuery("?2 ?1 ?2").args("a", "b"); fmt.Sprint(got) != "[b a b]" {
		t.Errorf("args = %v", got)
	}
}

// A job that fails gives back what it allocated: the next job gets the
// same position, and a failed batch leaves the counters where they were.
func TestCountersFollowTheTransaction(t *testing.T) {
	db := openFixture(t)
	var first, again int64
	if err := db.Write(func(*sql.Tx) error { first = next(&db.ctr.event); return errors.New("boom") }); err == nil {
		t.Fatal("failing job succeeded")
	}
	if err := db.Write(func(*sql.Tx) error { again = next(&db.ctr.event); return nil }); err != nil {
		t.Fatal(err)
	}
	if first != 1 || again != 1 {
		t.Errorf("positions %d then %d after a rollback, want 1 and 1", first, again)
	}
}
