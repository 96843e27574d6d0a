package sqlite

import (
	"context"

	"github.com/persistentchat/homeserver/storage"
)

// Ping checks that the database can be used: the writer is running (not
// closed) and a read connection reads the database file's header. It is
// GET /health's check, so it takes no write lock and adds no write: a
// load balancer may call it every second. It waits for a read connection
// like any query, so ctx should carry a short deadline.
func (db *DB) Ping(ctx context.Context) error {
	select {
	case <-db.quit:
		return errClosed
	default:
	}
	var v int64
	// schema_version lives in the header of the database's first page:
	// unlike SELECT 1, reading it opens a read transaction on the file.
	return db.r.QueryRowContext(ctx, `PRAGMA schema_version`).Scan(&v)
}

// Stats returns the use of the read pool and of the writer's single
// connection.
func (db *DB) Stats() []storage.PoolStats {
	return []storage.PoolStats{storage.PoolStatsOf("read", db.r.Stats()), storage.PoolStatsOf("write", db.w.Stats())}
}
