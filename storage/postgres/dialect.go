package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// Dialect is PostgreSQL's side of the shared SQL layer: what its SQL
// cannot say once for both engines.
type Dialect struct{}

// Name is the engine's name in the config (Synapse's).
func (Dialect) Name() string { return "postgres" }

// uniqueViolation is SQLSTATE unique_violation, for primary keys and
// unique constraints and indexes alike.
const uniqueViolation = "23505"

// IsUniqueViolation reports whether err is a unique or primary-key
// violation.
func (Dialect) IsUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == uniqueViolation
}

// JSONText is the string at path in the JSON document that expr holds
// (BYTEA of UTF-8 JSON, as events.json), NULL where path is absent; a
// value that is not a string gives its JSON text. It parses as json, not
// jsonb: one lookup in a document parsed once is faster as json, which
// skips building jsonb's sorted binary form (BenchmarkJSONText).
//
// PostgreSQL's text type cannot hold U+0000, so both json and jsonb fail
// on a document holding the escape \u0000 anywhere (SQLSTATE 22P05), and
// canonical JSON writes NUL so; one such event, which any user or server
// may send, would fail every query that reads its room's events. The
// document's \u0000 sequences become \ufffd first: the same shape, six
// bytes of backslash, u and four hex digits, so the JSON stays valid
// whether its backslash began an escape or was itself escaped, and a value
// changes only where it held NUL (or that literal text), never into one
// of the constants the shared SQL compares with. Lone surrogates, which
// PostgreSQL refuses too, never reach storage (roomdag rejects them).
// Path elements are trusted constants.
func (Dialect) JSONText(expr string, path ...string) string {
	var b strings.Builder
	b.WriteString("(replace(convert_from(")
	b.WriteString(expr)
	b.WriteString(`, 'UTF8'), '\u0000', '\ufffd')::json #>> '{`)
	for i, p := range path {
		if i > 0 {
			b.WriteByte(',')
		}
		// An element of an array literal, double-quoted, inside a
		// string constant.
		p = strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(p)
		b.WriteByte('"')
		b.WriteString(strings.ReplaceAll(p, "'", "''"))
		b.WriteByte('"')
	}
	b.WriteString("}')")
	return b.String()
}

// batchLockKey is the transaction-level advisory lock that every writer
// batch takes first, so that the batches of several processes sharing the
// database commit one at a time, in the order they took it. It is an
// arbitrary constant ("hsbatch" in ASCII), distinct from migrateLockKey.
const batchLockKey int64 = 0x6873626174636800

// BeginBatch takes the writers' lock; the transaction's commit or
// rollback releases it.
func (Dialect) BeginBatch(tx *sql.Tx) error {
	_, err := tx.Exec(`SELECT pg_advisory_xact_lock(?)`, batchLockKey)
	return err
}

// ConcurrentWriters is true: several homeserver processes may share the
// database, so the writer reloads its counters in every batch.
func (Dialect) ConcurrentWriters() bool { return true }

// snapshotIDBlock is how many state snapshot IDs one nextval of
// state_snapshot_ids reserves: the sequence's INCREMENT (schema.go).
const snapshotIDBlock = 64

// ReserveSnapshotIDs takes the next block of state_snapshot_ids. nextval
// is never rolled back and never hands a value out twice, so no two
// processes (nor two blocks of one) overlap.
func (Dialect) ReserveSnapshotIDs(ctx context.Context, db *sql.DB) (int64, int64, error) {
	var first int64
	if err := db.QueryRowContext(ctx, `SELECT nextval('state_snapshot_ids')`).Scan(&first); err != nil {
		return 0, 0, fmt.Errorf("reserving state snapshot IDs: %w", err)
	}
	return first, snapshotIDBlock, nil
}
