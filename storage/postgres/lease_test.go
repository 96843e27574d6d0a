package postgres

import (
	"sync"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/streamworker"
	"github.com/persistentchat/homeserver/streamworker/leasetest"
)

// The database lease passes the Lease conformance suite: each subtest
// gets a database of its own, and each "process" a Leases of its own
// (its own holder ID and pool), as separate processes would.
func TestLeaseConforms(t *testing.T) {
	leasetest.Run(t, func(t *testing.T) leasetest.Env {
		dsn := testDSN(t)
		db, err := openTestPools(Options{DSN: dsn, MinConns: 1, MaxConns: 2}, discard())
		if err != nil {
			t.Fatal(err)
		}
		db.Close()
		const ttl = 2 * time.Second // expiry tests wait for it
		var mu sync.Mutex
		processes := map[string]*Leases{}
		return leasetest.Env{
			TTL: ttl, Clock: clock.Real{}, Pass: time.Sleep,
			Lease: func(name, process string) streamworker.Lease {
				mu.Lock()
				defer mu.Unlock()
				ls := processes[process]
				if ls == nil {
					ls, err := OpenLeases(Options{DSN: dsn}, ttl)
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { ls.Close() })
					processes[process] = ls
					return ls.Lease(name)
				}
				return ls.Lease(name)
			},
		}
	})
}

func TestOpenLeasesDuration(t *testing.T) {
	for _, d := range []time.Duration{time.Millisecond, 999 * time.Millisecond, 1500*time.Millisecond + time.Microsecond} {
		if _, err := OpenLeases(Options{DSN: "postgres://127.0.0.1/x"}, d); err == nil {
			t.Errorf("OpenLeases with duration %v: no error", d)
		}
	}
	ls, err := OpenLeases(Options{DSN: "postgres://127.0.0.1/x"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	if ls.Duration() != DefaultLeaseDuration {
		t.Errorf("default duration %v, want %v", ls.Duration(), DefaultLeaseDuration)
	}
	other, err := OpenLeases(Options{DSN: "postgres://127.0.0.1/x"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if ls.Holder() == other.Holder() {
		t.Errorf("two Leases share the holder ID %q", ls.Holder())
	}
}
