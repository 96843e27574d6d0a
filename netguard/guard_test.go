package netguard

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

func testGuard() Guard {
	return Guard{
		Deny: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128"),
			netip.MustParsePrefix("fe80::/10")},
		Allow: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")},
	}
}

func TestBlocked(t *testing.T) {
	g := testGuard()
	for addr, want := range map[string]bool{
		"127.0.0.1": true, "127.9.9.9": true, "::ffff:127.0.0.1": true, "::1": true,
		"10.2.3.4": true, "10.1.2.3": false, "8.8.8.8": false, "2001:4860::8888": false,
		"fe80::1": true, "fe80::1%eth0": true, "::ffff:10.1.2.3": false,
	} {
		if got := g.Blocked(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Blocked(%s) = %v, want %v", addr, got, want)
		}
		err := g.Control("tcp", netip.AddrPortFrom(netip.MustParseAddr(addr), 80).String(), nil)
		if (err != nil) != want || want && !errors.Is(err, ErrBlocked) {
			t.Errorf("Control(%s) = %v, want blocked %v", addr, err, want)
		}
	}
	if err := g.Control("tcp", "example.org:80", nil); err == nil || errors.Is(err, ErrBlocked) {
		t.Errorf("Control with a host name = %v, want a refusal that is not ErrBlocked", err)
	}
	if (Guard{}).Blocked(netip.MustParseAddr("127.0.0.1")) {
		t.Error("the zero Guard blocks loopback")
	}
}

// A real dial to a listener on a denied address fails with ErrBlocked
// (which only the Control hook, run before connecting, returns); with an
// exception it connects.
func TestDialerRefusesBeforeConnecting(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	if c, err := testGuard().Dialer(5*time.Second).DialContext(ctx, "tcp", l.Addr().String()); !errors.Is(err, ErrBlocked) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("dial to a denied address: %v, want ErrBlocked", err)
	}
	g := testGuard()
	g.Allow = append(g.Allow, netip.MustParsePrefix("127.0.0.1/32"))
	c, err := g.Dialer(5*time.Second).DialContext(ctx, "tcp", l.Addr().String())
	if err != nil {
		t.Fatalf("dial to an allowed address: %v", err)
	}
	c.Close()
}
