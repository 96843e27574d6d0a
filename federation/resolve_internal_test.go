package federation

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/roomdag"
)

// fakeDNS answers from tables, so no invented name reaches a real DNS
// server. Every name it knows resolves to 127.0.0.1, where the test's
// well-known server listens.
type fakeDNS struct {
	mu  gosync.Mutex
	srv map[string][]*net.SRV // by "_service._proto.name"
	ips map[string]bool
}

func (d *fakeDNS) LookupSRV(_ context.Context, service, proto, name string) (string, []*net.SRV, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if r, ok := d.srv["_"+service+"._"+proto+"."+name]; ok {
		return "", r, nil
	}
	return "", nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (d *fakeDNS) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ips[host] {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// wellKnownServer serves /.well-known/matrix/server per host, counting
// the fetches.
type wellKnownServer struct {
	mu      gosync.Mutex
	docs    map[string]wellKnownDoc
	fetches map[string]int
}

type wellKnownDoc struct {
	status  int
	body    string
	headers map[string]string
}

func (s *wellKnownServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host, _, _ := net.SplitHostPort(r.Host)
	s.mu.Lock()
	s.fetches[host]++
	d, ok := s.docs[host]
	s.mu.Unlock()
	if !ok || r.URL.Path != "/.well-known/matrix/server" {
		http.NotFound(w, r)
		return
	}
	for k, v := range d.headers {
		w.Header().Set(k, v)
	}
	w.WriteHeader(d.status)
	w.Write([]byte(d.body))
}

func (s *wellKnownServer) set(host string, d wellKnownDoc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.docs[host] = d
}

func (s *wellKnownServer) count(host string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fetches[host]
}

func newTestResolver(t *testing.T, clk clock.Clock) (*Resolver, *fakeDNS, *wellKnownServer) {
	t.Helper()
	wk := &wellKnownServer{docs: map[string]wellKnownDoc{}, fetches: map[string]int{}}
	srv := httptest.NewTLSServer(wk)
	t.Cleanup(srv.Close)
	dns := &fakeDNS{srv: map[string][]*net.SRV{}, ips: map[string]bool{}}
	c := NewClient(ClientOptions{Key: testKey(t, "origin.test"), DNS: dns, Clock: clk})
	t.Cleanup(c.CloseIdleConnections)
	r := c.Resolver()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "https://"))
	r.httpsPort, _ = strconv.Atoi(port)
	return r, dns, wk
}

func ok(body string) wellKnownDoc { return wellKnownDoc{status: http.StatusOK, body: body} }

func TestResolve(t *testing.T) {
	for _, tc := range []struct {
		name      string
		server    string
		wellKnown map[string]wellKnownDoc
		srv       map[string][]*net.SRV
		want      Route
	}{
		// Step 1: IP literals, without DNS or well-known.
		{name: "IPv4 literal", server: "192.0.2.1", want: Route{[]Target{{"192.0.2.1", 8448}}, "192.0.2.1", "192.0.2.1"}},
		{name: "IPv4 literal with port", server: "192.0.2.1:1234", want: Route{[]Target{{"192.0.2.1", 1234}}, "192.0.2.1", "192.0.2.1:1234"}},
		{name: "IPv6 literal", server: "[2001:db8::1]", want: Route{[]Target{{"2001:db8::1", 8448}}, "2001:db8::1", "[2001:db8::1]"}},
		{name: "IPv6 literal with port", server: "[::1]:8449", want: Route{[]Target{{"::1", 8449}}, "::1", "[::1]:8449"}},
		// Step 2: an explicit port skips well-known and SRV.
		{name: "host with port", server: "hs.test:1234",
			wellKnown: map[string]wellKnownDoc{"hs.test": ok(`{"m.server":"other.test:1"}`)},
			want:      Route{[]Target{{"hs.test", 1234}}, "hs.test", "hs.test:1234"}},
		// Step 3: delegation.
		{name: "delegated to an IP", server: "hs.test",
			wellKnown: map[string]wellKnownDoc{"hs.test": ok(`{"m.server":"192.0.2.7"}`)},
			want:      Route{[]Target{{"192.0.2.7", 8448}}, "192.0.2.7", "192.0.2.7"}},
		{name: "delegated to an IP and port", server: "hs.test",
			wellKnown: map[string]wellKnownDoc{"hs.test": ok(`{"m.server":"[2001:db8::7]:9000"}`)},
			want:      Route{[]Target{{"2001:db8::7", 9000}}, "2001:db8::7", "[2001:db8::7]:9000"}},
		{name: "delegated to a host and port", server: "hs.test",
			wellKnown: map[string]wellKnownDoc{"hs.test": ok(`{"m.server":"fed.test:443"}`)},
			srv:       map[string][]*net.SRV{"_matrix-fed._tcp.fed.test": {{Target: "x.test.", Port: 1}}},
			want:      Route{[]Target{{"fed.test", 443}}, "fed.test", "fed.test:443"}},
		{name: "delegated, SRV _matrix-fed", server: "hs.test",
			wellKnown: map[string]wellKnownDoc{"hs.test": ok(`{"m.server":"fed.test"}`)},
			srv: map[string][]*net.SRV{
				"_matrix-fed._tcp.fed.test": {{Target: "a.test.", Port: 8001}, {Target: "b.test.", Port: 8002}},
				"_matrix._tcp.fed.test":     {{Target: "old.test.", Port: 1}},
			},
			want: Route{[]Target{{"a.test", 8001}, {"b.test", 8002}}, "fed.test", "fed.test"}},
		{name: "delegated, SRV _matrix only", server: "hs.test",
			wellKnown: map[string]wellKnownDoc{"hs.test": ok(`{"m.server":"fed.test"}`)},
			srv:       map[string][]*net.SRV{"_matrix._tcp.fed.test": {{Target: "old.test.", Port: 8003}}},
			want:      Route{[]Target{{"old.test", 8003}}, "fed.test", "fed.test"}},
		{name: "delegated, no SRV", server: "hs.test",
			wellKnown: map[string]wellKnownDoc{"hs.test": ok(`{"m.server":"fed.test"}`)},
			want:      Route{[]Target{{"fed.test", 8448}}, "fed.test", "fed.test"}},
		{name: "delegated, SRV says no service", server: "hs.test",
			wellKnown: map[string]wellKnownDoc{"hs.test": ok(`{"m.server":"fed.test"}`)},
			srv:       map[string][]*net.SRV{"_matrix-fed._tcp.fed.test": {{Target: ".", Port: 0}}},
			want:      Route{[]Target{{"fed.test", 8448}}, "fed.test", "fed.test"}},
		// Steps 4 to 6: no usable well-known.
		{name: "no well-known, SRV _matrix-fed", server: "hs.test",
			srv:  map[string][]*net.SRV{"_matrix-fed._tcp.hs.test": {{Target: "a.test.", Port: 8001}}},
			want: Route{[]Target{{"a.test", 8001}}, "hs.test", "hs.test"}},
		{name: "no well-known, SRV _matrix", server: "hs.test",
			srv:  map[string][]*net.SRV{"_matrix._tcp.hs.test": {{Target: "old.test", Port: 8003}}},
			want: Route{[]Target{{"old.test", 8003}}, "hs.test", "hs.test"}},
		{name: "no well-known, no SRV", server: "hs.test",
			want: Route{[]Target{{"hs.test", 8448}}, "hs.test", "hs.test"}},
		{name: "well-known not JSON", server: "hs.test",
			wellKnown: map[string]wellKnownDoc{"hs.test": ok(`<html>`)},
			want:      Route{[]Target{{"hs.test", 8448}}, "hs.test", "hs.test"}},
		{name: "well-known without m.server", server: "hs.test",
			wellKnown: map[string]wellKnownDoc{"hs.test": ok(`{"m.homeserver":"x"}`)},
			want:      Route{[]Target{{"hs.test", 8448}}, "hs.test", "hs.test"}},
		{name: "well-known with a bad name", server: "hs.test",
			wellKnown: map[string]wellKnownDoc{"hs.test": ok(`{"m.server":"a b:c"}`)},
			want:      Route{[]Target{{"hs.test", 8448}}, "hs.test", "hs.test"}},
		{name: "well-known error status", server: "hs.test",
			wellKnown: map[string]wellKnownDoc{"hs.test": {status: http.StatusInternalServerError, body: `{"m.server":"fed.test"}`}},
			want:      Route{[]Target{{"hs.test", 8448}}, "hs.test", "hs.test"}},
		{name: "well-known redirected", server: "hs.test",
			wellKnown: map[string]wellKnownDoc{
				"hs.test": {status: http.StatusFound, headers: map[string]string{"Location": "/.well-known/matrix/server?moved"}},
			},
			// The redirect leads back to hs.test, which redirects again,
			// until the limit: no delegation.
			want: Route{[]Target{{"hs.test", 8448}}, "hs.test", "hs.test"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, dns, wk := newTestResolver(t, clock.NewFake(time.Unix(1e9, 0)))
			dns.ips["hs.test"] = true
			for h, d := range tc.wellKnown {
				wk.set(h, d)
			}
			for k, v := range tc.srv {
				dns.srv[k] = v
			}
			got, err := r.Resolve(context.Background(), roomdag.ServerName(tc.server))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Resolve(%s) = %v, want %v", tc.server, got, tc.want)
			}
			if h, port, ip, _ := splitServerName(roomdag.ServerName(tc.server)); ip || port != 0 {
				if n := wk.count(h); n != 0 {
					t.Errorf("well-known fetched %d times for a name with an IP or port", n)
				}
			}
		})
	}
	r, _, _ := newTestResolver(t, clock.Real{})
	if _, err := r.Resolve(context.Background(), "not a name"); err == nil {
		t.Error("an invalid server name resolved")
	}
}

// TestWellKnownCache: a well-known answer is kept as its headers say,
// within the 48-hour cap and 24 hours by default; failures are kept for a
// while, longer after each failure in a row, up to an hour.
func TestWellKnownCache(t *testing.T) {
	clk := clock.NewFake(time.Unix(1e9, 0))
	r, dns, wk := newTestResolver(t, clk)
	ctx := context.Background()
	dns.ips["hs.test"] = true
	resolve := func() string {
		t.Helper()
		route, err := r.Resolve(ctx, "hs.test")
		if err != nil {
			t.Fatal(err)
		}
		return route.Targets[0].String()
	}
	expect := func(what string, wantTarget string, wantFetches int) {
		t.Helper()
		if got := resolve(); got != wantTarget {
			t.Errorf("%s: target %s, want %s", what, got, wantTarget)
		}
		if n := wk.count("hs.test"); n != wantFetches {
			t.Errorf("%s: %d fetches, want %d", what, n, wantFetches)
		}
	}

	// No cache headers: 24 hours.
	wk.set("hs.test", ok(`{"m.server":"192.0.2.1:1"}`))
	expect("first", "192.0.2.1:1", 1)
	wk.set("hs.test", ok(`{"m.server":"192.0.2.2:2"}`))
	clk.Advance(24*time.Hour - time.Second)
	expect("within a day", "192.0.2.1:1", 1)
	clk.Advance(time.Second)
	expect("after a day", "192.0.2.2:2", 2)

	// max-age, capped at 48 hours.
	wk.set("hs.test", wellKnownDoc{status: 200, body: `{"m.server":"192.0.2.3:3"}`, headers: map[string]string{"Cache-Control": "public, max-age=1000000"}})
	clk.Advance(24 * time.Hour)
	expect("max-age response", "192.0.2.3:3", 3)
	wk.set("hs.test", ok(`{"m.server":"192.0.2.4:4"}`))
	clk.Advance(48*time.Hour - time.Second)
	expect("within the cap", "192.0.2.3:3", 3)
	clk.Advance(time.Second)
	expect("at the cap", "192.0.2.4:4", 4)

	// Expires, an hour ahead.
	clk.Advance(24 * time.Hour)
	wk.set("hs.test", wellKnownDoc{status: 200, body: `{"m.server":"192.0.2.5:5"}`,
		headers: map[string]string{"Expires": clk.Now().Add(time.Hour).UTC().Format(http.TimeFormat)}})
	expect("expires response", "192.0.2.5:5", 5)
	clk.Advance(time.Hour)
	wk.set("hs.test", wellKnownDoc{status: http.StatusNotFound})
	// Failures: two minutes, then four, ... up to an hour.
	expect("first failure", "hs.test:8448", 6)
	wk.set("hs.test", ok(`{"m.server":"192.0.2.6:6"}`))
	clk.Advance(2*time.Minute - time.Second)
	expect("failure cached", "hs.test:8448", 6)
	wk.set("hs.test", wellKnownDoc{status: http.StatusNotFound})
	clk.Advance(time.Second)
	expect("second failure", "hs.test:8448", 7)
	clk.Advance(4*time.Minute - time.Second)
	expect("second failure cached longer", "hs.test:8448", 7)
	for range 10 {
		clk.Advance(time.Hour)
		resolve()
	}
	n := wk.count("hs.test")
	clk.Advance(time.Hour - time.Second)
	expect("failures cached at most an hour", "hs.test:8448", n)
	clk.Advance(time.Second)
	wk.set("hs.test", ok(`{"m.server":"192.0.2.6:6"}`))
	expect("recovered", "192.0.2.6:6", n+1)
}

func TestCachePeriod(t *testing.T) {
	now := time.Unix(1e9, 0)
	for _, tc := range []struct {
		headers map[string]string
		want    time.Duration
	}{
		{nil, 24 * time.Hour},
		{map[string]string{"Cache-Control": "max-age=3600"}, time.Hour},
		{map[string]string{"Cache-Control": "max-age=1"}, 5 * time.Minute},
		{map[string]string{"Cache-Control": "no-store"}, 5 * time.Minute},
		{map[string]string{"Cache-Control": "max-age=999999999999"}, 48 * time.Hour},
		{map[string]string{"Cache-Control": "max-age=7200", "Expires": now.Add(time.Hour).Format(http.TimeFormat)}, 2 * time.Hour},
		{map[string]string{"Expires": now.Add(3 * time.Hour).Format(http.TimeFormat)}, 3 * time.Hour},
		{map[string]string{"Expires": "garbage"}, 5 * time.Minute},
		{map[string]string{"Cache-Control": "max-age=bad"}, 24 * time.Hour},
	} {
		h := http.Header{}
		for k, v := range tc.headers {
			h.Set(k, v)
		}
		if got := cachePeriod(h, now); got != tc.want {
			t.Errorf("cachePeriod(%v) = %v, want %v", tc.headers, got, tc.want)
		}
	}
}

// TestWellKnownRedirect: a redirect to another https URL is followed; one
// to plain http is not.
func TestWellKnownRedirect(t *testing.T) {
	r, dns, wk := newTestResolver(t, clock.NewFake(time.Unix(1e9, 0)))
	dns.ips["hs.test"], dns.ips["moved.test"], dns.ips["plain.test"] = true, true, true
	port := strconv.Itoa(r.httpsPort)
	wk.set("hs.test", wellKnownDoc{status: http.StatusMovedPermanently,
		headers: map[string]string{"Location": "https://moved.test:" + port + "/.well-known/matrix/server"}})
	wk.set("moved.test", ok(`{"m.server":"192.0.2.9:9"}`))
	wk.set("plain.test", wellKnownDoc{status: http.StatusFound,
		headers: map[string]string{"Location": "http://moved.test:" + port + "/.well-known/matrix/server"}})
	for name, want := range map[roomdag.ServerName]string{"hs.test": "192.0.2.9:9", "plain.test": "plain.test:8448"} {
		route, err := r.Resolve(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		if got := route.Targets[0].String(); got != want {
			t.Errorf("%s: %s, want %s", name, got, want)
		}
	}
	if n := wk.count("moved.test"); n != 1 {
		t.Errorf("moved.test fetched %d times, want 1 (the https redirect only)", n)
	}
}
