package storagetest

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/persistentchat/homeserver/storage"
)

// testUIASessions: sessions expire, merge stages completed at once, and are
// consumed by exactly one of the requests that complete them together.
func testUIASessions(t *testing.T, open Opener) {
	db := open(t)
	ctx := context.Background()
	const now = 1_000_000
	if err := db.PutUIASession(ctx, storage.UIASession{ID: "s1", Endpoint: "POST /x", ExpiresMS: now + 100}, now); err != nil {
		t.Fatal(err)
	}
	if err := db.PutUIASession(ctx, storage.UIASession{ID: "s1", Endpoint: "POST /y", ExpiresMS: now + 100}, now); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("second put of s1 = %v, want ErrConflict", err)
	}
	s, err := db.UIASession(ctx, "s1", now)
	if err != nil || s.Endpoint != "POST /x" || len(s.Completed) != 0 || s.User != "" || s.ExpiresMS != now+100 {
		t.Fatalf("UIASession = %+v, %v", s, err)
	}
	if _, err := db.UIASession(ctx, "s1", now+101); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("expired session: %v, want ErrNotFound", err)
	}
	if _, err := db.UIASession(ctx, "nope", now); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("unknown session: %v, want ErrNotFound", err)
	}

	// Stages completed at once are all kept; the expiry moves.
	stages := []string{"a", "b", "c", "d"}
	var wg sync.WaitGroup
	for _, st := range stages {
		wg.Go(func() {
			if _, err := db.CompleteUIAStage(ctx, "s1", st, "", now+500, now); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	s, err = db.CompleteUIAStage(ctx, "s1", "a", "@u:x", now+600, now) // again: no duplicate
	if err != nil {
		t.Fatal(err)
	}
	got := slices.Clone(s.Completed)
	slices.Sort(got)
	if !slices.Equal(got, stages) || s.User != "@u:x" || s.ExpiresMS != now+600 {
		t.Fatalf("after the stages: %+v", s)
	}
	if s2, err := db.UIASession(ctx, "s1", now+550); err != nil || !slices.Equal(s2.Completed, s.Completed) || s2.User != "@u:x" {
		t.Fatalf("reread: %+v, %v", s2, err)
	}
	if _, err := db.CompleteUIAStage(ctx, "s1", "e", "", now+700, now+601); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("stage on an expired session: %v, want ErrNotFound", err)
	}

	// Exactly one of several deletes at once finds the session.
	if err := db.PutUIASession(ctx, storage.UIASession{ID: "s2", Endpoint: "POST /x", ExpiresMS: now + 100}, now); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	deleted := 0
	for range 4 {
		wg.Go(func() {
			ok, err := db.DeleteUIASession(ctx, "s2", now)
			if err != nil {
				t.Error(err)
			}
			if ok {
				mu.Lock()
				deleted++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if deleted != 1 {
		t.Fatalf("%d deletes found s2, want 1", deleted)
	}
	// An expired session is not found by a delete, nor after a later put
	// (which purges it).
	if err := db.PutUIASession(ctx, storage.UIASession{ID: "s3", Endpoint: "POST /x", ExpiresMS: now + 10}, now); err != nil {
		t.Fatal(err)
	}
	if ok, err := db.DeleteUIASession(ctx, "s3", now+11); ok || err != nil {
		t.Fatalf("delete of an expired session = %v, %v", ok, err)
	}
	if err := db.PutUIASession(ctx, storage.UIASession{ID: "s4", Endpoint: "POST /x", ExpiresMS: now + 1000}, now+11); err != nil {
		t.Fatal(err)
	}
	if _, err := db.UIASession(ctx, "s3", now); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("purged session: %v, want ErrNotFound", err)
	}
	if s, err := db.UIASession(ctx, "s4", now+11); err != nil || s.ID != "s4" {
		t.Fatalf("s4 = %+v, %v", s, err)
	}
}

// testRateLimits: a shared bucket allows its burst, then one token per
// interval; refunds give tokens back up to the burst; takes at once never
// take more than there are.
func testRateLimits(t *testing.T, open Opener) {
	db := open(t)
	ctx := context.Background()
	const interval, burst = 1000, 3 // µs
	now := int64(5_000_000)
	take := func(b string, at int64) int64 {
		t.Helper()
		wait, err := db.TakeRateToken(ctx, b, at, interval, burst)
		if err != nil {
			t.Fatal(err)
		}
		return wait
	}
	for i := range burst {
		if w := take("k", now); w != 0 {
			t.Fatalf("take %d of the burst: wait %d", i, w)
		}
	}
	if w := take("k", now); w != interval {
		t.Fatalf("over the burst: wait %d, want %d", w, interval)
	}
	if w := take("k", now+400); w != interval-400 {
		t.Fatalf("over the burst later: wait %d, want %d", w, interval-400)
	}
	if w := take("other", now); w != 0 {
		t.Fatalf("another bucket: wait %d", w)
	}
	if w := take("k", now+interval); w != 0 {
		t.Fatalf("after one interval: wait %d", w)
	}
	if w := take("k", now+interval); w == 0 {
		t.Fatal("a second token after one interval")
	}
	// A refund gives one back, and no more than the burst.
	if err := db.RefundRateToken(ctx, "k", now+interval, interval); err != nil {
		t.Fatal(err)
	}
	if w := take("k", now+interval); w != 0 {
		t.Fatalf("after a refund: wait %d", w)
	}
	later := now + 100*interval
	for range 5 {
		if err := db.RefundRateToken(ctx, "k", later, interval); err != nil {
			t.Fatal(err)
		}
	}
	allowed := 0
	for take("k", later) == 0 {
		allowed++
	}
	if allowed != burst {
		t.Fatalf("after refunds to a full bucket: %d allowed, want %d", allowed, burst)
	}

	// Takes at once (PostgreSQL: on several connections).
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed = 0
	at := later + 1_000_000
	for range 3 * burst {
		wg.Go(func() {
			w, err := db.TakeRateToken(ctx, "busy", at, interval, burst)
			if err != nil {
				t.Error(err)
			}
			if w == 0 {
				mu.Lock()
				allowed++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if allowed != burst {
		t.Fatalf("%d of %d takes at once allowed, want %d", allowed, 3*burst, burst)
	}

	// A purge forgets full buckets only: one in use stays limited.
	if err := db.PurgeRateLimits(ctx, at); err != nil {
		t.Fatal(err)
	}
	if w := take("busy", at); w != interval {
		t.Fatalf("a bucket in use after a purge: wait %d, want %d", w, interval)
	}
}

// testHierarchySessions: a stored walk is read back until it expires, and
// a user keeps at most maxPerUser of them (the newest).
func testHierarchySessions(t *testing.T, open Opener) {
	db := open(t)
	ctx := context.Background()
	const now = 1_000_000
	if err := db.PutHierarchySession(ctx, "t1", "@a:hs", []byte(`{"x":1}`), now+100, now, 2); err != nil {
		t.Fatal(err)
	}
	user, walk, err := db.HierarchySession(ctx, "t1", now)
	if err != nil || user != "@a:hs" || string(walk) != `{"x":1}` {
		t.Fatalf("HierarchySession = %q, %s, %v", user, walk, err)
	}
	if _, _, err := db.HierarchySession(ctx, "t1", now+100); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("expired walk: %v, want ErrNotFound", err)
	}
	if _, _, err := db.HierarchySession(ctx, "nope", now); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("unknown walk: %v, want ErrNotFound", err)
	}
	for i, tok := range []string{"t2", "t3", "t4"} {
		if err := db.PutHierarchySession(ctx, tok, "@a:hs", []byte(`{}`), now+200+int64(i), now, 2); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.PutHierarchySession(ctx, "b1", "@b:hs", []byte(`{}`), now+100, now, 2); err != nil {
		t.Fatal(err)
	}
	for tok, kept := range map[string]bool{"t1": false, "t2": false, "t3": true, "t4": true, "b1": true} {
		_, _, err := db.HierarchySession(ctx, tok, now)
		if kept != (err == nil) {
			t.Errorf("walk %s after the cap: %v, want kept %v", tok, err, kept)
		}
	}
}
