package streamworker

import (
	"context"
	"errors"
	"log/slog"
	"math"
	gosync "sync"
	"time"

	"github.com/persistentchat/homeserver/clock"
)

// Lease is one named lease in the database that several homeserver
// processes share: whoever holds it runs the work it names
// ("notifications", "pushers", ...), the others wait. A lease held by a
// process that died expires, and another process takes it then, so the
// work moves on within the lease's duration.
//
// Durations are counted from the start of the call: an implementation
// must never report more than it granted, measured from no earlier than
// the moment the call began (the database's own clock grants it; the
// holder's clock counts it, so the two clocks need not agree on the
// time, only on its pace). A Lease is used by one Holder, one call at a
// time.
type Lease interface {
	// Acquire takes the lease for this process when nobody holds it,
	// its holder let it expire, or this process holds it already. It
	// returns how long the lease is now held, or 0 when another process
	// holds it.
	Acquire(ctx context.Context) (time.Duration, error)
	// Renew extends the lease this process holds and returns for how
	// long, or 0 when the lease is no longer this process's: it expired
	// and another process took it, or it was released. Renew never takes
	// a lease over; that is Acquire's, after which the holder resumes
	// from the stored position.
	Renew(ctx context.Context) (time.Duration, error)
	// Release gives up the lease, if this process holds it, so that
	// another takes it at once rather than at its expiry.
	Release(ctx context.Context) error
}

// Forever, as a lease's duration, is a lease that never expires and is
// never renewed.
const Forever time.Duration = math.MaxInt64

// Always is the lease of a server that is the only process on its
// database (SQLite): always held, for ever.
type Always struct{}

// Acquire implements Lease.
func (Always) Acquire(context.Context) (time.Duration, error) { return Forever, nil }

// Renew implements Lease.
func (Always) Renew(context.Context) (time.Duration, error) { return Forever, nil }

// Release implements Lease.
func (Always) Release(context.Context) error { return nil }

// AcquireInterval is how often a holder tries again for a lease that
// another process holds, or after an error.
const AcquireInterval = time.Second

// callTimeout bounds a call to the Lease (a renewal also by the time
// left before the next one is due), in real time: it guards against a
// database that does not answer.
const callTimeout = 10 * time.Second

// releaseTimeout bounds the Release at Stop.
const releaseTimeout = 5 * time.Second

// Holder keeps one lease for the loops that run under it (Options.Holder:
// several may share one). It tries for the lease every AcquireInterval
// while another process holds it, and once it holds it, renews it after
// a third of each period granted. When a renewal is refused, or when
// renewals failed until less than a third of the period is left, it
// counts the lease lost: the loops stop stepping, a third of a period
// before any other process can take over, which leaves the step in
// progress time to end. They resume from the stored position once it
// holds the lease again.
//
// Start it before the loops that use it and stop it after them; the
// methods may be called from any goroutine.
type Holder struct {
	name  string
	lease Lease
	clock clock.Clock
	log   *slog.Logger

	quit     chan struct{}
	done     chan struct{}
	stopped  context.Context // ends with Stop: cuts a Lease call in flight
	cancel   context.CancelFunc
	runOnce  gosync.Once
	stopOnce gosync.Once

	mu      gosync.Mutex
	held    context.Context // while held: ends when the hold ends; nil otherwise
	release context.CancelFunc
	gen     uint64 // counts the times the lease was taken
	stats   HolderStats
	changed chan struct{} // closed and replaced when stats change
}

// HolderStats describe a holder's lease, for tests and operators.
type HolderStats struct {
	Holding  bool
	Acquired int // times the lease was taken
	Lost     int // times it was lost (not counting Stop)
	Renewed  int // renewals granted
	Failures int // Acquire or Renew calls that failed
	// Waits counts the timers the holder set to renew or try again, each
	// before it waits on it: once it grows, a test may move a fake clock.
	Waits int
}

// NewHolder makes a holder of lease, named name in logs.
func NewHolder(name string, lease Lease, clk clock.Clock, log *slog.Logger) *Holder {
	stopped, cancel := context.WithCancel(context.Background())
	return &Holder{name: name, lease: lease, clock: clk, log: log.With("lease", name),
		quit: make(chan struct{}), done: make(chan struct{}), stopped: stopped, cancel: cancel,
		changed: make(chan struct{})}
}

// Start makes the first attempt to take the lease, on the caller's
// goroutine so that an error stops start-up, then keeps trying and
// renewing on a goroutine of its own. Call it once.
func (h *Holder) Start(ctx context.Context) error {
	began := h.clock.Now()
	d, err := h.lease.Acquire(ctx)
	if err != nil {
		return errors.Join(errors.New("lease "+h.name), err)
	}
	var until time.Time
	if d > 0 {
		until = h.take(began, d)
	}
	ran := false
	h.runOnce.Do(func() { ran = true })
	if ran {
		go h.run(d, until)
	}
	return nil
}

// Stop ends the hold: the loops under it see their lease end (stop them
// first, so that their last steps have ended), and the lease is released
// for another process to take at once.
func (h *Holder) Stop() {
	h.stopOnce.Do(func() {
		close(h.quit)
		h.cancel()
	})
	h.runOnce.Do(func() { close(h.done) })
	<-h.done
}

// Held waits until the lease is held and returns a context that ends
// when this hold ends, and the hold's generation: it changes each time
// the lease is taken anew, so a loop that sees a new one resumes from the
// stored position. It fails when ctx ends or the holder stops first.
func (h *Holder) Held(ctx context.Context) (context.Context, uint64, error) {
	for {
		h.mu.Lock()
		held, gen, ch := h.held, h.gen, h.changed
		h.mu.Unlock()
		if held != nil {
			return held, gen, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-h.quit:
			return nil, 0, errors.New("streamworker: lease " + h.name + " no longer kept")
		}
	}
}

// Name is the lease's name.
func (h *Holder) Name() string { return h.name }

// Holding reports whether the lease is held now.
func (h *Holder) Holding() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.held != nil
}

// Generation is the current hold's generation (see Held), 0 when the
// lease is not held.
func (h *Holder) Generation() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.held == nil {
		return 0
	}
	return h.gen
}

// Stats returns the counters.
func (h *Holder) Stats() HolderStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stats
}

// WaitStats returns once cond holds for the counters, or with ctx's
// error.
func (h *Holder) WaitStats(ctx context.Context, cond func(HolderStats) bool) error {
	for {
		h.mu.Lock()
		ok, ch := cond(h.stats), h.changed
		h.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// run keeps the lease: d is the period last granted (0: not held) and
// until when it ends.
func (h *Holder) run(d time.Duration, until time.Time) {
	defer close(h.done)
	defer h.end()
	for {
		if d == Forever {
			<-h.quit
			return
		}
		wait := AcquireInterval
		if d > 0 {
			wait = d / 3
		}
		if !h.sleep(wait) {
			return
		}
		began := h.clock.Now()
		if d == 0 {
			ctx, cancel := context.WithTimeout(h.stopped, callTimeout)
			got, err := h.lease.Acquire(ctx)
			cancel()
			switch {
			case err != nil:
				h.failed("taking the lease", err)
			case got > 0:
				d, until = got, h.take(began, got)
			}
			continue
		}
		// A renewal that hangs must not keep the loops stepping past the
		// lease: it has until the next attempt is due.
		ctx, cancel := context.WithTimeout(h.stopped, min(d/3, callTimeout))
		got, err := h.lease.Renew(ctx)
		cancel()
		switch {
		case err != nil:
			h.failed("renewing the lease", err)
			if until.Sub(h.clock.Now()) > d/3 {
				continue // another try before the last third
			}
			h.log.Warn("lease lost: it could not be renewed in time")
			d = 0
			h.lose()
		case got == 0:
			h.log.Warn("lease lost: another process holds it")
			d = 0
			h.lose()
		default:
			d, until = got, began.Add(got)
			h.update(func(s *HolderStats) { s.Renewed++ })
		}
	}
}

// sleep waits d on the clock; false when the holder stops first.
func (h *Holder) sleep(d time.Duration) bool {
	timer := h.clock.After(d)
	h.update(func(s *HolderStats) { s.Waits++ })
	select {
	case <-h.quit:
		return false
	case <-timer:
		return true
	}
}

// take records that the lease was taken at began for d, and returns
// when it ends.
func (h *Holder) take(began time.Time, d time.Duration) time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.gen++
	h.held, h.release = context.WithCancel(context.Background())
	h.stats.Holding = true
	h.stats.Acquired++
	h.changedLocked()
	if d != Forever {
		// Only leases that move between processes: which process runs
		// the work is what an operator looks for.
		h.log.Info("lease acquired", "duration", d.String())
	}
	if d == Forever {
		return time.Time{}
	}
	return began.Add(d)
}

// lose ends the current hold.
func (h *Holder) lose() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.held == nil {
		return
	}
	h.release()
	h.held, h.release = nil, nil
	h.stats.Holding = false
	h.stats.Lost++
	h.changedLocked()
}

// end runs when the holder stops: it ends the hold and releases the
// lease.
func (h *Holder) end() {
	h.mu.Lock()
	wasHeld := h.held != nil
	if wasHeld {
		h.release()
		h.held, h.release = nil, nil
		h.stats.Holding = false
		h.changedLocked()
	}
	h.mu.Unlock()
	if !wasHeld {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	if err := h.lease.Release(ctx); err != nil {
		h.log.Warn("releasing the lease", "err", err)
	}
}

func (h *Holder) failed(what string, err error) {
	select {
	case <-h.quit:
		return // the call was cut by Stop
	default:
	}
	h.log.Warn(what, "err", err)
	h.update(func(s *HolderStats) { s.Failures++ })
}

func (h *Holder) update(f func(*HolderStats)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f(&h.stats)
	h.changedLocked()
}

func (h *Holder) changedLocked() {
	close(h.changed)
	h.changed = make(chan struct{})
}

// Interface guard.
var _ Lease = Always{}
