package storage

import (
	"database/sql"
	"time"
)

// PoolStats is the use of one of a store's connection pools, as the
// metrics report it (metrics.Pools). The fields are sql.DBStats's, so an
// engine on database/sql fills them with PoolStatsOf; an engine with a
// pool of its own maps its counters onto them.
type PoolStats struct {
	// Name tells the store's pools apart: "read" and "write" for SQLite's
	// read pool and single writer connection.
	Name string
	// MaxOpen is the most connections the pool opens (0: no limit).
	MaxOpen int
	// Open is how many connections are open now, InUse how many of them
	// are lent out and Idle how many wait in the pool.
	Open, InUse, Idle int
	// WaitCount is how many times a caller had to wait for a connection
	// since the store opened, WaitDuration the total time they waited.
	WaitCount    int64
	WaitDuration time.Duration
}

// PoolStatsOf converts a database/sql pool's statistics.
func PoolStatsOf(name string, s sql.DBStats) PoolStats {
	return PoolStats{Name: name, MaxOpen: s.MaxOpenConnections, Open: s.OpenConnections, InUse: s.InUse, Idle: s.Idle,
		WaitCount: s.WaitCount, WaitDuration: s.WaitDuration}
}
