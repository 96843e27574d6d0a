package postgres

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultLeaseDuration is how long a worker lease lasts from each grant
// when Leases are opened with 0: a process that dies hands its workers to
// another within it.
const DefaultLeaseDuration = 15 * time.Second

// The database's clock in whole milliseconds, rounded both ways. A grant
// runs to nowCeil + duration, so it lasts at least the duration from the
// statement, which runs after the holder's call began (streamworker.Lease
// counts from there); a lease counts as expired only once nowFloor has
// reached its end, so no process takes it before it truly ends.
const (
	nowCeil  = `CAST(ceil(extract(epoch FROM clock_timestamp()) * 1000) AS BIGINT)`
	nowFloor = `CAST(floor(extract(epoch FROM clock_timestamp()) * 1000) AS BIGINT)`
)

// The lease statements: each Acquire, Renew and Release is one statement,
// atomic on its own, so no transaction spans a call. Two processes that
// Acquire at once both reach the INSERT; PostgreSQL makes the second wait
// for the first's row and then evaluates ON CONFLICT's WHERE against it
// (READ COMMITTED), so exactly one is granted.
const (
	// acquireSQL takes the lease when there is no row (never taken, or
	// released), when the row is this holder's, or when it has expired.
	// RETURNING yields a row only when the insert or the update happened.
	acquireSQL = `INSERT INTO worker_leases AS l (name, holder, expires_at)
VALUES (?, ?, ` + nowCeil + ` + ?)
ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
WHERE l.holder = EXCLUDED.holder OR l.expires_at <= ` + nowFloor + `
RETURNING l.holder`
	// renewSQL extends the lease only while it is this holder's and has
	// not expired: an expired lease is anybody's, and taking it again is
	// Acquire's, after which the workers resume from their stored
	// positions.
	renewSQL = `UPDATE worker_leases SET expires_at = ` + nowCeil + ` + ?
WHERE name = ? AND holder = ? AND expires_at > ` + nowFloor
	releaseSQL = `DELETE FROM worker_leases WHERE name = ? AND holder = ?`
)

// Leases are this process's worker leases on a PostgreSQL database whose
// schema is migrated (Open did it): one holder ID, unique to this start
// of the process, and a small pool of their own, so that renewals wait
// neither behind the writer's batches nor for a read connection that
// long-polls hold.
type Leases struct {
	db       *sql.DB
	holder   string
	duration time.Duration
}

// leaseConns bounds the lease pool: each lease makes a call every third
// of its duration, one at a time, and a call is one short statement.
const leaseConns = 2

// OpenLeases opens the lease pool of the database opts names; duration is
// how long each grant lasts (0: DefaultLeaseDuration), at least a second
// and in whole milliseconds. Close it after the holders stop.
func OpenLeases(opts Options, duration time.Duration) (*Leases, error) {
	if duration == 0 {
		duration = DefaultLeaseDuration
	}
	if duration < time.Second || duration%time.Millisecond != 0 {
		return nil, fmt.Errorf("postgres: lease duration %v: need at least 1s, in whole milliseconds", duration)
	}
	cfg, err := pgx.ParseConfig(opts.DSN)
	if err != nil {
		return nil, fmt.Errorf("postgres: DSN: %w", err)
	}
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	cfg.RuntimeParams["application_name"] = "homeserver-leases"
	// READ COMMITTED whatever the database's default: under REPEATABLE
	// READ, the losing side of a simultaneous Acquire would fail with a
	// serialization error instead of being refused.
	cfg.RuntimeParams["default_transaction_isolation"] = "read committed"
	cfg.RuntimeParams["statement_timeout"] = "10s"
	db := sql.OpenDB(newConnector(cfg))
	db.SetMaxOpenConns(leaseConns)
	db.SetMaxIdleConns(leaseConns)
	db.SetConnMaxLifetime(time.Hour)
	host, _ := os.Hostname()
	return &Leases{db: db, duration: duration,
		holder: fmt.Sprintf("%s/%d/%s", host, os.Getpid(), rand.Text()[:16])}, nil
}

// Holder is the ID this process holds leases under: host name, process
// ID and a random part, so that a restarted process (even one given the
// same PID) is another holder and takes its leases through Acquire.
func (ls *Leases) Holder() string { return ls.holder }

// Duration is how long each grant lasts.
func (ls *Leases) Duration() time.Duration { return ls.duration }

// Lease is the lease called name (a worker's: "notifications", ...). It
// implements streamworker.Lease.
func (ls *Leases) Lease(name string) *Lease { return &Lease{ls: ls, name: name} }

// Close closes the pool.
func (ls *Leases) Close() error { return ls.db.Close() }

// Lease is one named lease of Leases.
type Lease struct {
	ls   *Leases
	name string
}

// Acquire takes the lease when it is free, expired or already this
// process's, and returns the duration granted, or 0 when another process
// holds it.
func (l *Lease) Acquire(ctx context.Context) (time.Duration, error) {
	var holder string
	err := l.ls.db.QueryRowContext(ctx, acquireSQL, l.name, l.ls.holder, l.ls.duration.Milliseconds()).Scan(&holder)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("acquiring lease %s: %w", l.name, err)
	}
	return l.ls.duration, nil
}

// Renew extends the lease while this process holds it and it has not
// expired, and returns the duration granted; 0 otherwise.
func (l *Lease) Renew(ctx context.Context) (time.Duration, error) {
	res, err := l.ls.db.ExecContext(ctx, renewSQL, l.ls.duration.Milliseconds(), l.name, l.ls.holder)
	if err != nil {
		return 0, fmt.Errorf("renewing lease %s: %w", l.name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("renewing lease %s: %w", l.name, err)
	}
	if n == 0 {
		return 0, nil
	}
	return l.ls.duration, nil
}

// Release gives the lease up if this process holds it, so that another
// takes it at its next try rather than at the expiry.
func (l *Lease) Release(ctx context.Context) error {
	if _, err := l.ls.db.ExecContext(ctx, releaseSQL, l.name, l.ls.holder); err != nil {
		return fmt.Errorf("releasing lease %s: %w", l.name, err)
	}
	return nil
}
