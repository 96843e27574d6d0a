package metrics

import (
	"io"
	"net/http"
	"strconv"
	gosync "sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// unmatched is the route label of requests no route took: unknown paths,
// methods a path does not have, and CORS preflights, which are answered
// before routing. One label for all keeps the series bounded whatever
// paths clients make up.
const unmatched = "unmatched"

// durationBuckets are prometheus.DefBuckets (5 ms to 10 s) and two more
// for long-polls, which wait up to their timeout (30 s from most
// clients), and slow uploads.
var durationBuckets = append(append([]float64(nil), prometheus.DefBuckets...), 30, 60)

// httpMetrics counts requests. The counters of a route are looked up by
// label once, on its first request, and kept in a sync.Map, which reads
// without a lock once the routes are known.
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	routes   gosync.Map // routeKey -> *routeMetrics
}

type routeKey struct{ method, route string }

// statusClasses are the status labels made up front for every route;
// anything else (1xx as a final status) gets its label when seen.
var statusClasses = [...]string{"2xx", "3xx", "4xx", "5xx"}

type routeMetrics struct {
	byClass  [len(statusClasses)]prometheus.Counter
	other    *prometheus.CounterVec // curried with method and route
	duration prometheus.Observer
}

func newHTTPMetrics() *httpMetrics {
	return &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Subsystem: "http", Name: "requests_total",
			Help: "HTTP requests answered, by method, chi route pattern and status class."}, []string{"method", "route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Subsystem: "http", Name: "request_duration_seconds",
			Help: "Time from routing a request to its handler's return, by method and chi route pattern.", Buckets: durationBuckets},
			[]string{"method", "route"}),
	}
}

func (h *httpMetrics) route(method, route string) *routeMetrics {
	k := routeKey{method, route}
	if rm, ok := h.routes.Load(k); ok {
		return rm.(*routeMetrics)
	}
	rm := &routeMetrics{duration: h.duration.WithLabelValues(method, route),
		other: h.requests.MustCurryWith(prometheus.Labels{"method": method, "route": route})}
	for i, c := range statusClasses {
		rm.byClass[i] = h.requests.WithLabelValues(method, route, c)
	}
	actual, _ := h.routes.LoadOrStore(k, rm)
	return actual.(*routeMetrics)
}

func (rm *routeMetrics) count(status int) {
	if i := status/100 - 2; i >= 0 && i < len(rm.byClass) {
		rm.byClass[i].Inc()
		return
	}
	rm.other.WithLabelValues(strconv.Itoa(status/100) + "xx").Inc()
}

// Middleware counts and times the requests of a chi router: install it
// with the router's Use, where chi has routed the request by the time
// the handler returns, so the route pattern is known.
func (m *Metrics) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		route := chi.RouteContext(r.Context()).RoutePattern()
		method := r.Method
		if route == "" {
			route, method = unmatched, knownMethod(method)
		}
		rm := m.http.route(method, route)
		rm.duration.Observe(time.Since(start).Seconds())
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		rm.count(sw.status)
	})
}

// knownMethod bounds the method label of unmatched requests, which may
// carry any method a client makes up.
func knownMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete,
		http.MethodOptions, http.MethodPatch:
		return m
	}
	return "OTHER"
}

// statusWriter records the status a handler answers with.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 { // 1xx are interim answers
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// ReadFrom keeps media downloads on net/http's copy path (sendfile for
// files).
func (w *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return io.Copy(w.ResponseWriter, r)
}

// Unwrap lets http.ResponseController reach the connection (deadlines,
// flushing).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
