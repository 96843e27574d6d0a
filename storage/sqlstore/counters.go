package sqlstore

import (
	"context"
	"fmt"
)

// counters are the IDs and stream positions the writer allocates: the last
// one used of each. They are owned by the writer goroutine; DB.commit gives
// back what a rolled-back job allocated. Allocating here rather than with
// rowids or sequences keeps every engine's positions dense and in commit
// order.
//
// Where this process is the database's only writer (SQLite) they are loaded
// once, at New. Where other processes write the same database
// (Dialect.ConcurrentWriters: PostgreSQL) the writer reloads them at the
// start of every batch, after Dialect.BeginBatch has taken the lock that
// orders every process's batches: the batch before ours, whichever process
// wrote it, has committed and is visible to our statements by then (see
// commit), so the highest stored value is the last one used anywhere.
type counters struct {
	event       int64 // events.stream_pos: the event stream
	room        int64 // rooms.room_nid
	accountData int64 // account_data.stream_pos
	report      int64 // reports.report_id
	// backfill is the lowest stream position used, counting down from 0:
	// backfilled events sit below every position a stream reader asks for.
	backfill int64
}

// loadCountersQuery reads every counter in one round trip; each MAX (and
// the MIN) is the end of a B-tree (account_data_stream is the index for
// account_data's).
const loadCountersQuery = `SELECT
	(SELECT COALESCE(MAX(stream_pos), 0) FROM events),
	(SELECT COALESCE(MAX(room_nid), 0) FROM rooms),
	(SELECT COALESCE(MAX(stream_pos), 0) FROM account_data),
	(SELECT COALESCE(MAX(report_id), 0) FROM reports),
	(SELECT COALESCE(MIN(stream_pos), 0) FROM events WHERE stream_pos < 0)`

// load reads the highest stored value of each counter.
func (c *counters) load(ctx context.Context, q querier) error {
	if err := q.QueryRowContext(ctx, loadCountersQuery).Scan(&c.event, &c.room, &c.accountData, &c.report, &c.backfill); err != nil {
		return fmt.Errorf("loading counters: %w", err)
	}
	return nil
}

// next allocates the value after *c.
func next(c *int64) int64 {
	*c++
	return *c
}
