package api_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/persistentchat/homeserver/testserver"
)

// TestHostilePushRules: one user stores the rules of issue 9's attack (10
// override rules of 19 conditions, each a 999-byte wildcard chain on
// content.body) and another sends a 60,000-character message. The
// notification worker used to spend minutes of CPU on that one message
// while every member's notifications waited; now the glob matcher is
// linear in the body and the attacker's rules run out of their work
// budget (push.MaxEvalSteps), so they do not match, the server defaults
// still notify the attacker, and everyone else's rules, wildcards too, are
// evaluated as usual. waitNotified's deadline (20 s) is far beyond what
// the worker now needs (a few milliseconds) and far below what it used to.
func TestHostilePushRules(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, mallory, carol := srv.Register("alice"), srv.Register("mallory"), srv.Register("carol")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, mallory, room)
	joinRoom(t, carol, room)

	// Every condition holds on a body of a's, so with all the time in the
	// world each rule would match (and highlight). Each chain ends with a
	// letter, so its last piece must end at the end of a word, which in
	// this body is the end: every condition scans all of it. (The issue's
	// chain, ending in '*', is cheap now: its pieces are found in the first
	// 499 characters.)
	chain := strings.Repeat("*a", 499) // 998 bytes
	conds := make([]map[string]any, 19)
	for i := range conds {
		conds[i] = map[string]any{"kind": "event_match", "key": "content.body", "pattern": chain}
	}
	for i := range 10 {
		putRule(t, mallory, "override", fmt.Sprintf("slow%d", i), map[string]any{
			"conditions": conds, "actions": []any{"notify", map[string]any{"set_tweak": "highlight"}}})
	}
	// Carol's own wildcard keyword matches the same message.
	putRule(t, carol, "content", "aaaa", map[string]any{"pattern": "*aaaa*",
		"actions": []any{"notify", map[string]any{"set_tweak": "highlight"}}})

	before := srv.HS.Notifications.Stats().OverBudget
	sendText(t, alice, room, strings.Repeat("a", 60000))
	waitNotified(t, srv)
	sendText(t, alice, room, "and a short one")
	waitNotified(t, srv)

	wantUnread(t, carol, room, 2, 1)   // her keyword highlighted the long message
	wantUnread(t, mallory, room, 2, 0) // the defaults notified; the cut rules did not highlight
	if got := srv.HS.Notifications.Stats().OverBudget - before; got < 1 {
		t.Errorf("over-budget evaluations: %d, want at least 1 (mallory's rules on the long message)", got)
	}
}

// TestPushRuleLimits: the limits on what one user may store are checked
// when a rule is written, with a clear error.
func TestPushRuleLimits(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	bob := srv.Register("bob")
	match := func(pattern string) map[string]any {
		return map[string]any{"kind": "event_match", "key": "content.body", "pattern": pattern}
	}
	many := make([]map[string]any, 21)
	for i := range many {
		many[i] = match("x")
	}
	big := make([]any, 20)
	for i := range big {
		big[i] = map[string]any{"set_tweak": "org.example.padding", "value": strings.Repeat("p", 14000)}
	}
	for _, tc := range []struct {
		name, kind string
		body       map[string]any
		errcode    string
	}{
		{"21 conditions", "override", map[string]any{"conditions": many, "actions": []any{"notify"}}, "M_BAD_JSON"},
		{"1001-byte condition pattern", "override", map[string]any{"conditions": []any{match(strings.Repeat("*", 1001))}, "actions": []any{"notify"}}, "M_BAD_JSON"},
		{"1001-byte content pattern", "content", map[string]any{"pattern": strings.Repeat("k", 1001), "actions": []any{"notify"}}, "M_BAD_JSON"},
		{"21 actions", "content", map[string]any{"pattern": "k", "actions": append(big, "notify")}, "M_BAD_JSON"},
		{"over 256 KiB of rules", "content", map[string]any{"pattern": "k", "actions": big}, "M_INVALID_PARAM"},
	} {
		r := bob.Do("PUT", csAPI+"/pushrules/global/"+tc.kind+"/"+strings.ReplaceAll(tc.name, " ", "_"), tc.body)
		wantErr(t, r, 400, tc.errcode)
		if !strings.Contains(string(r.Body), "at most") && !strings.Contains(string(r.Body), "longer than") {
			t.Errorf("%s: the error does not say the limit: %s", tc.name, r.Body)
		}
	}
	// At the limits, rules are accepted.
	putRule(t, bob, "override", "at_limits", map[string]any{"conditions": many[:20], "actions": big[:5]})
	putRule(t, bob, "content", "long", map[string]any{"pattern": strings.Repeat("k", 1000), "actions": []any{"notify"}})
}
