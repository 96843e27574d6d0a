// Package netguard keeps the connections the server makes on behalf of
// others (URL previews, push gateways) out of the network it runs in: an
// IP deny-list, with exceptions, checked on every address actually
// dialled.
//
// The check is a net.Dialer Control hook, which runs after name
// resolution and just before each connection attempt. So a host name that
// resolves into a denied range, a redirect to one, and DNS rebinding
// between an earlier check and the connection are all refused alike.
// Callers must not use a proxy (http.Transport.Proxy nil): the dialled
// address would then be the proxy's, not the destination's.
package netguard

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// ErrBlocked: the address is on the deny-list. Dial errors wrap it, so
// errors.Is finds it through the http.Client's error too.
var ErrBlocked = errors.New("IP address blocked")

// Guard is an IP deny-list with exceptions. The zero Guard blocks
// nothing. Its methods may be called concurrently; the lists must not be
// changed once it is in use.
type Guard struct {
	// Deny lists the ranges never connected to; Allow the ranges that may
	// be reached although Deny covers them.
	Deny, Allow []netip.Prefix
}

// Blocked reports whether Deny, less Allow, covers a. An IPv4-mapped IPv6
// address counts as its IPv4 address, and a zoned one (fe80::1%eth0) as
// the address without its zone: netip.Prefix.Contains never matches a
// zoned address, which would let it through.
func (g Guard) Blocked(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	for _, r := range g.Allow {
		if r.Contains(a) {
			return false
		}
	}
	for _, r := range g.Deny {
		if r.Contains(a) {
			return true
		}
	}
	return false
}

// Control is a net.Dialer Control hook: it refuses, with an error
// wrapping ErrBlocked, a connection to a blocked address. address is the
// resolved "ip:port" being dialled.
func (g Guard) Control(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("netguard: dialling a non-IP address %q", address)
	}
	if g.Blocked(a) {
		return fmt.Errorf("%w: %s", ErrBlocked, a)
	}
	return nil
}

// Dialer returns a dialer that connects only to addresses g does not
// block, giving up on a connection after timeout.
func (g Guard) Dialer(timeout time.Duration) *net.Dialer {
	return &net.Dialer{Timeout: timeout, Control: g.Control}
}
