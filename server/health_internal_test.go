package server

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// stuckDB is a database whose ping waits until it is released, or its
// context ends.
type stuckDB struct{ release chan struct{} }

func (s stuckDB) Ping(ctx context.Context) error {
	select {
	case <-s.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestHealthTimesOut: a database that does not answer within the check's
// timeout fails the check (503) instead of holding the probe, the failure
// is logged once however often it is probed, and the recovery once.
func TestHealthTimesOut(t *testing.T) {
	var logs bytes.Buffer
	db := stuckDB{release: make(chan struct{})}
	h := &health{db: db, log: slog.New(slog.NewTextHandler(&logs, nil)), timeout: time.Millisecond}
	probe := func() int {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/health", nil))
		return w.Code
	}
	for range 3 {
		if got := probe(); got != http.StatusServiceUnavailable {
			t.Fatalf("probe of a stuck database = %d, want 503", got)
		}
	}
	if n := strings.Count(logs.String(), "health check failing"); n != 1 {
		t.Errorf("the failure was logged %d times, want once:\n%s", n, &logs)
	}
	if !strings.Contains(logs.String(), context.DeadlineExceeded.Error()) {
		t.Errorf("the log does not say why:\n%s", &logs)
	}
	close(db.release)
	for range 2 {
		if got := probe(); got != http.StatusOK {
			t.Fatalf("probe of a database that answers = %d, want 200", got)
		}
	}
	if n := strings.Count(logs.String(), "passing again"); n != 1 {
		t.Errorf("the recovery was logged %d times, want once:\n%s", n, &logs)
	}
}

// TestHealthProberGone: a probe that hung up gets nothing written and
// does not mark the database failing.
func TestHealthProberGone(t *testing.T) {
	var logs bytes.Buffer
	h := &health{db: stuckDB{release: make(chan struct{})}, log: slog.New(slog.NewTextHandler(&logs, nil)), timeout: time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/health", nil).WithContext(ctx))
	if h.failing.Load() || logs.Len() > 0 || w.Body.Len() > 0 {
		t.Errorf("a cancelled probe counted as a failure: failing=%v body=%q log=%s", h.failing.Load(), w.Body, &logs)
	}
}
