package configs

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestLoadURLPreviewAndPresence(t *testing.T) {
	path := writeConfig(t, `
url_preview_enabled: true
url_preview_ip_range_blacklist: ["10.0.0.0/8", "fd00::1/8", "192.0.2.7"]
url_preview_ip_range_whitelist: ["10.1.2.3"]
max_spider_size: "2M"
presence:
  enabled: false
`)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !c.URLPreviewEnabled || c.MaxSpiderSize != 2*MiB || c.Presence.Enabled {
		t.Errorf("loaded %+v", c)
	}
	deny, allow := c.URLPreviewIPRanges()
	wantDeny := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8"), netip.MustParsePrefix("192.0.2.7/32")}
	if !reflect.DeepEqual(deny, wantDeny) {
		t.Errorf("deny = %v, want %v (host bits cleared, single addresses as ranges of one)", deny, wantDeny)
	}
	if want := []netip.Prefix{netip.MustParsePrefix("10.1.2.3/32")}; !reflect.DeepEqual(allow, want) {
		t.Errorf("allow = %v, want %v", allow, want)
	}
}

func TestDefaultURLPreviewBlacklistCoversPrivateRanges(t *testing.T) {
	c := Default()
	deny, allow := c.URLPreviewIPRanges()
	if len(deny) != len(c.URLPreviewIPRangeBlacklist) || len(allow) != 0 {
		t.Fatalf("default ranges do not all parse: %v", c.URLPreviewIPRangeBlacklist)
	}
	covered := func(a netip.Addr) bool {
		for _, p := range deny {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	for _, s := range []string{"127.0.0.1", "10.1.2.3", "172.31.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
		"0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "::", "fe80::1", "fd12::1", "ff02::1", "64:ff9b::7f00:1"} {
		if !covered(netip.MustParseAddr(s)) {
			t.Errorf("default blacklist lets %s through", s)
		}
	}
	for _, s := range []string{"8.8.8.8", "1.1.1.1", "2606:4700::1111"} {
		if covered(netip.MustParseAddr(s)) {
			t.Errorf("default blacklist blocks the public address %s", s)
		}
	}
}

func TestLoadURLPreviewErrors(t *testing.T) {
	for _, tc := range []struct{ body, field, msg string }{
		{`url_preview_ip_range_blacklist: ["10.0.0.0/8", "10.0.0.0/33"]`, "url_preview_ip_range_blacklist[1]", "not an IP range"},
		{`url_preview_ip_range_whitelist: ["intranet.example"]`, "url_preview_ip_range_whitelist[0]", "not an IP range"},
		{`url_preview_ip_range_whitelist: ["fe80::1%eth0"]`, "url_preview_ip_range_whitelist[0]", "zone"},
		{`max_spider_size: 0`, "max_spider_size", "at least 1"},
	} {
		_, err := Load(writeConfig(t, tc.body+"\n"))
		var e *Error
		if !errors.As(err, &e) || len(e.Problems) != 1 {
			t.Errorf("%s: error %v, want one problem", tc.body, err)
			continue
		}
		if p := e.Problems[0]; p.Field != tc.field || !strings.Contains(p.Err.Error(), tc.msg) {
			t.Errorf("%s: problem %v at %q, want %q about %q", tc.body, p.Err, p.Field, tc.field, tc.msg)
		}
	}
}
