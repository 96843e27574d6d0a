package testserver

import (
	"net"
	"testing"

	"github.com/persistentchat/homeserver/configs"
)

// Federation starts n homeservers that federate with each other over
// loopback: each named 127.0.0.1:PORT after its own TLS federation
// listener, so that the name resolves to it directly (server-server API,
// "Resolving server names", step 1), with a self-signed certificate in
// its data directory. They accept each other's self-signed certificates
// (federation_verify_certificates: false), may reach 127.0.0.1 although
// ip_range_blacklist covers loopback (ip_range_whitelist), and send
// federation requests to the members of the federation only
// (federation_domain_whitelist), so that a test never reaches out of the
// machine. opts applies to each server, after these settings (opts'
// Configure may widen them); opts.DataDir and ShareWith must be empty.
// Each server has its own database, on the engine of Engine.
func Federation(t testing.TB, n int, opts Options) []*Server {
	t.Helper()
	if opts.DataDir != "" || opts.ShareWith != nil {
		t.Fatal("Federation: DataDir and ShareWith apply to one server, not a federation")
	}
	// Every name is known before any server starts, for the whitelist.
	listeners := make([]net.Listener, n)
	names := make([]string, n)
	for i := range listeners {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			for _, l := range listeners[:i] {
				l.Close()
			}
			t.Fatalf("Federation: %v", err)
		}
		listeners[i], names[i] = l, l.Addr().String()
	}
	// Start fails the test on an error; the listeners of the servers not
	// yet started must not outlive it. (Closing a served one again is
	// harmless.)
	t.Cleanup(func() {
		for _, l := range listeners {
			l.Close()
		}
	})
	out := make([]*Server, 0, n)
	for i, l := range listeners {
		o := opts
		name := names[i]
		o.federationListener = l
		o.Configure = func(c *configs.Config) {
			c.ServerName = name
			c.FederationListen = name
			c.FederationVerifyCertificates = false
			c.IPRangeWhitelist = append(c.IPRangeWhitelist, "127.0.0.1/32")
			c.FederationDomainWhitelist = append([]string(nil), names...)
			if opts.Configure != nil {
				opts.Configure(c)
			}
		}
		out = append(out, Start(t, o))
	}
	return out
}

// Name is the server's name.
func (s *Server) Name() string { return s.Config.ServerName }
