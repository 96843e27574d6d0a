package leasetest_test

import (
	gosync "sync"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/streamworker"
	"github.com/persistentchat/homeserver/streamworker/leasetest"
)

// The in-memory table, one per lease name, passes the suite it stands in
// for.
func TestTableConforms(t *testing.T) {
	leasetest.Run(t, func(t *testing.T) leasetest.Env {
		const ttl = 30 * time.Second
		clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
		var mu gosync.Mutex
		tables := map[string]*leasetest.Table{}
		return leasetest.Env{
			TTL: ttl, Clock: clk, Pass: clk.Advance,
			Lease: func(name, process string) streamworker.Lease {
				mu.Lock()
				defer mu.Unlock()
				if tables[name] == nil {
					tables[name] = leasetest.NewTable(clk, ttl)
				}
				return tables[name].Lease(process)
			},
		}
	})
}
