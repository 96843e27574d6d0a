package sqlstore

import (
	"context"
	"database/sql"
	"errors"
)

// Shared rate limits: one row per limited key, for several processes that
// serve the client API on one database, so that a client meets the same
// limits whichever process its requests reach. A bucket is kept as GCRA
// (the generic cell rate algorithm, equivalent to a token bucket of the
// same rate and burst) in one integer, its theoretical arrival time tat_us:
// the bucket is full while tat_us <= now, and a request is allowed while
// tat_us - now <= (burst-1) * interval, where interval is the time one
// token takes to come back. One statement takes a token atomically.
//
// These statements do not go through the writer: they change nothing a
// reader or a stream position depends on, need no ordering with other
// writes, and on PostgreSQL must not wait for the writers' batch lock. A
// lost bucket (a crash before commit) only forgets a few requests.

// TakeRateToken takes a token from bucket at nowUS (microseconds), for a
// limit whose tokens come back every intervalUS, up to burst. It returns
// 0 when the token was taken, else how long until one will be there
// (microseconds, at least 1) and takes nothing.
func (db *DB) TakeRateToken(ctx context.Context, bucket string, nowUS, intervalUS int64, burst int) (int64, error) {
	allowance := int64(burst-1) * intervalUS
	var tat int64
	err := db.rateStatement(ctx, func(ctx context.Context, q querier) error {
		return q.QueryRowContext(ctx, `INSERT INTO rate_limits (bucket, tat_us) VALUES (?, ?)
			ON CONFLICT (bucket) DO UPDATE SET tat_us = CASE WHEN rate_limits.tat_us > ? THEN rate_limits.tat_us ELSE ? END + ?
			WHERE rate_limits.tat_us - ? <= ?
			RETURNING tat_us`, bucket, nowUS+intervalUS, nowUS, nowUS, intervalUS, nowUS, allowance).Scan(&tat)
	})
	if !errors.Is(err, sql.ErrNoRows) {
		return 0, err
	}
	// Refused, and the row left as it was: it says when a token is back
	// (a row just purged is a full bucket: no wait, though this take was
	// refused a moment before; the client retries).
	err = db.rateStatement(ctx, func(ctx context.Context, q querier) error {
		return q.QueryRowContext(ctx, `SELECT tat_us FROM rate_limits WHERE bucket = ?`, bucket).Scan(&tat)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return 1, nil
	}
	if err != nil {
		return 0, err
	}
	return max(tat-nowUS-allowance, 1), nil
}

// RefundRateToken gives back a token that TakeRateToken took (a bucket
// never holds more than its burst).
func (db *DB) RefundRateToken(ctx context.Context, bucket string, nowUS, intervalUS int64) error {
	return db.rateStatement(ctx, func(ctx context.Context, q querier) error {
		_, err := q.ExecContext(ctx, `UPDATE rate_limits SET tat_us = CASE WHEN tat_us - ? > ? THEN tat_us - ? ELSE ? END WHERE bucket = ?`,
			intervalUS, nowUS, intervalUS, nowUS, bucket)
		return err
	})
}

// PurgeRateLimits forgets the buckets that are full at nowUS: a missing
// row is a full bucket.
func (db *DB) PurgeRateLimits(ctx context.Context, nowUS int64) error {
	return db.rateStatement(ctx, func(ctx context.Context, q querier) error {
		_, err := q.ExecContext(ctx, `DELETE FROM rate_limits WHERE tat_us <= ?`, nowUS)
		return err
	})
}

// rateRetries bounds how often a statement is retried after a
// serialization failure before it runs in a READ COMMITTED transaction.
const rateRetries = 3

// rateStatement runs fn, which runs one statement, on its own.
//
// On PostgreSQL that is one autocommitted statement on the read pool: one
// round trip. The pool's transactions are REPEATABLE READ, under which an
// update of a row that another process's statement updated meanwhile fails
// (SQLSTATE 40001) instead of waiting for it and applying to the new row,
// as READ COMMITTED does. Such a failure means another take on the same
// bucket committed (progress): the statement is retried, and after
// rateRetries failures runs in a READ COMMITTED transaction (three round
// trips), which cannot fail so.
//
// SQLite has one write connection, the writer's: fn runs as one of its
// jobs.
func (db *DB) rateStatement(ctx context.Context, fn func(ctx context.Context, q querier) error) error {
	if db.d.Name() == "sqlite3" {
		// The writer's transaction outlives no request: it runs without
		// the request's context, as every job does.
		return db.write(func(tx *sql.Tx) error { return fn(context.Background(), tx) }, nil)
	}
	for range rateRetries {
		err := fn(ctx, db.r)
		if !isSerializationFailure(err) {
			return err
		}
	}
	tx, err := db.r.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return err
	}
	if err := fn(ctx, tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// isSerializationFailure: err is PostgreSQL's 40001 (pgx's errors carry
// their SQLSTATE).
func isSerializationFailure(err error) bool {
	var e interface{ SQLState() string }
	return errors.As(err, &e) && e.SQLState() == "40001"
}
