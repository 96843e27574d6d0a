package server

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"
)

// healthTimeout bounds the database check of GET /health: a load
// balancer's probe gets its answer within it, and a database that takes
// longer counts as unusable.
const healthTimeout = 2 * time.Second

// pinger is what GET /health checks: that the database answers.
type pinger interface {
	Ping(ctx context.Context) error
}

// health answers GET /health as Synapse does, 200 with the text "OK",
// without authentication, so that load balancers and orchestrators can
// probe every process. Unlike Synapse's it checks the database (a ping
// under healthTimeout) and answers 503 when that fails, so a process
// whose database is gone is taken out of rotation. A change of health is
// logged once, not at every probe.
type health struct {
	db      pinger
	log     *slog.Logger
	timeout time.Duration // healthTimeout; tests shorten it
	failing atomic.Bool
}

func (h *health) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), h.timeout)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := h.db.Ping(ctx); err != nil {
		if r.Context().Err() != nil {
			return // the prober gave up; that says nothing of the database
		}
		if !h.failing.Swap(true) {
			h.log.Error("health check failing: the database is unusable", "err", err)
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "database unavailable")
		return
	}
	if h.failing.Swap(false) {
		h.log.Info("health check passing again")
	}
	io.WriteString(w, "OK")
}
