package push

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/persistentchat/homeserver/roomdag"
)

func view(t testing.TB, ev string) *EventView {
	t.Helper()
	v, err := NewEventView([]byte(ev))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func ptr(s string) *string { return &s }

// The spec's own examples (client-server API, "Conditions"; appendices,
// "Dot-separated property paths").
func TestConditions(t *testing.T) {
	topic := func(v string) string {
		return `{"type":"m.room.topic","state_key":"","content":{"topic":` + v + `}}`
	}
	body := func(v string) string { return `{"type":"m.room.message","content":{"body":` + v + `}}` }
	create := func(v string) string { return `{"type":"m.room.create","content":{"m.federate":` + v + `}}` }
	alias := func(v string) string { return `{"type":"m.room.canonical_alias","content":{"alt_aliases":` + v + `}}` }
	topicMatch := Condition{Kind: "event_match", Key: "content.topic", Pattern: ptr("lunc?*")}
	bodyMatch := Condition{Kind: "event_match", Key: "content.body", Pattern: ptr("ex*ple")}
	federate := Condition{Kind: "event_property_is", Key: `content.m\.federate`, Value: json.RawMessage(`true`)}
	altAlias := Condition{Kind: "event_property_contains", Key: "content.alt_aliases", Value: json.RawMessage(`"#myroom:example.com"`)}
	for _, tc := range []struct {
		name  string
		cond  Condition
		event string
		ctx   EvalContext
		want  bool
	}{
		{"topic glob", topicMatch, topic(`"Lunch plans"`), EvalContext{}, true},
		{"topic upper, * empty", topicMatch, topic(`"LUNCH"`), EvalContext{}, true},
		{"topic leading space", topicMatch, topic(`" lunch"`), EvalContext{}, false},
		{"topic ? needs a char", topicMatch, topic(`"lunc"`), EvalContext{}, false},
		{"topic null", topicMatch, topic(`null`), EvalContext{}, false},
		{"absent key with *", Condition{Kind: "event_match", Key: "content.nope", Pattern: ptr("*")}, topic(`"x"`), EvalContext{}, false},
		{"body words", bodyMatch, body(`"An example event."`), EvalContext{}, true},
		{"body whole", bodyMatch, body(`"exple"`), EvalContext{}, true},
		{"body across words", bodyMatch, body(`"An exciting triple-whammy"`), EvalContext{}, true},
		{"body inside a word", bodyMatch, body(`"Anexample"`), EvalContext{}, false},
		{"body literal keyword", Condition{Kind: "event_match", Key: "content.body", Pattern: ptr("Cake")}, body(`"the cake, is a lie"`), EvalContext{}, true},
		{"body literal in word", Condition{Kind: "event_match", Key: "content.body", Pattern: ptr("cake")}, body(`"cupcakes"`), EvalContext{}, false},
		{"property is true", federate, create(`true`), EvalContext{}, true},
		{"property is string true", federate, create(`"true"`), EvalContext{}, false},
		{"property is 1", federate, create(`1`), EvalContext{}, false},
		{"property is int", Condition{Kind: "event_property_is", Key: "content.n", Value: json.RawMessage(`42`)}, `{"content":{"n":42}}`, EvalContext{}, true},
		{"property is float", Condition{Kind: "event_property_is", Key: "content.n", Value: json.RawMessage(`42`)}, `{"content":{"n":42.5}}`, EvalContext{}, false},
		{"property is null", Condition{Kind: "event_property_is", Key: "content.n", Value: json.RawMessage(`null`)}, `{"content":{"n":null}}`, EvalContext{}, true},
		{"property is object", Condition{Kind: "event_property_is", Key: "content.n", Value: json.RawMessage(`null`)}, `{"content":{"n":{}}}`, EvalContext{}, false},
		{"contains", altAlias, alias(`["#somewhere:example.org","#myroom:example.com"]`), EvalContext{}, true},
		{"contains partial", altAlias, alias(`[":example.com"]`), EvalContext{}, false},
		{"contains not array", altAlias, alias(`"#myroom:example.com"`), EvalContext{}, false},
		{"escaped backslash key", Condition{Kind: "event_property_is", Key: `content.a\\b`, Value: json.RawMessage(`1`)}, `{"content":{"a\\b":1}}`, EvalContext{}, true},
		{"spec path m.relates_to", Condition{Kind: "event_property_is", Key: `content.m\.relates_to.rel_type`, Value: json.RawMessage(`"m.replace"`)},
			`{"content":{"m.relates_to":{"rel_type":"m.replace"}}}`, EvalContext{}, true},
		{"display name", Condition{Kind: "contains_display_name"}, body(`"hi Alice!"`), EvalContext{DisplayName: "alice"}, true},
		{"display name in word", Condition{Kind: "contains_display_name"}, body(`"hi Alices"`), EvalContext{DisplayName: "alice"}, false},
		{"display name empty", Condition{Kind: "contains_display_name"}, body(`"hi"`), EvalContext{}, false},
		{"display name is literal", Condition{Kind: "contains_display_name"}, body(`"hi bob"`), EvalContext{DisplayName: "*"}, false},
		{"member count", Condition{Kind: "room_member_count", Is: "2"}, body(`"x"`), EvalContext{MemberCount: 2}, true},
		{"member count ==", Condition{Kind: "room_member_count", Is: "==3"}, body(`"x"`), EvalContext{MemberCount: 2}, false},
		{"member count <=", Condition{Kind: "room_member_count", Is: "<=10"}, body(`"x"`), EvalContext{MemberCount: 10}, true},
		{"member count <", Condition{Kind: "room_member_count", Is: "<10"}, body(`"x"`), EvalContext{MemberCount: 10}, false},
		{"member count >", Condition{Kind: "room_member_count", Is: ">1"}, body(`"x"`), EvalContext{MemberCount: 2}, true},
		{"member count >=", Condition{Kind: "room_member_count", Is: ">=3"}, body(`"x"`), EvalContext{MemberCount: 2}, false},
		{"member count bad", Condition{Kind: "room_member_count", Is: "=2"}, body(`"x"`), EvalContext{MemberCount: 2}, false},
		{"permission default 50", Condition{Kind: "sender_notification_permission", Key: "room"}, body(`"x"`), EvalContext{SenderLevel: 50}, true},
		{"permission low", Condition{Kind: "sender_notification_permission", Key: "room"}, body(`"x"`), EvalContext{SenderLevel: 49}, false},
		{"permission custom", Condition{Kind: "sender_notification_permission", Key: "room"}, body(`"x"`),
			EvalContext{SenderLevel: 10, NotificationLevel: func(string) int64 { return 0 }}, true},
		{"unknown condition", Condition{Kind: "org.example.always"}, body(`"x"`), EvalContext{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := conditionHolds(&tc.cond, view(t, tc.event), &tc.ctx); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestEvaluateDefaults(t *testing.T) {
	alice := roomdag.UserID("@alice:example.org")
	defaults := Defaults(alice)
	msg := func(extra string) string {
		return `{"type":"m.room.message","room_id":"!r:example.org","sender":"@bob:example.org","content":{"msgtype":"m.text","body":"hello"` + extra + `}}`
	}
	for _, tc := range []struct {
		name              string
		event             string
		members           int
		level             int64
		notify, highlight bool
		sound             string
	}{
		{"message", msg(""), 5, 0, true, false, ""},
		{"one to one", msg(""), 2, 0, true, false, "default"},
		{"notice", `{"type":"m.room.message","content":{"msgtype":"m.notice","body":"x"}}`, 5, 0, false, false, ""},
		{"user mention", msg(`,"m.mentions":{"user_ids":["@alice:example.org"]}`), 5, 0, true, true, "default"},
		{"room mention by moderator", msg(`,"m.mentions":{"room":true}`), 5, 50, true, true, ""},
		{"room mention by user", msg(`,"m.mentions":{"room":true}`), 5, 0, true, false, ""},
		{"edit", msg(`,"m.relates_to":{"rel_type":"m.replace","event_id":"$x"}`), 5, 0, false, false, ""},
		{"invite for me", `{"type":"m.room.member","state_key":"@alice:example.org","content":{"membership":"invite"}}`, 5, 0, true, false, "default"},
		{"invite for another", `{"type":"m.room.member","state_key":"@carol:example.org","content":{"membership":"invite"}}`, 5, 0, false, false, ""},
		{"tombstone", `{"type":"m.room.tombstone","state_key":"","content":{}}`, 5, 0, true, true, ""},
		{"reaction", `{"type":"m.reaction","content":{}}`, 5, 0, false, false, ""},
		{"call", `{"type":"m.call.invite","content":{}}`, 5, 0, true, false, "ring"},
		{"encrypted", `{"type":"m.room.encrypted","content":{}}`, 5, 0, true, false, ""},
		{"topic", `{"type":"m.room.topic","state_key":"","content":{"topic":"x"}}`, 5, 0, false, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			actions, _ := Evaluate(&defaults, view(t, tc.event), &EvalContext{MemberCount: tc.members, SenderLevel: tc.level})
			if Notify(actions) != tc.notify || Highlight(actions) != tc.highlight || Sound(actions) != tc.sound {
				t.Errorf("actions %v: notify %v highlight %v sound %q, want %v %v %q",
					actions, Notify(actions), Highlight(actions), Sound(actions), tc.notify, tc.highlight, tc.sound)
			}
		})
	}
}

func TestEvaluateUserRules(t *testing.T) {
	alice := roomdag.UserID("@alice:example.org")
	var u UserRules
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(u.Put("content", Rule{RuleID: "cake", Pattern: "cake", Actions: []any{"notify", map[string]any{"set_tweak": "highlight"}}}, "", ""))
	must(u.Put("sender", Rule{RuleID: "@spam:example.org", Actions: []any{"dont_notify"}}, "", ""))
	must(u.Put("room", Rule{RuleID: "!quiet:example.org", Actions: []any{}}, "", ""))
	must(u.SetEnabled(alice, "override", ".m.rule.suppress_notices", false))
	rs := u.Ruleset(alice)
	if rs.Override[0].RuleID != ".m.rule.master" {
		t.Fatalf("master is not first: %+v", rs.Override[0])
	}
	ev := func(room, sender, msgtype, body string) *EventView {
		return view(t, fmt.Sprintf(`{"type":"m.room.message","room_id":%q,"sender":%q,"content":{"msgtype":%q,"body":%q}}`, room, sender, msgtype, body))
	}
	ctx := &EvalContext{MemberCount: 5}
	check := func(name string, e *EventView, notify, highlight bool) {
		t.Helper()
		a, matched := Evaluate(&rs, e, ctx)
		if !matched || Notify(a) != notify || Highlight(a) != highlight {
			t.Errorf("%s: actions %v (matched %v), want notify %v highlight %v", name, a, matched, notify, highlight)
		}
	}
	check("keyword", ev("!r:x", "@bob:x", "m.text", "Who wants CAKE?"), true, true)
	check("keyword beats room rule", ev("!quiet:example.org", "@bob:x", "m.text", "cake"), true, true)
	check("room rule", ev("!quiet:example.org", "@bob:x", "m.text", "hi"), false, false)
	check("sender rule, dont_notify stripped", ev("!r:x", "@spam:example.org", "m.text", "hi"), false, false)
	check("notices no longer suppressed", ev("!r:x", "@bob:x", "m.notice", "hi"), true, false)
	must(u.SetEnabled(alice, "override", ".m.rule.master", true))
	rs = u.Ruleset(alice)
	check("master", ev("!r:x", "@bob:x", "m.text", "cake"), false, false)
}

func TestUserRulesOrder(t *testing.T) {
	var u UserRules
	put := func(id, before, after string) error {
		return u.Put("content", Rule{RuleID: id, Pattern: id, Actions: []any{"notify"}}, before, after)
	}
	ids := func() string {
		var s []string
		for _, r := range u.Rules["content"] {
			s = append(s, r.RuleID)
		}
		return strings.Join(s, ",")
	}
	for _, step := range []struct {
		id, before, after, want string
	}{
		{"a", "", "", "a"},
		{"b", "", "", "b,a"},       // new rules go first
		{"c", "a", "", "b,c,a"},    // before
		{"d", "", "b", "b,d,c,a"},  // after
		{"a", "", "", "b,d,c,a"},   // an update keeps its place
		{"a", "b", "c", "a,b,d,c"}, // before wins over after
	} {
		if err := put(step.id, step.before, step.after); err != nil {
			t.Fatal(err)
		}
		if got := ids(); got != step.want {
			t.Fatalf("after putting %s: %s, want %s", step.id, got, step.want)
		}
	}
	var rel *RelativeError
	if err := put("e", "nope", ""); !asRel(err, &rel) {
		t.Errorf("unknown anchor: %v", err)
	}
	if err := put("e", ".m.rule.contains_user_name", ""); !asRel(err, &rel) {
		t.Errorf("server-default anchor: %v", err)
	}
	if err := u.Delete("@a:x", "content", "nope"); err != ErrNotFound {
		t.Errorf("delete unknown: %v", err)
	}
	if err := u.Delete("@a:x", "override", ".m.rule.master"); err != ErrServerDefault {
		t.Errorf("delete default: %v", err)
	}
	if err := u.SetEnabled("@a:x", "override", ".m.rule.nope", true); err != ErrNotFound {
		t.Errorf("enable unknown: %v", err)
	}
}

func asRel(err error, rel **RelativeError) bool {
	r, ok := err.(*RelativeError)
	*rel = r
	return ok
}

func TestCanonicalPath(t *testing.T) {
	for in, want := range map[string]string{
		"content.body":           "content.body",
		`content.m\.mentions.x`:  `content.m\.mentions.x`,
		`content.a\\b`:           `content.a\\b`,
		`content.a\b`:            `content.a\\b`, // a lone backslash is literal
		"content..x":             "",
		"":                       "",
		`content.m\.relates_to.`: "",
	} {
		got, ok := CanonicalPath(in)
		if got != want || ok != (want != "") {
			t.Errorf("CanonicalPath(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func TestCheck(t *testing.T) {
	if CheckActions([]any{"notify", map[string]any{"set_tweak": "sound", "value": "x"}, "dont_notify"}) != nil {
		t.Error("valid actions refused")
	}
	for _, a := range [][]any{{"explode"}, {1.0}, {map[string]any{"value": 1}}} {
		if CheckActions(a) == nil {
			t.Errorf("CheckActions(%v) accepted", a)
		}
	}
	bad := []Condition{
		{Kind: "event_match", Key: "content.body"},
		{Kind: "event_match", Pattern: ptr("x")},
		{Kind: "event_property_is", Key: "content.x", Value: json.RawMessage(`{}`)},
		{Kind: "event_property_is", Key: "content.x", Value: json.RawMessage(`1.5`)},
		{Kind: "room_member_count", Is: "two"},
		{Kind: "sender_notification_permission"},
		{},
	}
	for _, c := range bad {
		if CheckConditions([]Condition{c}) == nil {
			t.Errorf("CheckConditions(%+v) accepted", c)
		}
	}
	if CheckConditions([]Condition{{Kind: "org.example.future", Key: "whatever"}}) != nil {
		t.Error("unknown condition kinds must be accepted (they never match)")
	}
}

// globRegexp is the reference: Synapse's translation of a glob to a regular
// expression, with Go's ASCII \b and \W.
func globRegexp(pattern string, words bool) *regexp.Regexp {
	var b strings.Builder
	for _, r := range pattern {
		switch r {
		case '*':
			b.WriteString(".*?")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	if words {
		return regexp.MustCompile(`(?is)(?:^|\b|\W)` + b.String() + `(?:\b|\W|$)`)
	}
	return regexp.MustCompile(`(?is)^` + b.String() + `$`)
}

func TestGlob(t *testing.T) {
	for _, tc := range []struct {
		pattern, text string
		words, want   bool
	}{
		{"m.room.message", "m.room.message", false, true},
		{"M.ROOM.*", "m.room.message", false, true},
		{"m.room.?", "m.room.message", false, false},
		{"", "", false, true},
		{"*", "", false, true},
		{"a*b*c", "aXbYc", false, true},
		{"a*b*c", "aXbYd", false, false},
		{"é?", "Éx", false, true},
		{"@room", "hey @room!", true, true},
		{"foo", "foo_bar", true, false},
		{"foo", "foo-bar", true, true},
		{"f*r", "foo bar baz", true, true},
		{"f*r", "foo barbaz", true, false},
		{"ba?", "foo bar", true, true},
		{"*", "anything", true, true},
	} {
		got := globMatch(tc.pattern, tc.text)
		if tc.words {
			got = globMatchWords(tc.pattern, tc.text)
		}
		if got != tc.want {
			t.Errorf("glob %q on %q (words %v) = %v, want %v", tc.pattern, tc.text, tc.words, got, tc.want)
		}
	}
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// BenchmarkEvaluate is the per-member cost of push evaluation for one
// message in a room of 1,000 members, each with the default rules plus 10
// keyword rules (none of which matches: the common, most expensive case).
func BenchmarkEvaluate(b *testing.B) {
	const members = 1000
	rulesets := make([]Ruleset, members)
	for i := range rulesets {
		var u UserRules
		for k := range 10 {
			w := fmt.Sprintf("keyword%d", k)
			if err := u.Put("content", Rule{RuleID: w, Pattern: w, Actions: []any{"notify", map[string]any{"set_tweak": "highlight"}}}, "", ""); err != nil {
				b.Fatal(err)
			}
		}
		rulesets[i] = u.Ruleset(roomdag.UserID(fmt.Sprintf("@user%d:example.org", i)))
		rulesets[i].compile() // as the worker does
	}
	ev, err := NewEventView([]byte(`{"type":"m.room.message","room_id":"!room:example.org","sender":"@bob:example.org",
		"event_id":"$ev","origin_server_ts":1,"content":{"msgtype":"m.text",
		"body":"Has anyone looked at the quarterly figures for the north region yet? The deadline is Friday and we still need the summary."}}`))
	if err != nil {
		b.Fatal(err)
	}
	ctx := &EvalContext{MemberCount: members, SenderLevel: 0}
	b.ReportAllocs()
	b.ResetTimer()
	notified := 0
	for i := 0; i < b.N; i++ {
		actions, _ := Evaluate(&rulesets[i%members], ev, ctx)
		if Notify(actions) {
			notified++
		}
	}
	if notified != b.N {
		b.Fatalf("%d of %d evaluations notified", notified, b.N)
	}
}

// hostileRules is the rule set of the attack: 10 override rules of
// 19 conditions, each a 999-byte wildcard chain on content.body. The first
// 18 conditions of each hold on a body of a's and the last does not, so
// every condition of every rule is tried: before the automaton, 108 s for
// one 60,000-character message.
func hostileRules(tb testing.TB) Ruleset {
	var u UserRules
	holds := strings.Repeat("*a", 499)         // ends at the end of a word: scans the body
	fails := strings.Repeat("*a", 498) + "*b*" // scans the body, finds no b
	for r := range 10 {
		conds := make([]Condition, 19)
		for i := range conds {
			p := holds
			if i == len(conds)-1 {
				p = fails
			}
			conds[i] = Condition{Kind: "event_match", Key: "content.body", Pattern: &p}
		}
		if err := CheckConditions(conds); err != nil {
			tb.Fatal(err)
		}
		if err := u.Put("override", Rule{RuleID: fmt.Sprintf("slow%d", r), Conditions: conds, Actions: []any{"notify"}}, "", ""); err != nil {
			tb.Fatal(err)
		}
	}
	rs := u.Ruleset("@mallory:example.org")
	rs.compile()
	return rs
}

// BenchmarkEvaluateHostile is one evaluation of hostileRules against a
// 60,000-character message: what the attacker's rules cost the worker per
// message. The budget (MaxEvalSteps) ends it; the defaults still decide.
func BenchmarkEvaluateHostile(b *testing.B) {
	rs := hostileRules(b)
	ev, err := NewEventView([]byte(`{"type":"m.room.message","room_id":"!r:example.org","sender":"@bob:example.org",` +
		`"content":{"msgtype":"m.text","body":"` + strings.Repeat("a", 60000) + `"}}`))
	if err != nil {
		b.Fatal(err)
	}
	over := 0
	ctx := &EvalContext{MemberCount: 3, OverBudget: func(string) { over++ }}
	for b.Loop() {
		if actions, _ := Evaluate(&rs, ev, ctx); !Notify(actions) {
			b.Fatal("the defaults must still notify")
		}
	}
	b.ReportMetric(float64(over)/float64(b.N), "over-budget/op")
}

// TestDefaultsOrder: the complete default set, in the spec's order with
// Synapse's extra rules where Synapse serves them (base_rules.rs).
func TestDefaultsOrder(t *testing.T) {
	rs := Defaults("@alice:example.org")
	want := map[string][]string{
		"override": {".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me", ".m.rule.member_event",
			".m.rule.is_user_mention", ".m.rule.contains_display_name", ".m.rule.is_room_mention", ".m.rule.roomnotif",
			".m.rule.tombstone", ".m.rule.reaction", ".m.rule.room.server_acl", ".m.rule.suppress_edits",
			".org.matrix.msc3930.rule.poll_response"},
		"content": {".m.rule.contains_user_name"},
		"room":    nil,
		"sender":  nil,
		"underride": {".m.rule.call", ".m.rule.encrypted_room_one_to_one", ".m.rule.room_one_to_one", ".m.rule.message",
			".m.rule.encrypted", ".im.vector.jitsi", ".org.matrix.msc3930.rule.poll_start_one_to_one",
			".org.matrix.msc3930.rule.poll_start", ".org.matrix.msc3930.rule.poll_end_one_to_one", ".org.matrix.msc3930.rule.poll_end"},
	}
	for _, kind := range Kinds {
		list, _ := rs.ByKind(kind)
		var got []string
		for _, r := range list {
			got = append(got, r.RuleID)
			if !r.Default || r.Enabled != (r.RuleID != ".m.rule.master") {
				t.Errorf("%s: default %v enabled %v", r.RuleID, r.Default, r.Enabled)
			}
		}
		if strings.Join(got, " ") != strings.Join(want[kind], " ") {
			t.Errorf("%s rules:\n got %v\nwant %v", kind, got, want[kind])
		}
	}
	if p := rs.Content[0].Pattern; p != "alice" {
		t.Errorf(".m.rule.contains_user_name pattern %q, want the localpart", p)
	}
}

// TestLegacyMentionRules: the deprecated body-matching rules match events
// without m.mentions only (spec v1.7), @room needs the notification power.
func TestLegacyMentionRules(t *testing.T) {
	defaults := Defaults("@alice:example.org")
	msg := func(body, extra string) string {
		return fmt.Sprintf(`{"type":"m.room.message","room_id":"!r:example.org","sender":"@bob:example.org","content":{"msgtype":"m.text","body":%q%s}}`, body, extra)
	}
	for _, tc := range []struct {
		name, event string
		level       int64
		rule        string // the rule that decides; "" for .m.rule.message
	}{
		{"display name", msg("ask Alice Liddell", ""), 0, RuleContainsDisplayName},
		{"names inside words", msg("ask AliceLiddell", ""), 0, ""},
		{"localpart", msg("ALICE: lunch?", ""), 0, RuleContainsUserName},
		{"localpart inside a word", msg("malice", ""), 0, ""},
		{"display name with m.mentions", msg("ask Alice Liddell", `,"m.mentions":{}`), 0, ""},
		{"localpart with m.mentions", msg("alice?", `,"m.mentions":{"user_ids":[]}`), 0, ""},
		{"mentioned and named", msg("alice?", `,"m.mentions":{"user_ids":["@alice:example.org"]}`), 0, ".m.rule.is_user_mention"},
		{"@room by a moderator", msg("@room: deploy at 5", ""), 50, RuleRoomNotif},
		{"@room by a user", msg("@room: deploy at 5", ""), 0, ""},
		{"@room with m.mentions", msg("@room: deploy at 5", `,"m.mentions":{}`), 50, ""},
		{"notice naming", `{"type":"m.room.message","content":{"msgtype":"m.notice","body":"alice"}}`, 0, ".m.rule.suppress_notices"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := &EvalContext{DisplayName: "Alice Liddell", MemberCount: 5, SenderLevel: tc.level}
			got, _ := Evaluate(&defaults, view(t, tc.event), ctx)
			want := defaults.Underride[3].Actions // .m.rule.message
			for _, list := range [][]Rule{defaults.Override, defaults.Content} {
				for _, r := range list {
					if r.RuleID == tc.rule {
						want = r.Actions
					}
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("actions %v, want %v (%s)", got, want, tc.rule)
			}
		})
	}
	// Disabling a legacy rule is honoured like any other.
	var u UserRules
	if err := u.SetEnabled("@alice:example.org", "content", RuleContainsUserName, false); err != nil {
		t.Fatal(err)
	}
	rs := u.Ruleset("@alice:example.org")
	if a, _ := Evaluate(&rs, view(t, msg("alice?", "")), &EvalContext{MemberCount: 5}); Highlight(a) {
		t.Errorf("disabled .m.rule.contains_user_name still highlights: %v", a)
	}
}
