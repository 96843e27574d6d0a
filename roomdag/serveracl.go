package roomdag

import (
	"encoding/json"
	"net/netip"
	"strings"
)

// ServerACL is the content of an m.room.server_acl event, parsed once
// (spec: client-server API, "Server Access Control Lists (ACLs) for
// rooms"; the event schema lists the rules Allows applies).
type ServerACL struct {
	allow, deny     []string // lower-cased glob patterns
	allowIPLiterals bool
}

// ParseServerACL reads an m.room.server_acl content leniently, as the
// schema's defaults say: allow_ip_literals is true unless it is the
// boolean false; a missing or malformed allow or deny is an empty list;
// entries that are not strings are skipped. It never fails: an ACL that
// cannot be read at all allows nobody (its allow list is empty).
func ParseServerACL(content json.RawMessage) *ServerACL {
	var c struct {
		Allow           json.RawMessage `json:"allow"`
		Deny            json.RawMessage `json:"deny"`
		AllowIPLiterals json.RawMessage `json:"allow_ip_literals"`
	}
	acl := &ServerACL{allowIPLiterals: true}
	if json.Unmarshal(content, &c) != nil {
		return acl
	}
	var b bool
	if json.Unmarshal(c.AllowIPLiterals, &b) == nil && !b {
		acl.allowIPLiterals = false
	}
	acl.allow = aclPatterns(c.Allow)
	acl.deny = aclPatterns(c.Deny)
	return acl
}

func aclPatterns(raw json.RawMessage) []string {
	var items []json.RawMessage
	if json.Unmarshal(raw, &items) != nil {
		return nil
	}
	var out []string
	for _, it := range items {
		var s string
		if json.Unmarshal(it, &s) == nil {
			out = append(out, strings.ToLower(s))
		}
	}
	return out
}

// Allows applies the ACL to server, in the schema's order: an IP literal
// is denied when allow_ip_literals is false; then a match in deny denies,
// a match in allow allows, and anything else is denied. The port is not
// considered ("evil.com:1234" matches rules for "evil.com"); globs match
// case-insensitively, '*' any run of characters and '?' exactly one.
func (a *ServerACL) Allows(server ServerName) bool {
	host := strings.ToLower(serverHost(string(server)))
	if !a.allowIPLiterals && isIPLiteral(host) {
		return false
	}
	for _, p := range a.deny {
		if globMatch(p, host) {
			return false
		}
	}
	for _, p := range a.allow {
		if globMatch(p, host) {
			return true
		}
	}
	return false
}

// ServerAllowed reports whether the room whose state is state lets server
// take part (rule 1: a room without an m.room.server_acl allows every
// server). Inbound federation applies it to every room-scoped request and
// to each PDU and room EDU of a transaction.
func ServerAllowed(state AuthState, server ServerName) bool {
	ev := state.Get(TypeServerACL, "")
	if ev == nil {
		return true
	}
	return ParseServerACL(ev.Content()).Allows(server)
}

// serverHost is a server name without its port; an IPv6 literal keeps its
// brackets, as server names write it and ACLs match it.
func serverHost(s string) string {
	if strings.HasPrefix(s, "[") {
		if end := strings.IndexByte(s, ']'); end >= 0 {
			return s[:end+1]
		}
		return s
	}
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		return s[:i]
	}
	return s
}

// isIPLiteral: a dotted IPv4 address or a bracketed IPv6 one (or, for a
// name written carelessly, a bare IPv6 address).
func isIPLiteral(host string) bool {
	h := strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	_, err := netip.ParseAddr(h)
	return err == nil
}

// globMatch matches text against a glob of '*' and '?', in time linear in
// their lengths' product at worst (the usual backtrack to the last star,
// never exponential).
func globMatch(pattern, text string) bool {
	p, t := 0, 0
	star, mark := -1, 0
	for t < len(text) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == text[t]):
			p++
			t++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, t
			p++
		case star >= 0:
			p = star + 1
			mark++
			t = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
