package csapi

import (
	"regexp"
	"testing"

	. "github.com/persistentchat/homeserver/conformance/deploy"
)

func TestVersionStructure(t *testing.T) {
	r := mustOK(t, anon(hs1()).Do(ctx, "GET", p("_matrix/client/versions"), nil), "versions")
	t.Run("Version responds 200 OK with valid structure", func(t *testing.T) {
		vs := arr(r.JSON, "versions")
		if len(vs) == 0 {
			t.Fatalf("no versions: %s", r)
		}
		re := regexp.MustCompile(`^(r0\.\d+\.\d+|v1\.\d+)$`)
		for _, v := range vs {
			s, _ := v.(string)
			if !re.MatchString(s) {
				t.Fatalf("bad version %v", v)
			}
		}
		if uf, ok := r.Get("unstable_features"); ok {
			m, ok := uf.(map[string]any)
			if !ok {
				t.Fatalf("unstable_features not an object")
			}
			for k, v := range m {
				if _, ok := v.(bool); !ok {
					t.Fatalf("unstable_features.%s not a bool", k)
				}
			}
		}
	})
}

func TestRegistration(t *testing.T) {
	c := anon(hs1())
	dummy := func(user string) map[string]any {
		return map[string]any{"auth": map[string]any{"type": "m.login.dummy"}, "username": user, "password": "sUp3rs3kr1t!x"}
	}
	t.Run("POST /register returns the same device_id as that in the request", func(t *testing.T) {
		b := dummy(dep.UniqueLocalpart("reg-dev"))
		b["device_id"] = "MYDEVICE"
		r := mustOK(t, c.Do(ctx, "POST", cs("register"), b), "register")
		expectStr(t, r, "device_id", "MYDEVICE")
	})
	t.Run("POST /register can create a user", func(t *testing.T) {
		u := dep.UniqueLocalpart("reg")
		r := mustOK(t, c.Do(ctx, "POST", cs("register"), dummy(u)), "register")
		expectPresent(t, r, "user_id", "access_token", "device_id")
		expectStr(t, r, "user_id", "@"+u+":"+hs1().Name)
	})
	t.Run("POST /register downcases capitals in usernames", func(t *testing.T) {
		u := dep.UniqueLocalpart("reg-upper")
		r := mustOK(t, c.Do(ctx, "POST", cs("register"), dummy("UPPER"+u)), "register")
		expectStr(t, r, "user_id", "@upper"+u+":"+hs1().Name)
	})
	t.Run("POST /register returns the same user_id in the response as was requested", func(t *testing.T) {
		u := dep.UniqueLocalpart("reg-same")
		r := mustOK(t, c.Do(ctx, "POST", cs("register"), dummy(u)), "register")
		expectStr(t, r, "user_id", "@"+u+":"+hs1().Name)
	})
	t.Run("POST /register rejects registration of usernames with invalid characters", func(t *testing.T) {
		for _, ch := range []string{"!", "\"", ":", "?", "\\", "@", "[", "]", "{", "|", "}", "£", "é", "\n", "'"} {
			r := c.Do(ctx, "POST", cs("register"), dummy("chr"+ch+"x"))
			if r.Status != 400 || r.GetString("errcode") != "M_INVALID_USERNAME" {
				t.Errorf("username with %q: want 400 M_INVALID_USERNAME, got %s", ch, r)
			}
		}
	})
	t.Run("POST /register with no auth returns a UIA flow (401 with session and flows)", func(t *testing.T) {
		r := c.Do(ctx, "POST", cs("register"), map[string]any{"username": dep.UniqueLocalpart("uia"), "password": "sUp3rs3kr1t!x"})
		expectStatus(t, r, 401, "")
		expectPresent(t, r, "session", "flows.0.stages")
	})
	t.Run("POST /register rejects an existing username with M_USER_IN_USE", func(t *testing.T) {
		u := dep.UniqueLocalpart("reg-dup")
		mustOK(t, c.Do(ctx, "POST", cs("register"), dummy(u)), "register")
		expectStatus(t, c.Do(ctx, "POST", cs("register"), dummy(u)), 400, "M_USER_IN_USE")
	})
	t.Run("GET /register/available returns available for unregistered user name", func(t *testing.T) {
		r := mustOK(t, c.Do(ctx, "GET", cs("register", "available"), nil, WithQuery("username", dep.UniqueLocalpart("free"))), "available")
		if v, _ := r.Get("available"); v != true {
			t.Fatalf("want available true: %s", r)
		}
	})
	t.Run("GET /register/available returns M_USER_IN_USE for registered user name", func(t *testing.T) {
		u := register(t, "taken")
		expectStatus(t, c.Do(ctx, "GET", cs("register", "available"), nil, WithQuery("username", localpart(u.UserID))), 400, "M_USER_IN_USE")
	})
	t.Run("GET /register/available returns M_INVALID_USERNAME for invalid user name", func(t *testing.T) {
		expectStatus(t, c.Do(ctx, "GET", cs("register", "available"), nil, WithQuery("username", "!!bad")), 400, "M_INVALID_USERNAME")
	})
	t.Run("POST /register with inhibit_login returns no access token", func(t *testing.T) {
		b := dummy(dep.UniqueLocalpart("inhibit"))
		b["inhibit_login"] = true
		r := mustOK(t, c.Do(ctx, "POST", cs("register"), b), "register")
		if _, ok := r.Get("access_token"); ok {
			t.Fatalf("access_token present: %s", r)
		}
	})
	t.Run("POST /_synapse/admin/v1/register with shared secret", func(t *testing.T) {
		if _, err := hs1().Register(ctx, dep.UniqueLocalpart("admin"), password, true); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("Registration accepts non-ascii passwords", func(t *testing.T) {
		b := dummy(dep.UniqueLocalpart("nonascii"))
		b["password"] = "übers3kr1t"
		mustOK(t, c.Do(ctx, "POST", cs("register"), b), "register")
		r := c.Do(ctx, "POST", cs("login"), map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": b["username"]}, "password": "übers3kr1t"})
		mustOK(t, r, "login")
	})
}

func TestLogin(t *testing.T) {
	u := register(t, "login")
	c := anon(hs1())
	t.Run("GET /login yields a set of flows", func(t *testing.T) {
		r := mustOK(t, c.Do(ctx, "GET", cs("login"), nil), "login flows")
		found := false
		for _, f := range arr(r.JSON, "flows") {
			if str(f, "type") == "m.login.password" {
				found = true
			}
		}
		if !found {
			t.Fatalf("no m.login.password flow: %s", r)
		}
	})
	t.Run("POST /login can log in as a user", func(t *testing.T) {
		r := mustOK(t, c.Do(ctx, "POST", cs("login"), map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": u.UserID}, "password": password}), "login")
		expectPresent(t, r, "access_token", "device_id", "home_server")
		expectStr(t, r, "user_id", u.UserID)
	})
	t.Run("POST /login can log in as a user with just the local part of the id", func(t *testing.T) {
		r := mustOK(t, c.Do(ctx, "POST", cs("login"), map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": localpart(u.UserID)}, "password": password}), "login")
		expectStr(t, r, "user_id", u.UserID)
	})
	t.Run("POST /login with deprecated top-level user field", func(t *testing.T) {
		r := mustOK(t, c.Do(ctx, "POST", cs("login"), map[string]any{"type": "m.login.password", "user": localpart(u.UserID), "password": password}), "login")
		expectStr(t, r, "user_id", u.UserID)
	})
	t.Run("POST /login as non-existing user is rejected", func(t *testing.T) {
		expectStatus(t, c.Do(ctx, "POST", cs("login"), map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "i-do-not-exist"}, "password": password}), 403, "M_FORBIDDEN")
	})
	t.Run("POST /login wrong password is rejected", func(t *testing.T) {
		expectStatus(t, c.Do(ctx, "POST", cs("login"), map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": u.UserID}, "password": "wrong"}), 403, "M_FORBIDDEN")
	})
	t.Run("Login with uppercase username works and GET /whoami afterwards also", func(t *testing.T) {
		up := "@" + regexp.MustCompile(`[a-z]`).ReplaceAllStringFunc(localpart(u.UserID), func(s string) string { return string(s[0] - 32) }) + ":" + hs1().Name
		r := mustOK(t, c.Do(ctx, "POST", cs("login"), map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": up}, "password": password}), "login")
		c2 := NewClient(hs1(), "", r.GetString("access_token"))
		expectStr(t, mustOK(t, c2.Do(ctx, "GET", cs("account", "whoami"), nil), "whoami"), "user_id", u.UserID)
	})
	t.Run("POST /login with unknown login type is rejected", func(t *testing.T) {
		expectStatus(t, c.Do(ctx, "POST", cs("login"), map[string]any{"type": "m.login.nope", "user": localpart(u.UserID)}), 400, "M_UNKNOWN")
	})
}

func TestWhoami(t *testing.T) {
	u := register(t, "whoami")
	t.Run("GET /account/whoami returns user_id and device_id", func(t *testing.T) {
		r := mustOK(t, u.Do(ctx, "GET", cs("account", "whoami"), nil), "whoami")
		expectStr(t, r, "user_id", u.UserID)
		expectStr(t, r, "device_id", u.DeviceID)
	})
	t.Run("Missing token gives 401 M_MISSING_TOKEN", func(t *testing.T) {
		expectStatus(t, u.Do(ctx, "GET", cs("account", "whoami"), nil, WithoutAuth()), 401, "M_MISSING_TOKEN")
	})
	t.Run("Bad token gives 401 M_UNKNOWN_TOKEN", func(t *testing.T) {
		expectStatus(t, u.Do(ctx, "GET", cs("account", "whoami"), nil, WithHeader("Authorization", "Bearer nope")), 401, "M_UNKNOWN_TOKEN")
	})
	t.Run("Token in access_token query parameter is accepted", func(t *testing.T) {
		mustOK(t, anon(hs1()).Do(ctx, "GET", cs("account", "whoami"), nil, WithQuery("access_token", u.AccessToken)), "whoami")
	})
}

func login(t *testing.T, u *Client, device string) *Client {
	t.Helper()
	b := map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": u.UserID}, "password": password}
	if device != "" {
		b["device_id"] = device
	}
	r := mustOK(t, anon(u.HS).Do(ctx, "POST", cs("login"), b), "login")
	return NewClient(u.HS, u.UserID, r.GetString("access_token")).WithDevice(r.GetString("device_id"))
}

func TestLogout(t *testing.T) {
	t.Run("Can logout current device", func(t *testing.T) {
		u := register(t, "logout")
		u2 := login(t, u, "")
		mustOK(t, u2.Do(ctx, "POST", cs("logout"), map[string]any{}), "logout")
		expectStatus(t, u2.Do(ctx, "GET", cs("account", "whoami"), nil), 401, "M_UNKNOWN_TOKEN")
		mustOK(t, u.Do(ctx, "GET", cs("account", "whoami"), nil), "other device still works")
		r := mustOK(t, u.Do(ctx, "GET", cs("devices"), nil), "devices")
		if n := len(arr(r.JSON, "devices")); n != 1 {
			t.Fatalf("want 1 device after logout, got %d: %s", n, r)
		}
	})
	t.Run("Can logout all devices", func(t *testing.T) {
		u := register(t, "logoutall")
		u2 := login(t, u, "")
		mustOK(t, u2.Do(ctx, "POST", cs("logout", "all"), map[string]any{}), "logout all")
		expectStatus(t, u.Do(ctx, "GET", cs("account", "whoami"), nil), 401, "M_UNKNOWN_TOKEN")
		expectStatus(t, u2.Do(ctx, "GET", cs("account", "whoami"), nil), 401, "M_UNKNOWN_TOKEN")
	})
	t.Run("Request to logout with invalid an access token is rejected", func(t *testing.T) {
		expectStatus(t, anon(hs1()).Do(ctx, "POST", cs("logout"), map[string]any{}, WithHeader("Authorization", "Bearer bad")), 401, "M_UNKNOWN_TOKEN")
	})
}

func TestChangePassword(t *testing.T) {
	u := register(t, "chpw")
	other := login(t, u, "")
	newPw := "new-complement-password"
	t.Run("After changing password, can't log in with old password", func(t *testing.T) {
		r := u.Do(ctx, "POST", cs("account", "password"), map[string]any{"new_password": newPw, "auth": map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": u.UserID}, "password": password}})
		mustOK(t, r, "change password")
		expectStatus(t, anon(hs1()).Do(ctx, "POST", cs("login"), map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": u.UserID}, "password": password}), 403, "M_FORBIDDEN")
	})
	t.Run("After changing password, can log in with new password", func(t *testing.T) {
		mustOK(t, anon(hs1()).Do(ctx, "POST", cs("login"), map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": u.UserID}, "password": newPw}), "login")
	})
	t.Run("After changing password, existing session still works", func(t *testing.T) {
		mustOK(t, u.Do(ctx, "GET", cs("account", "whoami"), nil), "whoami")
	})
	t.Run("After changing password, a different session no longer works by default", func(t *testing.T) {
		expectStatus(t, other.Do(ctx, "GET", cs("account", "whoami"), nil), 401, "M_UNKNOWN_TOKEN")
	})
}

func TestAccountDeactivate(t *testing.T) {
	u := register(t, "deact")
	t.Run("Can deactivate account", func(t *testing.T) {
		r := u.Do(ctx, "POST", cs("account", "deactivate"), map[string]any{"auth": map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": u.UserID}, "password": password}})
		mustOK(t, r, "deactivate")
	})
	t.Run("Can't log in after deactivating account", func(t *testing.T) {
		expectStatus(t, anon(hs1()).Do(ctx, "POST", cs("login"), map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": u.UserID}, "password": password}), 403, "")
	})
}

func TestDeviceManagement(t *testing.T) {
	u := register(t, "devices")
	d := login(t, u, "DEV1")
	t.Run("GET /device/{deviceId}", func(t *testing.T) {
		r := mustOK(t, u.Do(ctx, "GET", cs("devices", "DEV1"), nil), "device")
		expectStr(t, r, "device_id", "DEV1")
	})
	t.Run("GET /device/{deviceId} gives a 404 for unknown devices", func(t *testing.T) {
		expectStatus(t, u.Do(ctx, "GET", cs("devices", "NOPE"), nil), 404, "M_NOT_FOUND")
	})
	t.Run("GET /devices", func(t *testing.T) {
		r := mustOK(t, u.Do(ctx, "GET", cs("devices"), nil), "devices")
		if n := len(arr(r.JSON, "devices")); n != 2 {
			t.Fatalf("want 2 devices: %s", r)
		}
	})
	t.Run("PUT /device/{deviceId} updates device fields", func(t *testing.T) {
		mustOK(t, u.Do(ctx, "PUT", cs("devices", "DEV1"), map[string]any{"display_name": "new name"}), "put")
		expectStr(t, mustOK(t, u.Do(ctx, "GET", cs("devices", "DEV1"), nil), "get"), "display_name", "new name")
	})
	t.Run("PUT /device/{deviceId} gives a 404 for unknown devices", func(t *testing.T) {
		expectStatus(t, u.Do(ctx, "PUT", cs("devices", "NOPE"), map[string]any{"display_name": "x"}), 404, "M_NOT_FOUND")
	})
	t.Run("DELETE /device/{deviceId} with no body gives a 401 with UIA flows", func(t *testing.T) {
		r := u.Do(ctx, "DELETE", cs("devices", "DEV1"), nil)
		expectStatus(t, r, 401, "")
		expectPresent(t, r, "flows", "session")
	})
	t.Run("DELETE /device/{deviceId} with password auth deletes the device and its token", func(t *testing.T) {
		r := u.Do(ctx, "DELETE", cs("devices", "DEV1"), nil)
		sess := r.GetString("session")
		mustOK(t, u.Do(ctx, "DELETE", cs("devices", "DEV1"), map[string]any{"auth": map[string]any{"type": "m.login.password", "session": sess, "identifier": map[string]any{"type": "m.id.user", "user": u.UserID}, "password": password}}), "delete")
		expectStatus(t, d.Do(ctx, "GET", cs("account", "whoami"), nil), 401, "M_UNKNOWN_TOKEN")
		expectStatus(t, u.Do(ctx, "GET", cs("devices", "DEV1"), nil), 404, "M_NOT_FOUND")
	})
}
