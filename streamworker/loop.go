// Package streamworker holds the one loop of the work that follows
// committed changes (DESIGN.md, "Work after commit"): the notification
// worker, the pushers, the application-service senders, and later the
// federation senders and the compliance archive. A worker keeps a
// position in a stream of committed changes, stored in the database.
// Its loop reads the position back, steps while there is work, sleeps
// until it is told the stream advanced, and retries failed steps with
// back-off; each worker supplies only its step.
//
// With several homeserver processes on one database, each worker runs in
// one process at a time: the one holding the worker's lease (Lease,
// Holder). The others keep their loop waiting for the lease; whoever
// takes it over resumes from the stored position.
package streamworker

import (
	"context"
	"errors"
	"log/slog"
	gosync "sync"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/roomdag"
)

// Stepper is what a worker supplies to its Loop. The loop calls both
// methods on its own goroutine, one call at a time, never concurrently
// (so their state needs no lock of its own); nothing else may call them
// while the loop runs.
type Stepper interface {
	// Resume reads the worker's stored position, and any durable state
	// the worker keeps beside it (a queue of unsent transactions), and
	// drops whatever it caches in memory: another process may have
	// stepped since. The loop calls it before its first step and each
	// time it regains its lease, so after a crash or a hand-over the work
	// continues exactly where the last committed step left it.
	Resume(ctx context.Context) (roomdag.StreamPos, error)

	// Step does the next piece of work after position from, which is
	// the stored position (the last Resume's or Step's). It reads what
	// committed after from, does its work, and stores its output together
	// with its new position in one transaction. That transaction must
	// fail, storing nothing, when the stored position is no longer from:
	// a process that lost its lease without noticing in time cannot then
	// overwrite its successor's work. (A worker whose output may be
	// repeated, as a push may, can instead only ever move its position
	// forward: a late step then repeats work, but never undoes any.)
	//
	// It returns the stored position after the step: from when it stored
	// nothing, also when it fails, unless it stored part of its work
	// before failing. more says that work is known to be left, so the
	// loop steps again at once instead of waiting for Notify.
	//
	// An error retries the step after a wait (Options: Retry, Backoff
	// for errors marked Remote). ErrDone, or an error wrapping it, ends
	// the loop for good. ctx ends when the loop stops; a step whose work
	// is local and short may finish regardless (context.WithoutCancel).
	// A lost lease does not end it: the loop starts no further step, but
	// the step in progress finishes and records what it did (its commit
	// is conditional on the position anyway). Cutting it would not undo
	// a request already sent, only forget that it was, and the next
	// holder would send it again.
	Step(ctx context.Context, from roomdag.StreamPos) (to roomdag.StreamPos, more bool, err error)
}

// ErrDone, returned by Resume or Step, or wrapped in their error, ends
// the loop: the worker has nothing left to do (its pusher was deleted).
var ErrDone = errors.New("streamworker: done")

// Remote marks a step's error as the far end's (a service or gateway
// that is down or refused), so the loop backs off (Options.Backoff)
// rather than retrying soon. It returns nil for nil.
func Remote(err error) error {
	if err == nil {
		return nil
	}
	return &remoteError{err}
}

// IsRemote reports whether err, or an error it wraps, was marked Remote.
func IsRemote(err error) bool {
	var r *remoteError
	return errors.As(err, &r)
}

type remoteError struct{ err error }

func (r *remoteError) Error() string { return r.err.Error() }
func (r *remoteError) Unwrap() error { return r.err }

// Backoff is the wait after failed steps whose error is Remote: Initial
// after the first such failure in a row, doubling with each further one
// up to Max. A step that succeeds, and Kick, start it over.
type Backoff struct {
	Initial, Max time.Duration
}

func (b Backoff) delay(failures int) time.Duration {
	d := b.Initial
	for i := 1; i < failures && d < b.Max; i++ {
		d *= 2
	}
	return min(d, max(b.Max, b.Initial))
}

// Options configure a Loop.
type Options struct {
	// Name names the worker in logs and errors ("notifications").
	Name string
	// Clock times the waits after failures. Required.
	Clock clock.Clock
	// Log receives failures when Failed is nil. Required.
	Log *slog.Logger
	// Coalesce is how long the loop lets further commits gather after
	// Notify before it steps, so that one step (one transaction, one
	// fsync) covers a burst, and the work stays out of the moments in
	// which senders and long-polls are answered. It is a scheduling
	// delay, not protocol time, so it runs on the real clock. Default 0:
	// step at once.
	Coalesce time.Duration
	// Retry is the wait after a failed step whose error is not Remote
	// (storage), and after a failed Resume. Default 1 s.
	Retry time.Duration
	// Backoff is the wait after failed steps whose error is Remote.
	// Default: Retry, not growing.
	Backoff Backoff
	// Holder, when set, is the lease the loop runs under: it steps only
	// while the lease is held. Nil: always (one process).
	Holder *Holder
	// Failed, if set, hears of each failed step or Resume (a stop or a
	// lost lease is not a failure), on the loop's goroutine, once the
	// timer of the retry, due in retryIn, is set: a test that moves a
	// fake clock may move it as soon as it hears. Nil: the error is
	// logged.
	Failed func(err error, retryIn time.Duration)
}

// Stats describe what a loop did since it was made, for tests and
// operators.
type Stats struct {
	// Pos is the stored position the loop has reached: everything up to
	// it is done and committed.
	Pos roomdag.StreamPos
	// Running says the loop holds its lease and is resumed: it steps
	// when there is work.
	Running bool
	// Steps and Failures count steps that succeeded and failed; Resumes
	// counts reads of the stored position (at start and at each
	// (re)gained lease).
	Steps, Failures, Resumes int
}

// Loop runs one worker's steps. New makes it; Start or Run runs it, once;
// Notify, Kick, Pos, Wait, WaitStats, Stats and Stop may be called from
// any goroutine at any time, also before the loop runs and after it
// stopped.
type Loop struct {
	step Stepper
	opts Options

	signal chan struct{} // capacity 1: the stream may have advanced
	kick   chan struct{} // capacity 1: retry now
	quit   chan struct{} // closed by Stop
	done   chan struct{} // closed when Run returns
	// stopped ends with quit: it cancels the step in progress.
	stopped  context.Context
	cancel   context.CancelFunc
	runOnce  gosync.Once
	stopOnce gosync.Once

	// Owned by the goroutine running steps.
	resumedGen uint64 // the lease generation of the last Resume; 0: none
	remote     int    // Remote failures in a row

	mu      gosync.Mutex
	stats   Stats
	changed chan struct{} // closed and replaced when stats change
}

// New makes a loop for step.
func New(step Stepper, opts Options) *Loop {
	if opts.Retry <= 0 {
		opts.Retry = time.Second
	}
	if opts.Backoff.Initial <= 0 {
		opts.Backoff = Backoff{Initial: opts.Retry, Max: opts.Retry}
	}
	stopped, cancel := context.WithCancel(context.Background())
	return &Loop{step: step, opts: opts,
		signal: make(chan struct{}, 1), kick: make(chan struct{}, 1),
		quit: make(chan struct{}), done: make(chan struct{}), stopped: stopped, cancel: cancel,
		changed: make(chan struct{})}
}

// Start resumes the worker from its stored position, so that a storage
// error stops start-up, then runs the loop on a goroutine of its own.
// Under a lease not held at the time, the loop resumes again once it
// gets it.
func (l *Loop) Start(ctx context.Context) error {
	gen := uint64(1)
	if h := l.opts.Holder; h != nil {
		gen = h.Generation()
	}
	pos, err := l.step.Resume(ctx)
	if err != nil {
		return err
	}
	l.resumedGen = gen
	l.update(func(s *Stats) { s.Resumes++; s.Pos = pos })
	go l.Run()
	return nil
}

// Run runs the loop on the caller's goroutine until Stop, or until the
// worker is done (ErrDone). It resumes first unless Start did. Call it,
// or Start, once.
func (l *Loop) Run() {
	ran := false
	l.runOnce.Do(func() { ran = true })
	if !ran {
		return
	}
	defer close(l.done)
	defer l.update(func(s *Stats) { s.Running = false })
	for {
		held, gen, err := l.hold()
		if err != nil {
			return
		}
		if gen != l.resumedGen {
			switch err := l.resume(held, gen); {
			case errors.Is(err, ErrDone), l.stopping():
				return
			case err != nil:
				continue // it waited, or the lease ended
			}
		}
		if !l.follow(held) {
			return
		}
		// The lease was lost: wait for it again.
	}
}

// Stop stops the loop and waits for it. The step in progress sees its
// context end; whatever it has committed stays, and the rest is done at
// the next start. Idempotent.
func (l *Loop) Stop() {
	l.stopOnce.Do(func() {
		close(l.quit)
		l.cancel()
	})
	l.runOnce.Do(func() { close(l.done) }) // never ran: nothing to wait for
	<-l.done
}

// Stopped is closed once Stop has been called.
func (l *Loop) Stopped() <-chan struct{} { return l.quit }

// Notify tells the loop that its stream may have advanced (a
// roomdag.Listener's EventCommitted calls it). It never blocks: a signal
// already pending says the same.
func (l *Loop) Notify() { poke(l.signal) }

// Kick has the loop step now: a wait after failures ends, and the
// back-off starts over (the far end is known to be back, or its address
// changed).
func (l *Loop) Kick() { poke(l.kick) }

// Pos is the stored position the loop has reached.
func (l *Loop) Pos() roomdag.StreamPos {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats.Pos
}

// Stats returns the counters.
func (l *Loop) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats
}

// Wait returns once the loop has reached pos, or with an error when ctx
// ends or the loop stops first.
func (l *Loop) Wait(ctx context.Context, pos roomdag.StreamPos) error {
	return l.WaitStats(ctx, func(s Stats) bool { return s.Pos >= pos })
}

// WaitStats returns once cond holds for the counters, or with an error
// when ctx ends or the loop stops first. Tests use it instead of
// sleeping.
func (l *Loop) WaitStats(ctx context.Context, cond func(Stats) bool) error {
	for {
		l.mu.Lock()
		ok, ch := cond(l.stats), l.changed
		l.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-l.quit:
			return errors.New("streamworker: " + l.opts.Name + " stopped")
		}
	}
}

// StepOnce runs one step on the caller's goroutine, resuming first if
// the loop never resumed, and ignores the lease: for a loop that is not
// running, which a test or benchmark drives by hand.
func (l *Loop) StepOnce(ctx context.Context) (more bool, err error) {
	if l.resumedGen == 0 {
		pos, err := l.step.Resume(ctx)
		if err != nil {
			return false, err
		}
		l.resumedGen = 1
		l.update(func(s *Stats) { s.Resumes++; s.Pos = pos })
	}
	from := l.Pos()
	to, more, err := l.step.Step(ctx, from)
	l.update(func(s *Stats) {
		s.Pos = max(s.Pos, to)
		if err != nil {
			s.Failures++
		} else {
			s.Steps++
		}
	})
	return more, err
}

// hold waits for the lease: it returns a context that ends when the
// lease is lost and the lease's generation, or an error once the loop
// stops.
func (l *Loop) hold() (context.Context, uint64, error) {
	if l.stopping() {
		return nil, 0, context.Canceled
	}
	if l.opts.Holder == nil {
		return context.Background(), 1, nil
	}
	return l.opts.Holder.Held(l.stopped)
}

// resume reads the stored position under lease generation gen. After a
// failure it has waited (or the lease ended, or the loop stopped).
func (l *Loop) resume(held context.Context, gen uint64) error {
	pos, err := l.step.Resume(l.stopped)
	if err == nil {
		l.resumedGen, l.remote = gen, 0
		l.update(func(s *Stats) { s.Resumes++; s.Pos = pos })
		return nil
	}
	if errors.Is(err, ErrDone) || l.stopping() || held.Err() != nil {
		return err
	}
	l.update(func(s *Stats) { s.Failures++ })
	l.retryWait(held, err, l.opts.Retry)
	return err
}

// follow steps while the lease is held and the worker has work, and
// waits for signals in between. It returns false when the loop must end
// (Stop, ErrDone) and true when the lease was lost.
func (l *Loop) follow(held context.Context) bool {
	l.update(func(s *Stats) { s.Running = true })
	defer l.update(func(s *Stats) { s.Running = false })
	ctx := l.stopped
	for {
		switch {
		case l.stopping():
			return false
		case held.Err() != nil:
			return true
		}
		// Step first: after a Resume there may be work already, and a
		// signal that arrived meanwhile is still pending anyway.
		from := l.Pos()
		to, more, err := l.step.Step(ctx, from)
		failed := err != nil && !errors.Is(err, ErrDone) && !l.stopping() && held.Err() == nil
		l.update(func(s *Stats) {
			s.Pos = max(s.Pos, to)
			switch {
			case failed:
				s.Failures++
			case err == nil:
				s.Steps++
			}
		})
		switch {
		case l.stopping(), errors.Is(err, ErrDone):
			return false
		case held.Err() != nil:
			return true
		case err != nil:
			d := l.opts.Retry
			if IsRemote(err) {
				l.remote++
				d = l.opts.Backoff.delay(l.remote)
			}
			l.retryWait(held, err, d)
			continue
		}
		l.remote = 0
		if more {
			continue
		}
		select {
		case <-l.quit:
			return false
		case <-held.Done():
			return true
		case <-l.kick:
			continue
		case <-l.signal:
		}
		if l.opts.Coalesce > 0 {
			coalesce := time.NewTimer(l.opts.Coalesce)
			select {
			case <-l.quit:
				coalesce.Stop()
				return false
			case <-held.Done():
				coalesce.Stop()
				return true
			case <-coalesce.C:
			}
		}
	}
}

// retryWait reports a failure and waits d on the clock, or less: until
// Kick (which also starts the back-off over), Stop or the end of the
// lease.
func (l *Loop) retryWait(held context.Context, err error, d time.Duration) {
	// Set the timer before reporting, so that whoever waits for the
	// report (a test moving a fake clock) cannot move the clock first.
	timer := l.opts.Clock.After(d)
	if l.opts.Failed != nil {
		l.opts.Failed(err, d)
	} else {
		l.opts.Log.Error(l.opts.Name, "err", err, "pos", l.Pos(), "retry_in", d)
	}
	select {
	case <-l.quit:
	case <-held.Done():
	case <-l.kick:
		l.remote = 0
	case <-timer:
	}
}

func (l *Loop) stopping() bool {
	select {
	case <-l.quit:
		return true
	default:
		return false
	}
}

func (l *Loop) update(f func(*Stats)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f(&l.stats)
	close(l.changed)
	l.changed = make(chan struct{})
}

// poke sends on a channel of capacity 1 without blocking.
func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
