package streamworker_test

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/streamworker"
	"github.com/persistentchat/homeserver/streamworker/leasetest"
)

// process is one homeserver process's worker on the shared stream.
type process struct {
	holder *streamworker.Holder
	worker *worker
	loop   *streamworker.Loop
}

func startProcess(t *testing.T, name string, s *stream, lt *leasetest.Table, clk *clock.Fake, before func(context.Context, roomdag.StreamPos, roomdag.StreamPos) error) *process {
	t.Helper()
	p := &process{worker: &worker{s: s, batch: 3, before: before}}
	p.holder = streamworker.NewHolder("test", lt.Lease(name), clk, testLog(t).With("process", name))
	p.loop = streamworker.New(p.worker, streamworker.Options{Name: name, Clock: clk, Log: testLog(t), Holder: p.holder})
	if err := p.holder.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := p.loop.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.loop.Stop(); p.holder.Stop() })
	return p
}

// notify is the commit signal, which reaches every process.
func notify(ps ...*process) {
	for _, p := range ps {
		p.loop.Notify()
	}
}

// Two processes share one stream and one lease: only the holder steps.
// The lease moves when the holder loses it (refused renewal) and when
// the holder cannot reach the database (it lets the lease go before it
// expires; the other takes it once it has). Each time, the new holder
// resumes from the stored position: no event is lost, none is worked on
// twice.
func TestLeaseHandOver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const ttl = 30 * time.Second
		clk := clock.NewFake(epoch)
		lt := leasetest.NewTable(clk, ttl)
		s := newStream()
		a := startProcess(t, "a", s, lt, clk, nil)
		b := startProcess(t, "b", s, lt, clk, nil)
		running := func(want *process) {
			t.Helper()
			synctest.Wait()
			for _, p := range []*process{a, b} {
				if got := p.loop.Stats().Running; got != (p == want) {
					t.Fatalf("process running: %v, want %v (%+v)", got, p == want, p.loop.Stats())
				}
			}
		}
		running(a)
		pos := s.append(5)
		notify(a, b)
		waitPos(t, a.loop, pos)
		synctest.Wait()
		if st := b.loop.Stats(); st.Steps != 0 {
			t.Fatalf("the process without the lease stepped: %+v", st)
		}

		// b takes the lease over; a hears at its next renewal and stops.
		lt.TakeOver("b")
		clk.Advance(ttl / 3) // a renews and is refused
		synctest.Wait()
		if a.holder.Holding() {
			t.Fatal("a still holds the lease after a refused renewal")
		}
		clk.Advance(streamworker.AcquireInterval) // b tries again
		running(b)
		pos = s.append(7)
		notify(a, b)
		waitPos(t, b.loop, pos)

		// b loses the database: it stops before the lease expires, and a
		// takes it over after it has.
		lt.SetDown("b", true)
		clk.Advance(ttl / 3) // b's renewal fails; it holds on
		synctest.Wait()
		if !b.holder.Holding() {
			t.Fatal("b gave up the lease at its first failed renewal")
		}
		clk.Advance(ttl / 3) // fails again: less than a third is left
		running(nil)
		pos = s.append(4) // committed through a, say
		notify(a, b)
		synctest.Wait()
		if a.loop.Pos() == pos || b.loop.Pos() == pos {
			t.Fatal("stepped while nobody held the lease")
		}
		clk.Advance(ttl / 3) // the lease expires; a takes it
		running(a)
		waitPos(t, a.loop, pos)
		s.check(t, pos)
		for p, n := range s.attempts {
			if n != 1 {
				t.Errorf("event %d worked on %d times", p, n)
			}
		}
		if a.worker.resumes != 2 || b.worker.resumes != 2 {
			t.Errorf("resumes: a %d, b %d; want 2 each (start, hold)", a.worker.resumes, b.worker.resumes)
		}
		lt.SetDown("b", false)
	})
}

// A step in flight when the lease is lost may finish its work, but its
// commit fails (the new holder moved the position): the events are
// worked on twice, committed once.
func TestLeaseLostDuringStep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const ttl = 30 * time.Second
		clk := clock.NewFake(epoch)
		lt := leasetest.NewTable(clk, ttl)
		s := newStream()
		gate := make(chan struct{})
		var inFlight atomic.Int64
		a := startProcess(t, "a", s, lt, clk, func(ctx context.Context, from, to roomdag.StreamPos) error {
			inFlight.Store(int64(to))
			<-gate // ignores ctx: a step that finishes its work
			return nil
		})
		b := startProcess(t, "b", s, lt, clk, nil)
		synctest.Wait()
		pos := s.append(2)
		notify(a, b)
		synctest.Wait() // a is in its step
		lt.TakeOver("b")
		clk.Advance(ttl / 3)
		synctest.Wait()
		if a.holder.Holding() {
			t.Fatal("a still holds the lease")
		}
		clk.Advance(streamworker.AcquireInterval)
		waitPos(t, b.loop, pos)
		close(gate) // a's step tries to commit
		synctest.Wait()
		if st := a.loop.Stats(); st.Running || st.Pos != 0 {
			t.Errorf("a after its late step: %+v", st)
		}
		s.check(t, pos)
		if roomdag.StreamPos(inFlight.Load()) != pos || s.attempts[1] != 2 || s.attempts[2] != 2 {
			t.Errorf("in flight up to %d, attempts %v", inFlight.Load(), s.attempts)
		}
		// Further events go to b only, once.
		pos = s.append(3)
		notify(a, b)
		waitPos(t, b.loop, pos)
		s.check(t, pos)
	})
}

// The lease is released at Stop: another process takes it at its next
// try, not at the expiry.
func TestLeaseReleasedAtStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clk := clock.NewFake(epoch)
		lt := leasetest.NewTable(clk, time.Hour)
		s := newStream()
		a := startProcess(t, "a", s, lt, clk, nil)
		b := startProcess(t, "b", s, lt, clk, nil)
		synctest.Wait()
		a.loop.Stop()
		a.holder.Stop()
		clk.Advance(streamworker.AcquireInterval)
		synctest.Wait()
		if !b.holder.Holding() {
			t.Fatal("b did not take the released lease")
		}
		pos := s.append(2)
		notify(b)
		waitPos(t, b.loop, pos)
		s.check(t, pos)
	})
}

// Always is held at once and for ever: nothing is renewed.
func TestAlways(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clk := clock.NewFake(epoch)
		h := streamworker.NewHolder("test", streamworker.Always{}, clk, testLog(t))
		if err := h.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		if !h.Holding() {
			t.Fatal("Always not held after Start")
		}
		clk.Advance(1000 * time.Hour)
		synctest.Wait()
		if st := h.Stats(); st.Renewed != 0 || st.Acquired != 1 || !st.Holding {
			t.Errorf("stats %+v", st)
		}
		h.Stop()
		if h.Holding() {
			t.Error("held after Stop")
		}
	})
}
