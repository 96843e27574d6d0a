package api_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/testserver"
)

func holdPath(kind, user string) string {
	return "/_matrix/client/v1/admin/" + kind + "/" + url.PathEscape(user)
}

// TestAccountLocking (spec v1.12): every request of a locked account but
// logging out answers 401 M_USER_LOCKED with soft_logout, and it cannot
// log in; its sessions work again once it is unlocked.
func TestAccountLocking(t *testing.T) {
	t.Parallel()
	const secret = "lock-admin-secret"
	srv := hsStart(t, testserver.Options{Configure: func(c *configs.Config) { c.RegistrationSharedSecret = configs.NewSecret(secret) }})
	admin := registerAdmin(t, srv, secret)
	alice, bob := srv.Register("alice"), srv.Register("bob")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})

	var caps struct {
		Capabilities map[string]map[string]any `json:"capabilities"`
	}
	wantOK(t, admin.Do("GET", csAPI+"/capabilities", nil), &caps)
	if m := caps.Capabilities["m.account_moderation"]; m["lock"] != true || m["suspend"] != true {
		t.Errorf("admin capabilities: %v", caps.Capabilities["m.account_moderation"])
	}
	caps.Capabilities = nil
	wantOK(t, alice.Do("GET", csAPI+"/capabilities", nil), &caps)
	if _, ok := caps.Capabilities["m.account_moderation"]; ok {
		t.Errorf("a non-admin is offered m.account_moderation")
	}

	var status struct {
		Locked *bool `json:"locked"`
	}
	wantOK(t, admin.Do("GET", holdPath("lock", alice.UserID), nil), &status)
	if status.Locked == nil || *status.Locked {
		t.Fatalf("GET lock before: %+v", status)
	}
	wantOK(t, admin.Do("PUT", holdPath("lock", alice.UserID), map[string]any{"locked": true}), &status)
	wantOK(t, admin.Do("GET", holdPath("lock", alice.UserID), nil), &status)
	if !*status.Locked {
		t.Fatal("not locked")
	}
	for _, r := range []struct{ method, path string }{
		{"GET", csAPI + "/account/whoami"},
		{"GET", csAPI + "/sync?timeout=0"},
		{"PUT", roomPath(room, "send", "m.room.message", "t1")},
		{"GET", "/_matrix/client/v1/media/config"},
	} {
		resp := alice.Do(r.method, r.path, map[string]any{"msgtype": "m.text", "body": "x"})
		wantErr(t, resp, http.StatusUnauthorized, "M_USER_LOCKED")
		var e struct {
			SoftLogout bool `json:"soft_logout"`
		}
		if resp.JSON(&e); !e.SoftLogout {
			t.Errorf("%s %s: no soft_logout: %s", r.method, r.path, resp.Body)
		}
	}
	local := alice.UserID[1 : len(alice.UserID)-len(":localhost")]
	login := map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": local}, "password": "correct horse battery"}
	wantErr(t, srv.Anonymous().Do("POST", csAPI+"/login", login), http.StatusUnauthorized, "M_USER_LOCKED")
	wantOK(t, bob.Do("GET", csAPI+"/account/whoami", nil), nil) // others are unaffected

	wantOK(t, admin.Do("PUT", holdPath("lock", alice.UserID), map[string]any{"locked": false}), nil)
	wantOK(t, alice.Do("GET", csAPI+"/account/whoami", nil), nil) // the same token works again
	wantOK(t, srv.Anonymous().Do("POST", csAPI+"/login", login), nil)

	// Logging out works while locked.
	wantOK(t, admin.Do("PUT", holdPath("lock", bob.UserID), map[string]any{"locked": true}), nil)
	wantOK(t, bob.Do("POST", csAPI+"/logout", map[string]any{}), nil)
	wantErr(t, bob.Do("GET", csAPI+"/account/whoami", nil), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")

	// The administration API's own errors; the admin check comes first,
	// so non-admins learn nothing about accounts.
	for _, tc := range []struct {
		who          *testserver.Client
		method, path string
		body         any
		status       int
		code         string
	}{
		{alice, "GET", holdPath("lock", bob.UserID), nil, 403, "M_FORBIDDEN"},
		{alice, "GET", holdPath("lock", "@nobody:localhost"), nil, 403, "M_FORBIDDEN"},
		{alice, "PUT", holdPath("suspend", bob.UserID), map[string]any{"suspended": true}, 403, "M_FORBIDDEN"},
		{admin, "GET", holdPath("lock", "@nobody:localhost"), nil, 404, "M_NOT_FOUND"},
		{admin, "PUT", holdPath("suspend", "@nobody:localhost"), map[string]any{"suspended": true}, 404, "M_NOT_FOUND"},
		{admin, "GET", holdPath("lock", "@someone:elsewhere.example"), nil, 400, "M_INVALID_PARAM"},
		{admin, "GET", holdPath("lock", "nobody"), nil, 400, "M_INVALID_PARAM"},
		{admin, "PUT", holdPath("lock", admin.UserID), map[string]any{"locked": true}, 403, "M_FORBIDDEN"},
		{admin, "PUT", holdPath("lock", alice.UserID), map[string]any{}, 400, "M_MISSING_PARAM"},
		{admin, "PUT", holdPath("lock", alice.UserID), map[string]any{"locked": "yes"}, 400, "M_BAD_JSON"},
	} {
		wantErr(t, tc.who.Do(tc.method, tc.path, tc.body), tc.status, tc.code)
	}
}

// TestAccountSuspension (spec v1.13): a suspended account reads, leaves
// and redacts its own events, but may not join, invite, create rooms,
// send, set state, change its profile or redact others' events: 403
// M_USER_SUSPENDED.
func TestAccountSuspension(t *testing.T) {
	t.Parallel()
	const secret = "suspend-admin-secret"
	srv := hsStart(t, testserver.Options{Configure: func(c *configs.Config) { c.RegistrationSharedSecret = configs.NewSecret(secret) }})
	admin := registerAdmin(t, srv, secret)
	alice, bob := srv.Register("alice"), srv.Register("bob")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	other := createRoom(t, bob, map[string]any{"preset": "public_chat"})
	joinRoom(t, bob, room)
	mine := sendText(t, alice, room, "before the suspension")
	bobs := sendText(t, bob, room, "bob's message")

	var status struct {
		Suspended bool `json:"suspended"`
	}
	wantOK(t, admin.Do("PUT", holdPath("suspend", alice.UserID), map[string]any{"suspended": true}), &status)
	if wantOK(t, admin.Do("GET", holdPath("suspend", alice.UserID), nil), &status); !status.Suspended {
		t.Fatal("not suspended")
	}
	msg := map[string]any{"msgtype": "m.text", "body": "x"}
	for _, r := range []struct {
		method, path string
		body         any
	}{
		{"PUT", roomPath(room, "send", "m.room.message", "t1"), msg},
		{"PUT", roomPath(room, "state", "m.room.topic", ""), map[string]any{"topic": "x"}},
		{"POST", csAPI + "/createRoom", map[string]any{}},
		{"POST", csAPI + "/join/" + url.PathEscape(other), map[string]any{}},
		{"POST", roomPath(other, "join"), map[string]any{}},
		{"POST", roomPath(room, "invite"), map[string]any{"user_id": admin.UserID}},
		{"PUT", csAPI + "/profile/" + url.PathEscape(alice.UserID) + "/displayname", map[string]any{"displayname": "x"}},
		{"PUT", roomPath(room, "redact", bobs, "r1"), map[string]any{}},
	} {
		wantErr(t, alice.Do(r.method, r.path, r.body), http.StatusForbidden, "M_USER_SUSPENDED")
	}
	// What stays allowed.
	wantOK(t, alice.Do("GET", csAPI+"/sync?timeout=0", nil), nil)
	wantOK(t, alice.Do("GET", roomPath(room, "messages")+"?dir=b", nil), nil)
	wantOK(t, alice.Do("PUT", roomPath(room, "redact", mine, "r2"), map[string]any{}), nil)
	wantOK(t, alice.Do("POST", roomPath(room, "leave"), map[string]any{}), nil)
	// Others are unaffected, and unsuspending lifts it.
	sendText(t, bob, other, "still fine")
	wantOK(t, admin.Do("PUT", holdPath("suspend", alice.UserID), map[string]any{"suspended": false}), nil)
	joinRoom(t, alice, other)
	sendText(t, alice, other, "back")
}
