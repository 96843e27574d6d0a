package api_test

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/testserver"
)

func TestDefaultPushRules(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	var all struct {
		Global map[string][]struct {
			RuleID     string           `json:"rule_id"`
			Default    bool             `json:"default"`
			Enabled    bool             `json:"enabled"`
			Conditions []map[string]any `json:"conditions"`
		} `json:"global"`
	}
	wantOK(t, alice.Do("GET", "/_matrix/client/v3/pushrules/", nil), &all)
	for _, kind := range []string{"override", "content", "room", "sender", "underride"} {
		if _, ok := all.Global[kind]; !ok {
			t.Errorf("ruleset lacks kind %s", kind)
		}
	}
	over := all.Global["override"]
	if len(over) == 0 || over[0].RuleID != ".m.rule.master" || over[0].Enabled {
		t.Errorf("first override rule must be the disabled master rule: %+v", over)
	}
	var invite bool
	for _, r := range over {
		if r.RuleID == ".m.rule.invite_for_me" {
			for _, c := range r.Conditions {
				invite = invite || c["key"] == "state_key" && c["pattern"] == alice.UserID
			}
		}
	}
	if !invite {
		t.Errorf(".m.rule.invite_for_me does not name the user")
	}
	var enabled struct{ Enabled bool }
	wantOK(t, alice.Do("GET", "/_matrix/client/v3/pushrules/global/underride/.m.rule.message/enabled", nil), &enabled)
	if !enabled.Enabled {
		t.Errorf(".m.rule.message disabled")
	}
	wantErr(t, alice.Do("GET", "/_matrix/client/v3/pushrules/global/override/nope", nil), 404, "M_NOT_FOUND")
	wantErr(t, alice.Do("GET", "/_matrix/client/v3/pushrules/global/sideways/x", nil), 404, "M_NOT_FOUND")
	wantErr(t, srv.Anonymous().Do("GET", "/_matrix/client/v3/pushrules/", nil), 401, "M_MISSING_TOKEN")
}

func TestPushRuleWrites(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	const rules = "/_matrix/client/v3/pushrules/global/"
	put := func(kind, id, query string, body any) *testserver.Response {
		p := rules + kind + "/" + url.PathEscape(id)
		if query != "" {
			p += "?" + query
		}
		return alice.Do("PUT", p, body)
	}
	notify := map[string]any{"actions": []any{"notify"}}
	type rule struct {
		RuleID  string `json:"rule_id"`
		Default bool   `json:"default"`
		Enabled bool   `json:"enabled"`
		Pattern string `json:"pattern"`
		Actions []any  `json:"actions"`
	}
	ids := func(kind string) []string {
		t.Helper()
		var all struct{ Global map[string][]rule }
		wantOK(t, alice.Do("GET", "/_matrix/client/v3/pushrules/", nil), &all)
		var out []string
		for _, r := range all.Global[kind] {
			out = append(out, r.RuleID)
		}
		return out
	}

	// Keyword rules, ordered with before and after, ahead of the defaults.
	wantOK(t, put("content", "cake", "", map[string]any{"pattern": "cake", "actions": []any{"notify"}}), nil)
	wantOK(t, put("content", "tea", "", map[string]any{"pattern": "tea", "actions": []any{"notify"}}), nil)
	wantOK(t, put("content", "lie", "after=cake", map[string]any{"pattern": "cake*lie", "actions": []any{"notify"}}), nil)
	wantOK(t, put("content", "first", "before=tea", map[string]any{"pattern": "x", "actions": []any{}}), nil)
	if got := strings.Join(ids("content"), ","); got != "first,tea,cake,lie,.m.rule.contains_user_name" {
		t.Errorf("content rules %s", got)
	}
	var one rule
	wantOK(t, alice.Do("GET", rules+"content/lie", nil), &one)
	if one.Pattern != "cake*lie" || one.Default || !one.Enabled {
		t.Errorf("GET content/lie: %+v", one)
	}

	// An override rule goes after the master rule, before the other defaults.
	wantOK(t, put("override", "beer", "", map[string]any{"actions": []any{"notify"},
		"conditions": []any{map[string]any{"kind": "event_match", "key": "content.body", "pattern": "beer"},
			map[string]any{"kind": "room_member_count", "is": "<=10"}}}), nil)
	if got := ids("override"); len(got) < 3 || got[0] != ".m.rule.master" || got[1] != "beer" {
		t.Errorf("override rules %v", got)
	}

	// Sender and room rules are keyed by IDs; dont_notify is kept as sent.
	wantOK(t, put("sender", alice.UserID, "", map[string]any{"actions": []any{"dont_notify"}}), nil)
	var acts struct{ Actions []any }
	wantOK(t, alice.Do("GET", rules+"sender/"+url.PathEscape(alice.UserID)+"/actions", nil), &acts)
	if len(acts.Actions) != 1 || acts.Actions[0] != "dont_notify" {
		t.Errorf("sender rule actions %v", acts.Actions)
	}
	wantOK(t, put("room", "!foo:example.com", "", notify), nil)

	// Enable, disable and new actions, on a user rule and a default rule.
	wantOK(t, alice.Do("PUT", rules+"room/"+url.PathEscape("!foo:example.com")+"/enabled", map[string]any{"enabled": false}), nil)
	var en struct{ Enabled bool }
	wantOK(t, alice.Do("GET", rules+"room/"+url.PathEscape("!foo:example.com")+"/enabled", nil), &en)
	if en.Enabled {
		t.Error("room rule still enabled")
	}
	wantOK(t, alice.Do("PUT", rules+"override/.m.rule.master/enabled", map[string]any{"enabled": true}), nil)
	wantOK(t, alice.Do("GET", rules+"override/.m.rule.master/enabled", nil), &en)
	if !en.Enabled {
		t.Error("master rule not enabled")
	}
	wantOK(t, alice.Do("PUT", rules+"underride/.m.rule.message/actions", map[string]any{"actions": []any{}}), nil)
	wantOK(t, alice.Do("GET", rules+"underride/.m.rule.message/actions", nil), &acts)
	if len(acts.Actions) != 0 {
		t.Errorf(".m.rule.message actions %v", acts.Actions)
	}

	// Updating a rule keeps its enabled flag and its place.
	wantOK(t, alice.Do("PUT", rules+"content/tea/enabled", map[string]any{"enabled": false}), nil)
	wantOK(t, put("content", "tea", "", map[string]any{"pattern": "tea", "actions": []any{"notify"}}), nil)
	wantOK(t, alice.Do("GET", rules+"content/tea", nil), &one)
	if one.Enabled {
		t.Error("updating re-enabled the rule")
	}
	if got := strings.Join(ids("content"), ","); got != "first,tea,cake,lie,.m.rule.contains_user_name" {
		t.Errorf("content rules after update %s", got)
	}

	// Delete.
	wantOK(t, alice.Do("DELETE", rules+"content/cake", nil), nil)
	wantErr(t, alice.Do("GET", rules+"content/cake", nil), 404, "M_NOT_FOUND")
	wantErr(t, alice.Do("DELETE", rules+"content/cake", nil), 404, "M_NOT_FOUND")
	wantErr(t, alice.Do("DELETE", rules+"override/.m.rule.master", nil), 400, "M_INVALID_PARAM")

	// Bad input.
	wantErr(t, put("sideways", "x", "", notify), 404, "M_NOT_FOUND")
	wantErr(t, put("override", ".m.rule.mine", "", notify), 400, "M_INVALID_PARAM")
	wantErr(t, put("content", `a\b`, "", map[string]any{"pattern": "x", "actions": []any{}}), 400, "M_INVALID_PARAM")
	wantErr(t, put("room", "not-a-room", "", notify), 400, "M_INVALID_PARAM")
	wantErr(t, put("sender", "bob", "", notify), 400, "M_INVALID_PARAM")
	wantErr(t, put("content", "nopattern", "", notify), 400, "M_MISSING_PARAM")
	wantErr(t, put("content", "emptypattern", "", map[string]any{"pattern": "", "actions": []any{}}), 400, "M_BAD_JSON")
	wantErr(t, put("content", "longpattern", "", map[string]any{"pattern": strings.Repeat("x", 1001), "actions": []any{}}), 400, "M_BAD_JSON")
	wantErr(t, put("content", "numpattern", "", map[string]any{"pattern": 5, "actions": []any{}}), 400, "M_BAD_JSON")
	// Only * and ? are special in a glob: brackets and backslashes are literal.
	wantOK(t, put("content", "brackets", "", map[string]any{"pattern": `[x\`, "actions": []any{}}), nil)
	wantErr(t, put("override", "noactions", "", map[string]any{}), 400, "M_MISSING_PARAM")
	wantErr(t, put("override", "badaction", "", map[string]any{"actions": []any{"explode"}}), 400, "M_BAD_JSON")
	wantErr(t, put("override", "badactions", "", map[string]any{"actions": "notify"}), 400, "M_BAD_JSON")
	wantErr(t, put("override", "badcond", "", map[string]any{"actions": []any{},
		"conditions": []any{map[string]any{"kind": "room_member_count", "is": "lots"}}}), 400, "M_BAD_JSON")
	wantErr(t, put("override", "nokind", "", map[string]any{"actions": []any{}, "conditions": []any{map[string]any{}}}), 400, "M_BAD_JSON")
	wantErr(t, put("override", "x", "", "not json"), 400, "M_NOT_JSON")
	wantErr(t, put("content", "z", "before=nope", map[string]any{"pattern": "z", "actions": []any{}}), 400, "M_UNKNOWN")
	wantErr(t, put("override", "z", "after=.m.rule.master", notify), 400, "M_UNKNOWN")
	wantErr(t, alice.Do("PUT", rules+"override/nope/enabled", map[string]any{"enabled": true}), 404, "M_NOT_FOUND")
	wantErr(t, alice.Do("PUT", rules+"override/.m.rule.nope/actions", notify), 404, "M_NOT_FOUND")
	wantErr(t, alice.Do("PUT", rules+"override/.m.rule.master/enabled", map[string]any{}), 400, "M_MISSING_PARAM")

	// Rules are per user.
	bob := srv.Register("bob")
	var bobs struct{ Global map[string][]rule }
	wantOK(t, bob.Do("GET", "/_matrix/client/v3/pushrules/", nil), &bobs)
	if c := bobs.Global["content"]; len(c) != 1 || c[0].RuleID != ".m.rule.contains_user_name" || bobs.Global["override"][0].Enabled {
		t.Errorf("bob sees alice's rules: %+v", bobs.Global)
	}
}

// Every change is m.push_rules account data in /sync and reaches a
// long-poll, whether it started before the change (woken) or after
// (Complement TestPushSync).
func TestPushRulesInSync(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	since := alice.Sync("timeout=0")["next_batch"].(string)
	done := make(chan map[string]any, 1)
	go func() {
		var out map[string]any
		r := alice.Do("GET", "/_matrix/client/v3/sync?timeout=10000&since="+url.QueryEscape(since), nil)
		_ = r.JSON(&out)
		done <- out
	}()
	wantOK(t, alice.Do("PUT", "/_matrix/client/v3/pushrules/global/room/"+url.PathEscape("!foo:example.com"),
		map[string]any{"actions": []any{"notify"}}), nil)
	select {
	case out := <-done:
		ad, _ := out["account_data"].(map[string]any)
		evs, _ := ad["events"].([]any)
		found := false
		for _, e := range evs {
			e, _ := e.(map[string]any)
			if e["type"] == "m.push_rules" {
				global, _ := e["content"].(map[string]any)["global"].(map[string]any)
				room, _ := global["room"].([]any)
				found = len(room) == 1
			}
		}
		if !found {
			t.Errorf("no m.push_rules with the room rule in %v", out["account_data"])
		}
	case <-time.After(15 * time.Second):
		t.Fatal("sync did not return")
	}
}

// TestPushRulesDeprecatedDefaults: Element's notification settings read and
// toggle the legacy mention rules and the poll rules, so they are served,
// and changes to them persist (across a restart too); unknown kinds and
// rules are 404 M_NOT_FOUND for every operation on an existing rule.
func TestPushRulesDeprecatedDefaults(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	const rules = "/_matrix/client/v3/pushrules/global/"
	type rule struct {
		RuleID     string           `json:"rule_id"`
		Default    bool             `json:"default"`
		Enabled    bool             `json:"enabled"`
		Pattern    string           `json:"pattern"`
		Conditions []map[string]any `json:"conditions"`
		Actions    []any            `json:"actions"`
	}
	for _, tc := range []struct{ kind, id, cond string }{
		{"override", ".m.rule.contains_display_name", "contains_display_name"},
		{"override", ".m.rule.roomnotif", "sender_notification_permission"},
		{"content", ".m.rule.contains_user_name", ""},
		{"override", ".org.matrix.msc3930.rule.poll_response", "event_match"},
		{"underride", ".org.matrix.msc3930.rule.poll_start_one_to_one", "room_member_count"},
		{"underride", ".org.matrix.msc3930.rule.poll_start", "event_match"},
		{"underride", ".org.matrix.msc3930.rule.poll_end_one_to_one", "room_member_count"},
		{"underride", ".org.matrix.msc3930.rule.poll_end", "event_match"},
	} {
		var r rule
		wantOK(t, alice.Do("GET", rules+tc.kind+"/"+tc.id, nil), &r)
		if r.RuleID != tc.id || !r.Default || !r.Enabled {
			t.Errorf("GET %s/%s: %+v", tc.kind, tc.id, r)
		}
		if tc.cond != "" && !slices.ContainsFunc(r.Conditions, func(c map[string]any) bool { return c["kind"] == tc.cond }) {
			t.Errorf("%s lacks a %s condition: %+v", tc.id, tc.cond, r.Conditions)
		}
		if tc.kind == "content" && r.Pattern != strings.TrimPrefix(strings.Split(alice.UserID, ":")[0], "@") {
			t.Errorf("%s pattern %q, want alice's localpart", tc.id, r.Pattern)
		}
	}

	// Toggle the legacy rules as Element does, then read them back, also
	// after a restart.
	wantOK(t, alice.Do("PUT", rules+"override/.m.rule.contains_display_name/enabled", map[string]any{"enabled": false}), nil)
	wantOK(t, alice.Do("PUT", rules+"content/.m.rule.contains_user_name/actions", map[string]any{"actions": []any{"notify"}}), nil)
	wantOK(t, alice.Do("PUT", rules+"override/.m.rule.roomnotif/enabled", map[string]any{"enabled": false}), nil)
	wantOK(t, alice.Do("PUT", rules+"underride/.org.matrix.msc3930.rule.poll_start/actions", map[string]any{"actions": []any{}}), nil)
	srv.Stop()
	srv = testserver.Start(t, testserver.Options{DataDir: srv.DataDir})
	alice = reconnect(srv, alice)
	check := func(kind, id string, enabled bool, actions string) {
		t.Helper()
		var r rule
		wantOK(t, alice.Do("GET", rules+kind+"/"+id, nil), &r)
		if r.Enabled != enabled || fmt.Sprint(r.Actions) != actions {
			t.Errorf("%s: enabled %v actions %v, want %v %s", id, r.Enabled, r.Actions, enabled, actions)
		}
		var en struct{ Enabled bool }
		wantOK(t, alice.Do("GET", rules+kind+"/"+id+"/enabled", nil), &en)
		if en.Enabled != enabled {
			t.Errorf("%s/enabled: %v", id, en.Enabled)
		}
	}
	check("override", ".m.rule.contains_display_name", false, "[notify map[set_tweak:sound value:default] map[set_tweak:highlight]]")
	check("content", ".m.rule.contains_user_name", true, "[notify]")
	check("override", ".m.rule.roomnotif", false, "[notify map[set_tweak:highlight]]")
	check("underride", ".org.matrix.msc3930.rule.poll_start", true, "[]")

	// Unknown kinds and rules: 404 M_NOT_FOUND (Synapse answers the same).
	for _, r := range []struct{ method, path string }{
		{"GET", rules + "bogus/x"},
		{"GET", rules + "bogus/x/enabled"},
		{"GET", rules + "bogus/x/actions"},
		{"DELETE", rules + "bogus/x"},
		{"PUT", rules + "bogus/x/enabled"},
		{"PUT", rules + "bogus/x/actions"},
		{"PUT", rules + "bogus/x"},
		{"GET", rules + "override/.m.rule.nope"},
		{"GET", rules + "content/nope/actions"},
		{"DELETE", rules + "override/nope"},
		{"PUT", rules + "underride/.m.rule.nope/enabled"},
		{"PUT", rules + "content/nope/actions"},
		// A default rule under another kind is not that kind's rule.
		{"GET", rules + "underride/.m.rule.master"},
		{"PUT", rules + "override/.m.rule.contains_user_name/enabled"},
	} {
		var body any
		if r.method == "PUT" {
			body = map[string]any{"enabled": true, "actions": []any{"notify"}}
		}
		wantErr(t, alice.Do(r.method, r.path, body), 404, "M_NOT_FOUND")
	}
}

// pushRulesInSync returns the m.push_rules content of a sync's global
// account data, and how many m.push_rules events it held.
func pushRulesInSync(t *testing.T, out map[string]any) (map[string]any, int) {
	t.Helper()
	ad, _ := out["account_data"].(map[string]any)
	evs, _ := ad["events"].([]any)
	var content map[string]any
	n := 0
	for _, e := range evs {
		e, _ := e.(map[string]any)
		if e["type"] == "m.push_rules" {
			content, _ = e["content"].(map[string]any)
			n++
		}
	}
	return content, n
}

// TestPushRulesInInitialSync: clients build their notification settings
// from m.push_rules in the initial sync, so it is there for a user who
// never changed a rule, with the content GET /pushrules/ returns; an
// incremental sync carries it only when the rules changed, and a filter
// can leave it out.
func TestPushRulesInInitialSync(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	var rules map[string]any
	wantOK(t, alice.Do("GET", "/_matrix/client/v3/pushrules/", nil), &rules)

	initial := alice.Sync("timeout=0")
	content, n := pushRulesInSync(t, initial)
	if n != 1 || fmt.Sprint(content) != fmt.Sprint(rules) {
		t.Fatalf("%d m.push_rules in the initial sync, content %v, want %v", n, content, rules)
	}
	since := initial["next_batch"].(string)
	if _, n := pushRulesInSync(t, alice.Sync("timeout=0&since="+url.QueryEscape(since))); n != 0 {
		t.Errorf("unchanged rules in an incremental sync")
	}

	wantOK(t, alice.Do("PUT", "/_matrix/client/v3/pushrules/global/override/.m.rule.contains_display_name/enabled", map[string]any{"enabled": false}), nil)
	next := alice.Sync("timeout=0&since=" + url.QueryEscape(since))
	content, n = pushRulesInSync(t, next)
	wantOK(t, alice.Do("GET", "/_matrix/client/v3/pushrules/", nil), &rules)
	if n != 1 || fmt.Sprint(content) != fmt.Sprint(rules) || !strings.Contains(fmt.Sprint(content), "enabled:false rule_id:.m.rule.contains_display_name") {
		t.Errorf("%d m.push_rules after a change, content %v, want %v", n, content, rules)
	}
	// Initial syncs after a change carry it once, not twice.
	if _, n := pushRulesInSync(t, alice.Sync("timeout=0")); n != 1 {
		t.Errorf("%d m.push_rules in an initial sync after a change", n)
	}
	filter := url.QueryEscape(`{"account_data":{"not_types":["m.push_rules"]}}`)
	if _, n := pushRulesInSync(t, alice.Sync("timeout=0&filter="+filter)); n != 0 {
		t.Errorf("filtered out, yet in the initial sync")
	}
}

// TestPushRuleConditionsKey: override and underride rules always carry
// "conditions", [] when they have none (.m.rule.master), and content,
// room and sender rules never do, as Synapse serves them
// (push/clientformat.py), in GET /pushrules/, GET of one rule and the
// m.push_rules account data alike. Clients iterate over conditions
// without checking it is there.
func TestPushRuleConditionsKey(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	room := createRoom(t, alice, map[string]any{})
	for _, put := range []struct{ kind, id string }{{"room", room}, {"sender", "@bob:example.org"}, {"override", "mine"}, {"underride", "mine"}} {
		wantOK(t, alice.Do("PUT", "/_matrix/client/v3/pushrules/global/"+put.kind+"/"+url.PathEscape(put.id), map[string]any{"actions": []any{}}), nil)
	}
	wantOK(t, alice.Do("PUT", "/_matrix/client/v3/pushrules/global/content/word", map[string]any{"actions": []any{}, "pattern": "word"}), nil)

	check := func(t *testing.T, where string, global map[string]any) {
		t.Helper()
		for _, kind := range []string{"override", "content", "room", "sender", "underride"} {
			rules, ok := global[kind].([]any)
			if !ok || len(rules) == 0 {
				t.Errorf("%s: no %s rules: %v", where, kind, global[kind])
				continue
			}
			for _, r := range rules {
				r := r.(map[string]any)
				conds, has := r["conditions"]
				switch kind {
				case "override", "underride":
					if _, isList := conds.([]any); !isList {
						t.Errorf("%s: %s rule %v has conditions %v, want a list", where, kind, r["rule_id"], conds)
					}
				default:
					if has {
						t.Errorf("%s: %s rule %v has conditions %v, want none", where, kind, r["rule_id"], conds)
					}
				}
			}
		}
		master := global["override"].([]any)[0].(map[string]any)
		if c, ok := master["conditions"].([]any); master["rule_id"] != ".m.rule.master" || !ok || len(c) != 0 {
			t.Errorf("%s: first override rule %v, want .m.rule.master with conditions []", where, master)
		}
	}
	var all struct {
		Global map[string]any `json:"global"`
	}
	wantOK(t, alice.Do("GET", "/_matrix/client/v3/pushrules/", nil), &all)
	check(t, "GET /pushrules/", all.Global)
	content, _ := pushRulesInSync(t, alice.Sync("timeout=0"))
	global, _ := content["global"].(map[string]any)
	check(t, "m.push_rules", global)

	for _, one := range []struct {
		path string
		want bool
	}{
		{"override/.m.rule.master", true}, {"override/mine", true}, {"underride/mine", true},
		{"room/" + url.PathEscape(room), false}, {"content/word", false}, {"content/.m.rule.contains_user_name", false},
	} {
		var r map[string]any
		wantOK(t, alice.Do("GET", "/_matrix/client/v3/pushrules/global/"+one.path, nil), &r)
		if _, has := r["conditions"]; has != one.want {
			t.Errorf("GET %s: %v, want conditions %v", one.path, r, one.want)
		}
	}
}
