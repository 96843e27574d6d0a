package sqlstore

import (
	"context"

	"github.com/persistentchat/homeserver/storage"
)

// Ping checks that the database can be used: the writer is running (not
// closed) and a read connection reads a table. It is
// GET /health's check, so it takes no write lock and adds no write: a
// load balancer may call it every second. It waits for a read connection
// like any query, so ctx should carry a short deadline.
func (db *DB) Ping(ctx context.Context) error {
	select {
	case <-db.quit:
		return errClosed
	default:
	}
	var n int64
	// A query on a table, unlike SELECT 1, opens a read transaction on
	// the database (SQLite reads the file's first pages).
	return db.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM (SELECT 1 FROM rooms LIMIT 1) r`).Scan(&n)
}

// Stats returns the use of the read pool and of the writer's single
// connection.
func (db *DB) Stats() []storage.PoolStats {
	return []storage.PoolStats{storage.PoolStatsOf("read", db.r.Stats()), storage.PoolStatsOf("write", db.w.Stats())}
}
