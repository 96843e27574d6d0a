// Package push holds push rules (spec: client-server API, "Push Rules"):
// the types, the server-default rule set (Defaults), a user's changes to it
// (UserRules, merged with the defaults on every read), evaluation
// (Evaluate), and the notification worker (Worker) that runs it for every
// committed event. Everything but the worker is pure: no I/O, no clock; the
// worker reaches storage through the small Store interface it declares.
// Pushers (HTTP push gateways) are still to come.
package push

import (
	"encoding/json"
	"slices"

	"github.com/persistentchat/homeserver/roomdag"
)

// Kinds of rules, in the order they are evaluated.
var Kinds = []string{"override", "content", "room", "sender", "underride"}

// Rule is one push rule.
type Rule struct {
	RuleID     string      `json:"rule_id"`
	Default    bool        `json:"default"`
	Enabled    bool        `json:"enabled"`
	Conditions []Condition `json:"conditions,omitempty"`
	Pattern    string      `json:"pattern,omitempty"`
	Actions    []any       `json:"actions"`
	// glob is Pattern compiled (Ruleset.compile), nil until then.
	glob *glob
}

// ruleJSON is Rule as written: conditions whenever Conditions is not nil,
// even empty.
type ruleJSON struct {
	RuleID     string       `json:"rule_id"`
	Default    bool         `json:"default"`
	Enabled    bool         `json:"enabled"`
	Conditions *[]Condition `json:"conditions,omitempty"`
	Pattern    string       `json:"pattern,omitempty"`
	Actions    []any        `json:"actions"`
}

// MarshalJSON writes the rule with its conditions unless Conditions is
// nil: an empty list is written as [] (ForKind says which kinds have
// one).
func (r Rule) MarshalJSON() ([]byte, error) {
	j := ruleJSON{RuleID: r.RuleID, Default: r.Default, Enabled: r.Enabled, Pattern: r.Pattern, Actions: r.Actions}
	if r.Conditions != nil {
		j.Conditions = &r.Conditions
	}
	return json.Marshal(j)
}

// ForKind returns the rule as clients get it among the rules of kind, as
// Synapse serves it (push/clientformat.py): override and underride rules
// always with their conditions, [] when they have none (.m.rule.master),
// and content, room and sender rules without any.
func (r Rule) ForKind(kind string) Rule {
	switch kind {
	case "override", "underride":
		if r.Conditions == nil {
			r.Conditions = []Condition{}
		}
	default:
		r.Conditions = nil
	}
	return r
}

// MarshalJSON writes each rule as ForKind has it, for GET /pushrules/ and
// the m.push_rules account data.
func (rs Ruleset) MarshalJSON() ([]byte, error) {
	var out Ruleset
	for _, kind := range Kinds {
		rules, _ := rs.ByKind(kind)
		shown := make([]Rule, len(rules))
		for i, r := range rules {
			shown[i] = r.ForKind(kind)
		}
		out.set(kind, shown)
	}
	type plain Ruleset // without this method
	return json.Marshal(plain(out))
}

// Condition is one condition of an override or underride rule.
type Condition struct {
	Kind    string          `json:"kind"`
	Key     string          `json:"key,omitempty"`
	Pattern *string         `json:"pattern,omitempty"`
	Value   json.RawMessage `json:"value,omitempty"`
	Is      string          `json:"is,omitempty"`
	// glob is Pattern compiled (Ruleset.compile), nil until then.
	glob *glob
}

// Ruleset is a user's rules by kind.
type Ruleset struct {
	Override  []Rule `json:"override"`
	Content   []Rule `json:"content"`
	Room      []Rule `json:"room"`
	Sender    []Rule `json:"sender"`
	Underride []Rule `json:"underride"`
}

// ByKind returns the rules of one kind, or false for an unknown kind.
func (rs *Ruleset) ByKind(kind string) ([]Rule, bool) {
	switch kind {
	case "override":
		return rs.Override, true
	case "content":
		return rs.Content, true
	case "room":
		return rs.Room, true
	case "sender":
		return rs.Sender, true
	case "underride":
		return rs.Underride, true
	}
	return nil, false
}

// compile compiles every pattern of the rules once, for a ruleset that is
// evaluated against many events (the worker keeps each member's compiled
// rules until they change). It gives each rule its own copy of its
// conditions, so rules shared with other rulesets are not written to.
func (rs *Ruleset) compile() {
	for _, list := range [][]Rule{rs.Override, rs.Content, rs.Underride} {
		for i := range list {
			r := &list[i]
			if r.Pattern != "" {
				r.glob = compileGlob(r.Pattern)
			}
			if len(r.Conditions) == 0 {
				continue
			}
			r.Conditions = slices.Clone(r.Conditions)
			for j := range r.Conditions {
				if c := &r.Conditions[j]; c.Kind == "event_match" && c.Pattern != nil {
					c.glob = compileGlob(*c.Pattern)
				}
			}
		}
	}
}

func match(key, pattern string) Condition {
	return Condition{Kind: "event_match", Key: key, Pattern: &pattern}
}

func propertyIs(key string, value any) Condition {
	b, _ := json.Marshal(value)
	return Condition{Kind: "event_property_is", Key: key, Value: b}
}

func propertyContains(key string, value any) Condition {
	b, _ := json.Marshal(value)
	return Condition{Kind: "event_property_contains", Key: key, Value: b}
}

var (
	notify        = "notify"
	soundDefault  = map[string]any{"set_tweak": "sound", "value": "default"}
	soundRing     = map[string]any{"set_tweak": "sound", "value": "ring"}
	highlight     = map[string]any{"set_tweak": "highlight"}
	noHighlight   = map[string]any{"set_tweak": "highlight", "value": false}
	noActions     = []any{}
	memberCountIs = func(n string) Condition { return Condition{Kind: "room_member_count", Is: n} }
)

func rule(id string, actions []any, conds ...Condition) Rule {
	if conds == nil {
		conds = []Condition{}
	}
	return Rule{RuleID: id, Default: true, Enabled: true, Conditions: conds, Actions: actions}
}

// Poll event types (MSC3381), as Element sends them. Synapse serves its
// MSC3930 poll rules under these types and the unstable rule IDs below, and
// Element's notification settings read and toggle those IDs.
const (
	pollStart    = "org.matrix.msc3381.poll.start"
	pollResponse = "org.matrix.msc3381.poll.response"
	pollEnd      = "org.matrix.msc3381.poll.end"
)

// Rule IDs of the legacy body-matching mention rules. The spec deprecates
// them (v1.7: enabled only for events without m.mentions) and v1.17 drops
// them from the list (MSC4210), but Synapse still serves them and Element's
// notification settings read and toggle them, and bots that send no
// m.mentions still rely on them; so they stay, and Evaluate skips them for
// events that carry m.mentions, as Synapse does.
const (
	RuleContainsDisplayName = ".m.rule.contains_display_name"
	RuleContainsUserName    = ".m.rule.contains_user_name"
	RuleRoomNotif           = ".m.rule.roomnotif"
)

// Defaults is the server-default rule set for a user: the spec's
// predefined rules (client-server API, "Predefined Rules", as of v1.16,
// with the legacy mention rules v1.17 dropped), in the spec's order, plus
// the rules Synapse serves beside them without an experimental switch
// (.im.vector.jitsi) and its MSC3930 poll rules, at Synapse's places
// (rust/src/push/base_rules.rs). The content rule .m.rule.contains_user_name
// matches the user's localpart.
func Defaults(user roomdag.UserID) Ruleset {
	master := rule(".m.rule.master", noActions)
	master.Enabled = false
	userName := rule(RuleContainsUserName, []any{notify, soundDefault, highlight})
	userName.Conditions = nil
	userName.Pattern = user.Localpart()
	return Ruleset{
		Override: []Rule{
			master,
			rule(".m.rule.suppress_notices", noActions, match("content.msgtype", "m.notice")),
			rule(".m.rule.invite_for_me", []any{notify, soundDefault},
				match("type", roomdag.TypeMember), match("content.membership", "invite"), match("state_key", string(user))),
			rule(".m.rule.member_event", noActions, match("type", roomdag.TypeMember)),
			rule(".m.rule.is_user_mention", []any{notify, soundDefault, highlight},
				propertyContains(`content.m\.mentions.user_ids`, user)),
			rule(RuleContainsDisplayName, []any{notify, soundDefault, highlight}, Condition{Kind: "contains_display_name"}),
			rule(".m.rule.is_room_mention", []any{notify, highlight},
				propertyIs(`content.m\.mentions.room`, true), Condition{Kind: "sender_notification_permission", Key: "room"}),
			rule(RuleRoomNotif, []any{notify, highlight},
				match("content.body", "@room"), Condition{Kind: "sender_notification_permission", Key: "room"}),
			rule(".m.rule.tombstone", []any{notify, highlight}, match("type", roomdag.TypeTombstone), match("state_key", "")),
			rule(".m.rule.reaction", noActions, match("type", "m.reaction")),
			rule(".m.rule.room.server_acl", noActions, match("type", roomdag.TypeServerACL), match("state_key", "")),
			rule(".m.rule.suppress_edits", noActions, propertyIs(`content.m\.relates_to.rel_type`, "m.replace")),
			rule(".org.matrix.msc3930.rule.poll_response", noActions, match("type", pollResponse)),
		},
		Content: []Rule{userName},
		Room:    []Rule{},
		Sender:  []Rule{},
		Underride: []Rule{
			rule(".m.rule.call", []any{notify, soundRing}, match("type", "m.call.invite")),
			rule(".m.rule.encrypted_room_one_to_one", []any{notify, soundDefault}, memberCountIs("2"), match("type", "m.room.encrypted")),
			rule(".m.rule.room_one_to_one", []any{notify, soundDefault, noHighlight}, memberCountIs("2"), match("type", roomdag.TypeMessage)),
			rule(".m.rule.message", []any{notify, noHighlight}, match("type", roomdag.TypeMessage)),
			rule(".m.rule.encrypted", []any{notify}, match("type", "m.room.encrypted")),
			rule(".im.vector.jitsi", []any{notify, noHighlight},
				match("type", "im.vector.modular.widgets"), match("content.type", "jitsi"), match("state_key", "*")),
			rule(".org.matrix.msc3930.rule.poll_start_one_to_one", []any{notify, soundDefault}, memberCountIs("2"), match("type", pollStart)),
			rule(".org.matrix.msc3930.rule.poll_start", []any{notify}, match("type", pollStart)),
			rule(".org.matrix.msc3930.rule.poll_end_one_to_one", []any{notify, soundDefault}, memberCountIs("2"), match("type", pollEnd)),
			rule(".org.matrix.msc3930.rule.poll_end", []any{notify}, match("type", pollEnd)),
		},
	}
}

// legacyMention reports whether a rule is one of the legacy mention rules,
// which do not apply to events with m.mentions (spec v1.7).
func legacyMention(r *Rule) bool {
	if !r.Default {
		return false
	}
	switch r.RuleID {
	case RuleContainsDisplayName, RuleContainsUserName, RuleRoomNotif:
		return true
	}
	return false
}
