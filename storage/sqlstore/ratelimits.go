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
	var wait int64
	err := db.rateTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var tat int64
		err := tx.QueryRowContext(ctx, `INSERT INTO rate_limits (bucket, tat_us) VALUES (?, ?)
			ON CONFLICT (bucket) DO UPDATE SET tat_us = CASE WHEN rate_limits.tat_us > ? THEN rate_limits.tat_us ELSE ? END + ?
			WHERE rate_limits.tat_us - ? <= ?
			RETURNING tat_us`, bucket, nowUS+intervalUS, nowUS, nowUS, intervalUS, nowUS, allowance).Scan(&tat)
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		// Refused: the row is as it was, and says when a token is back.
		if err := tx.QueryRowContext(ctx, `SELECT tat_us FROM rate_limits WHERE bucket = ?`, bucket).Scan(&tat); err != nil {
			return err
		}
		wait = max(tat-nowUS-allowance, 1)
		return nil
	})
	return wait, err
}

// RefundRateToken gives back a token that TakeRateToken took (a bucket
// never holds more than its burst).
func (db *DB) RefundRateToken(ctx context.Context, bucket string, nowUS, intervalUS int64) error {
	return db.rateTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE rate_limits SET tat_us = CASE WHEN tat_us - ? > ? THEN tat_us - ? ELSE ? END WHERE bucket = ?`,
			intervalUS, nowUS, intervalUS, nowUS, bucket)
		return err
	})
}

// PurgeRateLimits forgets the buckets that are full at nowUS: a missing
// row is a full bucket.
func (db *DB) PurgeRateLimits(ctx context.Context, nowUS int64) error {
	return db.rateTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM rate_limits WHERE tat_us <= ?`, nowUS)
		return err
	})
}

// rateTx runs fn in a transaction of its own. On PostgreSQL that is a READ
// COMMITTED transaction of the read pool (whose default, REPEATABLE READ,
// would fail an update of a row that another process's statement updated
// meanwhile, where READ COMMITTED waits for it and applies the update to
// the new row: exactly the contention a limited key sees). SQLite has one
// write connection, the writer's, and fn runs as one of its jobs.
func (db *DB) rateTx(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	if db.d.Name() == "sqlite3" {
		// The writer's transaction outlives no request: it runs without
		// the request's context, as every job does.
		return db.write(func(tx *sql.Tx) error { return fn(context.Background(), tx) }, nil)
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
