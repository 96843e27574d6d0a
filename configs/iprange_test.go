package configs

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// ip_range_blacklist and ip_range_whitelist (outbound requests such as
// pushes) load like the URL preview lists and are checked the same way.
func TestLoadOutboundIPRanges(t *testing.T) {
	c, err := Load(writeConfig(t, `
ip_range_blacklist: ["10.0.0.0/8", "fd00::1/8"]
ip_range_whitelist: ["10.1.2.3"]
`))
	if err != nil {
		t.Fatal(err)
	}
	deny, allow := c.IPRanges()
	if want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}; !reflect.DeepEqual(deny, want) {
		t.Errorf("deny = %v, want %v", deny, want)
	}
	if want := []netip.Prefix{netip.MustParsePrefix("10.1.2.3/32")}; !reflect.DeepEqual(allow, want) {
		t.Errorf("allow = %v, want %v", allow, want)
	}
	// The URL preview lists are separate settings.
	if pdeny, _ := c.URLPreviewIPRanges(); len(pdeny) != len(DefaultIPRangeBlacklist()) {
		t.Errorf("url preview deny-list changed with ip_range_blacklist: %v", pdeny)
	}

	for _, tc := range []struct{ body, field string }{
		{`ip_range_blacklist: ["10.0.0.0/8", "10.0.0.0/33"]`, "ip_range_blacklist[1]"},
		{`ip_range_whitelist: ["gateway.internal"]`, "ip_range_whitelist[0]"},
	} {
		_, err := Load(writeConfig(t, tc.body+"\n"))
		var e *Error
		if !errors.As(err, &e) || len(e.Problems) != 1 || e.Problems[0].Field != tc.field ||
			!strings.Contains(e.Problems[0].Err.Error(), "not an IP range") {
			t.Errorf("%s: error %v, want one problem at %s", tc.body, err, tc.field)
		}
	}
}

// By default outbound requests are denied what URL previews are.
func TestDefaultOutboundIPRanges(t *testing.T) {
	c := Default()
	deny, allow := c.IPRanges()
	pdeny, pallow := c.URLPreviewIPRanges()
	if len(deny) == 0 || !reflect.DeepEqual(deny, pdeny) || len(allow) != 0 || len(pallow) != 0 {
		t.Errorf("default outbound ranges %v / %v, want the URL preview list %v and no exceptions", deny, allow, pdeny)
	}
	if !slicesContain(deny, netip.MustParseAddr("127.0.0.1")) || !slicesContain(deny, netip.MustParseAddr("::1")) {
		t.Errorf("default outbound deny-list lets loopback through: %v", deny)
	}
}

func slicesContain(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
