package port

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// The tables to copy are derived from the two schemas as this build's
// migrations leave them, never listed by hand: a table that a later
// migration adds to both engines is copied without a change here, and one
// that exists in only one engine stops the port before anything is copied
// (a missing translation would otherwise lose its data silently).
//
// Each engine has tables that are its own implementation and are not
// copied: SQLite's search index (an FTS4 table and its shadow tables) and
// its internal tables (sqlite_sequence, sqlite_stat1), PostgreSQL's search
// index (a tsvector table, rebuilt from the copied events: rebuildSearch)
// and its migration count (schema_version, which its migrations set).
var (
	sqliteOnly = func(name string) bool {
		return name == "event_search" || strings.HasPrefix(name, "event_search_") || strings.HasPrefix(name, "sqlite_")
	}
	postgresOnly = func(name string) bool { return name == "event_search" || name == "schema_version" }
)

// seeded are the tables that PostgreSQL's migrations fill, each with what
// holds only of the rows they insert: such a table counts as empty while
// it holds nothing else, and is emptied before the copy. A migration that
// seeds another table must add it here; TestFreshTargetIsEmpty fails until
// it does.
var seeded = map[string]string{
	"notify_position":     "id = 1 AND event_pos = 0",
	"to_device_position":  "id = 1 AND pos = 0",
	"compliance_position": "id = 1 AND event_pos = 0",
}

// column is a column of the PostgreSQL table, in its order.
type column struct {
	name     string
	pgType   string // information_schema's data_type: bigint, integer, text, bytea
	identity bool   // the database assigns it (an identity or serial column)
}

// table is a table both engines have.
type table struct {
	name string
	cols []column
}

// colNames is the table's column names, in order.
func (t table) colNames() []string {
	out := make([]string, len(t.cols))
	for i, c := range t.cols {
		out[i] = c.name
	}
	return out
}

// commonTables compares the schemas of the (migrated) SQLite snapshot and
// the PostgreSQL target and returns the tables to copy, sorted by name,
// or an error that names every table and column that only one of them has.
func commonTables(ctx context.Context, lite *sql.DB, pg *sql.Tx) ([]table, error) {
	liteCols := map[string][]string{}
	rows, err := lite.QueryContext(ctx, `SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p WHERE m.type = 'table'`)
	if err != nil {
		return nil, fmt.Errorf("reading SQLite's schema: %w", err)
	}
	for rows.Next() {
		var t, c string
		if err := rows.Scan(&t, &c); err != nil {
			rows.Close()
			return nil, err
		}
		if !sqliteOnly(t) {
			liteCols[t] = append(liteCols[t], c)
		}
	}
	if err := errOf(rows); err != nil {
		return nil, fmt.Errorf("reading SQLite's schema: %w", err)
	}

	pgTables := map[string]*table{}
	rows, err = pg.QueryContext(ctx, `SELECT table_name, column_name, data_type,
			is_identity = 'YES' OR COALESCE(column_default, '') LIKE 'nextval(%'
		FROM information_schema.columns
		WHERE table_schema = current_schema()
		ORDER BY table_name, ordinal_position`)
	if err != nil {
		return nil, fmt.Errorf("reading PostgreSQL's schema: %w", err)
	}
	for rows.Next() {
		var t string
		var c column
		if err := rows.Scan(&t, &c.name, &c.pgType, &c.identity); err != nil {
			rows.Close()
			return nil, err
		}
		if postgresOnly(t) {
			continue
		}
		if pgTables[t] == nil {
			pgTables[t] = &table{name: t}
		}
		pgTables[t].cols = append(pgTables[t].cols, c)
	}
	if err := errOf(rows); err != nil {
		return nil, fmt.Errorf("reading PostgreSQL's schema: %w", err)
	}

	var problems []string
	var out []table
	for name, cols := range liteCols {
		pt := pgTables[name]
		if pt == nil {
			problems = append(problems, fmt.Sprintf("table %s is in SQLite's schema only", name))
			continue
		}
		pgNames := pt.colNames()
		for _, c := range cols {
			if !slices.Contains(pgNames, c) {
				problems = append(problems, fmt.Sprintf("column %s.%s is in SQLite's schema only", name, c))
			}
		}
		for _, c := range pgNames {
			if !slices.Contains(cols, c) {
				problems = append(problems, fmt.Sprintf("column %s.%s is in PostgreSQL's schema only", name, c))
			}
		}
		for _, c := range pt.cols {
			switch c.pgType {
			case "bigint", "integer", "smallint", "text", "bytea":
			default:
				problems = append(problems, fmt.Sprintf("column %s.%s is %s in PostgreSQL, which the port does not convert to", name, c.name, c.pgType))
			}
		}
		out = append(out, *pt)
	}
	for name := range pgTables {
		if liteCols[name] == nil {
			problems = append(problems, fmt.Sprintf("table %s is in PostgreSQL's schema only", name))
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return nil, fmt.Errorf("the schemas of this build's engines differ, so the port would lose data (a migration is missing in one of them):\n  %s",
			strings.Join(problems, "\n  "))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

// nonEmpty returns the tables of the target, search index included, that
// hold rows other than their migrations' seed, each with its row count.
func nonEmpty(ctx context.Context, pg *sql.Tx) ([]string, error) {
	var names []string
	rows, err := pg.QueryContext(ctx, `SELECT table_name FROM information_schema.tables
		WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' AND table_name <> 'schema_version' ORDER BY table_name`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return nil, err
		}
		names = append(names, n)
	}
	if err := errOf(rows); err != nil {
		return nil, err
	}
	var out []string
	for _, n := range names {
		q := `SELECT count(*) FROM ` + quoteIdent(n)
		if pred, ok := seeded[n]; ok {
			q += ` WHERE NOT (` + pred + `)`
		}
		var count int64
		if err := pg.QueryRowContext(ctx, q).Scan(&count); err != nil {
			return nil, fmt.Errorf("counting %s: %w", n, err)
		}
		if count > 0 {
			out = append(out, fmt.Sprintf("%s (%d rows)", n, count))
		}
	}
	return out, nil
}

// quoteIdent quotes a table or column name for either engine. The names
// come from the schemas, not from input; quoting keeps words such as
// "key" and "value" from being read as keywords.
func quoteIdent(name string) string {
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}

// errOf closes rows and returns the error that ended them.
func errOf(rows *sql.Rows) error {
	err := rows.Err()
	if cerr := rows.Close(); err == nil {
		err = cerr
	}
	return err
}
