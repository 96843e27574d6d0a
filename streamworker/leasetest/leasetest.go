// Package leasetest is a lease table in memory, on a fake clock, for
// tests that run several "processes" (holders) in one: it grants, renews
// and expires leases as the database's table does, and lets a test take
// a lease over or cut a process off from it.
package leasetest

import (
	"context"
	"errors"
	gosync "sync"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/streamworker"
)

// ErrUnreachable is the error of a process that is cut off.
var ErrUnreachable = errors.New("leasetest: database unreachable")

// Table holds one lease: who holds it and until when, by its clock.
type Table struct {
	mu      gosync.Mutex
	clock   clock.Clock
	ttl     time.Duration
	holder  string
	expires time.Time
	down    map[string]bool
}

// NewTable makes a table whose lease lasts ttl from each grant.
func NewTable(clk clock.Clock, ttl time.Duration) *Table {
	return &Table{clock: clk, ttl: ttl, down: map[string]bool{}}
}

// Lease is process's view of the lease.
func (t *Table) Lease(process string) streamworker.Lease {
	return &lease{t: t, process: process}
}

// TakeOver makes process the holder, as if it had taken the lease while
// the holder's renewals were late.
func (t *Table) TakeOver(process string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.holder, t.expires = process, t.clock.Now().Add(t.ttl)
}

// SetDown cuts process off from the table (its calls fail with
// ErrUnreachable), or connects it again.
func (t *Table) SetDown(process string, down bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.down[process] = down
}

// Holder is the process holding the lease, "" for none, whether expired
// or not.
func (t *Table) Holder() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.holder
}

type lease struct {
	t       *Table
	process string
}

func (l *lease) Acquire(context.Context) (time.Duration, error) {
	t := l.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.down[l.process] {
		return 0, ErrUnreachable
	}
	now := t.clock.Now()
	if t.holder != "" && t.holder != l.process && now.Before(t.expires) {
		return 0, nil
	}
	t.holder, t.expires = l.process, now.Add(t.ttl)
	return t.ttl, nil
}

func (l *lease) Renew(context.Context) (time.Duration, error) {
	t := l.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.down[l.process] {
		return 0, ErrUnreachable
	}
	if t.holder != l.process {
		return 0, nil
	}
	t.expires = t.clock.Now().Add(t.ttl)
	return t.ttl, nil
}

func (l *lease) Release(context.Context) error {
	t := l.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.down[l.process] {
		return ErrUnreachable
	}
	if t.holder == l.process {
		t.holder = ""
	}
	return nil
}
