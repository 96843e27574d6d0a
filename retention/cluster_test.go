package retention_test

import (
	"context"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/retention"
	"github.com/persistentchat/homeserver/testserver"
)

// TestPurgeRunsInOneProcess: with two processes on one PostgreSQL
// database, both running the purge job's timer, only the one holding the
// "retention" lease purges.
func TestPurgeRunsInOneProcess(t *testing.T) {
	clks := []*clock.Fake{}
	var srvs []*testserver.Server
	opts := func(clk *clock.Fake) testserver.Options {
		return testserver.Options{Clock: clk, Configure: func(c *configs.Config) {
			c.Retention.Enabled = true
			c.Retention.PurgeJobs = []configs.PurgeJob{{Interval: configs.Duration(interval)}}
		}}
	}
	t0 := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	if testserver.Engine() != configs.EnginePostgres {
		t.Skipf("several processes share one database only on PostgreSQL: set %s", testserver.PostgresEnv)
	}
	for i := range 2 {
		clk := clock.NewFake(t0)
		o := opts(clk)
		if i > 0 {
			o.ShareWith = srvs[0]
		}
		clks, srvs = append(clks, clk), append(srvs, testserver.Start(t, o))
	}
	alice := srvs[0].Register("alice")
	room := (&env{t: t, srv: srvs[0]}).room(alice, time.Hour.Milliseconds())
	alice.SendText(room, "old news")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	wait := func(s *testserver.Server, cond func(retention.Stats) bool) {
		t.Helper()
		if err := s.HS.Retention.WaitStats(ctx, cond); err != nil {
			t.Fatalf("waiting: %v (%+v)", err, s.HS.Retention.Stats())
		}
	}
	for _, s := range srvs {
		wait(s, func(st retention.Stats) bool { return st.Waits >= 1 })
	}
	for _, c := range clks {
		c.Advance(interval)
	}
	for _, s := range srvs {
		wait(s, func(st retention.Stats) bool { return st.Waits >= 2 })
	}
	// The newest event is never purged: one after the old one, still
	// within the lifetime at the next purge.
	alice.SendText(room, "newest")
	for _, c := range clks {
		c.Advance(interval)
	}
	for _, s := range srvs {
		wait(s, func(st retention.Stats) bool { return st.Waits >= 3 })
	}
	runs := srvs[0].HS.Retention.Stats().Runs + srvs[1].HS.Retention.Stats().Runs
	if runs != 2 {
		t.Errorf("%d runs over two intervals in two processes, want 2 (one process)", runs)
	}
	if a, b := srvs[0].HS.Retention.Stats().Runs, srvs[1].HS.Retention.Stats().Runs; a != 0 && b != 0 {
		t.Errorf("both processes purged: %d and %d runs", a, b)
	}
	if got := messages(t, alice.On(srvs[1]), room); has(got, "old news") || !has(got, "newest") {
		t.Errorf("after the purge: %q", got)
	}
}
