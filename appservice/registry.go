package appservice

import (
	"errors"
	"fmt"

	"github.com/persistentchat/homeserver/roomdag"
)

// Registry is the server's set of application services, fixed at start.
// It is immutable and safe for concurrent use.
type Registry struct {
	server roomdag.ServerName
	regs   []*Registration
}

// Load reads every registration file and checks them together: a file
// that fails to parse, and two services sharing an ID, a token or a
// sender, are errors naming the files and fields (the spec requires
// unique IDs and as_tokens; the rest would make requests ambiguous).
func Load(files []string, server roomdag.ServerName) (*Registry, error) {
	var regs []*Registration
	var errs []error
	for _, f := range files {
		r, err := ReadFile(f, server)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		regs = append(regs, r)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return NewRegistry(server, regs)
}

// NewRegistry checks registrations for clashes and returns their registry.
func NewRegistry(server roomdag.ServerName, regs []*Registration) (*Registry, error) {
	var errs []error
	clash := func(field string, a, b *Registration) {
		errs = append(errs, &FieldError{File: b.File, Field: field,
			Err: fmt.Errorf("is the same as in %s (service %q); every service needs its own", a.File, a.ID)})
	}
	for i, b := range regs {
		b.server = server
		for _, a := range regs[:i] {
			if a.ID == b.ID {
				clash("id", a, b)
			}
			if a.ASToken.Equal(b.ASToken.Reveal()) {
				clash("as_token", a, b)
			}
			if a.HSToken.Equal(b.HSToken.Reveal()) {
				clash("hs_token", a, b)
			}
			if a.Sender == b.Sender {
				clash("sender_localpart", a, b)
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &Registry{server: server, regs: regs}, nil
}

// All returns every registration.
func (g *Registry) All() []*Registration {
	if g == nil {
		return nil
	}
	return g.regs
}

// ByASToken returns the service whose as_token is token, or nil. Every
// token is compared, each in constant time, so timing tells nothing about
// which one nearly matched.
func (g *Registry) ByASToken(token string) *Registration {
	var found *Registration
	for _, r := range g.All() {
		if r.ASToken.Equal(token) {
			found = r
		}
	}
	return found
}

// ByID returns the service with the ID, or nil.
func (g *Registry) ByID(id string) *Registration {
	for _, r := range g.All() {
		if r.ID == id {
			return r
		}
	}
	return nil
}

// ExclusiveUserOwner returns the service that holds u exclusively (as its
// sender or in an exclusive users namespace), or nil.
func (g *Registry) ExclusiveUserOwner(u roomdag.UserID) *Registration {
	for _, r := range g.All() {
		if r.ExclusiveUser(u) {
			return r
		}
	}
	return nil
}

// ExclusiveAliasOwner returns the service that holds alias a exclusively,
// or nil.
func (g *Registry) ExclusiveAliasOwner(a roomdag.RoomAlias) *Registration {
	for _, r := range g.All() {
		if r.ExclusiveAlias(a) {
			return r
		}
	}
	return nil
}

// MayClaimUser reports whether a caller may take the user ID u: reg is the
// calling service, or nil for a normal user. A service may take only users
// in its own namespaces, and nobody may take a user another service holds
// exclusively (spec: "Server admin style permissions").
func (g *Registry) MayClaimUser(reg *Registration, u roomdag.UserID) bool {
	if reg != nil && !reg.OwnsUser(u) {
		return false
	}
	owner := g.ExclusiveUserOwner(u)
	return owner == nil || owner == reg
}

// MayClaimAlias is MayClaimUser for room aliases.
func (g *Registry) MayClaimAlias(reg *Registration, a roomdag.RoomAlias) bool {
	if reg != nil && !reg.InAliasNamespace(a) {
		return false
	}
	owner := g.ExclusiveAliasOwner(a)
	return owner == nil || owner == reg
}

// UserQueryTargets returns the services to ask about an unknown local user:
// those with a URL whose users namespaces cover it.
func (g *Registry) UserQueryTargets(u roomdag.UserID) []*Registration {
	var out []*Registration
	for _, r := range g.All() {
		if r.URL != "" && r.InUserNamespace(u) {
			out = append(out, r)
		}
	}
	return out
}

// AliasQueryTargets returns the services to ask about an unknown local
// alias: those with a URL whose aliases namespaces cover it.
func (g *Registry) AliasQueryTargets(a roomdag.RoomAlias) []*Registration {
	var out []*Registration
	for _, r := range g.All() {
		if r.URL != "" && r.InAliasNamespace(a) {
			out = append(out, r)
		}
	}
	return out
}

// WithProtocol returns the services with a URL that declare protocol p;
// p == "" gives every service with a URL that declares any protocol.
func (g *Registry) WithProtocol(p string) []*Registration {
	var out []*Registration
	for _, r := range g.All() {
		if r.URL != "" && (p == "" && len(r.Protocols) > 0 || p != "" && r.HasProtocol(p)) {
			out = append(out, r)
		}
	}
	return out
}
