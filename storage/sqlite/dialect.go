package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"strings"

	sqlite3 "github.com/mattn/go-sqlite3"

	"github.com/persistentchat/homeserver/storage/sqlstore"
)

// dialect is SQLite's sqlstore.Dialect; its Search methods are in search.go.
type dialect struct{}

func (dialect) Name() string { return "sqlite3" }

// IsUniqueViolation reports whether err is SQLite's unique-constraint error.
func (dialect) IsUniqueViolation(err error) bool {
	var se sqlite3.Error
	return errors.As(err, &se) && (se.ExtendedCode == sqlite3.ErrConstraintUnique || se.ExtendedCode == sqlite3.ErrConstraintPrimaryKey)
}

// JSONText is json_extract on the text: events.json is a BLOB, which
// json_extract would read as JSONB.
func (dialect) JSONText(expr string, path ...string) string {
	return "json_extract(CAST(" + expr + " AS TEXT), '" + jsonPath(path) + "')"
}

// jsonPath writes path as an SQLite JSON path, every key quoted (keys such
// as m.topic hold dots).
func jsonPath(path []string) string {
	var b strings.Builder
	b.WriteString("$")
	for _, k := range path {
		b.WriteString(`."`)
		b.WriteString(strings.ReplaceAll(k, `"`, ``))
		b.WriteString(`"`)
	}
	return b.String()
}

// BeginBatch does nothing: the writer's transactions begin IMMEDIATE
// (_txlock=immediate), which takes SQLite's one write lock.
func (dialect) BeginBatch(*sql.Tx) error { return nil }

// ConcurrentWriters is false: one process owns the database file, so
// the writer's counters and the snapshot IDs stay in its memory.
func (dialect) ConcurrentWriters() bool { return false }

// ReserveSnapshotIDs is never called (ConcurrentWriters is false).
func (dialect) ReserveSnapshotIDs(context.Context, *sql.DB) (int64, int64, error) {
	return 0, 0, errors.New("sqlite: snapshot IDs are allocated in memory")
}

var _ sqlstore.Dialect = dialect{}
