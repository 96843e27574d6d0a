package sqlstore

import (
	"context"
	"fmt"
)

// counters are the IDs and stream positions the writer allocates: the last
// one used of each. They are loaded from the tables at New (the highest
// stored value) and owned by the writer goroutine; DB.commit gives back
// what a rolled-back job allocated. Allocating here rather than with rowids
// or sequences keeps every engine's positions dense and in commit order,
// and lets a later multi-process writer reload them (load) at the start of
// each batch, under its cluster-wide lock.
type counters struct {
	event       int64 // events.stream_pos: the event stream
	room        int64 // rooms.room_nid
	accountData int64 // account_data.stream_pos
	report      int64 // reports.report_id
}

// load reads the highest stored value of each counter.
func (c *counters) load(ctx context.Context, q querier) error {
	for _, v := range []struct {
		dst   *int64
		query string
	}{
		{&c.event, `SELECT COALESCE(MAX(stream_pos), 0) FROM events`},
		{&c.room, `SELECT COALESCE(MAX(room_nid), 0) FROM rooms`},
		{&c.accountData, `SELECT COALESCE(MAX(stream_pos), 0) FROM account_data`},
		{&c.report, `SELECT COALESCE(MAX(report_id), 0) FROM reports`},
	} {
		if err := q.QueryRowContext(ctx, v.query).Scan(v.dst); err != nil {
			return fmt.Errorf("loading counters: %w", err)
		}
	}
	return nil
}

// next allocates the value after *c.
func next(c *int64) int64 {
	*c++
	return *c
}
