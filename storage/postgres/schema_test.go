package postgres

import (
	"context"
	"database/sql"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/persistentchat/homeserver/storage/sqlite"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestSchemaMatchesSQLite keeps the two schemas from drifting apart: every
// table, column and named index of a fresh SQLite database exists in a
// freshly migrated PostgreSQL one, each column with the translation of
// its type (schema.go says which).
func TestSchemaMatchesSQLite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hs.db")
	lite, err := sqlite.Open(path, discard())
	if err != nil {
		t.Fatal(err)
	}
	lite.Close()
	s, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	db, err := openTestPools(Options{DSN: testDSN(t)}, discard())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	// SQLite's: name -> column -> declared type. FTS4's shadow tables
	// (event_search_content, _segments, ...) are its implementation.
	type table = map[string]string
	want := map[string]table{}
	rows, err := s.Query(`SELECT m.name, p.name, p.type FROM sqlite_master m, pragma_table_info(m.name) p
		WHERE m.type = 'table' AND m.name NOT LIKE 'event_search_%' AND m.name NOT LIKE 'sqlite_%'`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var tbl, col, typ string
		if err := rows.Scan(&tbl, &col, &typ); err != nil {
			t.Fatal(err)
		}
		if want[tbl] == nil {
			want[tbl] = table{}
		}
		want[tbl][col] = strings.ToUpper(typ)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(want) < 30 {
		t.Fatalf("SQLite has only %d tables: the query of sqlite_master is wrong", len(want))
	}
	// FTS4 declares its columns without types; its docid is hidden.
	for col := range want["event_search"] {
		want["event_search"][col] = map[string]string{"value": "TEXT", "sender": "TEXT"}[col]
		if want["event_search"][col] == "" {
			want["event_search"][col] = "INTEGER"
		}
	}

	have := map[string]table{}
	rows, err = db.r.Query(`SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = current_schema()`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var tbl, col, typ string
		if err := rows.Scan(&tbl, &col, &typ); err != nil {
			t.Fatal(err)
		}
		if have[tbl] == nil {
			have[tbl] = table{}
		}
		have[tbl][col] = typ
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	translations := map[string][]string{"INTEGER": {"bigint", "integer"}, "TEXT": {"text"}, "BLOB": {"bytea"}}
	for tbl, cols := range want {
		if have[tbl] == nil {
			t.Errorf("table %s: missing in PostgreSQL", tbl)
			continue
		}
		for col, typ := range cols {
			got, ok := have[tbl][col]
			switch {
			case !ok:
				t.Errorf("column %s.%s: missing in PostgreSQL", tbl, col)
			case !slices.Contains(translations[typ], got):
				t.Errorf("column %s.%s: SQLite %s, PostgreSQL %s; want one of %v", tbl, col, typ, got, translations[typ])
			}
		}
	}

	var liteIdx, pgIdx []string
	rows, err = s.Query(`SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_autoindex_%'`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n string
		rows.Scan(&n)
		liteIdx = append(liteIdx, n)
	}
	rows, err = db.r.Query(`SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n string
		rows.Scan(&n)
		pgIdx = append(pgIdx, n)
	}
	if len(liteIdx) < 20 {
		t.Fatalf("SQLite has only %d indexes: the query is wrong", len(liteIdx))
	}
	for _, n := range liteIdx {
		if !slices.Contains(pgIdx, n) {
			t.Errorf("index %s: missing in PostgreSQL", n)
		}
	}
}

// Processes that start together migrate once: the others wait on the
// advisory lock and find the schema current.
func TestMigrateConcurrently(t *testing.T) {
	dsn := testDSN(t)
	const n = 4
	var wg sync.WaitGroup
	errs := make([]error, n)
	dbs := make([]*testPools, n)
	for i := range n {
		wg.Go(func() { dbs[i], errs[i] = openTestPools(Options{DSN: dsn, MinConns: 1, MaxConns: 2}, discard()) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("open %d: %v", i, errs[i])
		}
		defer dbs[i].Close()
	}
	var version int
	if err := dbs[0].r.QueryRow(`SELECT version FROM schema_version`).Scan(&version); err != nil || version != len(migrations) {
		t.Fatalf("schema version %d, %v; want %d", version, err, len(migrations))
	}
	// A database migrated by a newer build is refused, not used.
	if _, err := dbs[0].w.Exec(`UPDATE schema_version SET version = ?`, len(migrations)+1); err != nil {
		t.Fatal(err)
	}
	if db, err := openTestPools(Options{DSN: dsn, MinConns: 1, MaxConns: 2}, discard()); err == nil {
		db.Close()
		t.Fatal("opened a database of a newer schema")
	} else if !strings.Contains(err.Error(), "newer") {
		t.Fatalf("open of a newer schema: %v", err)
	}
}

// A failing migration leaves the database at the last one that completed.
func TestMigrateFailureRollsBack(t *testing.T) {
	dsn := testDSN(t)
	w, r, err := openPools(Options{DSN: dsn, MinConns: 1, MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	defer r.Close()
	ctx := context.Background()
	steps := []string{`CREATE TABLE a (x BIGINT)`, `CREATE TABLE b (x BIGINT); SELECT 1/0`}
	if err := migrate(ctx, w, steps, discard()); err == nil || !strings.Contains(err.Error(), "migration 2") {
		t.Fatalf("migrate = %v, want migration 2 to fail", err)
	}
	var version int
	var b sql.NullString
	if err := r.QueryRow(`SELECT version, to_regclass('b')::text FROM schema_version`).Scan(&version, &b); err != nil {
		t.Fatal(err)
	}
	if version != 1 || b.Valid {
		t.Errorf("after a failed migration 2: version %d, table b %v; want 1 and no table", version, b)
	}
}

// Readers see one snapshot per transaction; the writer reads committed.
func TestPoolSettings(t *testing.T) {
	db, err := openTestPools(Options{DSN: testDSN(t), MinConns: 2, MaxConns: 4}, discard())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var iso, timeout string
	if err := db.r.QueryRow(`SELECT current_setting('transaction_isolation'), current_setting('statement_timeout')`).Scan(&iso, &timeout); err != nil {
		t.Fatal(err)
	}
	if iso != "repeatable read" || timeout != "1min" {
		t.Errorf("reader: isolation %q, statement_timeout %q; want repeatable read, 1min", iso, timeout)
	}
	if err := db.w.QueryRow(`SELECT current_setting('transaction_isolation')`).Scan(&iso); err != nil || iso != "read committed" {
		t.Errorf("writer: isolation %q, %v", iso, err)
	}
	if st := db.r.Stats(); st.MaxOpenConnections != 3 || st.Idle < 2 {
		t.Errorf("read pool %+v: want at most 3 connections and 2 idle", st)
	}
	// A reader's read-only transaction keeps its snapshot while the writer commits.
	if _, err := db.w.Exec(`INSERT INTO filters (user_id, filter_id, filter) VALUES ('@a:x', 1, '{}')`); err != nil {
		t.Fatal(err)
	}
	tx, err := db.r.BeginTx(context.Background(), &sql.TxOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	count := func() (n int) {
		if err := tx.QueryRow(`SELECT count(*) FROM filters`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := count()
	if _, err := db.w.Exec(`INSERT INTO filters (user_id, filter_id, filter) VALUES ('@a:x', 2, '{}')`); err != nil {
		t.Fatal(err)
	}
	if after := count(); before != 1 || after != 1 {
		t.Errorf("reader saw %d then %d rows, want 1 and 1", before, after)
	}
	if _, err := tx.Exec(`DELETE FROM filters`); err == nil {
		t.Error("a read-only transaction wrote")
	}
	if _, err := openTestPools(Options{DSN: testDSN(t), MinConns: 3, MaxConns: 1}, discard()); err == nil {
		t.Error("opened with max 1 connection")
	}
}
