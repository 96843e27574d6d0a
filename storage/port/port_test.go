package port

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/persistentchat/homeserver/storage/postgres"
	"github.com/persistentchat/homeserver/storage/sqlite"
	"github.com/persistentchat/homeserver/testserver"
)

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// targetDSN is a new PostgreSQL database for the test, or a skip.
func targetDSN(t *testing.T) string {
	t.Helper()
	if os.Getenv(testserver.PostgresEnv) == "" {
		t.Skipf("needs PostgreSQL: set %s to an admin DSN (scripts/pgcluster.sh start DIR writes one to DIR/dsn)", testserver.PostgresEnv)
	}
	return testserver.PostgresDatabase(t)
}

// emptySQLite is a migrated SQLite database with no data.
func emptySQLite(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hs.db")
	db, err := sqlite.Open(path, quiet())
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	return path
}

// A freshly migrated target counts as empty: every table a migration
// seeds is in seeded. And the two schemas of this build have the same
// tables, so a port can run at all.
func TestFreshTargetIsEmpty(t *testing.T) {
	dsn := targetDSN(t)
	db, err := postgres.Open(postgres.Options{DSN: dsn, MinConns: 1, MaxConns: 2}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	pg, err := sql.Open(postgres.DriverName, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	tx, err := pg.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	full, err := nonEmpty(context.Background(), tx)
	if err != nil || len(full) > 0 {
		t.Fatalf("a freshly migrated database holds data: %v, %v (a migration seeds a table: add it to seeded)", full, err)
	}
	lite, err := sql.Open("sqlite3", "file:"+emptySQLite(t))
	if err != nil {
		t.Fatal(err)
	}
	defer lite.Close()
	tables, err := commonTables(context.Background(), lite, tx)
	if err != nil {
		t.Fatal(err)
	}
	if len(tables) < 30 {
		t.Errorf("%d tables in common: the schema queries are wrong", len(tables))
	}
	// A table in one engine only stops the port.
	if _, err := lite.Exec(`CREATE TABLE only_here (x INTEGER)`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`ALTER TABLE users ADD COLUMN only_there BIGINT`); err != nil {
		t.Fatal(err)
	}
	_, err = commonTables(context.Background(), lite, tx)
	if err == nil || !strings.Contains(err.Error(), "table only_here is in SQLite's schema only") ||
		!strings.Contains(err.Error(), "column users.only_there is in PostgreSQL's schema only") {
		t.Errorf("schemas that differ: %v", err)
	}
}

// A target with data is refused before anything is copied, and left as
// it was.
func TestNonEmptyTargetRefused(t *testing.T) {
	dsn := targetDSN(t)
	db, err := postgres.Open(postgres.Options{DSN: dsn, MinConns: 1, MaxConns: 2}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	pg, err := sql.Open(postgres.DriverName, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	if _, err := pg.Exec(`INSERT INTO filters (user_id, filter_id, filter) VALUES ('@a:x', 1, '{}')`); err != nil {
		t.Fatal(err)
	}
	_, err = Run(context.Background(), Options{SQLitePath: emptySQLite(t), PostgresDSN: dsn})
	if !errors.Is(err, ErrTargetNotEmpty) || !strings.Contains(err.Error(), "filters (1 rows)") {
		t.Fatalf("port into a database with a filter: %v", err)
	}
	var n int
	if err := pg.QueryRow(`SELECT count(*) FROM filters`).Scan(&n); err != nil || n != 1 {
		t.Errorf("filters after the refusal: %d, %v", n, err)
	}
}

// An empty source ports (nothing to copy is no error), and the source file
// is not written: not migrated, no snapshot left beside it.
func TestEmptySourceLeavesNoTrace(t *testing.T) {
	dsn := targetDSN(t)
	src := emptySQLite(t)
	before, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := Run(context.Background(), Options{SQLitePath: src, PostgresDSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Rows != 3 || sum.LastEventPos != 0 { // the one row of notify_position, to_device_position and compliance_position
		t.Errorf("summary of an empty database: %+v", sum)
	}
	after, _ := os.ReadFile(src)
	if string(before) != string(after) {
		t.Error("the port wrote to its source")
	}
	entries, _ := os.ReadDir(filepath.Dir(src))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".port-snapshot-") {
			t.Errorf("snapshot %s left behind", e.Name())
		}
	}
}

func TestConvert(t *testing.T) {
	for _, c := range []struct {
		v      any
		pgType string
		want   any
		bad    string
	}{
		{int64(5), "bigint", int64(5), ""},
		{int64(1) << 40, "integer", nil, "does not fit"},
		{"12", "bigint", nil, "where an integer belongs"},
		{1.5, "bigint", nil, "where an integer belongs"},
		{"é", "text", "é", ""},
		{[]byte("abc"), "text", "abc", ""},
		{"a\x00b", "text", nil, "NUL"},
		{string([]byte{0xff}), "text", nil, "not UTF-8"},
		{"raw", "bytea", []byte("raw"), ""},
		{[]byte{0, 1}, "bytea", []byte{0, 1}, ""},
		{int64(1), "bytea", nil, "where bytes belong"},
		{nil, "text", nil, ""},
	} {
		got, err := convert(c.v, c.pgType)
		switch {
		case c.bad != "":
			if err == nil || !strings.Contains(err.Error(), c.bad) {
				t.Errorf("convert(%#v, %s) = %v, %v; want an error with %q", c.v, c.pgType, got, err, c.bad)
			}
		case err != nil || !sameValue(c.want, got):
			t.Errorf("convert(%#v, %s) = %#v, %v; want %#v", c.v, c.pgType, got, err, c.want)
		}
	}
}

// A source that is being written while the port runs is copied as one
// state of it: each write below adds a row to two tables in one
// transaction, and the copy has as many rows in one as in the other.
func TestSnapshotOfALiveSource(t *testing.T) {
	dsn := targetDSN(t)
	src := emptySQLite(t)
	w, err := sql.Open("sqlite3", "file:"+src+"?_journal_mode=WAL&_busy_timeout=10000&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.SetMaxOpenConns(1)
	write := func(i int) error {
		tx, err := w.Begin()
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if _, err := tx.Exec(`INSERT INTO filters (user_id, filter_id, filter) VALUES ('@a:x', ?, '{}')`, i); err != nil {
			return err
		}
		if _, err := tx.Exec(`INSERT INTO push_rules (user_id, rules) VALUES (?, '[]')`, "@u"+strconv.Itoa(i)+":x"); err != nil {
			return err
		}
		return tx.Commit()
	}
	for i := range 2000 { // something to copy before the writes race it
		if err := write(i); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	done := make(chan error)
	go func() {
		i := 2000
		for {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if err := write(i); err != nil {
				done <- err
				return
			}
			i++
		}
	}()
	_, err = Run(context.Background(), Options{SQLitePath: src, PostgresDSN: dsn})
	close(stop)
	if werr := <-done; werr != nil {
		t.Fatalf("writer: %v", werr)
	}
	if err != nil {
		t.Fatal(err)
	}
	pg, err := sql.Open(postgres.DriverName, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	var filters, rules int
	if err := pg.QueryRow(`SELECT (SELECT count(*) FROM filters), (SELECT count(*) FROM push_rules)`).Scan(&filters, &rules); err != nil {
		t.Fatal(err)
	}
	if filters != rules || filters < 2000 {
		t.Errorf("copied %d filters and %d push rules; want the same number, at least 2000", filters, rules)
	}
}
