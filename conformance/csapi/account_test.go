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
	// The server implements v1.11 (authenticated media) to v1.15 (room
	// summaries); clients such as matrix-js-sdk switch features on by the
	// versions listed.
	t.Run("Versions list v1.11 to v1.15", func(t *testing.T) {
		have := map[string]bool{}
		for _, v := range arr(r.JSON, "versions") {
			s, _ := v.(string)
			have[s] = true
		}
		for _, want := range []string{"v1.11", "v1.12", "v1.13", "v1.14", "v1.15"} {
			if !have[want] {
				t.Errorf("%s not in versions: %s", want, r)
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
	// The query parameter is deprecated (spec v1.11) but still sent by
	// matrix-nio, older bridges and media links; the spec prefers the
	// header when both are given.
	t.Run("Token in access_token query parameter is accepted", func(t *testing.T) {
		r := mustOK(t, anon(hs1()).Do(ctx, "GET", cs("account", "whoami"), nil, WithQuery("access_token", u.AccessToken)), "whoami")
		expectStr(t, r, "user_id", u.UserID)
	})
	t.Run("Token in access_token query parameter works for sending and syncing", func(t *testing.T) {
		q := NewClient(hs1(), u.UserID, "")
		room := createRoom(t, u, nil)
		r := mustOK(t, q.Do(ctx, "PUT", cs("rooms", room, "send", "m.room.message", q.NextTxn()), map[string]any{"msgtype": "m.text", "body": "by query token"},
			WithQuery("access_token", u.AccessToken)), "send")
		id := r.GetString("event_id")
		r = mustOK(t, q.Do(ctx, "GET", cs("sync"), nil, WithQuery("access_token", u.AccessToken, "timeout", "0")), "sync")
		if !timelineHas(room, eventID(id))(r) {
			t.Fatalf("sync by query token lacks %s: %s", id, r)
		}
	})
	t.Run("Unknown token in access_token query parameter gives 401 M_UNKNOWN_TOKEN", func(t *testing.T) {
		expectStatus(t, anon(hs1()).Do(ctx, "GET", cs("account", "whoami"), nil, WithQuery("access_token", "nope")), 401, "M_UNKNOWN_TOKEN")
	})
	t.Run("The Authorization header wins over the access_token query parameter", func(t *testing.T) {
		other := register(t, "whoami-other")
		r := mustOK(t, u.Do(ctx, "GET", cs("account", "whoami"), nil, WithQuery("access_token", other.AccessToken)), "whoami")
		expectStr(t, r, "user_id", u.UserID)
		// A bad header is not rescued by a good query parameter.
		expectStatus(t, u.Do(ctx, "GET", cs("account", "whoami"), nil, WithHeader("Authorization", "Bearer nope"),
			WithQuery("access_token", u.AccessToken)), 401, "M_UNKNOWN_TOKEN")
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

func passwordAuth(userID, pw string) map[string]any {
	return map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": userID}, "password": pw}
}

func TestDeactivateAccount(t *testing.T) {
	u := register(t, "deact")
	other := login(t, u, "")
	t.Run("Password flow is available", func(t *testing.T) {
		r := u.Do(ctx, "POST", cs("account", "deactivate"), map[string]any{})
		expectStatus(t, r, 401, "")
		found := false
		for _, f := range arr(r.JSON, "flows") {
			for _, st := range arr(f, "stages") {
				found = found || st == "m.login.password"
			}
		}
		if !found {
			t.Fatalf("no m.login.password stage: %s", r)
		}
	})
	t.Run("Can't deactivate account with wrong password", func(t *testing.T) {
		expectStatus(t, u.Do(ctx, "POST", cs("account", "deactivate"), map[string]any{"auth": passwordAuth(u.UserID, "wrong password")}), 401, "M_FORBIDDEN")
		mustOK(t, u.Do(ctx, "GET", cs("account", "whoami"), nil), "still active")
	})
	t.Run("Can deactivate account", func(t *testing.T) {
		r := mustOK(t, u.Do(ctx, "POST", cs("account", "deactivate"), map[string]any{"auth": passwordAuth(u.UserID, password)}), "deactivate")
		// spec: id_server_unbind_result is required in the response.
		expectPresent(t, r, "id_server_unbind_result")
	})
	t.Run("After deactivating account, can't log in with password", func(t *testing.T) {
		// spec: M_USER_DEACTIVATED, "typically for endpoints that prove
		// authentication, such as /login".
		expectStatus(t, anon(hs1()).Do(ctx, "POST", cs("login"), passwordAuth(u.UserID, password)), 403, "M_USER_DEACTIVATED")
	})
	t.Run("After deactivating account, every access token is invalid", func(t *testing.T) {
		expectStatus(t, u.Do(ctx, "GET", cs("account", "whoami"), nil), 401, "M_UNKNOWN_TOKEN")
		expectStatus(t, other.Do(ctx, "GET", cs("account", "whoami"), nil), 401, "M_UNKNOWN_TOKEN")
	})
	t.Run("A deactivated user ID cannot be registered again", func(t *testing.T) {
		// spec (deactivate): the server must not let the user ID be reused.
		lp := localpart(u.UserID)
		expectStatus(t, anon(hs1()).Do(ctx, "GET", cs("register", "available"), nil, WithQuery("username", lp)), 400, "M_USER_IN_USE")
		expectStatus(t, anon(hs1()).Do(ctx, "POST", cs("register"), map[string]any{"auth": map[string]any{"type": "m.login.dummy"},
			"username": lp, "password": password}), 400, "M_USER_IN_USE")
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
	t.Run("DELETE /device/{deviceId} requires UI auth user to match device owner", func(t *testing.T) {
		bob := register(t, "devices-bob")
		login(t, u, "DEV2")
		// Bob's own, correct password does not authorise deleting u's
		// device: 403, not another 401 challenge.
		expectStatus(t, u.Do(ctx, "DELETE", cs("devices", "DEV2"), map[string]any{"auth": passwordAuth(bob.UserID, password)}), 403, "M_FORBIDDEN")
		mustOK(t, u.Do(ctx, "GET", cs("devices", "DEV2"), nil), "device still there")
		mustOK(t, u.Do(ctx, "DELETE", cs("devices", "DEV2"), map[string]any{"auth": passwordAuth(u.UserID, password)}), "delete with own password")
	})
	t.Run("DELETE /device/{deviceId} naming another user's device deletes nothing", func(t *testing.T) {
		bob := register(t, "devices-bob2")
		// Devices are per user: bob's device ID is not one of u's, and a
		// device that is not there answers 200 (spec: one "removed
		// previously").
		mustOK(t, u.Do(ctx, "DELETE", cs("devices", bob.DeviceID), map[string]any{"auth": passwordAuth(u.UserID, password)}), "delete")
		mustOK(t, bob.Do(ctx, "GET", cs("account", "whoami"), nil), "bob's device still works")
		mustOK(t, bob.Do(ctx, "GET", cs("devices", bob.DeviceID), nil), "bob's device still listed")
	})
}

func TestRequestEncodingFails(t *testing.T) {
	// The body is checked before user-interactive auth: a client sending
	// garbage gets 400 M_NOT_JSON, not a 401 challenge.
	t.Run("POST rejects invalid utf-8 in JSON", func(t *testing.T) {
		r := anon(hs1()).Do(ctx, "POST", cs("register"), []byte(`{ "test":"a`+"\x81"+`" }`))
		expectStatus(t, r, 400, "M_NOT_JSON")
	})
	t.Run("POST /register with a body that is not JSON gives 400 M_NOT_JSON", func(t *testing.T) {
		expectStatus(t, anon(hs1()).Do(ctx, "POST", cs("register"), []byte(`{not json`)), 400, "M_NOT_JSON")
	})
	t.Run("UIA endpoints check the body before the challenge", func(t *testing.T) {
		u := register(t, "notjson")
		d := login(t, u, "")
		for _, req := range []struct {
			method string
			path   []string
		}{
			{"POST", cs("account", "deactivate")},
			{"POST", cs("account", "password")},
			{"DELETE", cs("devices", d.DeviceID)},
			{"POST", cs("delete_devices")},
		} {
			r := u.Do(ctx, req.method, req.path, []byte(`{"auth": `))
			if r.Status != 400 || r.GetString("errcode") != "M_NOT_JSON" {
				t.Errorf("%s %v: want 400 M_NOT_JSON, got %s", req.method, req.path, r)
			}
		}
		mustOK(t, u.Do(ctx, "GET", cs("account", "whoami"), nil), "still active")
		mustOK(t, d.Do(ctx, "GET", cs("account", "whoami"), nil), "device still there")
	})
}

// registerWith registers localpart with a password through /register (the
// m.login.dummy stage), returning the response.
func registerWith(hs *Homeserver, localpart, pw string) *Res {
	return anon(hs).Do(ctx, "POST", cs("register"), map[string]any{"auth": map[string]any{"type": "m.login.dummy"}, "username": localpart, "password": pw})
}

// TestPasswordPolicy: Synapse's password_config.policy, with its error
// codes (the spec leaves the policy to the server).
func TestPasswordPolicy(t *testing.T) {
	t.Run("Default policy refuses passwords under 8 characters", func(t *testing.T) {
		expectStatus(t, registerWith(hs1(), dep.UniqueLocalpart("short"), "1234567"), 400, "M_PASSWORD_TOO_SHORT")
		mustOK(t, registerWith(hs1(), dep.UniqueLocalpart("long"), "12345678"), "8 characters")
	})
	t.Run("Default policy applies to password changes", func(t *testing.T) {
		u := register(t, "pwchange")
		expectStatus(t, u.Do(ctx, "POST", cs("account", "password"), map[string]any{"new_password": "short", "auth": passwordAuth(u.UserID, password)}), 400, "M_PASSWORD_TOO_SHORT")
		mustOK(t, anon(hs1()).Do(ctx, "POST", cs("login"), passwordAuth(u.UserID, password)), "old password still works")
	})
	hs := configured(t)
	for _, tc := range []struct{ pw, code string }{
		{"Sh0rt!pw", "M_PASSWORD_TOO_SHORT"},
		{"NoDigitsHere!", "M_PASSWORD_NO_DIGIT"},
		{"NoSymbols1234", "M_PASSWORD_NO_SYMBOL"},
		{"no-uppercase-1", "M_PASSWORD_NO_UPPERCASE"},
		{"NO-LOWERCASE-1", "M_PASSWORD_NO_LOWERCASE"},
	} {
		t.Run("Configured policy refuses "+tc.pw+" with "+tc.code, func(t *testing.T) {
			expectStatus(t, registerWith(hs, dep.UniqueLocalpart("weak"), tc.pw), 400, tc.code)
		})
	}
	t.Run("Configured policy accepts a password that meets it", func(t *testing.T) {
		lp := dep.UniqueLocalpart("strong")
		r := mustOK(t, registerWith(hs, lp, strongPassword), "register")
		u := NewClient(hs, r.GetString("user_id"), r.GetString("access_token"))
		expectStatus(t, u.Do(ctx, "POST", cs("account", "password"), map[string]any{"new_password": "weakpassword", "auth": passwordAuth(u.UserID, strongPassword)}), 400, "M_PASSWORD_NO_DIGIT")
		mustOK(t, u.Do(ctx, "POST", cs("account", "password"), map[string]any{"new_password": "An0ther-Strong-One", "auth": passwordAuth(u.UserID, strongPassword)}), "change")
		mustOK(t, anon(hs).Do(ctx, "POST", cs("login"), passwordAuth(u.UserID, "An0ther-Strong-One")), "login with the new password")
	})
}
