package api

import (
	"net/http"
	"sync"
	"time"

	"github.com/persistentchat/homeserver/clock"
)

// RateLimit is a token bucket: a sustained rate and a burst.
type RateLimit struct {
	PerSecond  float64
	BurstCount int
}

// limiter keeps one token bucket per (class, key). Idle buckets are full
// again after burst/rate seconds and are dropped then.
type limiter struct {
	enabled bool
	clock   clock.Clock
	classes map[rateClass]RateLimit

	mu      sync.Mutex
	buckets map[bucketKey]*bucket
	lastGC  time.Time
}

type bucketKey struct {
	class rateClass
	key   string
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(enabled bool, clk clock.Clock, classes map[rateClass]RateLimit) *limiter {
	return &limiter{enabled: enabled, clock: clk, classes: classes, buckets: map[bucketKey]*bucket{}}
}

// allow takes a token or returns M_LIMIT_EXCEEDED with retry_after_ms.
func (l *limiter) allow(class rateClass, key string) error {
	return l.use(class, key, -1)
}

// refund gives back a token that allow took, for limits on an outcome
// known only after the work: a login attempt takes a token of
// rateLoginFailed before its password is checked and gets it back if the
// password was right. Taking first is what bounds concurrent attempts:
// checking and counting only after the check would let every attempt
// that arrives at once through.
func (l *limiter) refund(class rateClass, key string) {
	_ = l.use(class, key, +1)
}

// use moves a bucket by delta tokens; a take (delta -1) from a bucket
// with less than one token is refused.
func (l *limiter) use(class rateClass, key string, delta float64) error {
	rl, ok := l.classes[class]
	if !l.enabled || !ok || rl.PerSecond <= 0 {
		return nil
	}
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastGC) > time.Minute {
		l.gc(now)
	}
	k := bucketKey{class, key}
	b := l.buckets[k]
	if b == nil {
		b = &bucket{tokens: float64(rl.BurstCount), last: now}
		l.buckets[k] = b
	}
	b.tokens = min(float64(rl.BurstCount), b.tokens+now.Sub(b.last).Seconds()*rl.PerSecond)
	b.last = now
	if delta < 0 && b.tokens < 1 {
		wait := int64((1-b.tokens)/rl.PerSecond*1000) + 1
		e := errorf(http.StatusTooManyRequests, CodeLimitExceeded, "too many requests")
		e.Extra = map[string]any{"retry_after_ms": wait}
		return e
	}
	b.tokens = min(b.tokens+delta, float64(rl.BurstCount))
	return nil
}

func (l *limiter) gc(now time.Time) {
	l.lastGC = now
	for k, b := range l.buckets {
		rl := l.classes[k.class]
		if now.Sub(b.last).Seconds()*rl.PerSecond >= float64(rl.BurstCount) {
			delete(l.buckets, k)
		}
	}
}
