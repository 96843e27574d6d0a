package metrics

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

type fakePools []storage.PoolStats

func (f fakePools) Stats() []storage.PoolStats { return f }

func newTest(head roomdag.StreamPos, workers ...WorkerPosition) *Metrics {
	return newTestEvents(NewEvents("example.org"), head, workers...)
}

func newTestEvents(events *Events, head roomdag.StreamPos, workers ...WorkerPosition) *Metrics {
	return New(Sources{Events: events,
		Head: func() roomdag.StreamPos { return head }, SyncWaiters: func() int64 { return 3 },
		Workers: WorkersFunc(func() []WorkerPosition { return workers }),
		Pools:   fakePools{{Name: "read", MaxOpen: 8, Open: 2, InUse: 1, Idle: 1, WaitCount: 4}},
		Leases: LeasesFunc(func() []LeaseHold {
			return []LeaseHold{{Lease: "notifications", Held: true}, {Lease: "pushers"}}
		})})
}

// exposition scrapes m and returns its text.
func exposition(t *testing.T, m *Metrics) string {
	t.Helper()
	w := httptest.NewRecorder()
	m.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	if w.Code != http.StatusOK {
		t.Fatalf("scrape: %d %s", w.Code, w.Body)
	}
	return w.Body.String()
}

func wantLines(t *testing.T, text string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !strings.Contains(text, "\n"+l+"\n") {
			t.Errorf("the exposition lacks %q", l)
		}
	}
}

// TestMiddleware: requests are counted by the route pattern chi matched,
// method and status class; everything no route took shares one label,
// and made-up methods one method label.
func TestMiddleware(t *testing.T) {
	m := newTest(0)
	r := chi.NewRouter()
	r.Use(m.Middleware)
	r.Get("/rooms/{roomId}", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("fail") != "" {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok")) // an implicit 200
	})
	r.Put("/informational", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusEarlyHints) // interim, then the answer
		w.WriteHeader(http.StatusCreated)
	})
	r.Get("/nothing", func(http.ResponseWriter, *http.Request) {}) // writes nothing: 200
	for _, req := range []struct{ method, path string }{
		{"GET", "/rooms/a"}, {"GET", "/rooms/b"}, {"GET", "/rooms/c?fail=1"}, {"PUT", "/informational"},
		{"GET", "/nothing"}, {"GET", "/no/such/path"}, {"BREW", "/rooms/a"}, {"DELETE", "/rooms/a"},
	} {
		r.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(req.method, req.path, nil))
	}
	wantLines(t, exposition(t, m),
		`homeserver_http_requests_total{method="GET",route="/rooms/{roomId}",status="2xx"} 2`,
		`homeserver_http_requests_total{method="GET",route="/rooms/{roomId}",status="5xx"} 1`,
		`homeserver_http_requests_total{method="GET",route="/rooms/{roomId}",status="4xx"} 0`,
		`homeserver_http_request_duration_seconds_count{method="GET",route="/rooms/{roomId}"} 3`,
		`homeserver_http_requests_total{method="PUT",route="/informational",status="2xx"} 1`,
		`homeserver_http_requests_total{method="GET",route="/nothing",status="2xx"} 1`,
		`homeserver_http_requests_total{method="GET",route="unmatched",status="4xx"} 1`,
		`homeserver_http_requests_total{method="OTHER",route="unmatched",status="4xx"} 1`,
		`homeserver_http_requests_total{method="DELETE",route="unmatched",status="4xx"} 1`,
	)
}

// TestScrapeTimeMetrics: the gauges read their sources when scraped; a
// worker ahead of the head read after it has no negative lag.
func TestScrapeTimeMetrics(t *testing.T) {
	m := newTest(100,
		WorkerPosition{Worker: "notifications", Pos: 100},
		WorkerPosition{Worker: "appservice", Queue: "irc", Pos: 40},
		WorkerPosition{Worker: "pushers", Pos: 101})
	wantLines(t, exposition(t, m),
		`homeserver_event_stream_position 100`,
		`homeserver_sync_waiters 3`,
		`homeserver_worker_position{queue="",worker="notifications"} 100`,
		`homeserver_worker_lag_events{queue="",worker="notifications"} 0`,
		`homeserver_worker_position{queue="irc",worker="appservice"} 40`,
		`homeserver_worker_lag_events{queue="irc",worker="appservice"} 60`,
		`homeserver_worker_lag_events{queue="",worker="pushers"} 0`,
		`homeserver_db_pool_max_connections{pool="read"} 8`,
		`homeserver_db_pool_in_use_connections{pool="read"} 1`,
		`homeserver_db_pool_waits_total{pool="read"} 4`,
		`homeserver_worker_lease_held{lease="notifications"} 1`,
		`homeserver_worker_lease_held{lease="pushers"} 0`,
		`homeserver_events_persisted_total{origin="local"} 0`,
		`homeserver_events_persisted_total{origin="remote"} 0`,
	)
}

// TestEventsByOrigin: an event sent by one of the server's users is
// local, any other remote.
func TestEventsByOrigin(t *testing.T) {
	events := NewEvents("example.org")
	m := newTestEvents(events, 0)
	v, _ := roomdag.LookupRoomVersion("11")
	for i, sender := range []string{"@alice:example.org", "@bob:other.example", "@carol:example.org"} {
		ev, err := roomdag.EventFromTrustedJSON(v, roomdag.EventID("$e"+string(rune('a'+i))),
			[]byte(`{"type":"m.room.message","room_id":"!r:example.org","sender":"`+sender+`","content":{},"origin_server_ts":1,"depth":1,"prev_events":[],"auth_events":[]}`))
		if err != nil {
			t.Fatal(err)
		}
		events.EventCommitted(ev, roomdag.StreamPos(i+1))
	}
	wantLines(t, exposition(t, m),
		`homeserver_events_persisted_total{origin="local"} 2`,
		`homeserver_events_persisted_total{origin="remote"} 1`)
}

// BenchmarkMiddleware: what the request metrics add to a routed request
// that does nothing: sequential, then in parallel (the route's counters
// are shared).
func BenchmarkMiddleware(b *testing.B) {
	for _, parallel := range []bool{false, true} {
		for _, on := range []bool{false, true} {
			b.Run(fmt.Sprintf("parallel=%v/metrics=%v", parallel, on), func(b *testing.B) {
				r := chi.NewRouter()
				if on {
					r.Use(newTest(0).Middleware)
				}
				r.Put("/rooms/{roomId}/send/{eventType}/{txnId}", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
				serve := func(loop func() bool) {
					req := httptest.NewRequest("PUT", "/rooms/!a:b/send/m.room.message/1", nil)
					for loop() {
						r.ServeHTTP(httptest.NewRecorder(), req)
					}
				}
				b.ReportAllocs()
				if parallel {
					b.RunParallel(func(pb *testing.PB) { serve(pb.Next) })
				} else {
					serve(b.Loop)
				}
			})
		}
	}
}
