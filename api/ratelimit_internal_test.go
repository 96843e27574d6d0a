package api

import (
	"context"
	"testing"

	"github.com/persistentchat/homeserver/clock"
)

// BenchmarkLimiter: one take from an in-memory bucket that always has
// tokens, to compare with storage/postgres's BenchmarkTakeRateToken.
func BenchmarkLimiter(b *testing.B) {
	l := newLimiter(true, clock.Real{}, map[rateClass]RateLimit{rateLogin: {PerSecond: 1e9, BurstCount: 1 << 30}}, nil)
	ctx := context.Background()
	for b.Loop() {
		if err := l.allow(ctx, rateLogin, "@u:x"); err != nil {
			b.Fatal(err)
		}
	}
}
