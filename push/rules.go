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
}

// Condition is one condition of an override or underride rule.
type Condition struct {
	Kind    string          `json:"kind"`
	Key     string          `json:"key,omitempty"`
	Pattern *string         `json:"pattern,omitempty"`
	Value   json.RawMessage `json:"value,omitempty"`
	Is      string          `json:"is,omitempty"`
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

// Defaults is the server-default rule set for a user, as of spec v1.17:
// the legacy body-matching rules (.m.rule.contains_display_name,
// .m.rule.contains_user_name, .m.rule.roomnotif) are gone (MSC4210), since
// clients mark mentions with m.mentions.
func Defaults(user roomdag.UserID) Ruleset {
	master := rule(".m.rule.master", noActions)
	master.Enabled = false
	return Ruleset{
		Override: []Rule{
			master,
			rule(".m.rule.suppress_notices", noActions, match("content.msgtype", "m.notice")),
			rule(".m.rule.invite_for_me", []any{notify, soundDefault},
				match("type", roomdag.TypeMember), match("content.membership", "invite"), match("state_key", string(user))),
			rule(".m.rule.member_event", noActions, match("type", roomdag.TypeMember)),
			rule(".m.rule.is_user_mention", []any{notify, soundDefault, highlight},
				propertyContains(`content.m\.mentions.user_ids`, user)),
			rule(".m.rule.is_room_mention", []any{notify, highlight},
				propertyIs(`content.m\.mentions.room`, true), Condition{Kind: "sender_notification_permission", Key: "room"}),
			rule(".m.rule.tombstone", []any{notify, highlight}, match("type", roomdag.TypeTombstone), match("state_key", "")),
			rule(".m.rule.reaction", noActions, match("type", "m.reaction")),
			rule(".m.rule.room.server_acl", noActions, match("type", roomdag.TypeServerACL), match("state_key", "")),
			rule(".m.rule.suppress_edits", noActions, propertyIs(`content.m\.relates_to.rel_type`, "m.replace")),
		},
		Content: []Rule{},
		Room:    []Rule{},
		Sender:  []Rule{},
		Underride: []Rule{
			rule(".m.rule.call", []any{notify, soundRing}, match("type", "m.call.invite")),
			rule(".m.rule.encrypted_room_one_to_one", []any{notify, soundDefault}, memberCountIs("2"), match("type", "m.room.encrypted")),
			rule(".m.rule.room_one_to_one", []any{notify, soundDefault, noHighlight}, memberCountIs("2"), match("type", roomdag.TypeMessage)),
			rule(".m.rule.message", []any{notify, noHighlight}, match("type", roomdag.TypeMessage)),
			rule(".m.rule.encrypted", []any{notify}, match("type", "m.room.encrypted")),
		},
	}
}
