package roomdag

import (
	"encoding/json"
	"testing"
)

func TestServerACL(t *testing.T) {
	for _, tc := range []struct {
		name    string
		content string
		server  ServerName
		want    bool
	}{
		{"allow star", `{"allow":["*"]}`, "example.org", true},
		{"no allow denies all", `{"deny":["evil.com"]}`, "example.org", false},
		{"empty content denies all", `{}`, "example.org", false},
		{"not an object denies all", `[1,2]`, "example.org", false},
		{"deny wins over allow", `{"allow":["*"],"deny":["evil.com"]}`, "evil.com", false},
		{"port ignored for deny", `{"allow":["*"],"deny":["evil.com"]}`, "evil.com:8448", false},
		{"port ignored for allow", `{"allow":["good.org"]}`, "good.org:1234", true},
		{"deny glob subdomains", `{"allow":["*"],"deny":["*.evil.com"]}`, "a.b.evil.com", false},
		{"deny glob is not the apex", `{"allow":["*"],"deny":["*.evil.com"]}`, "evil.com", true},
		{"question mark one char", `{"allow":["ser?er.org"]}`, "server.org", true},
		{"question mark not zero", `{"allow":["ser?er.org"]}`, "serer.org", false},
		{"case-insensitive pattern", `{"allow":["GOOD.org"]}`, "good.ORG", true},
		{"ip literals allowed by default", `{"allow":["*"]}`, "127.0.0.1:8448", true},
		{"ip literals denied", `{"allow":["*"],"allow_ip_literals":false}`, "127.0.0.1:8448", false},
		{"ipv6 literal denied", `{"allow":["*"],"allow_ip_literals":false}`, "[::1]:8448", false},
		{"ipv6 literal allowed by glob", `{"allow":["[::1]"]}`, "[::1]:8448", true},
		{"allow_ip_literals not a bool is true", `{"allow":["*"],"allow_ip_literals":"no"}`, "10.0.0.1", true},
		{"hostname not an ip literal", `{"allow":["*"],"allow_ip_literals":false}`, "1.example.org", true},
		{"ip literal matched by deny", `{"allow":["*"],"deny":["127.0.0.1"]}`, "127.0.0.1:5000", false},
		{"non-string entries skipped", `{"allow":[1,null,"ok.org"]}`, "ok.org", true},
		{"allow not a list", `{"allow":"*"}`, "ok.org", false},
		{"star in middle", `{"allow":["matrix.*.org"]}`, "matrix.x.y.org", true},
		{"star backtracks", `{"allow":["*a*b"]}`, "xaxxab", true},
		{"star no match", `{"allow":["*a*b"]}`, "xaxxa", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ParseServerACL(json.RawMessage(tc.content)).Allows(tc.server); got != tc.want {
				t.Errorf("ACL %s, server %s: allowed %v, want %v", tc.content, tc.server, got, tc.want)
			}
		})
	}
}

// TestServerAllowed: the ACL of a room's state, or none.
func TestServerAllowed(t *testing.T) {
	empty := ""
	acl := testEvent(t, TypeServerACL, &empty, "@alice:a.org", `{"allow":["*"],"deny":["evil.com"]}`)
	for _, tc := range []struct {
		name   string
		state  StateMap
		server ServerName
		want   bool
	}{
		{"no ACL allows all", StateMap{}, "evil.com", true},
		{"ACL denies", NewStateMap(acl), "evil.com:8448", false},
		{"ACL allows", NewStateMap(acl), "good.org", true},
	} {
		if got := ServerAllowed(tc.state, tc.server); got != tc.want {
			t.Errorf("%s: ServerAllowed(%s) = %v, want %v", tc.name, tc.server, got, tc.want)
		}
	}
}
