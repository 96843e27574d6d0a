package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	gosync "sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/roomdag"
)

// Server discovery: where a server name is served, as "Resolving server
// names" of the server-server API lays down, step by step. The result
// says whom to dial, which name the TLS certificate must carry (and SNI
// sends), and what the Host header says; each step of the spec sets these
// differently.

// DNS is the name service discovery uses; *net.Resolver implements it.
// Tests pass a fake, so that no invented name is ever sent to a real DNS
// server.
type DNS interface {
	// LookupSRV is net.Resolver.LookupSRV: the records of
	// _service._proto.name, by priority (and weight, shuffled).
	LookupSRV(ctx context.Context, service, proto, name string) (string, []*net.SRV, error)
	// LookupNetIP is net.Resolver.LookupNetIP: host's addresses, through
	// CNAMEs.
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Target is a host and port to connect to.
type Target struct {
	// Host is an IP address (without brackets) or a DNS name to look up.
	Host string
	Port int
}

func (t Target) String() string { return net.JoinHostPort(t.Host, strconv.Itoa(t.Port)) }

// Route is how to reach a server: the targets to try in order, and the
// names the connection must carry.
type Route struct {
	Targets []Target
	// TLSName is the name the server's certificate must be valid for,
	// sent as SNI unless it is an IP address.
	TLSName string
	// HostHeader is the Host header of every request.
	HostHeader string
}

const (
	// defaultFederationPort: "If the hostname is an IP literal [...] or
	// no SRV record is found, [...] port 8448".
	defaultFederationPort = 8448
	// Well-known caching: "Servers should respect the cache control
	// headers present on the response, or use a sensible default when
	// headers are not present. The recommended sensible default is 24
	// hours. Servers should additionally impose a maximum cache time for
	// responses: 48 hours is recommended. Errors are recommended to be
	// cached for up to an hour, and servers are encouraged to
	// exponentially back off for repeated failures."
	wellKnownDefaultCache = 24 * time.Hour
	wellKnownMaxCache     = 48 * time.Hour
	// wellKnownMinCache keeps a response that says not to cache it (or
	// for a second) from making every request fetch it again, as Synapse
	// does with its own 5-minute floor.
	wellKnownMinCache = 5 * time.Minute
	// Failed lookups are cached for wellKnownErrorCache, doubling with
	// each failure in a row up to wellKnownMaxErrorCache.
	wellKnownErrorCache    = 2 * time.Minute
	wellKnownMaxErrorCache = time.Hour
	// maxWellKnown bounds the well-known document read; it holds one
	// name.
	maxWellKnown = 64 << 10
	// wellKnownTimeout bounds one lookup, redirects included.
	wellKnownTimeout = 20 * time.Second
	// maxWellKnownRedirects: "The target server may respond with 30x
	// redirects; implementations should follow them, taking care to
	// avoid redirect loops."
	maxWellKnownRedirects = 5
	// maxWellKnownCache bounds the servers whose lookups are remembered.
	maxWellKnownCache = 10000
)

// Resolver finds where servers are served. It is safe for concurrent use.
type Resolver struct {
	dns   DNS
	clock clock.Clock
	// wellKnown fetches https://<host>/.well-known/matrix/server; its
	// transport dials through the IP deny-list.
	wellKnown *http.Client
	// httpsPort is the port of the well-known request, 443; tests point
	// it at a local listener.
	httpsPort int

	fetches singleflight.Group
	mu      gosync.Mutex
	cache   map[string]wellKnownEntry
}

// wellKnownEntry is a remembered well-known lookup: the delegated server
// name, or the error, until expires.
type wellKnownEntry struct {
	delegated string
	err       error
	failures  int // in a row, for the back-off
	expires   time.Time
}

// newResolver returns a resolver using dns, fetching well-known documents
// with client (which must dial through the deny-list and follow at most
// a few redirects).
func newResolver(dns DNS, client *http.Client, clk clock.Clock) *Resolver {
	return &Resolver{dns: dns, clock: clk, wellKnown: client, httpsPort: 443, cache: map[string]wellKnownEntry{}}
}

// splitServerName splits a server name into its host (an IPv6 literal
// without brackets) and port (0 when there is none).
func splitServerName(name roomdag.ServerName) (host string, port int, ip bool, err error) {
	if _, err := roomdag.ParseServerName(string(name)); err != nil {
		return "", 0, false, fmt.Errorf("server name %q is not valid", name)
	}
	s := string(name)
	host = s
	if s[0] == '[' {
		end := strings.IndexByte(s, ']')
		host, s = s[1:end], s[end+1:]
		if s != "" {
			port, _ = strconv.Atoi(s[1:])
		}
		return host, port, true, nil
	}
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		host = s[:i]
		port, _ = strconv.Atoi(s[i+1:])
	}
	_, err = netip.ParseAddr(host)
	return host, port, err == nil, nil
}

// Resolve returns the route to the server named name, following the
// spec's steps in order.
func (r *Resolver) Resolve(ctx context.Context, name roomdag.ServerName) (Route, error) {
	host, port, ip, err := splitServerName(name)
	if err != nil {
		return Route{}, err
	}
	// Step 1: an IP literal is the address, on its port or 8448; the
	// Host header is the server name.
	// Step 2: a host name with an explicit port is that host on that
	// port; its certificate must be valid for the host name.
	if ip || port != 0 {
		if port == 0 {
			port = defaultFederationPort
		}
		return Route{Targets: []Target{{Host: host, Port: port}}, TLSName: host, HostHeader: string(name)}, nil
	}
	// Step 3: /.well-known/matrix/server may delegate the name.
	if delegated, err := r.lookupWellKnown(ctx, host); err == nil {
		return r.resolveDelegated(ctx, delegated)
	}
	// Steps 4 to 6: SRV records of the name itself, else port 8448.
	return r.resolveSRV(ctx, host), nil
}

// resolveDelegated is step 3 for a well-known answer of delegated
// (already checked to be a server name).
func (r *Resolver) resolveDelegated(ctx context.Context, delegated string) (Route, error) {
	host, port, ip, err := splitServerName(roomdag.ServerName(delegated))
	if err != nil {
		return Route{}, err
	}
	// 3.1: an IP literal, on its port or 8448; Host is the delegated
	// name. 3.2: a host name with a port; certificate and Host for the
	// delegated name.
	if ip || port != 0 {
		if port == 0 {
			port = defaultFederationPort
		}
		return Route{Targets: []Target{{Host: host, Port: port}}, TLSName: host, HostHeader: delegated}, nil
	}
	// 3.3 to 3.5: SRV records of the delegated host, else its port 8448.
	return r.resolveSRV(ctx, host), nil
}

// resolveSRV is steps 3.3 to 3.5 and 4 to 6: the SRV records
// _matrix-fed._tcp.<host>, else the deprecated _matrix._tcp.<host>, else
// host on port 8448. The certificate must be valid for host and the Host
// header is host, whatever targets the records give.
func (r *Resolver) resolveSRV(ctx context.Context, host string) Route {
	route := Route{TLSName: host, HostHeader: host}
	for _, service := range []string{"matrix-fed", "matrix"} {
		_, records, err := r.dns.LookupSRV(ctx, service, "tcp", host)
		if err != nil {
			continue
		}
		for _, rec := range records {
			// A target of "." says the service is not offered there
			// (RFC 2782).
			if t := strings.TrimSuffix(rec.Target, "."); t != "" {
				route.Targets = append(route.Targets, Target{Host: t, Port: int(rec.Port)})
			}
		}
		if len(route.Targets) > 0 {
			return route
		}
	}
	route.Targets = []Target{{Host: host, Port: defaultFederationPort}}
	return route
}

// errNoWellKnown wraps every reason a well-known lookup gives no
// delegation.
var errNoWellKnown = errors.New("no usable /.well-known/matrix/server")

// lookupWellKnown returns the server name host delegates to, from the
// cache while it lasts.
func (r *Resolver) lookupWellKnown(ctx context.Context, host string) (string, error) {
	now := r.clock.Now()
	r.mu.Lock()
	e, ok := r.cache[host]
	r.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.delegated, e.err
	}
	v, _, _ := r.fetches.Do(host, func() (any, error) {
		// A lookup started for one caller must not end when that caller
		// gives up: others wait on it.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), wellKnownTimeout)
		defer cancel()
		delegated, ttl, err := r.fetchWellKnown(ctx, host)
		n := wellKnownEntry{delegated: delegated, err: err}
		if err != nil {
			n.failures = e.failures + 1
			ttl = wellKnownErrorCache << min(n.failures-1, 10)
			ttl = min(ttl, wellKnownMaxErrorCache)
		}
		n.expires = r.clock.Now().Add(ttl)
		r.mu.Lock()
		if len(r.cache) >= maxWellKnownCache {
			r.evictExpired()
		}
		r.cache[host] = n
		r.mu.Unlock()
		return n, nil
	})
	n := v.(wellKnownEntry)
	return n.delegated, n.err
}

// evictExpired drops expired lookups, and everything if none had
// expired. The caller holds r.mu.
func (r *Resolver) evictExpired() {
	now := r.clock.Now()
	for h, e := range r.cache {
		if !now.Before(e.expires) {
			delete(r.cache, h)
		}
	}
	if len(r.cache) >= maxWellKnownCache {
		clear(r.cache)
	}
}

// fetchWellKnown fetches and checks host's well-known document, and says
// how long to keep the answer.
func (r *Resolver) fetchWellKnown(ctx context.Context, host string) (string, time.Duration, error) {
	u := "https://" + net.JoinHostPort(host, strconv.Itoa(r.httpsPort)) + "/.well-known/matrix/server"
	if r.httpsPort == 443 {
		u = "https://" + host + "/.well-known/matrix/server"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", 0, fmt.Errorf("%w: %v", errNoWellKnown, err)
	}
	resp, err := r.wellKnown.Do(req)
	if err != nil {
		return "", 0, fmt.Errorf("%w: %v", errNoWellKnown, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", 0, fmt.Errorf("%w: status %d", errNoWellKnown, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxWellKnown+1))
	if err != nil {
		return "", 0, fmt.Errorf("%w: %v", errNoWellKnown, err)
	}
	if len(body) > maxWellKnown {
		return "", 0, fmt.Errorf("%w: longer than %d bytes", errNoWellKnown, maxWellKnown)
	}
	var doc struct {
		Server *string `json:"m.server"`
	}
	if err := json.Unmarshal(body, &doc); err != nil || doc.Server == nil {
		return "", 0, fmt.Errorf("%w: not a JSON object with m.server", errNoWellKnown)
	}
	// "<delegated_hostname>[:<delegated_port>]": a server name.
	if _, err := roomdag.ParseServerName(*doc.Server); err != nil {
		return "", 0, fmt.Errorf("%w: m.server %q is not a server name", errNoWellKnown, *doc.Server)
	}
	return *doc.Server, cachePeriod(resp.Header, r.clock.Now()), nil
}

// cachePeriod is how long to keep a well-known response: Cache-Control's
// max-age, else Expires, else 24 hours, within the floor and the 48-hour
// cap.
func cachePeriod(h http.Header, now time.Time) time.Duration {
	d, found := time.Duration(0), false
	for _, cc := range h.Values("Cache-Control") {
		for dir := range strings.SplitSeq(cc, ",") {
			name, val, _ := strings.Cut(strings.TrimSpace(dir), "=")
			switch strings.ToLower(name) {
			case "no-store", "no-cache":
				d, found = 0, true
			case "max-age":
				if n, err := strconv.ParseInt(strings.Trim(val, `"`), 10, 64); err == nil && n >= 0 && !found {
					d, found = time.Duration(min(n, int64(wellKnownMaxCache/time.Second)))*time.Second, true
				}
			}
		}
	}
	if !found {
		if exp := h.Get("Expires"); exp != "" {
			// An Expires that does not parse means already expired (RFC
			// 9111 section 5.3).
			d, found = 0, true
			if t, err := http.ParseTime(exp); err == nil {
				d = t.Sub(now)
			}
		}
	}
	if !found {
		d = wellKnownDefaultCache
	}
	return min(max(d, wellKnownMinCache), wellKnownMaxCache)
}
