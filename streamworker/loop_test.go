package streamworker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	gosync "sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/streamworker"
)

// stream is the database of these tests: a committed stream of positions
// 1..n, one worker's stored position, and the output its steps committed.
// Several "processes" (Loops) may work on it.
type stream struct {
	mu       gosync.Mutex
	n        roomdag.StreamPos   // the stream holds 1..n
	pos      roomdag.StreamPos   // the worker's stored position
	out      []roomdag.StreamPos // committed output: one entry per event
	attempts map[roomdag.StreamPos]int
}

func (s *stream) append(k int) roomdag.StreamPos {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n += roomdag.StreamPos(k)
	return s.n
}

// check fails t unless the output is 1..upTo, each once, in order.
func (s *stream) check(t *testing.T, upTo roomdag.StreamPos) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var want []roomdag.StreamPos
	for p := roomdag.StreamPos(1); p <= upTo; p++ {
		want = append(want, p)
	}
	if !slices.Equal(s.out, want) {
		t.Errorf("output %v, want %v", s.out, want)
	}
}

// worker is one process's Stepper on a stream: it takes up to batch
// events a step. before, if set, runs before a step commits; its error
// fails the step.
type worker struct {
	s      *stream
	batch  int
	before func(ctx context.Context, from, to roomdag.StreamPos) error

	resumes int // owned by the loop
}

func (w *worker) Resume(ctx context.Context) (roomdag.StreamPos, error) {
	w.resumes++
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	return w.s.pos, nil
}

func (w *worker) Step(ctx context.Context, from roomdag.StreamPos) (roomdag.StreamPos, bool, error) {
	w.s.mu.Lock()
	to := min(w.s.n, from+roomdag.StreamPos(w.batch))
	for p := from + 1; p <= to; p++ {
		w.s.attempts[p]++
	}
	w.s.mu.Unlock()
	if to == from {
		return from, false, nil
	}
	if w.before != nil {
		if err := w.before(ctx, from, to); err != nil {
			return from, false, err
		}
	}
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	// The commit: output and position together, only from the position
	// the step read from.
	if w.s.pos != from {
		return from, false, fmt.Errorf("position moved: at %d, expected %d", w.s.pos, from)
	}
	for p := from + 1; p <= to; p++ {
		w.s.out = append(w.s.out, p)
	}
	w.s.pos = to
	return to, to-from == roomdag.StreamPos(w.batch), nil
}

func newStream() *stream { return &stream{attempts: map[roomdag.StreamPos]int{}} }

func testLog(t *testing.T) *slog.Logger { return slog.New(slog.NewTextHandler(t.Output(), nil)) }

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func waitPos(t *testing.T, l *streamworker.Loop, pos roomdag.StreamPos) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := l.Wait(ctx, pos); err != nil {
		t.Fatalf("waiting for %d (at %d): %v", pos, l.Pos(), err)
	}
}

// The loop catches up at start, in batches, and follows the stream as
// it is told it advanced; a restart resumes from the stored position.
func TestLoopFollowsStream(t *testing.T) {
	s := newStream()
	s.append(10) // committed while the worker was down
	w := &worker{s: s, batch: 4}
	l := streamworker.New(w, streamworker.Options{Name: "test", Clock: clock.Real{}, Log: testLog(t)})
	if err := l.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitPos(t, l, 10)
	for range 3 {
		pos := s.append(3)
		l.Notify()
		l.Notify() // a signal pending already says the same
		waitPos(t, l, pos)
	}
	l.Stop()
	l.Stop()
	s.check(t, 19)

	pos := s.append(2)
	l2 := streamworker.New(w, streamworker.Options{Name: "test", Clock: clock.Real{}, Log: testLog(t)})
	if err := l2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitPos(t, l2, pos)
	l2.Stop()
	s.check(t, pos)
	if err := l2.Wait(context.Background(), pos+1); err == nil {
		t.Error("Wait on a stopped loop returned without error")
	}
}

// Commits that arrive while the loop waits Coalesce after a signal are
// taken by the same step.
func TestLoopCoalesces(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newStream()
		w := &worker{s: s, batch: 100}
		l := streamworker.New(w, streamworker.Options{Name: "test", Clock: clock.Real{}, Log: testLog(t), Coalesce: 50 * time.Millisecond})
		if err := l.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // idle after its first step
		s.append(1)
		l.Notify()
		synctest.Wait() // waiting out the coalescing delay
		s.append(2)
		l.Notify()
		waitPos(t, l, 3)
		if st := l.Stats(); st.Steps != 2 {
			t.Errorf("%d steps, want 2: the first and one for the burst", st.Steps)
		}
		l.Stop()
		s.check(t, 3)
	})
}

// failure is one report of a failed step.
type failure struct {
	err error
	d   time.Duration
}

// A failed step is retried: after Retry for local errors, after a
// doubling back-off for remote ones, which success and Kick start over.
func TestLoopRetries(t *testing.T) {
	s := newStream()
	clk := clock.NewFake(epoch)
	var fail []error // the errors the next steps fail with, owned by the loop
	var mu gosync.Mutex
	w := &worker{s: s, batch: 100, before: func(context.Context, roomdag.StreamPos, roomdag.StreamPos) error {
		mu.Lock()
		defer mu.Unlock()
		if len(fail) == 0 {
			return nil
		}
		err := fail[0]
		fail = fail[1:]
		return err
	}}
	reports := make(chan failure, 100)
	l := streamworker.New(w, streamworker.Options{Name: "test", Clock: clk, Log: testLog(t),
		Retry: time.Second, Backoff: streamworker.Backoff{Initial: 2 * time.Second, Max: 7 * time.Second},
		Failed: func(err error, d time.Duration) { reports <- failure{err, d} }})
	if err := l.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer l.Stop()
	local, remote := errors.New("disk"), streamworker.Remote(errors.New("gateway down"))
	cases := []struct {
		name  string
		fail  []error
		kick  int // Kick instead of advancing the clock at this report (1-based)
		waits []time.Duration
	}{
		{"local", []error{local, local}, 0, []time.Duration{time.Second, time.Second}},
		{"remote", []error{remote, remote, remote, remote}, 0, []time.Duration{2 * time.Second, 4 * time.Second, 7 * time.Second, 7 * time.Second}},
		{"local among remote", []error{remote, local, remote}, 0, []time.Duration{2 * time.Second, time.Second, 4 * time.Second}},
		{"kick starts over", []error{remote, remote, remote}, 2, []time.Duration{2 * time.Second, 4 * time.Second, 2 * time.Second}},
	}
	for _, c := range cases {
		mu.Lock()
		fail = slices.Clone(c.fail)
		mu.Unlock()
		pos := s.append(1)
		l.Notify()
		for i, want := range c.waits {
			r := <-reports
			if r.d != want {
				t.Errorf("%s: wait %d is %v, want %v", c.name, i+1, r.d, want)
			}
			if want := c.fail[i]; !errors.Is(r.err, want) || streamworker.IsRemote(r.err) != streamworker.IsRemote(want) {
				t.Errorf("%s: failure %d reported as %v", c.name, i+1, r.err)
			}
			if i+1 == c.kick {
				l.Kick()
			} else {
				clk.Advance(r.d)
			}
		}
		waitPos(t, l, pos)
	}
	s.check(t, roomdag.StreamPos(len(cases)))
	if st := l.Stats(); st.Failures != 12 {
		t.Errorf("%d failures counted, want 12", st.Failures)
	}
}

// Stop waits for the step in progress; a Resume that fails is retried;
// ErrDone ends the loop.
func TestLoopStopAndDone(t *testing.T) {
	t.Run("stop waits for the step", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := newStream()
			gate := make(chan struct{})
			w := &worker{s: s, batch: 10, before: func(ctx context.Context, _, _ roomdag.StreamPos) error {
				<-gate // a local step: it finishes whatever ctx says
				return nil
			}}
			l := streamworker.New(w, streamworker.Options{Name: "test", Clock: clock.Real{}, Log: testLog(t)})
			s.append(3)
			if err := l.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			synctest.Wait() // in the step
			var stopped atomic.Bool
			go func() { l.Stop(); stopped.Store(true) }()
			synctest.Wait()
			if stopped.Load() {
				t.Fatal("Stop returned during a step")
			}
			close(gate)
			synctest.Wait()
			if !stopped.Load() {
				t.Fatal("Stop did not return after the step")
			}
			s.check(t, 3) // the step committed
		})
	})
	t.Run("resume retried", func(t *testing.T) {
		clk := clock.NewFake(epoch)
		r := &flakyResume{worker: worker{s: newStream(), batch: 10}, fails: 2}
		r.s.append(2)
		reports := make(chan failure, 10)
		l := streamworker.New(r, streamworker.Options{Name: "test", Clock: clk, Log: testLog(t),
			Failed: func(err error, d time.Duration) { reports <- failure{err, d} }})
		go l.Run()
		defer l.Stop()
		for range 2 {
			clk.Advance((<-reports).d)
		}
		waitPos(t, l, 2)
		r.s.check(t, 2)
	})
	t.Run("done", func(t *testing.T) {
		s := newStream()
		w := &worker{s: s, batch: 10, before: func(context.Context, roomdag.StreamPos, roomdag.StreamPos) error {
			return fmt.Errorf("pusher deleted: %w", streamworker.ErrDone)
		}}
		l := streamworker.New(w, streamworker.Options{Name: "test", Clock: clock.Real{}, Log: testLog(t)})
		s.append(1)
		l.Run() // returns by itself
		if st := l.Stats(); st.Running || st.Failures != 0 || st.Pos != 0 {
			t.Errorf("after ErrDone: %+v", st)
		}
		l.Stop()
	})
}

// flakyResume fails its first Resumes.
type flakyResume struct {
	worker
	fails int
}

func (f *flakyResume) Resume(ctx context.Context) (roomdag.StreamPos, error) {
	if f.fails > 0 {
		f.fails--
		return 0, errors.New("database unreachable")
	}
	return f.worker.Resume(ctx)
}

// StepOnce drives a loop that is not running, as benchmarks do.
func TestLoopStepOnce(t *testing.T) {
	s := newStream()
	s.append(5)
	l := streamworker.New(&worker{s: s, batch: 2}, streamworker.Options{Name: "test", Clock: clock.Real{}, Log: testLog(t)})
	var mores []bool
	for range 3 {
		more, err := l.StepOnce(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		mores = append(mores, more)
	}
	if want := []bool{true, true, false}; !slices.Equal(mores, want) || l.Pos() != 5 {
		t.Errorf("steps said more %v and reached %d, want %v and 5", mores, l.Pos(), want)
	}
	s.check(t, 5)
}

// nop is a Stepper with nothing to do: what the loop itself costs.
type nop struct{ pos roomdag.StreamPos }

func (n *nop) Resume(context.Context) (roomdag.StreamPos, error) { return n.pos, nil }
func (n *nop) Step(_ context.Context, from roomdag.StreamPos) (roomdag.StreamPos, bool, error) {
	n.pos = from + 1
	return n.pos, false, nil
}

// BenchmarkLoop: the loop's own cost per step, driven by hand
// (StepOnce) and woken through Notify, waiting for the position.
func BenchmarkLoop(b *testing.B) {
	opts := streamworker.Options{Name: "bench", Clock: clock.Real{}, Log: slog.New(slog.DiscardHandler)}
	b.Run("StepOnce", func(b *testing.B) {
		l := streamworker.New(&nop{}, opts)
		ctx := context.Background()
		for b.Loop() {
			if _, err := l.StepOnce(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("NotifyWait", func(b *testing.B) {
		l := streamworker.New(&nop{}, opts)
		ctx := context.Background()
		if err := l.Start(ctx); err != nil {
			b.Fatal(err)
		}
		defer l.Stop()
		for b.Loop() {
			pos := l.Pos() + 1
			l.Notify()
			if err := l.Wait(ctx, pos); err != nil {
				b.Fatal(err)
			}
		}
	})
}
