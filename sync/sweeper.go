package sync

import (
	gosync "sync"
	"time"

	"github.com/persistentchat/homeserver/clock"
)

// sweeper keeps one goroutine of its owner's (typing and presence
// timeouts) waking at the earliest pending deadline, on the injected
// clock. Its fields are guarded by the owner's mutex; every method is
// called with it held. Timers are made under that mutex, before the
// change that needs them is answered, so a test's fake clock never
// advances past a timer not yet made.
type sweeper struct {
	clock    clock.Clock
	sweeping bool      // the owner's sweep loop is running
	next     time.Time // when it wakes next
	timers   chan (<-chan time.Time)
	// closing is closed at shutdown: the loop exits at its next wake-up
	// instead of at its deadline. running counts loops, so that shutdown
	// waits for a sweep's writes before the database closes.
	closing <-chan struct{}
	running *gosync.WaitGroup
	// closed is set under the owner's mutex at shutdown, after closing:
	// no loop starts once it is set, so every start happens before wait.
	closed bool
}

func newSweeper(clk clock.Clock, closing <-chan struct{}) sweeper {
	return sweeper{clock: clk, timers: make(chan (<-chan time.Time), 1), closing: closing, running: new(gosync.WaitGroup)}
}

// wait returns once no loop runs: after closing is closed, every loop
// exits at its next wake-up. Called without the owner's mutex.
func (s *sweeper) wait() { s.running.Wait() }

// scheduleLocked makes sure a sweep runs by deadline: it starts the
// owner's loop (go run(timer)) when none runs, or hands the running one
// an earlier timer.
func (s *sweeper) scheduleLocked(now, deadline time.Time, run func(timer <-chan time.Time)) {
	if s.sweeping && !deadline.Before(s.next) {
		return
	}
	timer := s.clock.After(deadline.Sub(now))
	s.next = deadline
	if !s.sweeping {
		if s.closed { // shut down: no loop may start after wait
			return
		}
		s.sweeping = true
		s.running.Add(1)
		go func() {
			defer s.running.Done()
			run(timer)
		}()
		return
	}
	select { // replace a timer the loop has not taken yet
	case <-s.timers:
	default:
	}
	s.timers <- timer
}

// againLocked is the running loop's next timer, for deadline next; with
// next zero (nothing pending) the loop must exit, and it returns nil.
func (s *sweeper) againLocked(now, next time.Time) <-chan time.Time {
	if next.IsZero() {
		s.stopLocked()
		return nil
	}
	s.next = next
	return s.clock.After(next.Sub(now))
}

// stopLocked records that the loop exits.
func (s *sweeper) stopLocked() {
	s.sweeping = false
	select { // a later loop must not inherit a stale timer
	case <-s.timers:
	default:
	}
}
