package api_test

import (
	"testing"

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
	wantErr(t, alice.Do("GET", "/_matrix/client/v3/pushrules/global/sideways/x", nil), 400, "M_INVALID_PARAM")
	wantErr(t, srv.Anonymous().Do("GET", "/_matrix/client/v3/pushrules/", nil), 401, "M_MISSING_TOKEN")
}
