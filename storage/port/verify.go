package port

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
)

// maxMismatches bounds how many differences a report lists.
const maxMismatches = 20

// verify compares the target, inside the port's transaction, with the
// snapshot: the row count of every table, the set of indexed events of the
// search index, and every column of a sample of events (sample random ones
// plus the first and the last by stream position) value for value, the
// event JSON byte for byte. It returns the differences it found.
func verify(ctx context.Context, lite *sql.DB, tx *sql.Tx, tables []table, counts map[string]int64, sample int, rnd *rand.Rand) ([]string, int, error) {
	var bad []string
	for _, t := range tables {
		var liteN, pgN int64
		if err := lite.QueryRowContext(ctx, `SELECT count(*) FROM `+quoteIdent(t.name)).Scan(&liteN); err != nil {
			return nil, 0, fmt.Errorf("counting %s in SQLite: %w", t.name, err)
		}
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM `+quoteIdent(t.name)).Scan(&pgN); err != nil {
			return nil, 0, fmt.Errorf("counting %s in PostgreSQL: %w", t.name, err)
		}
		if liteN != pgN || liteN != counts[t.name] {
			bad = append(bad, fmt.Sprintf("table %s: %d rows in SQLite, %d copied, %d in PostgreSQL", t.name, liteN, counts[t.name], pgN))
		}
	}

	// The search index: the same events indexed, with the same kind (what
	// a search filters on), as SQLite's. A difference means the engines'
	// indexing rules have drifted (or SQLite's backfill did).
	liteDocs, err := docKinds(ctx, lite, `SELECT docid, kind FROM event_search ORDER BY docid`)
	if err != nil {
		return nil, 0, fmt.Errorf("reading SQLite's search index: %w", err)
	}
	pgDocs, err := docKinds(ctx, tx, `SELECT docid, kind FROM event_search ORDER BY docid`)
	if err != nil {
		return nil, 0, fmt.Errorf("reading PostgreSQL's search index: %w", err)
	}
	if !slices.Equal(liteDocs, pgDocs) {
		bad = append(bad, fmt.Sprintf("search index: %d events indexed in SQLite, %d in PostgreSQL, or with other kinds (first difference at %s)",
			len(liteDocs)/2, len(pgDocs)/2, firstDiff(liteDocs, pgDocs)))
	}

	var events table
	for _, t := range tables {
		if t.name == "events" {
			events = t
		}
	}
	if events.name == "" {
		return nil, 0, fmt.Errorf("no events table")
	}
	positions, err := samplePositions(ctx, lite, sample, rnd)
	if err != nil {
		return nil, 0, err
	}
	cols := make([]string, len(events.cols))
	for i, c := range events.cols {
		cols[i] = quoteIdent(c.name)
	}
	q := `SELECT ` + strings.Join(cols, ", ") + ` FROM events WHERE stream_pos = ?`
	liteStmt, err := lite.PrepareContext(ctx, q)
	if err != nil {
		return nil, 0, err
	}
	defer liteStmt.Close()
	pgStmt, err := tx.PrepareContext(ctx, q)
	if err != nil {
		return nil, 0, err
	}
	defer pgStmt.Close()
	a, b := make([]any, len(cols)), make([]any, len(cols))
	pa, pb := make([]any, len(cols)), make([]any, len(cols))
	for i := range a {
		pa[i], pb[i] = &a[i], &b[i]
	}
	for _, pos := range positions {
		if len(bad) >= maxMismatches {
			break
		}
		if err := liteStmt.QueryRowContext(ctx, pos).Scan(pa...); err != nil {
			return nil, 0, fmt.Errorf("event %d in SQLite: %w", pos, err)
		}
		if err := pgStmt.QueryRowContext(ctx, pos).Scan(pb...); err != nil {
			bad = append(bad, fmt.Sprintf("event at position %d: %v in PostgreSQL", pos, err))
			continue
		}
		for i, c := range events.cols {
			want, err := convert(a[i], c.pgType)
			if err != nil {
				return nil, 0, fmt.Errorf("event %d, %s: %w", pos, c.name, err)
			}
			if !sameValue(want, b[i]) {
				bad = append(bad, fmt.Sprintf("event at position %d, column %s: SQLite %v, PostgreSQL %v", pos, c.name, shorten(want), shorten(b[i])))
			}
		}
	}
	if len(bad) > maxMismatches {
		bad = append(bad[:maxMismatches], "...")
	}
	return bad, len(positions), nil
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// docKinds reads (docid, kind) pairs as one list: docid, kind, docid, ...
func docKinds(ctx context.Context, db querier, q string) ([]int64, error) {
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		return nil, err
	}
	var out []int64
	for rows.Next() {
		var id, kind int64
		if err := rows.Scan(&id, &kind); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, id, kind)
	}
	return out, errOf(rows)
}

func firstDiff(a, b []int64) string {
	for i := 0; i < len(a) && i < len(b); i += 2 {
		if a[i] != b[i] || a[i+1] != b[i+1] {
			return fmt.Sprintf("SQLite's position %d kind %d, PostgreSQL's position %d kind %d", a[i], a[i+1], b[i], b[i+1])
		}
	}
	return "the end of the shorter"
}

// samplePositions returns up to n random stream positions of events, and
// the first and the last, sorted.
func samplePositions(ctx context.Context, lite *sql.DB, n int, rnd *rand.Rand) ([]int64, error) {
	rows, err := lite.QueryContext(ctx, `SELECT stream_pos FROM events ORDER BY stream_pos`)
	if err != nil {
		return nil, err
	}
	var all []int64
	for rows.Next() {
		var p int64
		if err := rows.Scan(&p); err != nil {
			rows.Close()
			return nil, err
		}
		all = append(all, p)
	}
	if err := errOf(rows); err != nil {
		return nil, err
	}
	if len(all) <= n+2 {
		return all, nil
	}
	pick := map[int64]bool{all[0]: true, all[len(all)-1]: true}
	for _, i := range rnd.Perm(len(all))[:n] {
		pick[all[i]] = true
	}
	out := make([]int64, 0, len(pick))
	for p := range pick {
		out = append(out, p)
	}
	slices.Sort(out)
	return out, nil
}

// sameValue compares a converted SQLite value with what PostgreSQL
// returned: integers, text and bytes exactly.
func sameValue(want, got any) bool {
	switch w := want.(type) {
	case nil:
		return got == nil
	case int64:
		switch g := got.(type) {
		case int64:
			return w == g
		case int32:
			return w == int64(g)
		case int16:
			return w == int64(g)
		}
	case string:
		g, ok := got.(string)
		return ok && w == g
	case []byte:
		g, ok := got.([]byte)
		return ok && bytes.Equal(w, g)
	}
	return false
}
