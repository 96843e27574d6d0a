// Package appservice is the homeserver side of the Application Service API
// (spec: "Application Service API"): registration files and the
// namespaces they claim, the per-service transaction queues that push
// committed events (and, when asked for, ephemeral events) to each
// service, and the homeserver-to-service queries (users, room aliases,
// third-party lookups, ping).
//
// The client-server extensions (as_token authentication, identity
// assertion, M_EXCLUSIVE, m.login.application_service) live in api, which
// uses the Registry defined here.
package appservice

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/roomdag"
)

// Registration is one application service, as its registration file
// describes it (spec: "Registration").
type Registration struct {
	// ID is unique among the server's services and never changes: the
	// transaction queue's stored position is kept under it.
	ID string
	// URL is where the service listens; "" (url: null in the file) means
	// the service wants no traffic: no transactions, queries or pings.
	URL string
	// ASToken authenticates the service to the homeserver, HSToken the
	// homeserver to the service. Neither can be printed or compared with ==.
	ASToken configs.Secret
	HSToken configs.Secret
	// Sender is the service's own user, @<sender_localpart>:<server>.
	Sender roomdag.UserID
	// Users, Aliases and Rooms are the namespaces the service claims.
	Users, Aliases, Rooms []Namespace
	// RateLimited subjects the service's virtual users (never Sender) to
	// the client rate limits. Default false.
	RateLimited bool
	// Protocols are the third-party protocols the service bridges.
	Protocols []string
	// ReceiveEphemeral asks for typing, receipts and presence in
	// transactions (spec v1.13, MSC2409).
	ReceiveEphemeral bool
	// File is the registration file it was read from ("" if built in code).
	File string

	server roomdag.ServerName
}

// Namespace is one regular expression of a namespace list. Exclusive
// namespaces are the service's alone: nobody else may register users or
// create aliases in them.
type Namespace struct {
	Regex     string
	Exclusive bool
	re        *regexp.Regexp
}

// Match reports whether the whole of s matches the namespace's regular
// expression. The expression is anchored at both ends: "@_irc_.*" covers
// "@_irc_bob:example.org" but "@_irc_" covers nothing more than itself.
// Anchoring keeps a careless pattern from claiming names it does not
// spell out.
func (n Namespace) Match(s string) bool { return n.re != nil && n.re.MatchString(s) }

func matchAny(ns []Namespace, s string, exclusiveOnly bool) bool {
	for _, n := range ns {
		if (!exclusiveOnly || n.Exclusive) && n.Match(s) {
			return true
		}
	}
	return false
}

// InUserNamespace reports whether u is a local user in the service's users
// namespaces. The sender is not, unless a namespace says so.
func (r *Registration) InUserNamespace(u roomdag.UserID) bool {
	return u.Server() == r.server && matchAny(r.Users, string(u), false)
}

// OwnsUser reports whether the service may act as u: its sender, or a
// local user in its users namespaces (spec: "Identity assertion").
func (r *Registration) OwnsUser(u roomdag.UserID) bool {
	return u == r.Sender || r.InUserNamespace(u)
}

// ExclusiveUser reports whether u is the service's sender or in one of its
// exclusive users namespaces.
func (r *Registration) ExclusiveUser(u roomdag.UserID) bool {
	return u == r.Sender || u.Server() == r.server && matchAny(r.Users, string(u), true)
}

// InAliasNamespace reports whether a is in the service's aliases
// namespaces.
func (r *Registration) InAliasNamespace(a roomdag.RoomAlias) bool {
	return matchAny(r.Aliases, string(a), false)
}

// ExclusiveAlias reports whether a is in one of the service's exclusive
// aliases namespaces.
func (r *Registration) ExclusiveAlias(a roomdag.RoomAlias) bool {
	return matchAny(r.Aliases, string(a), true)
}

// InRoomNamespace reports whether the room ID is in the service's rooms
// namespaces.
func (r *Registration) InRoomNamespace(id roomdag.RoomID) bool {
	return matchAny(r.Rooms, string(id), false)
}

// HasProtocol reports whether the service declares the third-party
// protocol.
func (r *Registration) HasProtocol(p string) bool {
	for _, q := range r.Protocols {
		if q == p {
			return true
		}
	}
	return false
}

// FieldError is one problem with one key of a registration file.
type FieldError struct {
	File  string
	Line  int    // 0 when the key is missing
	Field string // dotted key path, with [i] for list items
	Err   error
}

func (e *FieldError) Error() string {
	var b strings.Builder
	b.WriteString("appservice registration ")
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *FieldError) Unwrap() error { return e.Err }

// ReadFile reads and checks one registration file for a server.
func ReadFile(path string, server roomdag.ServerName) (*Registration, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("appservice registration: %w", err)
	}
	return Parse(data, path, server)
}

// Parse reads a registration from YAML. Every problem is reported at
// once, each naming the file, line and field. Keys this server does not
// know are ignored: bridges write vendor keys (io.element.msc4190,
// org.matrix.msc3202, ...) that other homeservers read.
func Parse(data []byte, file string, server roomdag.ServerName) (*Registration, error) {
	p := &parser{file: file}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			err = errors.New("the file is empty")
		}
		return nil, &FieldError{File: file, Err: err}
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, &FieldError{File: file, Line: root.Line, Err: errors.New("must be a mapping of keys to values")}
	}
	r := &Registration{File: file, server: server}
	keys := p.mapping(root, "")
	need := func(k string) *yaml.Node {
		n, ok := keys[k]
		if !ok {
			p.fail(nil, k, "is required")
		}
		return n
	}
	if n := need("id"); n != nil {
		r.ID = p.str(n, "id")
		if n.ShortTag() == "!!str" && r.ID == "" {
			p.fail(n, "id", "must not be empty")
		}
	}
	if n := need("url"); n != nil && !isNull(n) {
		r.URL = p.str(n, "url")
		if r.URL != "" {
			if err := checkURL(r.URL); err != nil {
				p.fail(n, "url", "%q: %v", r.URL, err)
			}
		} else if n.ShortTag() == "!!str" {
			p.fail(n, "url", "must not be empty; write null for a service that receives no traffic")
		}
	}
	r.ASToken = p.secret(need("as_token"), "as_token")
	r.HSToken = p.secret(need("hs_token"), "hs_token")
	if n := need("sender_localpart"); n != nil {
		l := p.str(n, "sender_localpart")
		if n.ShortTag() == "!!str" {
			if !roomdag.ValidLocalpart(l) {
				p.fail(n, "sender_localpart", "%q: must be a user ID localpart of a-z, 0-9 and ._=-/+", l)
			} else {
				r.Sender = roomdag.NewUserID(l, server)
			}
		}
	}
	if n := need("namespaces"); n != nil {
		if n.Kind != yaml.MappingNode {
			p.fail(n, "namespaces", "must be a mapping with users, aliases and rooms")
		} else {
			ns := p.mapping(n, "namespaces")
			for k := range ns {
				if k != "users" && k != "aliases" && k != "rooms" {
					p.fail(ns[k], "namespaces."+k, "unknown namespace (users, aliases or rooms)")
				}
			}
			r.Users = p.namespaces(ns["users"], "namespaces.users")
			r.Aliases = p.namespaces(ns["aliases"], "namespaces.aliases")
			r.Rooms = p.namespaces(ns["rooms"], "namespaces.rooms")
		}
	}
	if n, ok := keys["rate_limited"]; ok {
		r.RateLimited = p.boolean(n, "rate_limited")
	}
	if n, ok := keys["receive_ephemeral"]; ok {
		r.ReceiveEphemeral = p.boolean(n, "receive_ephemeral")
	} else if n, ok := keys["de.sorunome.msc2409.push_ephemeral"]; ok {
		// The unstable name of MSC2409, still written by older bridges.
		r.ReceiveEphemeral = p.boolean(n, "de.sorunome.msc2409.push_ephemeral")
	}
	if n, ok := keys["protocols"]; ok && !isNull(n) {
		if n.Kind != yaml.SequenceNode {
			p.fail(n, "protocols", "must be a list of protocol names")
		} else {
			for i, item := range n.Content {
				f := fmt.Sprintf("protocols[%d]", i)
				if s := p.str(item, f); item.ShortTag() == "!!str" {
					if s == "" || strings.ContainsAny(s, "/?#") {
						p.fail(item, f, "%q: must be a non-empty name without / ? #", s)
					} else {
						r.Protocols = append(r.Protocols, s)
					}
				}
			}
		}
	}
	if len(p.problems) > 0 {
		return nil, errors.Join(p.problems...)
	}
	return r, nil
}

type parser struct {
	file     string
	problems []error
}

func (p *parser) fail(n *yaml.Node, field, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	p.problems = append(p.problems, &FieldError{File: p.file, Line: line, Field: field, Err: fmt.Errorf(format, args...)})
}

// mapping returns a mapping's values by key, reporting duplicate keys.
func (p *parser) mapping(n *yaml.Node, path string) map[string]*yaml.Node {
	out := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		for v.Kind == yaml.AliasNode {
			v = v.Alias
		}
		f := k.Value
		if path != "" {
			f = path + "." + k.Value
		}
		if _, dup := out[k.Value]; dup {
			p.fail(k, f, "duplicate key")
			continue
		}
		out[k.Value] = v
	}
	return out
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" }

// str reads a string scalar; numbers and booleans are refused rather than
// converted, as in the homeserver's own configuration.
func (p *parser) str(n *yaml.Node, field string) string {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		p.fail(n, field, "must be a string (quote it)")
		return ""
	}
	return n.Value
}

func (p *parser) boolean(n *yaml.Node, field string) bool {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
		p.fail(n, field, "must be true or false")
		return false
	}
	return n.Value == "true" || n.Value == "True" || n.Value == "TRUE"
}

func (p *parser) secret(n *yaml.Node, field string) configs.Secret {
	var s configs.Secret
	if n == nil {
		return s
	}
	if err := s.UnmarshalYAML(n); err != nil {
		p.fail(n, field, "%v", err)
		return s
	}
	if s.IsZero() {
		p.fail(n, field, "must not be empty")
	}
	return s
}

// namespaces reads a namespace list: items of {regex, exclusive}, both
// required (spec: definitions/namespace_list.yaml).
func (p *parser) namespaces(n *yaml.Node, field string) []Namespace {
	if n == nil || isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.fail(n, field, "must be a list of {regex, exclusive}")
		return nil
	}
	var out []Namespace
	for i, item := range n.Content {
		f := fmt.Sprintf("%s[%d]", field, i)
		if item.Kind != yaml.MappingNode {
			p.fail(item, f, "must be a mapping with regex and exclusive")
			continue
		}
		keys := p.mapping(item, f)
		var ns Namespace
		ok := true
		if rn, has := keys["regex"]; !has {
			p.fail(item, f+".regex", "is required")
			ok = false
		} else if ns.Regex = p.str(rn, f+".regex"); rn.Kind == yaml.ScalarNode && rn.ShortTag() == "!!str" {
			re, err := regexp.Compile(`^(?:` + ns.Regex + `)$`)
			if err != nil {
				p.fail(rn, f+".regex", "%q: %v", ns.Regex, err)
				ok = false
			}
			ns.re = re
		} else {
			ok = false
		}
		if en, has := keys["exclusive"]; !has {
			p.fail(item, f+".exclusive", "is required (true or false)")
			ok = false
		} else {
			ns.Exclusive = p.boolean(en, f+".exclusive")
		}
		for k, v := range keys {
			if k != "regex" && k != "exclusive" {
				p.fail(v, f+"."+k, "unknown key (regex or exclusive)")
			}
		}
		if ok {
			out = append(out, ns)
		}
	}
	return out
}

// checkURL accepts an absolute http(s) URL, optionally with a path.
func checkURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return errors.New("not a URL")
	case u.Scheme != "http" && u.Scheme != "https":
		return errors.New("must start with http:// or https://")
	case u.Host == "":
		return errors.New("has no host")
	case u.RawQuery != "" || u.Fragment != "":
		return errors.New("must not have a query or fragment")
	}
	return nil
}
