package media

import (
	"container/list"
	"context"
	gosync "sync"
)

// memoryBudget is a weighted semaphore over bytes of memory. Decoding an
// image for thumbnails holds as many bytes of it as the decode is
// estimated to take, so decodes that would together pass the limit wait
// for each other instead of all allocating at once. Waiters are served in
// the order they came, so a large decode is not starved by a stream of
// small ones that keep fitting in the gaps.
type memoryBudget struct {
	limit int64

	mu      gosync.Mutex
	used    int64
	waiters list.List // of *budgetWaiter, oldest first
	peak    int64     // most bytes held at once
	waits   int64     // acquisitions that had to queue
	// queued, if set, is called (holding mu) when an acquisition queues:
	// tests wait on it instead of sleeping.
	queued func()
}

type budgetWaiter struct {
	n     int64
	ready chan struct{} // closed when the bytes are granted
}

func newMemoryBudget(limit int64) *memoryBudget {
	return &memoryBudget{limit: limit}
}

// acquire waits until n bytes are free and takes them, or fails with
// ctx's error; then nothing is taken. The caller makes sure n is at most
// the limit, or it would wait forever.
func (b *memoryBudget) acquire(ctx context.Context, n int64) error {
	b.mu.Lock()
	if b.waiters.Len() == 0 && b.used+n <= b.limit {
		b.take(n)
		b.mu.Unlock()
		return nil
	}
	w := &budgetWaiter{n: n, ready: make(chan struct{})}
	el := b.waiters.PushBack(w)
	b.waits++
	if b.queued != nil {
		b.queued()
	}
	b.mu.Unlock()

	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		b.mu.Lock()
		select {
		case <-w.ready:
			// Granted while giving up: hand the bytes back.
			b.used -= n
		default:
			b.waiters.Remove(el)
		}
		// Either way the queue's head may fit now.
		b.grant()
		b.mu.Unlock()
		return ctx.Err()
	}
}

// release gives back n bytes taken by acquire.
func (b *memoryBudget) release(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
	b.grant()
}

// grant wakes waiters from the front of the queue while they fit.
// Caller holds mu.
func (b *memoryBudget) grant() {
	for el := b.waiters.Front(); el != nil; el = b.waiters.Front() {
		w := el.Value.(*budgetWaiter)
		if b.used+w.n > b.limit {
			return
		}
		b.take(w.n)
		b.waiters.Remove(el)
		close(w.ready)
	}
}

// take records n more bytes held. Caller holds mu.
func (b *memoryBudget) take(n int64) {
	b.used += n
	b.peak = max(b.peak, b.used)
}

// stats returns the most bytes ever held at once and how many
// acquisitions queued.
func (b *memoryBudget) stats() (peak, waits int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.peak, b.waits
}
