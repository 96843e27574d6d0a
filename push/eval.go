package push

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
)

// Evaluation (spec: client-server API, "Push Rules"). Everything here is
// pure: the caller builds one EventView per event and one EvalContext per
// event and member, then calls Evaluate with that member's merged rules.

// EventView is an event flattened for rule matching: every property that is
// not an object, by its dot-separated path with '.' and '\' in keys escaped
// (spec: appendices, "Dot-separated property paths"). Arrays are leaves.
// Build it once per event and share it between members; it is read-only.
type EventView struct {
	props map[string]any // string, json.Number, bool, nil or []any
	body  string         // content.body if it is a string
	lower string         // body, lower-cased once for keyword rules
	// hasMentions: content has an m.mentions property, of any value (an
	// empty object leaves no leaf in props). The legacy mention rules do
	// not apply to such events (spec v1.7; Synapse's has_mentions).
	hasMentions bool
}

// NewEventView flattens a client- or federation-format event.
func NewEventView(event []byte) (*EventView, error) {
	d := json.NewDecoder(bytes.NewReader(event))
	d.UseNumber() // keep integers exact for event_property_is
	var top map[string]any
	if err := d.Decode(&top); err != nil {
		return nil, err
	}
	if top == nil {
		return nil, errors.New("push: event is not a JSON object")
	}
	v := &EventView{props: make(map[string]any, 16)}
	v.flatten("", top)
	if content, ok := top["content"].(map[string]any); ok {
		_, v.hasMentions = content["m.mentions"]
	}
	if b, ok := v.props["content.body"].(string); ok {
		v.body, v.lower = b, strings.ToLower(b)
	}
	return v, nil
}

func (v *EventView) flatten(prefix string, obj map[string]any) {
	for k, val := range obj {
		path := escapeKey(k)
		if prefix != "" {
			path = prefix + "." + path
		}
		if sub, ok := val.(map[string]any); ok {
			v.flatten(path, sub)
			continue
		}
		v.props[path] = val
	}
}

// mentionedUsers is the set of user IDs in content.m.mentions.user_ids:
// the only members the default rules treat differently (spec:
// .m.rule.is_user_mention). Nil when there are none.
func (v *EventView) mentionedUsers() map[string]bool {
	ids, _ := v.props[`content.m\.mentions.user_ids`].([]any)
	var out map[string]bool
	for _, id := range ids {
		if s, ok := id.(string); ok {
			if out == nil {
				out = make(map[string]bool, len(ids))
			}
			out[s] = true
		}
	}
	return out
}

// escapeKey escapes one path segment: '\' as `\\` and '.' as `\.`.
func escapeKey(k string) string {
	if !strings.ContainsAny(k, `.\`) {
		return k
	}
	var b strings.Builder
	for i := 0; i < len(k); i++ {
		if k[i] == '.' || k[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(k[i])
	}
	return b.String()
}

// CanonicalPath rewrites a condition key into the form EventView uses. In a
// key, `\.` and `\\` are escapes; a backslash before any other character is
// kept as a literal backslash, as the spec's appendix says. It returns false
// for an empty key or an empty segment.
func CanonicalPath(key string) (string, bool) {
	if key == "" {
		return "", false
	}
	var segs []string
	var cur strings.Builder
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case c == '\\' && i+1 < len(key) && (key[i+1] == '.' || key[i+1] == '\\'):
			cur.WriteByte(key[i+1])
			i++
		case c == '.':
			segs = append(segs, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	segs = append(segs, cur.String())
	for i, s := range segs {
		if s == "" {
			return "", false
		}
		segs[i] = escapeKey(s)
	}
	return strings.Join(segs, "."), true
}

// lookup finds a property by a condition key. Keys are nearly always in
// canonical form already; other spellings are canonicalised.
func (v *EventView) lookup(key string) (any, bool) {
	if val, ok := v.props[key]; ok {
		return val, true
	}
	if canonical(key) {
		return nil, false
	}
	c, ok := CanonicalPath(key)
	if !ok || c == key {
		return nil, false
	}
	val, ok := v.props[c]
	return val, ok
}

// canonical reports, without allocating, whether CanonicalPath would leave
// key as it is: every backslash starts a `\.` or `\\` escape.
func canonical(key string) bool {
	for i := 0; i < len(key); i++ {
		if key[i] == '\\' {
			if i+1 == len(key) || key[i+1] != '.' && key[i+1] != '\\' {
				return false
			}
			i++
		}
	}
	return true
}

// EvalContext is what the conditions need beyond the event, for one member.
type EvalContext struct {
	// DisplayName is the member's display name in the room, for the
	// deprecated contains_display_name condition ("" never matches).
	DisplayName string
	// MemberCount is the number of joined members of the room.
	MemberCount int
	// SenderLevel is the sender's power level in the room.
	SenderLevel int64
	// NotificationLevel gives the power level needed for a notification key
	// ("room" for @room); nil means 50 for every key, the spec default.
	// Pass (*roomdag.PowerLevels).NotificationLevel.
	NotificationLevel func(key string) int64
	// OverBudget, if set, is called once per evaluation when the member's
	// own rules ran out of MaxEvalSteps: the rule it names, and every
	// user-defined rule after it that needs matching, did not match.
	OverBudget func(ruleID string)
}

// MaxEvalSteps is the matching work one evaluation (one event, one member)
// may spend on the member's own rules, in steps of about one byte of text
// examined (a few nanoseconds each). The server-default rules are not
// counted: their patterns are fixed and short. Ordinary rules need a small
// part of it even on the largest events: a keyword rule on a 64 KiB body
// takes about 8,000 steps, a wildcard keyword about 65,000. What it stops
// is a rule set built to be slow, such as hundreds of conditions that each
// scan a long body, which would otherwise hold up everyone's
// notifications: such a member's rules cost at most a few milliseconds an
// event. A user-defined rule that runs out does not match, nor do the
// user-defined rules after it; the server defaults still apply.
const MaxEvalSteps = 1 << 19

// Evaluate runs the rules against an event in the spec's order: override,
// content, room, sender, underride, each kind most important first. It
// returns the actions of the first enabled rule that matches, without the
// historical dont_notify and coalesce actions; matched is false when no rule
// matches. The returned slice may be shared with rules: do not modify it.
// The caller must not evaluate events a member sent themselves (spec: the
// homeserver MUST NOT notify for them).
//
// The legacy mention rules (.m.rule.contains_display_name,
// .m.rule.contains_user_name, .m.rule.roomnotif) are skipped for events
// with m.mentions, as the spec (v1.7) and Synapse say.
//
// Patterns are compiled on the fly unless rules was compiled
// (Ruleset.compile); the worker compiles each member's rules once.
func Evaluate(rules *Ruleset, ev *EventView, ctx *EvalContext) (actions []any, matched bool) {
	e := evaluation{ev: ev, ctx: ctx, own: budget{left: MaxEvalSteps}, defaults: unlimited()}
	for i := range rules.Override {
		if r := &rules.Override[i]; r.Enabled && !(ev.hasMentions && legacyMention(r)) && e.conditionsHold(r) {
			return cleanActions(r.Actions), true
		}
	}
	for i := range rules.Content {
		if r := &rules.Content[i]; r.Enabled && !(ev.hasMentions && legacyMention(r)) && e.bodyMatches(r) {
			return cleanActions(r.Actions), true
		}
	}
	if len(rules.Room) > 0 {
		if room, ok := ev.props["room_id"].(string); ok {
			for i := range rules.Room {
				if r := &rules.Room[i]; r.Enabled && r.RuleID == room {
					return cleanActions(r.Actions), true
				}
			}
		}
	}
	if len(rules.Sender) > 0 {
		if sender, ok := ev.props["sender"].(string); ok {
			for i := range rules.Sender {
				if r := &rules.Sender[i]; r.Enabled && r.RuleID == sender {
					return cleanActions(r.Actions), true
				}
			}
		}
	}
	for i := range rules.Underride {
		if r := &rules.Underride[i]; r.Enabled && e.conditionsHold(r) {
			return cleanActions(r.Actions), true
		}
	}
	return nil, false
}

// evaluation is one run of Evaluate: the budgets of the member's own rules
// and of the server defaults.
type evaluation struct {
	ev       *EventView
	ctx      *EvalContext
	own      budget
	defaults budget
	reported bool
}

// budgetOf is the budget a rule's matching draws on.
func (e *evaluation) budgetOf(r *Rule) *budget {
	if r.Default {
		return &e.defaults
	}
	return &e.own
}

// failed ends a rule that did not match, and reports it, once per
// evaluation, if it did not match because the budget ran out.
func (e *evaluation) failed(r *Rule, b *budget) bool {
	if b.spent() && !r.Default && !e.reported {
		e.reported = true
		if e.ctx.OverBudget != nil {
			e.ctx.OverBudget(r.RuleID)
		}
	}
	return false
}

// bodyMatches matches a content rule.
func (e *evaluation) bodyMatches(r *Rule) bool {
	b := e.budgetOf(r)
	if e.ev.body == "" || r.Pattern == "" {
		return false
	}
	if b.spent() {
		return e.failed(r, b)
	}
	g := r.glob
	if g == nil {
		g = compileGlob(r.Pattern)
	}
	if !g.matchWords(e.ev.body, e.ev.lower, b) {
		return e.failed(r, b)
	}
	return true
}

// conditionsHold matches an override or underride rule.
func (e *evaluation) conditionsHold(r *Rule) bool {
	b := e.budgetOf(r)
	for i := range r.Conditions {
		// Every condition costs a step, so that a long list of cheap
		// conditions is bounded too.
		if b.left--; b.spent() || !e.conditionHolds(&r.Conditions[i], b) {
			return e.failed(r, b)
		}
	}
	return true
}

// conditionHolds: unknown conditions never match (spec: "Conditions").
func (e *evaluation) conditionHolds(c *Condition, b *budget) bool {
	ev, ctx := e.ev, e.ctx
	switch c.Kind {
	case "event_match":
		if c.Pattern == nil {
			return false
		}
		val, ok := ev.lookup(c.Key)
		s, isString := val.(string)
		if !ok || !isString {
			return false
		}
		g := c.glob
		if g == nil {
			g = compileGlob(*c.Pattern)
		}
		if c.Key == "content.body" {
			return ev.body != "" && g.matchWords(ev.body, ev.lower, b)
		}
		return g.matchWhole(s, b)
	case "event_property_is":
		val, ok := ev.lookup(c.Key)
		return ok && scalarEqual(val, c.Value)
	case "event_property_contains":
		val, ok := ev.lookup(c.Key)
		arr, isArray := val.([]any)
		if !ok || !isArray {
			return false
		}
		b.left -= len(arr)
		for _, el := range arr {
			if scalarEqual(el, c.Value) {
				return true
			}
		}
		return false
	case "contains_display_name":
		if ctx.DisplayName == "" || ev.body == "" {
			return false
		}
		// The name is literal text: wildcards in it match only themselves.
		return literalWords(strings.ToLower(ctx.DisplayName), ev.lower, b)
	case "room_member_count":
		return memberCountHolds(c.Is, ctx.MemberCount)
	case "sender_notification_permission":
		if c.Key == "" {
			return false
		}
		need := int64(50)
		if ctx.NotificationLevel != nil {
			need = ctx.NotificationLevel(c.Key)
		}
		return ctx.SenderLevel >= need
	}
	return false
}

// conditionHolds evaluates one condition alone, with an unlimited budget.
func conditionHolds(c *Condition, ev *EventView, ctx *EvalContext) bool {
	e := evaluation{ev: ev, ctx: ctx, defaults: unlimited()}
	return e.conditionHolds(c, &e.defaults)
}

// bodyMatches matches a keyword pattern against the body as a content
// rule does, with an unlimited budget.
func (v *EventView) bodyMatches(pattern string) bool {
	if v.body == "" {
		return false
	}
	b := unlimited()
	return compileGlob(pattern).matchWords(v.body, v.lower, &b)
}

// parseMemberCount parses "is": a decimal integer optionally prefixed by
// ==, <, >, <= or >= (no prefix means ==).
func parseMemberCount(is string) (op string, n int, ok bool) {
	op = "=="
	for _, p := range []string{"==", "<=", ">=", "<", ">"} {
		if strings.HasPrefix(is, p) {
			op, is = p, is[len(p):]
			break
		}
	}
	if is == "" || len(is) > 9 {
		return "", 0, false
	}
	for i := 0; i < len(is); i++ {
		if is[i] < '0' || is[i] > '9' {
			return "", 0, false
		}
		n = n*10 + int(is[i]-'0')
	}
	return op, n, true
}

// ValidMemberCount reports whether "is" is a valid room_member_count bound.
func ValidMemberCount(is string) bool {
	_, _, ok := parseMemberCount(is)
	return ok
}

func memberCountHolds(is string, count int) bool {
	op, n, ok := parseMemberCount(is)
	if !ok {
		return false
	}
	switch op {
	case "<":
		return count < n
	case ">":
		return count > n
	case "<=":
		return count <= n
	case ">=":
		return count >= n
	}
	return count == n
}

// maxSafeInt bounds the integers event_property_is compares (canonical
// JSON's range).
const maxSafeInt = 1<<53 - 1

// scalarEqual compares an event value with a condition value exactly:
// strings, integers in canonical JSON's range, booleans and null; no
// casting between types, and compound values never match.
func scalarEqual(val any, raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return false
	}
	switch v := val.(type) {
	case nil:
		return string(raw) == "null"
	case bool:
		return v && string(raw) == "true" || !v && string(raw) == "false"
	case string:
		if raw[0] != '"' {
			return false
		}
		if bytes.IndexByte(raw, '\\') < 0 {
			return string(raw[1:len(raw)-1]) == v
		}
		var s string
		return json.Unmarshal(raw, &s) == nil && s == v
	case json.Number:
		a, err1 := strconv.ParseInt(string(v), 10, 64)
		b, err2 := strconv.ParseInt(string(raw), 10, 64)
		return err1 == nil && err2 == nil && a == b && a <= maxSafeInt && a >= -maxSafeInt
	}
	return false
}

// cleanActions drops the historical dont_notify and coalesce actions
// (spec: "Historical Actions"); it copies only when there is one to drop.
func cleanActions(actions []any) []any {
	for i, a := range actions {
		if s, ok := a.(string); ok && (s == "dont_notify" || s == "coalesce") {
			out := append([]any{}, actions[:i]...)
			for _, b := range actions[i+1:] {
				if s, ok := b.(string); ok && (s == "dont_notify" || s == "coalesce") {
					continue
				}
				out = append(out, b)
			}
			return out
		}
	}
	return actions
}

// Notify reports whether actions ask for a notification.
func Notify(actions []any) bool {
	for _, a := range actions {
		if a == "notify" {
			return true
		}
	}
	return false
}

// Highlight reports whether actions set the highlight tweak: true when the
// tweak has no value, else its boolean value; false without the tweak.
func Highlight(actions []any) bool {
	for _, a := range actions {
		m, ok := a.(map[string]any)
		if !ok || m["set_tweak"] != "highlight" {
			continue
		}
		v, has := m["value"]
		if !has {
			return true
		}
		b, _ := v.(bool)
		return b
	}
	return false
}

// Sound returns the sound tweak's value, "" without one.
func Sound(actions []any) string {
	for _, a := range actions {
		if m, ok := a.(map[string]any); ok && m["set_tweak"] == "sound" {
			s, _ := m["value"].(string)
			return s
		}
	}
	return ""
}
