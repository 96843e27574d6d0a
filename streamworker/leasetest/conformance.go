package leasetest

import (
	"context"
	"fmt"
	gosync "sync"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/streamworker"
)

// Env is one implementation of streamworker.Lease under test, with a
// store of leases of its own (fresh for each Run subtest).
type Env struct {
	// Lease returns the lease called name as process sees it. Calls with
	// the same process are one process (one holder ID); processes are
	// told apart by name.
	Lease func(name, process string) streamworker.Lease
	// TTL is how long the implementation grants a lease for.
	TTL time.Duration
	// Clock is the clock the test measures calls by: the one the leases
	// expire by, or one that runs at its pace.
	Clock clock.Clock
	// Pass lets d pass on Clock (sleeps on a real clock, advances a fake
	// one).
	Pass func(d time.Duration)
}

// Run checks the streamworker.Lease contract: one holder at a time, across
// lease names independently; Acquire again by the holder, Renew by it
// alone; Release lets another take it at once and is a no-op for a
// process that does not hold it; an expired lease passes to another, no
// earlier than the holder was told, measured from its call's start; and
// of processes that Acquire at once, exactly one wins. newEnv makes a
// fresh store for each subtest.
func Run(t *testing.T, newEnv func(t *testing.T) Env) {
	t.Run("Exclusive", func(t *testing.T) { exclusive(t, newEnv(t)) })
	t.Run("Release", func(t *testing.T) { release(t, newEnv(t)) })
	t.Run("Names", func(t *testing.T) { names(t, newEnv(t)) })
	t.Run("Expiry", func(t *testing.T) { expiry(t, newEnv(t)) })
	t.Run("RenewExtends", func(t *testing.T) { renewExtends(t, newEnv(t)) })
	t.Run("Concurrent", func(t *testing.T) { concurrent(t, newEnv(t)) })
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// call runs f and fails the test on an error.
func call(t *testing.T, what string, f func(context.Context) (time.Duration, error)) time.Duration {
	t.Helper()
	d, err := f(ctx(t))
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if d < 0 {
		t.Fatalf("%s: granted %v", what, d)
	}
	return d
}

func granted(t *testing.T, env Env, what string, d time.Duration) {
	t.Helper()
	if d <= 0 {
		t.Fatalf("%s: refused, want granted", what)
	}
	if d > env.TTL {
		t.Fatalf("%s: granted %v, more than the TTL %v", what, d, env.TTL)
	}
}

func refused(t *testing.T, what string, d time.Duration) {
	t.Helper()
	if d != 0 {
		t.Fatalf("%s: granted %v, want refused", what, d)
	}
}

func exclusive(t *testing.T, env Env) {
	a, b := env.Lease("work", "a"), env.Lease("work", "b")
	granted(t, env, "a's Acquire of a free lease", call(t, "a Acquire", a.Acquire))
	refused(t, "b's Acquire of a's lease", call(t, "b Acquire", b.Acquire))
	granted(t, env, "a's Acquire of its own lease", call(t, "a Acquire", a.Acquire))
	refused(t, "b's Renew of a's lease", call(t, "b Renew", b.Renew))
	granted(t, env, "a's Renew", call(t, "a Renew", a.Renew))
	refused(t, "b's Acquire after a's Renew", call(t, "b Acquire", b.Acquire))
	// The same process through another value is the same holder.
	granted(t, env, "a's Renew through a second value", call(t, "a Renew", env.Lease("work", "a").Renew))
}

func release(t *testing.T, env Env) {
	a, b, c := env.Lease("work", "a"), env.Lease("work", "b"), env.Lease("work", "c")
	if err := a.Release(ctx(t)); err != nil {
		t.Fatalf("a's Release of a lease nobody holds: %v", err)
	}
	granted(t, env, "a Acquire", call(t, "a Acquire", a.Acquire))
	if err := a.Release(ctx(t)); err != nil {
		t.Fatalf("a Release: %v", err)
	}
	granted(t, env, "b's Acquire right after a's Release", call(t, "b Acquire", b.Acquire))
	refused(t, "a's Renew after its Release", call(t, "a Renew", a.Renew))
	// a no longer holds it: its Release must leave b's hold alone.
	if err := a.Release(ctx(t)); err != nil {
		t.Fatalf("a's Release of b's lease: %v", err)
	}
	refused(t, "c's Acquire after a released b's lease", call(t, "c Acquire", c.Acquire))
	granted(t, env, "b's Renew after a's Release", call(t, "b Renew", b.Renew))
}

func names(t *testing.T, env Env) {
	granted(t, env, "a's Acquire of x", call(t, "a Acquire x", env.Lease("x", "a").Acquire))
	granted(t, env, "b's Acquire of y while a holds x", call(t, "b Acquire y", env.Lease("y", "b").Acquire))
	refused(t, "b's Acquire of x", call(t, "b Acquire x", env.Lease("x", "b").Acquire))
	refused(t, "a's Renew of y", call(t, "a Renew y", env.Lease("y", "a").Renew))
	if err := env.Lease("y", "b").Release(ctx(t)); err != nil {
		t.Fatal(err)
	}
	granted(t, env, "a's Renew of x after b released y", call(t, "a Renew x", env.Lease("x", "a").Renew))
}

// expiry: b polls for a's lease; it may be granted only by a call that
// ends after a's grant, counted from a's call's start, has run out.
func expiry(t *testing.T, env Env) {
	a, b := env.Lease("work", "a"), env.Lease("work", "b")
	began := env.Clock.Now()
	d := call(t, "a Acquire", a.Acquire)
	granted(t, env, "a Acquire", d)
	step := env.TTL / 20
	deadline := began.Add(3 * env.TTL)
	for {
		got := call(t, "b Acquire", b.Acquire)
		ended := env.Clock.Now()
		if got > 0 {
			if ended.Before(began.Add(d)) {
				t.Fatalf("b took a's lease %v after a's Acquire began; a was granted %v", ended.Sub(began), d)
			}
			break
		}
		if ended.After(deadline) {
			t.Fatalf("b could not take a's lease %v after a's Acquire began (granted %v)", ended.Sub(began), d)
		}
		env.Pass(step)
	}
	refused(t, "a's Renew after b took its expired lease", call(t, "a Renew", a.Renew))
	refused(t, "a's Acquire of b's lease", call(t, "a Acquire", a.Acquire))
}

// renewExtends: a lease renewed after two thirds of its time still holds
// past the first grant's end.
func renewExtends(t *testing.T, env Env) {
	a, b := env.Lease("work", "a"), env.Lease("work", "b")
	began := env.Clock.Now()
	d := call(t, "a Acquire", a.Acquire)
	granted(t, env, "a Acquire", d)
	env.Pass(d * 2 / 3)
	renewed := env.Clock.Now()
	d2 := call(t, "a Renew", a.Renew)
	granted(t, env, "a Renew", d2)
	env.Pass(d/3 + d2/10) // past the first grant, well before the renewal's end
	now := env.Clock.Now()
	if !now.After(began.Add(d)) || !now.Before(renewed.Add(d2)) {
		t.Fatalf("the test ran too slowly: %v after the Acquire, %v after the Renew (granted %v, %v)", now.Sub(began), now.Sub(renewed), d, d2)
	}
	refused(t, "b's Acquire of a lease renewed before its expiry", call(t, "b Acquire", b.Acquire))
	granted(t, env, "a's second Renew", call(t, "a Renew", a.Renew))
}

// concurrent: in each round every process calls Acquire at once, and
// exactly one is granted; the winner releases for the next round.
func concurrent(t *testing.T, env Env) {
	const processes, rounds = 8, 10
	for round := range rounds {
		var wg gosync.WaitGroup
		start := make(chan struct{})
		grants := make([]time.Duration, processes)
		errs := make([]error, processes)
		for p := range processes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				l := env.Lease("work", fmt.Sprintf("p%d", p))
				<-start
				grants[p], errs[p] = l.Acquire(ctx(t))
			}()
		}
		close(start)
		wg.Wait()
		winner := -1
		for p := range processes {
			if errs[p] != nil {
				t.Fatalf("round %d: p%d Acquire: %v", round, p, errs[p])
			}
			if grants[p] > 0 {
				if winner >= 0 {
					t.Fatalf("round %d: p%d and p%d both granted", round, winner, p)
				}
				winner = p
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: nobody granted a free lease", round)
		}
		if err := env.Lease("work", fmt.Sprintf("p%d", winner)).Release(ctx(t)); err != nil {
			t.Fatal(err)
		}
	}
}
