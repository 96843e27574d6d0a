// Package port copies a homeserver's SQLite database into an empty
// PostgreSQL database, so that a department can move to PostgreSQL
// (Synapse's synapse_port_db does the same for Synapse). The copy is of one
// consistent snapshot of the source, which a running server may go on
// writing; both databases are migrated to this build's schema first; every
// table the two schemas share is copied with COPY, converting SQLite's
// values to the PostgreSQL columns' types; the search index, which each
// engine keeps its own way, is rebuilt from the copied events; and the
// result is verified inside the same transaction before it commits, so a
// port that fails leaves the target as empty as it found it.
package port

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	_ "github.com/mattn/go-sqlite3" // the "sqlite3" driver, to read the snapshot

	"github.com/persistentchat/homeserver/storage/postgres"
	"github.com/persistentchat/homeserver/storage/sqlite"
)

// Options say what to port where.
type Options struct {
	// SQLitePath is the source database file. It is never written: the
	// port reads a snapshot of it (snapshot).
	SQLitePath string
	// PostgresDSN is the target database. Its tables must be empty (the
	// database new, or only migrated): the port refuses otherwise.
	PostgresDSN string
	// SampleEvents is how many random events (besides the first and the
	// last) are compared column by column after the copy; 0 means 1000.
	SampleEvents int
	// Log gets progress, one line per table.
	Log *slog.Logger
}

// ErrTargetNotEmpty is returned, wrapped with the tables that hold rows,
// when the target already holds data: a port adds to nothing, since rows
// of another server (or of an earlier port) would collide with the copied
// positions and IDs.
var ErrTargetNotEmpty = errors.New("the PostgreSQL database already holds data; port into a new, empty database")

// ErrMismatch is returned, wrapped with the differences, when the copy does
// not verify; the transaction is rolled back, so the target stays empty.
var ErrMismatch = errors.New("the copy differs from the source")

// Summary is what a port did.
type Summary struct {
	Tables []TableCount // every copied table, by name
	Rows   int64        // rows copied, over all tables
	// LastEventPos is the stream position of the snapshot's newest event:
	// what a server still running on the source wrote after it is not in
	// the copy.
	LastEventPos int64
	SearchDocs   int64 // events indexed for search in PostgreSQL
	Verified     int   // events compared column by column
	Snapshot     time.Duration
	Copy         time.Duration // COPY of every table and identity reset
	Search       time.Duration // rebuilding the search index
	Verify       time.Duration
	Total        time.Duration
}

// TableCount is one table's copied rows.
type TableCount struct {
	Name string
	Rows int64
}

// String is the summary an operator reads.
func (s *Summary) String() string {
	var b strings.Builder
	for _, t := range s.Tables {
		fmt.Fprintf(&b, "  %-28s %10d\n", t.Name, t.Rows)
	}
	rate := 0.0
	if d := (s.Copy + s.Search).Seconds(); d > 0 {
		rate = float64(s.Rows) / d
	}
	fmt.Fprintf(&b, "%d tables, %d rows, %d events indexed for search, up to stream position %d\n",
		len(s.Tables), s.Rows, s.SearchDocs, s.LastEventPos)
	fmt.Fprintf(&b, "verified: row counts of every table, the search index, %d events column by column\n", s.Verified)
	fmt.Fprintf(&b, "time: %s (snapshot %s, copy %s, search index %s, verify %s), %.0f rows/s\n",
		s.Total.Round(time.Millisecond), s.Snapshot.Round(time.Millisecond), s.Copy.Round(time.Millisecond),
		s.Search.Round(time.Millisecond), s.Verify.Round(time.Millisecond), rate)
	return b.String()
}

// Run ports opts.SQLitePath into opts.PostgresDSN. On any error the target
// holds no copied rows (it may have been migrated).
func Run(ctx context.Context, opts Options) (*Summary, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.SQLitePath == "" || opts.PostgresDSN == "" {
		return nil, errors.New("port: need the SQLite database and the PostgreSQL DSN")
	}
	sample := opts.SampleEvents
	if sample <= 0 {
		sample = 1000
	}
	start := time.Now()
	sum := &Summary{}

	// The target first: migrated by the engine's own runner (what a
	// server would do on its first start), then checked empty, before the
	// snapshot costs anything.
	pgStore, err := postgres.Open(postgres.Options{DSN: opts.PostgresDSN, MinConns: 1, MaxConns: 2}, log)
	if err != nil {
		return nil, fmt.Errorf("opening the PostgreSQL database: %w", err)
	}
	if err := pgStore.Close(); err != nil {
		return nil, err
	}
	pg, err := sql.Open(postgres.DriverName, opts.PostgresDSN)
	if err != nil {
		return nil, err
	}
	defer pg.Close()
	conn, err := pg.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	defer conn.Close()
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	// The port is one transaction: a server started on the target before
	// it commits finds it empty, and a failure leaves it empty. No
	// statement timeout: a COPY of millions of rows is one statement.
	if _, err := tx.ExecContext(ctx, `SET LOCAL statement_timeout = 0`); err != nil {
		return nil, err
	}
	// Hold off every other writer (a server started on the target too
	// early, a second port) until this commits: they would find the
	// tables empty under their snapshot and collide afterwards.
	if _, err := tx.ExecContext(ctx, `LOCK TABLE events IN EXCLUSIVE MODE`); err != nil {
		return nil, err
	}
	full, err := nonEmpty(ctx, tx)
	if err != nil {
		return nil, fmt.Errorf("checking that the PostgreSQL database is empty: %w", err)
	}
	if len(full) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrTargetNotEmpty, strings.Join(full, ", "))
	}

	t0 := time.Now()
	snap, remove, err := snapshot(ctx, opts.SQLitePath)
	if err != nil {
		return nil, err
	}
	defer remove()
	// Migrate the snapshot, not the source: the server using the source
	// may be of an older build.
	liteStore, err := sqlite.Open(snap, log)
	if err != nil {
		return nil, fmt.Errorf("migrating the snapshot of the SQLite database: %w", err)
	}
	if err := liteStore.Close(); err != nil {
		return nil, err
	}
	lite, err := sql.Open("sqlite3", "file:"+snap+"?mode=ro&_query_only=true")
	if err != nil {
		return nil, err
	}
	defer lite.Close()
	lite.SetMaxOpenConns(2)
	sum.Snapshot = time.Since(t0)
	if err := lite.QueryRowContext(ctx, `SELECT COALESCE(MAX(stream_pos), 0) FROM events`).Scan(&sum.LastEventPos); err != nil {
		return nil, err
	}
	log.Info("port: snapshot taken", "path", opts.SQLitePath, "last_event_pos", sum.LastEventPos, "took", sum.Snapshot)

	tables, err := commonTables(ctx, lite, tx)
	if err != nil {
		return nil, err
	}
	t0 = time.Now()
	for name := range seeded {
		if _, err := tx.ExecContext(ctx, `DELETE FROM `+quoteIdent(name)); err != nil {
			return nil, err
		}
	}
	counts := map[string]int64{}
	for _, t := range tables {
		tt := time.Now()
		n, err := copyTable(ctx, lite, conn, t)
		if err != nil {
			return nil, err
		}
		counts[t.name] = n
		sum.Tables = append(sum.Tables, TableCount{Name: t.name, Rows: n})
		sum.Rows += n
		log.Info("port: table copied", "table", t.name, "rows", n, "took", time.Since(tt))
	}
	if err := resetIdentities(ctx, lite, tx, tables); err != nil {
		return nil, err
	}
	sum.Copy = time.Since(t0)

	t0 = time.Now()
	if sum.SearchDocs, err = rebuildSearch(ctx, lite, tx); err != nil {
		return nil, err
	}
	sum.Search = time.Since(t0)
	log.Info("port: search index rebuilt", "events", sum.SearchDocs, "took", sum.Search)

	t0 = time.Now()
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
	bad, verified, err := verify(ctx, lite, tx, tables, counts, sample, rnd)
	if err != nil {
		return nil, fmt.Errorf("verifying: %w", err)
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("%w (nothing was committed):\n  %s", ErrMismatch, strings.Join(bad, "\n  "))
	}
	sum.Verified = verified
	sum.Verify = time.Since(t0)
	// Statistics for the planner, which has none of the copied tables yet
	// (autovacuum would get there, later).
	if _, err := tx.ExecContext(ctx, `ANALYZE`); err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("committing the copy: %w", err)
	}
	sum.Total = time.Since(start)
	return sum, nil
}
