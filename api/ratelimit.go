package api

import (
	"context"
	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/httpapi"
	"net/http"
	"sync"
	"time"
)

// RateLimit is a token bucket: a sustained rate and a burst.
type RateLimit struct {
	PerSecond  float64
	BurstCount int
}

// limiter keeps one token bucket per (class, key). Idle buckets are full
// again after burst/rate seconds and are dropped then.
//
// The buckets are in this process's memory, unless shared is set: then
// they are rows of the database (storage/sqlstore/ratelimits.go), one
// statement per limited request, so that processes serving the client API
// on one database (PostgreSQL) count a client's requests together. A
// single process keeps them in memory, which costs nothing beside a
// database round trip (SQLite: a write through its group-commit writer).
type limiter struct {
	enabled bool
	clock   clock.Clock
	classes map[rateClass]RateLimit
	shared  sharedBuckets // nil: in memory

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

// sharedBuckets is the part of Store that keeps buckets in the database.
type sharedBuckets interface {
	TakeRateToken(ctx context.Context, bucket string, nowUS, intervalUS int64, burst int) (int64, error)
	RefundRateToken(ctx context.Context, bucket string, nowUS, intervalUS int64) error
	PurgeRateLimits(ctx context.Context, nowUS int64) error
}

// rateClassNames name the classes in shared buckets' keys; a name is part
// of the stored data and must not change.
var rateClassNames = map[rateClass]string{
	rateMessage: "message", rateLogin: "login", rateRegistration: "registration",
	rateLoginAccount: "login_account", rateLoginFailed: "login_failed",
}

// newLimiter makes a limiter; shared, if not nil, keeps its buckets.
func newLimiter(enabled bool, clk clock.Clock, classes map[rateClass]RateLimit, shared sharedBuckets) *limiter {
	return &limiter{enabled: enabled, clock: clk, classes: classes, shared: shared, buckets: map[bucketKey]*bucket{}}
}

// allow takes a token or returns M_LIMIT_EXCEEDED with retry_after_ms.
func (l *limiter) allow(ctx context.Context, class rateClass, key string) error {
	if l.shared != nil {
		return l.sharedUse(ctx, class, key, false)
	}
	return l.use(class, key, -1)
}

// refund gives back a token that allow took, for limits on an outcome
// known only after the work: a login attempt takes a token of
// rateLoginFailed before its password is checked and gets it back if the
// password was right. Taking first is what bounds concurrent attempts:
// checking and counting only after the check would let every attempt
// that arrives at once through.
//
// A refund that fails (shared buckets, the database unreachable) is
// logged by nobody and lost: the client is limited a little early.
func (l *limiter) refund(ctx context.Context, class rateClass, key string) {
	if l.shared != nil {
		_ = l.sharedUse(ctx, class, key, true)
		return
	}
	_ = l.use(class, key, +1)
}

// sharedUse takes (or, with refund, gives back) a token of a bucket in the
// database. The GCRA interval of a limit is the time one token takes to
// come back, in microseconds.
func (l *limiter) sharedUse(ctx context.Context, class rateClass, key string, refund bool) error {
	rl, ok := l.classes[class]
	if !l.enabled || !ok || rl.PerSecond <= 0 {
		return nil
	}
	now := l.clock.Now()
	nowUS := now.UnixMicro()
	interval := max(int64(1e6/rl.PerSecond), 1)
	bucket := rateClassNames[class] + " " + key
	if refund {
		// The token was taken for this request, which may have been
		// given up since: it comes back all the same.
		return l.shared.RefundRateToken(context.WithoutCancel(ctx), bucket, nowUS, interval)
	}
	l.mu.Lock()
	gc := now.Sub(l.lastGC) > time.Minute
	if gc {
		l.lastGC = now
	}
	l.mu.Unlock()
	if gc {
		// Full buckets are rows no one needs; every process purges now
		// and then, which is harmless: a missing row is a full bucket.
		if err := l.shared.PurgeRateLimits(ctx, nowUS); err != nil {
			return err
		}
	}
	wait, err := l.shared.TakeRateToken(ctx, bucket, nowUS, interval, max(rl.BurstCount, 1))
	if err != nil {
		return err
	}
	if wait > 0 {
		e := httpapi.Errorf(http.StatusTooManyRequests, httpapi.CodeLimitExceeded, "too many requests")
		e.Extra = map[string]any{"retry_after_ms": (wait + 999) / 1000}
		return e
	}
	return nil
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
		e := httpapi.Errorf(http.StatusTooManyRequests, httpapi.CodeLimitExceeded, "too many requests")
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
