package federation

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/netguard"
	"github.com/persistentchat/homeserver/roomdag"
)

// tlsPeer is a federation server on a loopback TLS listener, named by
// its address, that checks each request's X-Matrix signature with the
// sender's key.
type tlsPeer struct {
	srv  *httptest.Server
	name roomdag.ServerName
	hits atomic.Int64
}

func startPeer(t *testing.T, sender roomdag.SigningKey, h http.HandlerFunc) *tlsPeer {
	t.Helper()
	p := &tlsPeer{}
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		x, err := ParseXMatrix(r.Header.Get("Authorization"))
		if err == nil {
			err = VerifyRequest(x, sender.Public(), p.name, r.Method, r.URL.RequestURI(), body)
		}
		switch {
		case err != nil:
			http.Error(w, "bad signature: "+err.Error(), http.StatusUnauthorized)
		case x.Origin != sender.ServerName || x.Destination != p.name:
			http.Error(w, "wrong origin or destination", http.StatusUnauthorized)
		case r.Host != string(p.name):
			// Step 1 of server discovery: Host is the server name.
			http.Error(w, "Host "+r.Host, http.StatusBadRequest)
		case h != nil:
			h(w, r)
		default:
			w.Write([]byte(`{"ok":true}`))
		}
	}))
	p.srv.StartTLS()
	t.Cleanup(p.srv.Close)
	p.name = roomdag.ServerName(strings.TrimPrefix(p.srv.URL, "https://"))
	return p
}

func testKey(t *testing.T, name roomdag.ServerName) roomdag.SigningKey {
	t.Helper()
	k, err := roomdag.GenerateSigningKey(name, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// noDNS fails a test that looks any name up: IP-literal names need none.
type noDNS struct{ t *testing.T }

func (d noDNS) LookupSRV(_ context.Context, service, proto, name string) (string, []*net.SRV, error) {
	d.t.Errorf("SRV lookup of _%s._%s.%s", service, proto, name)
	return "", nil, errors.New("no DNS in this test")
}

func (d noDNS) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	d.t.Errorf("address lookup of %s", host)
	return nil, errors.New("no DNS in this test")
}

func send(t *testing.T, c *HTTPClient, dest roomdag.ServerName, method, target, body string) (*http.Response, []byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(ctx, dest, req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

func TestClientSignsAndVerifies(t *testing.T) {
	key := testKey(t, "origin.test")
	peer := startPeer(t, key, nil)
	for _, tc := range []struct {
		name           string
		verify         bool
		trustPeer      bool
		wantCertRefuse bool
	}{
		{name: "verification off takes a self-signed certificate", verify: false},
		{name: "verification on refuses an unknown issuer", verify: true, wantCertRefuse: true},
		{name: "verification on takes a trusted certificate", verify: true, trustPeer: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := ClientOptions{Key: key, VerifyCertificates: tc.verify, DNS: noDNS{t}}
			if tc.trustPeer {
				o.RootCAs = x509.NewCertPool()
				o.RootCAs.AddCert(peer.srv.Certificate())
			}
			c := NewClient(o)
			defer c.CloseIdleConnections()
			// A body and a query string: both are covered by the signature.
			resp, body, err := send(t, c, peer.name, http.MethodPut, "/_matrix/federation/v1/send/t1?x=a%20b", `{"pdus":[],"edus":[]}`)
			var unknown x509.UnknownAuthorityError
			switch {
			case tc.wantCertRefuse && errors.As(err, &unknown):
			case tc.wantCertRefuse:
				t.Fatalf("err %v, want an unknown-authority error", err)
			case err != nil:
				t.Fatal(err)
			case resp.StatusCode != http.StatusOK:
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			// GET without a body.
			if !tc.wantCertRefuse {
				if resp, body, err := send(t, c, peer.name, http.MethodGet, "/_matrix/federation/v1/version", ""); err != nil || resp.StatusCode != http.StatusOK {
					t.Fatalf("GET: %v %v %s", err, resp, body)
				}
			}
		})
	}
}

func TestClientRefuses(t *testing.T) {
	key := testKey(t, "origin.test")
	peer := startPeer(t, key, nil)
	loopback := netip.MustParsePrefix("127.0.0.0/8")
	for _, tc := range []struct {
		name string
		o    ClientOptions
		dest roomdag.ServerName
		want error
	}{
		{"denied address", ClientOptions{Guard: netguard.Guard{Deny: []netip.Prefix{loopback}}}, peer.name, netguard.ErrBlocked},
		{"not whitelisted", ClientOptions{Allowed: func(s roomdag.ServerName) bool { return s == "other.test" }}, peer.name, ErrNotWhitelisted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := peer.hits.Load()
			tc.o.Key, tc.o.DNS = key, noDNS{t}
			_, _, err := send(t, NewClient(tc.o), tc.dest, http.MethodGet, "/_matrix/federation/v1/version", "")
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			if peer.hits.Load() != before {
				t.Error("the request reached the server")
			}
		})
	}
	// The exception opens the range again.
	c := NewClient(ClientOptions{Key: key, DNS: noDNS{t}, Guard: netguard.Guard{Deny: []netip.Prefix{loopback}, Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}})
	if resp, _, err := send(t, c, peer.name, http.MethodGet, "/x", ""); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("whitelisted loopback: %v", err)
	}
	// A full URL is not a request target.
	req, _ := http.NewRequest(http.MethodGet, "https://elsewhere.test/x", nil)
	if _, err := c.Do(context.Background(), peer.name, req); err == nil {
		t.Error("a request with a host was sent")
	}
	// A body that is not JSON cannot be signed.
	if _, _, err := send(t, c, peer.name, http.MethodPost, "/x", "not json"); err == nil {
		t.Error("a request with a non-JSON body was sent")
	}
}

func TestClientResponseLimit(t *testing.T) {
	key := testKey(t, "origin.test")
	big := strings.Repeat("x", 100)
	peer := startPeer(t, key, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/chunked" {
			w.Write([]byte(big[:50]))
			w.(http.Flusher).Flush() // no Content-Length: the limit is met while reading
		}
		w.Write([]byte(big[50:]))
	})
	c := NewClient(ClientOptions{Key: key, DNS: noDNS{t}, MaxResponseSize: 60})
	if _, _, err := send(t, c, peer.name, http.MethodGet, "/sized", ""); err != nil {
		t.Errorf("a 50-byte response under a 60-byte limit: %v", err)
	}
	if _, _, err := send(t, c, peer.name, http.MethodGet, "/chunked", ""); !errors.Is(err, ErrResponseTooLarge) {
		t.Errorf("a 100-byte streamed response: %v, want ErrResponseTooLarge", err)
	}
	c = NewClient(ClientOptions{Key: key, DNS: noDNS{t}, MaxResponseSize: 40})
	if _, _, err := send(t, c, peer.name, http.MethodGet, "/sized", ""); !errors.Is(err, ErrResponseTooLarge) {
		t.Errorf("a Content-Length of 50 under a 40-byte limit: %v, want ErrResponseTooLarge", err)
	}
	c = NewClient(ClientOptions{Key: key, DNS: noDNS{t}, MaxResponseSize: 50})
	if _, b, err := send(t, c, peer.name, http.MethodGet, "/sized", ""); err != nil || len(b) != 50 {
		t.Errorf("a response of exactly the limit: %d bytes, %v", len(b), err)
	}
}
