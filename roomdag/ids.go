package roomdag

import (
	"errors"
	"io"
	"strings"
)

// Identifiers get their own types so a room ID is never passed where a user
// ID belongs. Parse them at the edge; raw strings stop at the HTTP boundary.
// Spec: appendices, "Identifier Grammar".
type (
	UserID     string
	RoomID     string
	EventID    string
	RoomAlias  string
	ServerName string
)

// maxIDLength is the spec's limit on user IDs, room IDs and aliases.
const maxIDLength = 255

var errBadID = errors.New("malformed identifier")

// splitID splits "<sigil>local:server" and checks the common grammar.
func splitID(s string, sigil byte) (local string, server ServerName, err error) {
	if len(s) < 2 || len(s) > maxIDLength || s[0] != sigil {
		return "", "", errBadID
	}
	i := strings.IndexByte(s, ':')
	if i < 0 {
		return "", "", errBadID
	}
	local, host := s[1:i], s[i+1:]
	if !validServerName(host) {
		return "", "", errBadID
	}
	return local, ServerName(host), nil
}

// ParseUserID accepts historical user IDs (any printable ASCII but ':' in the
// localpart) because remote servers may still have them; new local users are
// checked with ValidLocalpart.
func ParseUserID(s string) (UserID, error) {
	local, _, err := splitID(s, '@')
	if err != nil || local == "" {
		return "", errBadID
	}
	for i := 0; i < len(local); i++ {
		if local[i] < 0x21 || local[i] > 0x7e {
			return "", errBadID
		}
	}
	return UserID(s), nil
}

// ValidLocalpart is the grammar for new user IDs: a-z 0-9 . _ = - /  and +.
func ValidLocalpart(l string) bool {
	if l == "" {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		ok := (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strings.IndexByte("._=-/+", c) >= 0
		if !ok {
			return false
		}
	}
	return true
}

// NewUserID builds a user ID from a checked localpart.
func NewUserID(localpart string, server ServerName) UserID {
	return UserID("@" + localpart + ":" + string(server))
}

func (u UserID) Localpart() string  { l, _, _ := splitID(string(u), '@'); return l }
func (u UserID) Server() ServerName { _, s, _ := splitID(string(u), '@'); return s }
func (u UserID) String() string     { return string(u) }

// ParseRoomID accepts both "!opaque:server" and v12's domainless "!hash".
func ParseRoomID(s string) (RoomID, error) {
	if len(s) < 2 || len(s) > maxIDLength || s[0] != '!' {
		return "", errBadID
	}
	if i := strings.IndexByte(s, ':'); i >= 0 && !validServerName(s[i+1:]) {
		return "", errBadID
	}
	return RoomID(s), nil
}

func (r RoomID) String() string { return string(r) }

// ParseRoomAlias parses "#alias:server".
func ParseRoomAlias(s string) (RoomAlias, error) {
	local, _, err := splitID(s, '#')
	if err != nil || local == "" {
		return "", errBadID
	}
	return RoomAlias(s), nil
}

func (a RoomAlias) Server() ServerName { _, s, _ := splitID(string(a), '#'); return s }
func (a RoomAlias) Localpart() string  { l, _, _ := splitID(string(a), '#'); return l }

// ParseEventID accepts "$opaque" (room v3+) and "$opaque:server" (v1, v2).
func ParseEventID(s string) (EventID, error) {
	if len(s) < 2 || len(s) > maxIDLength || s[0] != '$' {
		return "", errBadID
	}
	return EventID(s), nil
}

// server is the domain of a v1/v2 event ID ("$opaque:server"), "" for
// event IDs without one. The domain follows the first colon, as Synapse's
// get_domain_from_id reads it.
func (e EventID) server() string {
	if i := strings.IndexByte(string(e), ':'); i >= 0 {
		return string(e[i+1:])
	}
	return ""
}

// ParseServerName checks the server name grammar: a DNS name, IPv4 or
// [IPv6] literal, optionally followed by :port.
func ParseServerName(s string) (ServerName, error) {
	if !validServerName(s) {
		return "", errBadID
	}
	return ServerName(s), nil
}

func validServerName(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	host := s
	if s[0] == '[' {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return false
		}
		for _, c := range s[1:end] {
			if !(c == ':' || c == '.' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')) {
				return false
			}
		}
		host = ""
		s = s[end+1:]
		if s == "" {
			return true
		}
		if s[0] != ':' {
			return false
		}
		return validPort(s[1:])
	}
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		host = s[:i]
		if !validPort(s[i+1:]) {
			return false
		}
	}
	if host == "" {
		return false
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

func validPort(p string) bool {
	if p == "" || len(p) > 5 {
		return false
	}
	n := 0
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
		n = n*10 + int(p[i]-'0')
	}
	return n > 0 && n < 65536
}

// randomAlnum returns n letters and digits read from rand. Rejection
// sampling keeps the 62 symbols equally likely.
func randomAlnum(rand io.Reader, n int) (string, error) {
	const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	out := make([]byte, 0, n)
	var b [1]byte
	for len(out) < n {
		if _, err := io.ReadFull(rand, b[:]); err != nil {
			return "", err
		}
		if int(b[0]) < 256/len(alnum)*len(alnum) {
			out = append(out, alnum[int(b[0])%len(alnum)])
		}
	}
	return string(out), nil
}
