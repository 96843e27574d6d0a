package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/testserver"
)

// TestUIABodyCheckedFirst: every endpoint behind user-interactive auth
// reads its body before any challenge, so a body that is not JSON is
// 400 M_NOT_JSON and one that is not an object 400 M_BAD_JSON, never a
// 401 (Complement's "POST rejects invalid utf-8 in JSON" sends the first
// body below to /register).
func TestUIABodyCheckedFirst(t *testing.T) {
	t.Parallel()
	srv := hsStart(t, testserver.Options{})
	me := hsRegister(t, srv, hsName("uiabody"), nil)
	other := hsLogin(t, srv, me.UserID)

	endpoints := []struct {
		method, path string
		token        string
	}{
		{"POST", csAPI + "/register", ""},
		{"POST", csAPI + "/account/password", me.Token},
		{"DELETE", csAPI + "/devices/" + other.DeviceID, me.Token},
		{"POST", csAPI + "/delete_devices", me.Token},
		{"POST", csAPI + "/account/deactivate", me.Token},
		{"POST", "/_matrix/client/r0/register", ""},
	}
	bodies := []struct {
		name, body string
		errcode    string
	}{
		{"invalid utf-8 in a string", `{ "test":"a` + "\x81" + `" }`, "M_NOT_JSON"},
		{"invalid utf-8 in a key", "{\"\xff\": 1}", "M_NOT_JSON"},
		{"not json", "username=alice", "M_NOT_JSON"},
		{"truncated", `{"auth": {"type": "m.login.password"`, "M_NOT_JSON"},
		{"array", `[{"auth": {}}]`, "M_BAD_JSON"},
		{"string", `"auth"`, "M_BAD_JSON"},
		{"wrong field type", `{"auth": "m.login.password"}`, "M_BAD_JSON"},
	}
	for _, ep := range endpoints {
		for _, b := range bodies {
			t.Run(ep.method+" "+ep.path+"/"+b.name, func(t *testing.T) {
				t.Parallel()
				r := hsDo(t, srv, ep.method, ep.path, ep.token, b.body)
				hsWantErr(t, r, http.StatusBadRequest, b.errcode, b.name)
				if _, ok := r.Body["flows"]; ok {
					t.Errorf("a bad body got a challenge: %s", r.Raw)
				}
			})
		}
	}
	// Nothing happened.
	hsWhoami(t, srv, me)
	hsWhoami(t, srv, other)
}

// TestPasswordPolicy: Synapse's password_config.policy, with its error
// codes, at registration (before user-interactive auth, as the spec asks)
// and at password changes.
func TestPasswordPolicy(t *testing.T) {
	t.Parallel()
	strict := hsStart(t, testserver.Options{Configure: func(c *configs.Config) {
		c.PasswordConfig.Policy = configs.PasswordPolicy{Enabled: true, MinimumLength: 10,
			RequireDigit: true, RequireSymbol: true, RequireLowercase: true, RequireUppercase: true}
	}})
	const good = "Tr0ub4dor&3x"
	tests := []struct {
		name, password, errcode string
	}{
		// Checked in Synapse's order: length, digit, symbol, upper, lower.
		{"too short", "Ab1!", "M_PASSWORD_TOO_SHORT"},
		{"too short and nothing else", "a", "M_PASSWORD_TOO_SHORT"},
		// Nine characters but eighteen bytes: length counts characters.
		{"short in characters", "Ééééééé1!", "M_PASSWORD_TOO_SHORT"},
		{"no digit", "Troubadour&x", "M_PASSWORD_NO_DIGIT"},
		{"no symbol", "Troubador3xx", "M_PASSWORD_NO_SYMBOL"},
		{"no upper case", "tr0ub4dor&3x", "M_PASSWORD_NO_UPPERCASE"},
		{"no lower case", "TR0UB4DOR&3X", "M_PASSWORD_NO_LOWERCASE"},
		// Not an ASCII letter or digit: a symbol, as in Synapse.
		{"non-ascii counts as a symbol", "Tr0ub4dorée", ""},
		{"good", good, ""},
		{"too long", strings.Repeat("Aa1!", 129), "M_INVALID_PARAM"},
	}
	for _, tc := range tests {
		t.Run("register/"+tc.name, func(t *testing.T) {
			t.Parallel()
			body := map[string]any{"username": hsName("policy"), "password": tc.password}
			r := hsDo(t, strict, "POST", csAPI+"/register", "", body)
			if tc.errcode == "" {
				hsChallenge(t, r, "m.login.dummy", "an acceptable password")
				body["auth"] = map[string]any{"type": "m.login.dummy"}
				hsSessionOf(t, hsDo(t, strict, "POST", csAPI+"/register", "", body), "register")
				return
			}
			hsWantErr(t, r, http.StatusBadRequest, tc.errcode, "before auth")
			body["auth"] = map[string]any{"type": "m.login.dummy"}
			hsWantErr(t, hsDo(t, strict, "POST", csAPI+"/register", "", body), http.StatusBadRequest, tc.errcode, "with auth")
		})
	}

	t.Run("password change", func(t *testing.T) {
		t.Parallel()
		name := hsName("policychange")
		me := hsSessionOf(t, hsDo(t, strict, "POST", csAPI+"/register", "",
			map[string]any{"username": name, "password": good, "auth": map[string]any{"type": "m.login.dummy"}}), "register")
		auth := hsPasswordAuth(me.UserID, good, "")
		r := hsDo(t, strict, "POST", csAPI+"/account/password", me.Token, map[string]any{"new_password": "tr0ub4dor&3x", "auth": auth})
		hsWantErr(t, r, http.StatusBadRequest, "M_PASSWORD_NO_UPPERCASE", "weak new password")
		hsOK(t, hsDo(t, strict, "POST", csAPI+"/account/password", me.Token, map[string]any{"new_password": "An0ther&Good1", "auth": auth}), "good new password")
		hsSessionOf(t, hsDo(t, strict, "POST", csAPI+"/login", "", hsLoginBody(me.UserID, "An0ther&Good1")), "login with the new password")
	})

	t.Run("disabled", func(t *testing.T) {
		t.Parallel()
		open := hsStart(t, testserver.Options{Configure: func(c *configs.Config) { c.PasswordConfig.Policy.Enabled = false }})
		s := hsSessionOf(t, hsDo(t, open, "POST", csAPI+"/register", "",
			map[string]any{"username": hsName("nopolicy"), "password": "x", "auth": map[string]any{"type": "m.login.dummy"}}), "one-character password")
		hsSessionOf(t, hsDo(t, open, "POST", csAPI+"/login", "", hsLoginBody(s.UserID, "x")), "login")
		// The length bound is not part of the policy.
		r := hsDo(t, open, "POST", csAPI+"/register", "", map[string]any{"username": hsName("nopolicy"), "password": strings.Repeat("x", 513)})
		hsWantErr(t, r, http.StatusBadRequest, "M_INVALID_PARAM", "513 characters")
	})

	t.Run("default", func(t *testing.T) {
		t.Parallel()
		// The default policy is the eight characters this server always
		// asked for, and nothing else (hsPassword has no digit or capital).
		def := hsStart(t, testserver.Options{})
		r := hsDo(t, def, "POST", csAPI+"/register", "", map[string]any{"username": hsName("defpolicy"), "password": "1234567"})
		hsWantErr(t, r, http.StatusBadRequest, "M_PASSWORD_TOO_SHORT", "seven characters")
		hsRegister(t, def, hsName("defpolicy"), map[string]any{"password": "12345678"})
	})
}
