package port

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage/postgres"
	"github.com/persistentchat/homeserver/storage/sqlstore"
)

// Rows are copied with PostgreSQL's COPY (pgx's CopyFrom on the raw
// connection under the transaction, in its binary format), one COPY per
// table streamed from one SQLite query: pgx sends the rows in chunks of
// about 64 KiB as they are read, so memory stays flat however large the
// table, and COPY costs a fraction of row-by-row INSERTs (no statement
// per row, no round trip per row).

// convert turns a value read from SQLite (which stores any type in any
// column) into what the PostgreSQL column of type pgType takes, or
// explains why it cannot.
func convert(v any, pgType string) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch pgType {
	case "bigint", "integer", "smallint":
		n, ok := v.(int64)
		if !ok {
			return nil, fmt.Errorf("%T %v where an integer belongs", v, shorten(v))
		}
		if pgType == "integer" && int64(int32(n)) != n || pgType == "smallint" && int64(int16(n)) != n {
			return nil, fmt.Errorf("%d does not fit PostgreSQL's %s", n, pgType)
		}
		return n, nil
	case "text":
		var s string
		switch x := v.(type) {
		case string:
			s = x
		case []byte:
			s = string(x)
		default:
			return nil, fmt.Errorf("%T %v where text belongs", v, shorten(v))
		}
		// PostgreSQL's text is valid UTF-8 without NUL; SQLite's may be
		// anything. Such a value cannot have come from this server's
		// writes (JSON and identifiers are UTF-8): report it rather than
		// alter it.
		if !utf8.ValidString(s) {
			return nil, fmt.Errorf("text %q is not UTF-8", shorten(s))
		}
		if strings.IndexByte(s, 0) >= 0 {
			return nil, fmt.Errorf("text %q holds a NUL character", shorten(s))
		}
		return s, nil
	case "bytea":
		switch x := v.(type) {
		case []byte:
			return x, nil
		case string: // a BLOB column written as text: the same bytes
			return []byte(x), nil
		}
		return nil, fmt.Errorf("%T %v where bytes belong", v, shorten(v))
	}
	return nil, fmt.Errorf("no conversion to PostgreSQL's %s", pgType)
}

func shorten(v any) any {
	if s, ok := v.(string); ok && len(s) > 40 {
		return s[:40] + "..."
	}
	return v
}

// tableRows is a pgx.CopyFromSource over one SQLite query.
type tableRows struct {
	t     table
	rows  *sql.Rows
	raw   []any
	ptrs  []any
	vals  []any
	count int64
	err   error
}

func (r *tableRows) Next() bool {
	if r.err != nil || !r.rows.Next() {
		return false
	}
	if r.err = r.rows.Scan(r.ptrs...); r.err != nil {
		return false
	}
	for i, c := range r.t.cols {
		v, err := convert(r.raw[i], c.pgType)
		if err != nil {
			r.err = fmt.Errorf("%s.%s, row %d: %w", r.t.name, c.name, r.count+1, err)
			return false
		}
		r.vals[i] = v
	}
	r.count++
	return true
}

func (r *tableRows) Values() ([]any, error) { return r.vals, nil }

func (r *tableRows) Err() error {
	if r.err != nil {
		return r.err
	}
	return r.rows.Err()
}

// copyTable copies every row of t from the snapshot into the target under
// the connection's open transaction and returns how many it copied.
func copyTable(ctx context.Context, lite *sql.DB, conn *sql.Conn, t table) (int64, error) {
	cols := t.colNames()
	quoted := make([]string, len(cols))
	for i, c := range cols {
		quoted[i] = quoteIdent(c)
	}
	rows, err := lite.QueryContext(ctx, `SELECT `+strings.Join(quoted, ", ")+` FROM `+quoteIdent(t.name))
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", t.name, err)
	}
	defer rows.Close()
	src := &tableRows{t: t, rows: rows, raw: make([]any, len(cols)), ptrs: make([]any, len(cols)), vals: make([]any, len(cols))}
	for i := range src.raw {
		src.ptrs[i] = &src.raw[i]
	}
	var n int64
	err = conn.Raw(func(dc any) error {
		pc, ok := dc.(interface{ PgxConn() *pgx.Conn })
		if !ok {
			return fmt.Errorf("the PostgreSQL driver's connection is a %T, not pgx's", dc)
		}
		var err error
		n, err = pc.PgxConn().CopyFrom(ctx, pgx.Identifier{t.name}, cols, src)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("copying %s: %w", t.name, err)
	}
	if n != src.count {
		return 0, fmt.Errorf("copying %s: read %d rows, PostgreSQL took %d", t.name, src.count, n)
	}
	return n, nil
}

// resetIdentities moves the sequence of every column the database assigns
// past the values copied into it, and past the values SQLite handed out and
// forgot (sqlite_sequence: an AUTOINCREMENT key is never reused, even
// after its row is deleted, and the loops know pushers by it).
func resetIdentities(ctx context.Context, lite *sql.DB, tx *sql.Tx, tables []table) error {
	hwm := map[string]int64{}
	var hasSeq bool
	if err := lite.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence')`).Scan(&hasSeq); err != nil {
		return err
	}
	if hasSeq {
		rows, err := lite.QueryContext(ctx, `SELECT name, seq FROM sqlite_sequence`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var name string
			var seq int64
			if err := rows.Scan(&name, &seq); err != nil {
				rows.Close()
				return err
			}
			hwm[name] = seq
		}
		if err := errOf(rows); err != nil {
			return err
		}
	}
	for _, t := range tables {
		for _, c := range t.cols {
			if !c.identity {
				continue
			}
			var top int64
			if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(`+quoteIdent(c.name)+`), 0) FROM `+quoteIdent(t.name)).Scan(&top); err != nil {
				return fmt.Errorf("%s.%s: %w", t.name, c.name, err)
			}
			top = max(top, hwm[t.name])
			// setval(seq, n, false): the next value is n itself.
			if _, err := tx.ExecContext(ctx, `SELECT setval(pg_get_serial_sequence(?, ?), ?, false)`,
				quoteIdent(t.name), c.name, top+1); err != nil {
				return fmt.Errorf("resetting the sequence of %s.%s: %w", t.name, c.name, err)
			}
		}
	}
	return nil
}

// rebuildSearch fills PostgreSQL's search index from the events, through
// the code that indexes an event when it is stored: sqlstore.SearchText
// decides what an event contributes and postgres.Dialect.IndexEvent writes
// it, so the ported index is the one the engine would have built. Redacted
// events are not indexed (the redaction removed them). It reads the events
// from the snapshot, whose rows were just copied byte for byte (the
// connection under the transaction cannot stream a query and insert at
// once). It returns how many events it indexed.
func rebuildSearch(ctx context.Context, lite *sql.DB, tx *sql.Tx) (int64, error) {
	rows, err := lite.QueryContext(ctx, `SELECT e.stream_pos, e.room_nid, e.state_before, e.json, r.version
		FROM events e JOIN rooms r ON r.room_nid = e.room_nid
		WHERE e.redacted = 0 AND e.type IN (?, ?, ?)
		ORDER BY e.stream_pos`, roomdag.TypeMessage, roomdag.TypeName, roomdag.TypeTopic)
	if err != nil {
		return 0, fmt.Errorf("reading events to index: %w", err)
	}
	defer rows.Close()
	dialect := postgres.Dialect{}
	var n int64
	for rows.Next() {
		var (
			pos, nid, stateBefore int64
			js                    []byte
			version               string
		)
		if err := rows.Scan(&pos, &nid, &stateBefore, &js, &version); err != nil {
			return 0, err
		}
		v, ok := roomdag.LookupRoomVersion(version)
		if !ok {
			return 0, fmt.Errorf("event at position %d: room version %q unknown to this build", pos, version)
		}
		ev, err := roomdag.NewEventFromJSON(v, js)
		if err != nil {
			return 0, fmt.Errorf("event at position %d: %w", pos, err)
		}
		kind, text, ok := sqlstore.SearchText(ev)
		if !ok {
			continue
		}
		if err := dialect.IndexEvent(tx, sqlstore.SearchDoc{Pos: roomdag.StreamPos(pos), RoomNID: nid, Sender: ev.Sender(),
			StateBefore: stateBefore, Kind: kind, Text: text}); err != nil {
			return 0, fmt.Errorf("indexing the event at position %d: %w", pos, err)
		}
		n++
	}
	if err := rows.Err(); err != nil {
		return 0, errors.Join(fmt.Errorf("reading events to index: %w", err))
	}
	return n, nil
}
