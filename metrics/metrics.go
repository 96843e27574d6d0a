// Package metrics exposes how a running homeserver is doing to Prometheus,
// in its text exposition format, for operators' dashboards and alerts
// (configs.Metrics turns it on; the server serves Handler on a listener
// of its own). Every metric of ours is prefixed homeserver_:
//
//	homeserver_http_requests_total{method,route,status}     counter
//	    requests answered, by chi route pattern ("unmatched" for paths
//	    no route has and for CORS preflights), method and status class
//	    (2xx, 3xx, 4xx, 5xx)
//	homeserver_http_request_duration_seconds{method,route}  histogram
//	    time from routing to the handler's return; a /sync long-poll
//	    counts its wait
//	homeserver_events_persisted_total{origin}               counter
//	    events committed to rooms, origin "local" (sent by our users)
//	    or "remote" (received from other servers)
//	homeserver_event_stream_position                        gauge
//	    the newest committed event stream position
//	homeserver_sync_waiters                                 gauge
//	    /sync and feed long-polls waiting for news now
//	homeserver_worker_position{worker,queue}                gauge
//	homeserver_worker_lag_events{worker,queue}              gauge
//	    where each background worker that follows the event stream is,
//	    and how many positions it is behind the newest: worker
//	    "notifications" (push rules), "pushers" (push gateways),
//	    "appservice" with the service's ID as queue
//	homeserver_db_pool_max_connections{pool}                gauge
//	homeserver_db_pool_open_connections{pool}               gauge
//	homeserver_db_pool_in_use_connections{pool}             gauge
//	homeserver_db_pool_idle_connections{pool}               gauge
//	homeserver_db_pool_waits_total{pool}                    counter
//	homeserver_db_pool_wait_seconds_total{pool}             counter
//	    the store's connection pools (SQLite: "read", "write")
//
// and the Go runtime's (go_*) and the process's (process_*) standard
// collectors. Gauges are read when Prometheus scrapes; on the request
// path a request costs one lock-free lookup of its route's counters.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// namespace prefixes every metric of ours.
const namespace = "homeserver"

// Sources are what the metrics read when scraped. Every field is needed.
type Sources struct {
	// Events counts persisted events; the write path calls it.
	Events *Events
	// Head is the newest committed event stream position.
	Head func() roomdag.StreamPos
	// SyncWaiters is how many long-polls wait now.
	SyncWaiters func() int64
	// Workers report the background workers' positions.
	Workers Workers
	// Pools is the store.
	Pools Pools
	// Leases report whether this process holds each worker lease.
	Leases Leases
}

// LeaseHold says whether this process holds one worker lease, and so
// runs the workers under it (streamworker.Holder).
type LeaseHold struct {
	// Lease names it: "notifications", "pushers", "appservices".
	Lease string
	Held  bool
}

// Leases reports this process's worker leases; it is called at every
// scrape, so it must be cheap and safe to call from any goroutine.
type Leases interface {
	LeaseHolds() []LeaseHold
}

// LeasesFunc adapts a function to Leases.
type LeasesFunc func() []LeaseHold

// LeaseHolds implements Leases.
func (f LeasesFunc) LeaseHolds() []LeaseHold { return f() }

// Pools is what the metrics read of the store: the use of its
// connection pools.
type Pools interface {
	Stats() []storage.PoolStats
}

// WorkerPosition is where one background worker is in the event stream:
// it has done its work for every event up to Pos (DESIGN.md, "Work after
// commit").
type WorkerPosition struct {
	// Worker names the worker: "notifications", "pushers", "appservice".
	Worker string
	// Queue tells apart the queues of a worker that runs several (an
	// application service's ID); "" for a worker with one.
	Queue string
	Pos   roomdag.StreamPos
}

// Workers reports the background workers' positions; it is called at
// every scrape, so it must be cheap and safe to call from any goroutine.
type Workers interface {
	WorkerPositions() []WorkerPosition
}

// WorkersFunc adapts a function to Workers.
type WorkersFunc func() []WorkerPosition

// WorkerPositions implements Workers.
func (f WorkersFunc) WorkerPositions() []WorkerPosition { return f() }

// Metrics is a homeserver's metrics: a registry of its own (never
// Prometheus's global one, so several servers in one process, as in
// tests, keep theirs apart).
type Metrics struct {
	reg  *prometheus.Registry
	http *httpMetrics
}

// New registers the metrics of src, the HTTP metrics and the runtime
// collectors.
func New(src Sources) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{reg: reg, http: newHTTPMetrics()}
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.http.requests, m.http.duration,
		src.Events.persisted,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: "event_stream_position",
			Help: "The newest committed event stream position."},
			func() float64 { return float64(src.Head()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: "sync_waiters",
			Help: "Long-polls (/sync and feeds) waiting for news."},
			func() float64 { return float64(src.SyncWaiters()) }),
		&workerCollector{head: src.Head, workers: src.Workers},
		&poolCollector{pools: src.Pools},
		&leaseCollector{leases: src.Leases},
	)
	return m
}

// Handler serves the metrics in Prometheus's exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}
