package federation

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
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

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/netguard"
	"github.com/persistentchat/homeserver/roomdag"
)

// The outbound federation transport: every request signed with X-Matrix
// ("Request Authentication"), sent over TLS ("TLS": "Server
// implementations MUST present a valid certificate"; federation is
// HTTPS only) to where discovery says the server is, and only to
// addresses the IP deny-list lets through.

// ErrNotWhitelisted: federation_domain_whitelist does not list the
// destination; nothing was sent.
var ErrNotWhitelisted = errors.New("destination not in federation_domain_whitelist")

// ErrResponseTooLarge: a response body passed ClientOptions.MaxResponseSize.
var ErrResponseTooLarge = errors.New("federation response too large")

const (
	// dialTimeout bounds one TCP connection attempt, tlsTimeout the
	// handshake after it.
	dialTimeout = 10 * time.Second
	tlsTimeout  = 10 * time.Second
	// responseHeaderTimeout bounds the wait for a response's headers once
	// the request is sent.
	responseHeaderTimeout = 60 * time.Second
	// defaultRequestTimeout bounds a whole request, body included, when
	// the caller's context has no deadline: a peer that trickles bytes
	// must not hold a connection forever.
	defaultRequestTimeout = 2 * time.Minute
	// defaultMaxResponse is the largest response read when the options
	// give none: the state of a big room (a /send_join or /state answer)
	// runs to tens of megabytes.
	defaultMaxResponse = 256 << 20
	// maxRequestBody bounds a request body the client signs (it is held
	// in memory, as the signature covers it).
	maxRequestBody = 64 << 20
	// maxTransports bounds the connection pools kept, one per route.
	maxTransports = 1024
)

// ClientOptions configure NewClient.
type ClientOptions struct {
	// Key signs every request, as its server.
	Key roomdag.SigningKey
	// Guard is the IP deny-list (ip_range_blacklist, less
	// ip_range_whitelist), checked on every address dialled, the
	// well-known lookup's included.
	Guard netguard.Guard
	// VerifyCertificates checks peers' certificates
	// (federation_verify_certificates); off, any certificate is taken.
	VerifyCertificates bool
	// RootCAs are the trusted roots; nil for the system's.
	RootCAs *x509.CertPool
	// Allowed says whether a destination may be sent to
	// (federation_domain_whitelist); nil allows every server.
	Allowed func(roomdag.ServerName) bool
	// DNS looks up names; nil for net.DefaultResolver.
	DNS DNS
	// MaxResponseSize bounds every response body; reading past it fails
	// with ErrResponseTooLarge. 0 for 256 MiB.
	MaxResponseSize int64
	// Clock times the well-known cache; nil for the real clock.
	Clock clock.Clock
}

// HTTPClient is the federation transport: a Client over HTTPS. It is safe
// for concurrent use.
type HTTPClient struct {
	key      roomdag.SigningKey
	allowed  func(roomdag.ServerName) bool
	resolver *Resolver
	maxResp  int64
	dialer   *dialer
	tls      *tls.Config // the base: each route sets its ServerName

	mu         gosync.Mutex
	transports map[string]*http.Transport // by route
}

// dialer connects to a host:port, looking the host up with dns, through
// the deny-list.
type dialer struct {
	dns DNS
	net *net.Dialer
}

// dial connects to address, trying each of the host's addresses in turn.
// The deny-list runs in the net.Dialer's Control hook, on the address
// actually dialled.
func (d *dialer) dial(ctx context.Context, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		if addrs, err = d.dns.LookupNetIP(ctx, "ip", host); err != nil {
			return nil, err
		}
	}
	var errs []error
	for _, a := range addrs {
		c, err := d.net.DialContext(ctx, network, net.JoinHostPort(a.Unmap().String(), port))
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("%s has no addresses", host)
	}
	return nil, errors.Join(errs...)
}

// NewClient returns the federation transport for o.
func NewClient(o ClientOptions) *HTTPClient {
	dns := o.DNS
	if dns == nil {
		dns = net.DefaultResolver
	}
	if o.MaxResponseSize <= 0 {
		o.MaxResponseSize = defaultMaxResponse
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	d := &dialer{dns: dns, net: o.Guard.Dialer(dialTimeout)}
	base := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: o.RootCAs,
		// Test federations only: peers' self-signed certificates.
		InsecureSkipVerify: !o.VerifyCertificates}
	// The well-known lookup is a plain HTTPS request to the server
	// name's host, with its certificate checked for that host (step 3).
	wk := &http.Client{
		Transport: &http.Transport{
			Proxy:               nil, // the deny-list must see the real destination
			DialContext:         d.dial,
			TLSClientConfig:     base.Clone(),
			TLSHandshakeTimeout: tlsTimeout,
			ForceAttemptHTTP2:   true,
			MaxIdleConns:        16,
			IdleConnTimeout:     time.Minute,
		},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= maxWellKnownRedirects {
				return fmt.Errorf("more than %d redirects", maxWellKnownRedirects)
			}
			if req.URL.Scheme != "https" {
				return errors.New("redirected away from https")
			}
			return nil
		},
	}
	return &HTTPClient{key: o.Key, allowed: o.Allowed, resolver: newResolver(dns, wk, o.Clock),
		maxResp: o.MaxResponseSize, dialer: d, tls: base, transports: map[string]*http.Transport{}}
}

// Resolver is the client's server discovery.
func (c *HTTPClient) Resolver() *Resolver { return c.resolver }

// Do implements Client: it signs req as from this server to dest, finds
// where dest is served and sends it there. req's body, if any, must be
// JSON (the signature covers it); req.URL holds the path and query only.
func (c *HTTPClient) Do(ctx context.Context, dest roomdag.ServerName, req *http.Request) (*http.Response, error) {
	if c.allowed != nil && !c.allowed(dest) {
		return nil, fmt.Errorf("federation to %s: %w", dest, ErrNotWhitelisted)
	}
	if req.URL.Host != "" || req.URL.Scheme != "" {
		return nil, fmt.Errorf("federation request URL %q: want only a path and query", req.URL)
	}
	var body []byte
	if req.Body != nil {
		b, err := io.ReadAll(io.LimitReader(req.Body, maxRequestBody+1))
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		if len(b) > maxRequestBody {
			return nil, fmt.Errorf("federation request body over %d bytes", maxRequestBody)
		}
		body = b
	}
	uri := req.URL.RequestURI()
	x, err := SignRequest(c.key, dest, req.Method, uri, body)
	if err != nil {
		return nil, fmt.Errorf("signing the request to %s: %w", dest, err)
	}
	route, err := c.resolver.Resolve(ctx, dest)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", dest, err)
	}
	cancel := context.CancelFunc(func() {})
	if _, ok := ctx.Deadline(); !ok {
		ctx, cancel = context.WithTimeout(ctx, defaultRequestTimeout)
	}
	out := req.Clone(ctx)
	out.URL.Scheme, out.URL.Host = "https", route.HostHeader
	out.Host = route.HostHeader
	out.Header.Set("Authorization", x.String())
	if body != nil {
		out.Body = io.NopCloser(bytes.NewReader(body))
		out.ContentLength = int64(len(body))
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		if out.Header.Get("Content-Type") == "" {
			out.Header.Set("Content-Type", "application/json")
		}
	}
	resp, err := c.transport(route).RoundTrip(out)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("federation request to %s: %w", dest, err)
	}
	if resp.ContentLength > c.maxResp {
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("%s answered %d bytes: %w", dest, resp.ContentLength, ErrResponseTooLarge)
	}
	resp.Body = &limitedBody{rc: resp.Body, left: c.maxResp, cancel: cancel}
	return resp, nil
}

// transport is the connection pool for route: it dials the route's
// targets in turn, whatever host the URL names, and checks the
// certificate for the route's TLS name.
func (c *HTTPClient) transport(route Route) *http.Transport {
	key := route.TLSName + "|" + route.HostHeader
	for _, t := range route.Targets {
		key += "|" + t.String()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.transports[key]; ok {
		return t
	}
	if len(c.transports) >= maxTransports {
		for _, t := range c.transports {
			t.CloseIdleConnections()
		}
		clear(c.transports)
	}
	cfg := c.tls.Clone()
	cfg.ServerName = route.TLSName
	targets := route.Targets
	t := &http.Transport{
		Proxy: nil, // the deny-list must see the real destination
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var errs []error
			for _, tg := range targets {
				conn, err := c.dialer.dial(ctx, network, net.JoinHostPort(tg.Host, strconv.Itoa(tg.Port)))
				if err == nil {
					return conn, nil
				}
				errs = append(errs, err)
			}
			return nil, errors.Join(errs...)
		},
		TLSClientConfig:       cfg,
		TLSHandshakeTimeout:   tlsTimeout,
		ResponseHeaderTimeout: responseHeaderTimeout,
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       90 * time.Second,
	}
	c.transports[key] = t
	return t
}

// CloseIdleConnections closes every idle connection, at shutdown.
func (c *HTTPClient) CloseIdleConnections() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.transports {
		t.CloseIdleConnections()
	}
	if t, ok := c.resolver.wellKnown.Transport.(*http.Transport); ok {
		t.CloseIdleConnections()
	}
}

// limitedBody fails a read past the response size limit, and ends the
// request's own timeout when closed.
type limitedBody struct {
	rc     io.ReadCloser
	left   int64
	cancel context.CancelFunc
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One byte more tells a body of exactly the limit from a longer one.
		var one [1]byte
		n, err := b.rc.Read(one[:])
		if n > 0 {
			return 0, ErrResponseTooLarge
		}
		return 0, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error {
	err := b.rc.Close()
	b.cancel()
	return err
}

var _ Client = (*HTTPClient)(nil)

// String is the route for logs.
func (r Route) String() string {
	hosts := make([]string, len(r.Targets))
	for i, t := range r.Targets {
		hosts[i] = t.String()
	}
	return strings.Join(hosts, ",") + " (tls " + r.TLSName + ", host " + r.HostHeader + ")"
}

// GetURL fetches a plain HTTPS URL, unsigned (the Location of a media
// download): through the IP deny-list as every request, following at
// most a few redirects, its body bounded as Do's.
func (c *HTTPClient) GetURL(ctx context.Context, rawURL string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, err
	}
	if req.URL.Scheme != "https" {
		return nil, fmt.Errorf("%q is not an https URL", rawURL)
	}
	cancel := context.CancelFunc(func() {})
	if _, ok := ctx.Deadline(); !ok {
		ctx, cancel = context.WithTimeout(ctx, defaultRequestTimeout)
		req = req.WithContext(ctx)
	}
	resp, err := c.resolver.wellKnown.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.ContentLength > c.maxResp {
		resp.Body.Close()
		cancel()
		return nil, ErrResponseTooLarge
	}
	resp.Body = &limitedBody{rc: resp.Body, left: c.maxResp, cancel: cancel}
	return resp, nil
}
