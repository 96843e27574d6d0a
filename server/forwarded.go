package server

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// forwardedFor makes each request's RemoteAddr the client address that
// the reverse proxy in front of the listener reports in X-Forwarded-For
// (config x_forwarded), so that rate limits, logs and the device list see
// the client rather than the proxy. Of the header's addresses it takes the
// last: each proxy appends the address it received the request from, so
// the last one is what the proxy next to us saw, while those before it
// are whatever the client sent and prove nothing. A header that does not
// end in an IP address leaves RemoteAddr as it is (the proxy's).
func forwardedFor(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ip, ok := lastForwarded(r.Header.Values("X-Forwarded-For")); ok {
			r2 := *r
			r2.RemoteAddr = net.JoinHostPort(ip.String(), "0")
			r = &r2
		}
		next.ServeHTTP(w, r)
	})
}

// lastForwarded is the last address of the X-Forwarded-For header lines
// (several lines count as one list, in order).
func lastForwarded(lines []string) (netip.Addr, bool) {
	if len(lines) == 0 {
		return netip.Addr{}, false
	}
	parts := strings.Split(lines[len(lines)-1], ",")
	ip, err := netip.ParseAddr(strings.TrimSpace(parts[len(parts)-1]))
	if err != nil {
		return netip.Addr{}, false
	}
	return ip.Unmap(), true
}
