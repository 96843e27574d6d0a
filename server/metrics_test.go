package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/persistentchat/homeserver/appservice/astest"
	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/testserver"
)

// scrape reads the metrics listener as Prometheus does.
func scrape(t *testing.T, srv *testserver.Server) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + srv.HS.MetricsAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, b)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("the metrics are not in the exposition format: %v", err)
	}
	return fams
}

// sample finds the metric of a family with exactly the given labels
// among its own; nil if there is none.
func sample(fams map[string]*dto.MetricFamily, name string, labels map[string]string) *dto.Metric {
	f := fams[name]
	if f == nil {
		return nil
	}
next:
	for _, m := range f.Metric {
		if len(m.Label) != len(labels) {
			continue
		}
		for _, l := range m.Label {
			if labels[l.GetName()] != l.GetValue() {
				continue next
			}
		}
		return m
	}
	return nil
}

// value is a counter's or gauge's value, failing the test if the sample
// is missing.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	m := sample(fams, name, labels)
	switch {
	case m == nil:
		t.Fatalf("no %s%v in the metrics", name, labels)
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	t.Fatalf("%s%v is neither a counter nor a gauge", name, labels)
	return 0
}

func metricsOn(c *configs.Config) {
	c.Metrics.Enabled = true
	c.Metrics.Listen = "127.0.0.1:0"
}

// TestMetrics: after some traffic the metrics listener serves, in the
// exposition format, request counts and latencies by route pattern, the
// events persisted, the waiting long-polls, every background worker's
// position and lag, the database pools and the Go runtime.
func TestMetrics(t *testing.T) {
	// An application service that refuses every transaction stays behind.
	fake := astest.NewAS(t, "hs-metrics")
	fake.OnTransaction(func(string) int { return http.StatusInternalServerError })
	reg := astest.Registration{ID: "bridge", URL: fake.URL, ASToken: "as-metrics", HSToken: "hs-metrics",
		SenderLocalpart: "bridgebot", Rooms: []astest.Namespace{{Regex: "!.*"}}}
	srv := testserver.Start(t, astest.Options(t, metricsOn, reg))
	alice := srv.Register("alice")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	srv.Settle()

	const sendRoute = "/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}"
	send := map[string]string{"method": "PUT", "route": sendRoute, "status": "2xx"}
	local := map[string]string{"origin": "local"}
	before := scrape(t, srv)
	if m := sample(before, "homeserver_http_requests_total", send); m != nil && m.Counter.GetValue() != 0 {
		t.Fatalf("sends counted before any: %v", m)
	}
	persisted := value(t, before, "homeserver_events_persisted_total", local)

	const n = 5
	for i := range n {
		alice.SendText(room, fmt.Sprintf("message %d", i))
	}
	if r := alice.Do("GET", "/_matrix/client/v3/no/such/endpoint/"+alice.Token, nil); r.Status != http.StatusNotFound {
		t.Fatalf("unknown endpoint: %d", r.Status)
	}
	// A long-poll that waits while the metrics are read.
	next := alice.Sync("timeout=0")["next_batch"].(string)
	polled := make(chan *testserver.Response, 1)
	go func() { polled <- alice.Do("GET", "/_matrix/client/v3/sync?timeout=60000&since="+next, nil) }()
	for srv.HS.Syncer.Parked() == 0 && len(polled) == 0 {
		runtime.Gosched()
	}
	srv.Settle()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := srv.HS.AppServices.Backoff(ctx, "bridge", 1); err != nil {
		t.Fatalf("waiting for the service's first refusal: %v", err)
	}
	after := scrape(t, srv)

	if got := value(t, after, "homeserver_http_requests_total", send); got != n {
		t.Errorf("sends counted: %v, want %d", got, n)
	}
	h := sample(after, "homeserver_http_request_duration_seconds", map[string]string{"method": "PUT", "route": sendRoute})
	if h == nil || h.Histogram == nil || h.Histogram.GetSampleCount() != n || !(h.Histogram.GetSampleSum() > 0) {
		t.Errorf("send latency histogram: %v, want %d samples", h, n)
	}
	// Unknown paths share one label, whatever they are: the token in this
	// one is in no label.
	if got := value(t, after, "homeserver_http_requests_total", map[string]string{"method": "GET", "route": "unmatched", "status": "4xx"}); got != 1 {
		t.Errorf("unmatched requests counted: %v, want 1", got)
	}
	if got := value(t, after, "homeserver_events_persisted_total", local) - persisted; got != n {
		t.Errorf("events persisted while sending: %v, want %d", got, n)
	}
	if got := value(t, after, "homeserver_sync_waiters", nil); got != 1 {
		t.Errorf("sync waiters: %v, want 1", got)
	}
	head := value(t, after, "homeserver_event_stream_position", nil)
	if want := float64(srv.HS.Syncer.Notifier().Current().Events); head != want {
		t.Errorf("event stream position: %v, want %v", head, want)
	}
	for _, w := range []struct {
		worker, queue string
		behind        bool
	}{
		{"notifications", "", false},
		{"pushers", "", false},
		{"appservice", "bridge", true}, // its transaction is refused
	} {
		labels := map[string]string{"worker": w.worker, "queue": w.queue}
		pos := value(t, after, "homeserver_worker_position", labels)
		lag := value(t, after, "homeserver_worker_lag_events", labels)
		if pos+lag != head || lag < 0 {
			t.Errorf("%s: position %v + lag %v != head %v", w.worker, pos, lag, head)
		}
		if behind := lag > 0; behind != w.behind {
			t.Errorf("%s: lag %v; want behind = %v", w.worker, lag, w.behind)
		}
	}
	// The only process on its database holds every lease (on PostgreSQL
	// it took them at start, nobody else asking).
	for _, lease := range []string{"notifications", "pushers", "appservices"} {
		if got := value(t, after, "homeserver_worker_lease_held", map[string]string{"lease": lease}); got != 1 {
			t.Errorf("lease %s held: %v, want 1", lease, got)
		}
	}
	for _, pool := range []string{"read", "write"} {
		labels := map[string]string{"pool": pool}
		for _, name := range []string{"max_connections", "open_connections", "in_use_connections", "idle_connections", "waits_total", "wait_seconds_total"} {
			value(t, after, "homeserver_db_pool_"+name, labels)
		}
	}
	// SQLite's single writer.
	if srv.Config.Database.Name == configs.EngineSQLite {
		if got := value(t, after, "homeserver_db_pool_max_connections", map[string]string{"pool": "write"}); got != 1 {
			t.Errorf("write pool max connections: %v, want 1", got)
		}
	}
	for _, name := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_resident_memory_bytes", "process_open_fds"} {
		value(t, after, name, nil)
	}

	// /health answers on the metrics listener too; the metrics never on
	// the client API's.
	resp, err := http.Get("http://" + srv.HS.MetricsAddr().String() + "/health")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != "OK" {
		t.Errorf("GET /health on the metrics listener: %d %q", resp.StatusCode, b)
	}
	if r := srv.Anonymous().Do("GET", "/metrics", nil); r.Status != http.StatusNotFound {
		t.Errorf("GET /metrics on the client API: %d, want 404", r.Status)
	}
	alice.SendText(room, "wake the poll")
	if r := <-polled; r.Status != http.StatusOK {
		t.Errorf("long-poll: %d %s", r.Status, r.Body)
	}
}

// TestMetricsOff: by default nothing listens for metrics, and the client
// API does not serve them.
func TestMetricsOff(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	if a := srv.HS.MetricsAddr(); a != nil {
		t.Errorf("metrics off, yet a metrics listener on %v", a)
	}
	if r := srv.Anonymous().Do("GET", "/metrics", nil); r.Status != http.StatusNotFound {
		t.Errorf("GET /metrics on the client API: %d, want 404", r.Status)
	}
}
