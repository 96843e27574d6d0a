package csapi

import (
	"fmt"
	"testing"

	. "github.com/persistentchat/homeserver/conformance/deploy"
)

// The spec's predefined rules (client-server API, "Predefined Rules"), in
// the spec's order for each kind. The legacy body-matching mention rules
// (.m.rule.contains_display_name, .m.rule.contains_user_name,
// .m.rule.roomnotif) are deprecated but not removed, and Synapse still
// serves them: Element toggles them and old clients rely on them.
var specDefaultRules = map[string][]string{
	"override": {".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me", ".m.rule.member_event",
		".m.rule.is_user_mention", ".m.rule.contains_display_name", ".m.rule.is_room_mention", ".m.rule.roomnotif",
		".m.rule.tombstone", ".m.rule.reaction", ".m.rule.room.server_acl", ".m.rule.suppress_edits"},
	"content": {".m.rule.contains_user_name"},
	"underride": {".m.rule.call", ".m.rule.encrypted_room_one_to_one", ".m.rule.room_one_to_one",
		".m.rule.message", ".m.rule.encrypted"},
}

// MSC3930's poll rules, under the unstable IDs Synapse serves and Element
// reads.
var pollRules = map[string][]string{
	"override": {".org.matrix.msc3930.rule.poll_response"},
	"underride": {".org.matrix.msc3930.rule.poll_start_one_to_one", ".org.matrix.msc3930.rule.poll_start",
		".org.matrix.msc3930.rule.poll_end_one_to_one", ".org.matrix.msc3930.rule.poll_end"},
}

// findRule returns the rule with id in global.<kind> of a rule set.
func findRule(global any, kind, id string) any {
	for _, r := range arr(global, kind) {
		if str(r, "rule_id") == id {
			return r
		}
	}
	return nil
}

// checkDefaultRules checks a global rule set holds every predefined rule in
// the spec's order, each marked default, and the poll rules.
func checkDefaultRules(t *testing.T, global any) {
	t.Helper()
	for kind, ids := range specDefaultRules {
		next := 0
		for _, r := range arr(global, kind) {
			if next < len(ids) && str(r, "rule_id") == ids[next] {
				next++
			}
		}
		if next < len(ids) {
			t.Errorf("%s: %s missing or out of the spec's order", kind, ids[next])
		}
		for _, id := range ids {
			r := findRule(global, kind, id)
			if r == nil {
				continue
			}
			if d, _ := Path(r, "default"); d != true {
				t.Errorf("%s: %s is not default", kind, id)
			}
			wantEnabled := id != ".m.rule.master"
			if e, _ := Path(r, "enabled"); e != wantEnabled {
				t.Errorf("%s: %s enabled = %v, want %v", kind, id, e, wantEnabled)
			}
		}
	}
	for kind, ids := range pollRules {
		for _, id := range ids {
			if findRule(global, kind, id) == nil {
				t.Errorf("%s: %s missing", kind, id)
			}
		}
	}
}

// hasAction reports whether a rule's actions set the tweak: any value for
// sound, true (or no value) for highlight.
func hasAction(rule any, tweak string) bool {
	for _, a := range arr(rule, "actions") {
		if str(a, "set_tweak") == tweak {
			v, ok := Path(a, "value")
			return tweak != "highlight" || !ok || v == true
		}
	}
	return false
}

func TestPushRules(t *testing.T) {
	alice := register(t, "alice")
	r := mustOK(t, alice.Do(ctx, "GET", cs("pushrules", ""), nil), "get")
	global, _ := r.Get("global")
	t.Run("GET /pushrules/ returns the complete default rule set", func(t *testing.T) {
		expectPresent(t, r, "global.override", "global.content", "global.room", "global.sender", "global.underride")
		checkDefaultRules(t, global)
	})
	t.Run("GET /pushrules/global/ returns the same rule set", func(t *testing.T) {
		g := mustOK(t, alice.Do(ctx, "GET", cs("pushrules", "global", ""), nil), "get global")
		checkDefaultRules(t, g.JSON)
	})
	t.Run(".m.rule.contains_user_name matches the user's localpart and highlights", func(t *testing.T) {
		rule := findRule(global, "content", ".m.rule.contains_user_name")
		if str(rule, "pattern") != localpart(alice.UserID) {
			t.Fatalf("pattern %q, want %q: %v", str(rule, "pattern"), localpart(alice.UserID), rule)
		}
		if !hasAction(rule, "highlight") || !hasAction(rule, "sound") {
			t.Fatalf("actions: %v", rule)
		}
	})
	t.Run(".m.rule.contains_display_name matches the display name and highlights", func(t *testing.T) {
		rule := findRule(global, "override", ".m.rule.contains_display_name")
		if c := arr(rule, "conditions"); len(c) != 1 || str(c[0], "kind") != "contains_display_name" {
			t.Fatalf("conditions: %v", rule)
		}
		if !hasAction(rule, "highlight") {
			t.Fatalf("actions: %v", rule)
		}
	})
	t.Run(".m.rule.roomnotif matches @room from senders with the room notification power", func(t *testing.T) {
		rule := findRule(global, "override", ".m.rule.roomnotif")
		kinds := map[string]any{}
		for _, c := range arr(rule, "conditions") {
			kinds[str(c, "kind")] = c
		}
		if m := kinds["event_match"]; str(m, "key") != "content.body" || str(m, "pattern") != "@room" {
			t.Fatalf("event_match: %v", rule)
		}
		if p := kinds["sender_notification_permission"]; str(p, "key") != "room" {
			t.Fatalf("sender_notification_permission: %v", rule)
		}
		if !hasAction(rule, "highlight") {
			t.Fatalf("actions: %v", rule)
		}
	})
	t.Run("GET /pushrules/global/{kind}/{ruleId} returns one default rule", func(t *testing.T) {
		one := mustOK(t, alice.Do(ctx, "GET", cs("pushrules", "global", "override", ".m.rule.roomnotif"), nil), "get rule")
		expectStr(t, one, "rule_id", ".m.rule.roomnotif")
		en := mustOK(t, alice.Do(ctx, "GET", cs("pushrules", "global", "content", ".m.rule.contains_user_name", "enabled"), nil), "enabled")
		if v, _ := en.Get("enabled"); v != true {
			t.Fatalf("enabled: %s", en)
		}
		mustOK(t, alice.Do(ctx, "GET", cs("pushrules", "global", "underride", ".org.matrix.msc3930.rule.poll_start", "actions"), nil), "actions")
	})
	t.Run("Can add and delete a push rule", func(t *testing.T) {
		mustOK(t, alice.Do(ctx, "PUT", cs("pushrules", "global", "room", "!a:b"), map[string]any{"actions": []string{"notify"}}), "put")
		mustOK(t, alice.Do(ctx, "GET", cs("pushrules", "global", "room", "!a:b"), nil), "get")
		mustOK(t, alice.Do(ctx, "DELETE", cs("pushrules", "global", "room", "!a:b"), nil), "delete")
		expectStatus(t, alice.Do(ctx, "GET", cs("pushrules", "global", "room", "!a:b"), nil), 404, "M_NOT_FOUND")
	})
	t.Run("Can disable and re-enable a default rule", func(t *testing.T) {
		path := cs("pushrules", "global", "override", ".m.rule.contains_display_name", "enabled")
		mustOK(t, alice.Do(ctx, "PUT", path, map[string]any{"enabled": false}), "disable")
		if v, _ := mustOK(t, alice.Do(ctx, "GET", path, nil), "get").Get("enabled"); v != false {
			t.Fatalf("still enabled")
		}
		all := mustOK(t, alice.Do(ctx, "GET", cs("pushrules", ""), nil), "get all")
		g, _ := all.Get("global")
		if v, _ := Path(findRule(g, "override", ".m.rule.contains_display_name"), "enabled"); v != false {
			t.Fatalf("rule set shows it enabled: %s", all)
		}
		mustOK(t, alice.Do(ctx, "PUT", path, map[string]any{"enabled": true}), "enable")
		if v, _ := mustOK(t, alice.Do(ctx, "GET", path, nil), "get").Get("enabled"); v != true {
			t.Fatalf("not enabled again")
		}
	})
	// Synapse answers an unknown kind ("template") as it answers an unknown
	// rule: 404 M_NOT_FOUND. Clients probe for rules of newer kinds (such
	// as MSC4306's postcontent) and treat 404 as "not supported".
	t.Run("Unknown push rule kind gives 404 M_NOT_FOUND", func(t *testing.T) {
		for _, req := range []struct {
			method string
			path   []string
			body   any
		}{
			{"GET", cs("pushrules", "global", "postcontent", ".m.rule.x"), nil},
			{"GET", cs("pushrules", "global", "postcontent", ".m.rule.x", "enabled"), nil},
			{"GET", cs("pushrules", "global", "postcontent", ".m.rule.x", "actions"), nil},
			{"PUT", cs("pushrules", "global", "postcontent", ".m.rule.x", "enabled"), map[string]any{"enabled": false}},
			{"PUT", cs("pushrules", "global", "postcontent", ".m.rule.x", "actions"), map[string]any{"actions": []string{}}},
			{"DELETE", cs("pushrules", "global", "postcontent", ".m.rule.x"), nil},
		} {
			r := alice.Do(ctx, req.method, req.path, req.body)
			if r.Status != 404 || r.GetString("errcode") != "M_NOT_FOUND" {
				t.Errorf("%s %v: want 404 M_NOT_FOUND, got %s", req.method, req.path, r)
			}
		}
	})
	t.Run("Unknown push rule ID gives 404 M_NOT_FOUND", func(t *testing.T) {
		for _, req := range []struct {
			method string
			path   []string
			body   any
		}{
			{"GET", cs("pushrules", "global", "override", ".m.rule.nope"), nil},
			{"GET", cs("pushrules", "global", "override", ".m.rule.nope", "enabled"), nil},
			{"GET", cs("pushrules", "global", "underride", ".m.rule.nope", "actions"), nil},
			{"PUT", cs("pushrules", "global", "override", ".m.rule.nope", "enabled"), map[string]any{"enabled": false}},
			{"PUT", cs("pushrules", "global", "content", ".m.rule.nope", "actions"), map[string]any{"actions": []string{"notify"}}},
			{"DELETE", cs("pushrules", "global", "room", "!nope:example.org"), nil},
		} {
			r := alice.Do(ctx, req.method, req.path, req.body)
			if r.Status != 404 || r.GetString("errcode") != "M_NOT_FOUND" {
				t.Errorf("%s %v: want 404 M_NOT_FOUND, got %s", req.method, req.path, r)
			}
		}
	})
	t.Run("GET /pushers returns a list", func(t *testing.T) {
		mustOK(t, alice.Do(ctx, "GET", cs("pushers"), nil), "pushers")
	})
}

// pushRulesIn returns content.global of the m.push_rules event in a sync
// response's global account data.
func pushRulesIn(r *Res) (any, bool) {
	for _, ev := range arr(r.JSON, "account_data.events") {
		if str(ev, "type") == "m.push_rules" {
			return Path(ev, "content.global")
		}
	}
	return nil, false
}

func TestPushSync(t *testing.T) {
	alice := register(t, "alice")
	var since string
	t.Run("Push rules come down in an initial /sync", func(t *testing.T) {
		r := sync(t, alice, "")
		global, ok := pushRulesIn(r)
		if !ok {
			t.Fatalf("no m.push_rules in account_data: %s", r)
		}
		checkDefaultRules(t, global)
		since = r.GetString("next_batch")
	})
	t.Run("Disabling a push rule comes down in an incremental /sync", func(t *testing.T) {
		mustOK(t, alice.Do(ctx, "PUT", cs("pushrules", "global", "override", ".m.rule.roomnotif", "enabled"), map[string]any{"enabled": false}), "disable")
		since = syncUntil(t, alice, since, "m.push_rules with .m.rule.roomnotif disabled", func(r *Res) bool {
			global, ok := pushRulesIn(r)
			v, _ := Path(findRule(global, "override", ".m.rule.roomnotif"), "enabled")
			return ok && v == false
		})
	})
	t.Run("Adding a push rule comes down in an incremental /sync", func(t *testing.T) {
		mustOK(t, alice.Do(ctx, "PUT", cs("pushrules", "global", "room", "!foo:example.com"), map[string]any{"actions": []string{"notify"}}), "add")
		syncUntil(t, alice, since, "m.push_rules with the room rule", func(r *Res) bool {
			global, _ := pushRulesIn(r)
			return findRule(global, "room", "!foo:example.com") != nil
		})
	})
}

// notifCounts long-polls until the room's unread notification_count in
// c's sync is want, and returns highlight_count from that response.
func notifCounts(t *testing.T, c *Client, room string, want float64) float64 {
	t.Helper()
	var hl float64
	syncUntil(t, c, "", fmt.Sprint("notification_count ", want), func(r *Res) bool {
		v, _ := r.Get("rooms.join." + esc(room) + ".unread_notifications.notification_count")
		n, _ := v.(float64)
		if n > want {
			t.Fatalf("notification_count %v, want %v: %s", n, want, r)
		}
		h, _ := r.Get("rooms.join." + esc(room) + ".unread_notifications.highlight_count")
		hl, _ = h.(float64)
		return n == want
	})
	return hl
}

// TestLegacyMentionPushRules: the deprecated body-matching rules still do
// their work for messages without m.mentions, as sent by older clients and
// bots, and step aside for messages that carry m.mentions (spec v1.7).
func TestLegacyMentionPushRules(t *testing.T) {
	alice := register(t, "alice")
	bob := register(t, "bob")
	carol := register(t, "carol")
	mustOK(t, bob.Do(ctx, "PUT", cs("profile", bob.UserID, "displayname"), map[string]any{"displayname": "Bobby Tables"}), "displayname")
	// room: alice (power 100) and bob, plus who else joins.
	room := func(t *testing.T, others ...*Client) string {
		t.Helper()
		id := createRoom(t, alice, map[string]any{"preset": "public_chat"})
		joinRoom(t, bob, id)
		for _, o := range others {
			joinRoom(t, o, id)
		}
		return id
	}
	text := func(body string) map[string]any { return map[string]any{"msgtype": "m.text", "body": body} }
	for _, tc := range []struct {
		name      string
		sender    *Client
		content   map[string]any
		highlight bool
	}{
		{"Display name in the body highlights (.m.rule.contains_display_name)", alice, text("hey Bobby Tables, lunch?"), true},
		{"Localpart in the body highlights (.m.rule.contains_user_name)", alice, text("ping " + localpart(bob.UserID) + " please"), true},
		{"@room from a sender with notification power highlights (.m.rule.roomnotif)", alice, text("@room meeting now"), true},
		{"@room from a sender without notification power does not highlight", carol, text("@room meeting now"), false},
		{"A plain message does not highlight", alice, text("nothing to see"), false},
		{"Legacy rules skip messages with m.mentions", alice, map[string]any{"msgtype": "m.text", "body": "hey Bobby Tables", "m.mentions": map[string]any{}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := room(t, carol)
			sendEvent(t, tc.sender, id, "m.room.message", tc.content)
			if hl := notifCounts(t, bob, id, 1); (hl == 1) != tc.highlight {
				t.Fatalf("highlight_count %v, want highlight %v", hl, tc.highlight)
			}
		})
	}
	t.Run("Disabling .m.rule.contains_display_name stops its highlight", func(t *testing.T) {
		path := cs("pushrules", "global", "override", ".m.rule.contains_display_name", "enabled")
		mustOK(t, bob.Do(ctx, "PUT", path, map[string]any{"enabled": false}), "disable")
		defer func() { mustOK(t, bob.Do(ctx, "PUT", path, map[string]any{"enabled": true}), "enable") }()
		id := room(t)
		sendText(t, alice, id, "hey Bobby Tables, lunch?")
		if hl := notifCounts(t, bob, id, 1); hl != 0 {
			t.Fatalf("highlight_count %v with the rule disabled", hl)
		}
	})
}
