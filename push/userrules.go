package push

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/persistentchat/homeserver/roomdag"
)

// UserRules is what a user changed in their push rules: their own rules
// and their changes to server-default rules. It is stored as one document
// per user (rules are few and always read and written whole), and merged
// with Defaults on every read, so changes to the server defaults reach
// every user. The zero value is a user who changed nothing.
type UserRules struct {
	// Rules holds the user-defined rules by kind, most important first.
	Rules map[string][]Rule `json:"rules,omitempty"`
	// Changed holds, by kind and rule ID, the user's changes to
	// server-default rules.
	Changed map[string]map[string]DefaultChange `json:"changed,omitempty"`
}

// DefaultChange is a user's change to a server-default rule.
type DefaultChange struct {
	Enabled *bool `json:"enabled,omitempty"`
	// Actions replaces the rule's actions unless nil (null): an empty
	// array is a change too.
	Actions []any `json:"actions"`
}

// Errors of the UserRules operations.
var (
	// ErrNotFound: no such rule of that kind.
	ErrNotFound = errors.New("push: the push rule was not found")
	// ErrServerDefault: the operation needs a user-defined rule.
	ErrServerDefault = errors.New("push: server-default rules cannot be changed that way")
	// ErrUnknownKind: not one of Kinds.
	ErrUnknownKind = errors.New("push: unknown push rule kind")
)

// RelativeError: the before/after rule is not a user-defined rule of that
// kind (spec: rules cannot be placed relative to server-default rules).
type RelativeError struct{ RuleID string }

func (e *RelativeError) Error() string { return "before/after rule not found: " + e.RuleID }

// MaxRules bounds the user-defined rules of one user, all kinds together.
const MaxRules = 500

// ErrTooMany: the user has MaxRules rules already.
var ErrTooMany = fmt.Errorf("push: a user may have at most %d push rules", MaxRules)

// ErrTooLarge: the user's rules would take more than MaxRulesBytes.
var ErrTooLarge = fmt.Errorf("push: a user's push rules may take at most %d bytes", MaxRulesBytes)

// Encode is the document to store for u: its JSON, or ErrTooLarge.
func (u *UserRules) Encode() (json.RawMessage, error) {
	b, err := json.Marshal(u)
	if err == nil && len(b) > MaxRulesBytes {
		return nil, ErrTooLarge
	}
	return b, err
}

func knownKind(kind string) bool { return slices.Contains(Kinds, kind) }

// IsServerDefaultID reports whether a rule ID is reserved for server-default
// rules (spec: they MUST start with a dot).
func IsServerDefaultID(id string) bool { return strings.HasPrefix(id, ".") }

// Ruleset merges the user's changes with the server defaults: user-defined
// rules of a kind come before the defaults of that kind, except that
// .m.rule.master stays first (spec: "Predefined Rules").
func (u *UserRules) Ruleset(user roomdag.UserID) Ruleset {
	rs := Defaults(user)
	for _, kind := range Kinds {
		defs, _ := rs.ByKind(kind)
		defs = slices.Clone(defs)
		for i := range defs {
			if c, ok := u.Changed[kind][defs[i].RuleID]; ok {
				if c.Enabled != nil {
					defs[i].Enabled = *c.Enabled
				}
				if c.Actions != nil {
					defs[i].Actions = c.Actions
				}
			}
		}
		own := u.Rules[kind]
		merged := make([]Rule, 0, len(defs)+len(own))
		if kind == "override" && len(defs) > 0 && defs[0].RuleID == ".m.rule.master" {
			merged, defs = append(merged, defs[0]), defs[1:]
		}
		merged = append(merged, own...)
		merged = append(merged, defs...)
		rs.set(kind, merged)
	}
	return rs
}

func (rs *Ruleset) set(kind string, rules []Rule) {
	switch kind {
	case "override":
		rs.Override = rules
	case "content":
		rs.Content = rules
	case "room":
		rs.Room = rules
	case "sender":
		rs.Sender = rules
	case "underride":
		rs.Underride = rules
	}
}

func (u *UserRules) count() int {
	n := 0
	for _, rs := range u.Rules {
		n += len(rs)
	}
	return n
}

// Put adds or replaces a user-defined rule (spec: PUT
// /pushrules/global/{kind}/{ruleId}). A new rule is enabled and, without
// before or after, becomes the most important user-defined rule of its
// kind; a replaced rule keeps its enabled flag and, without before or
// after, its place. With both, before wins. The caller has validated r.
func (u *UserRules) Put(kind string, r Rule, before, after string) error {
	if !knownKind(kind) {
		return ErrUnknownKind
	}
	if IsServerDefaultID(r.RuleID) {
		return ErrServerDefault
	}
	list := u.Rules[kind]
	old := slices.IndexFunc(list, func(x Rule) bool { return x.RuleID == r.RuleID })
	r.Default = false
	r.Enabled = true
	if old >= 0 {
		r.Enabled = list[old].Enabled
	} else if u.count() >= MaxRules {
		return ErrTooMany
	}
	anchor := before
	if anchor == "" {
		anchor = after
	}
	if anchor != "" && (anchor == r.RuleID || !slices.ContainsFunc(list, func(x Rule) bool { return x.RuleID == anchor })) {
		return &RelativeError{anchor}
	}
	switch {
	case anchor == "" && old >= 0:
		list = slices.Clone(list)
		list[old] = r
	default:
		if old >= 0 {
			list = slices.Delete(slices.Clone(list), old, old+1)
		}
		at := 0
		if anchor != "" {
			at = slices.IndexFunc(list, func(x Rule) bool { return x.RuleID == anchor })
			if before == "" {
				at++
			}
		}
		list = slices.Insert(slices.Clone(list), at, r)
	}
	if u.Rules == nil {
		u.Rules = map[string][]Rule{}
	}
	u.Rules[kind] = list
	return nil
}

// Delete removes a user-defined rule: ErrServerDefault for a
// server-default rule, ErrNotFound if there is no such rule.
func (u *UserRules) Delete(user roomdag.UserID, kind, id string) error {
	if !knownKind(kind) {
		return ErrUnknownKind
	}
	list := u.Rules[kind]
	i := slices.IndexFunc(list, func(x Rule) bool { return x.RuleID == id })
	if i < 0 {
		if isDefault(user, kind, id) {
			return ErrServerDefault
		}
		return ErrNotFound
	}
	u.Rules[kind] = slices.Delete(slices.Clone(list), i, i+1)
	if len(u.Rules[kind]) == 0 {
		delete(u.Rules, kind)
	}
	return nil
}

// SetEnabled enables or disables a rule, user-defined or server-default.
func (u *UserRules) SetEnabled(user roomdag.UserID, kind, id string, enabled bool) error {
	return u.change(user, kind, id, func(r *Rule) { r.Enabled = enabled }, func(c *DefaultChange) { c.Enabled = &enabled })
}

// SetActions replaces a rule's actions, user-defined or server-default.
// The caller has validated actions.
func (u *UserRules) SetActions(user roomdag.UserID, kind, id string, actions []any) error {
	if actions == nil {
		actions = []any{}
	}
	return u.change(user, kind, id, func(r *Rule) { r.Actions = actions }, func(c *DefaultChange) { c.Actions = actions })
}

func (u *UserRules) change(user roomdag.UserID, kind, id string, own func(*Rule), def func(*DefaultChange)) error {
	if !knownKind(kind) {
		return ErrUnknownKind
	}
	list := u.Rules[kind]
	if i := slices.IndexFunc(list, func(x Rule) bool { return x.RuleID == id }); i >= 0 {
		list = slices.Clone(list)
		own(&list[i])
		u.Rules[kind] = list
		return nil
	}
	if !isDefault(user, kind, id) {
		return ErrNotFound
	}
	if u.Changed == nil {
		u.Changed = map[string]map[string]DefaultChange{}
	}
	if u.Changed[kind] == nil {
		u.Changed[kind] = map[string]DefaultChange{}
	}
	c := u.Changed[kind][id]
	def(&c)
	u.Changed[kind][id] = c
	return nil
}

func isDefault(user roomdag.UserID, kind, id string) bool {
	if !IsServerDefaultID(id) {
		return false
	}
	defs := Defaults(user)
	list, _ := defs.ByKind(kind)
	return slices.ContainsFunc(list, func(x Rule) bool { return x.RuleID == id })
}

// AccountDataContent is the content of a user's m.push_rules account data
// for their stored UserRules document (nil if they changed nothing):
// {"global": ruleset}, as GET /pushrules/ returns it. It is rendered from
// the document on every read, so a change to the server defaults reaches
// it too.
func AccountDataContent(user roomdag.UserID, doc json.RawMessage) (json.RawMessage, error) {
	var u UserRules
	if doc != nil {
		if err := json.Unmarshal(doc, &u); err != nil {
			return nil, fmt.Errorf("stored push rules of %s: %w", user, err)
		}
	}
	return json.Marshal(map[string]any{"global": u.Ruleset(user)})
}
