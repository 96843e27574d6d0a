package api_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"testing"

	"github.com/persistentchat/homeserver/appservice/astest"
	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"github.com/persistentchat/homeserver/testserver"
)

// Account deactivation (spec: POST /account/deactivate; Complement's
// TestDeactivateAccount; Synapse's admin deactivate).

const deactivatePath = csAPI + "/account/deactivate"

// clientOf is a testserver client for a session.
func clientOf(srv *testserver.Server, s hsSession) *testserver.Client {
	c := srv.Anonymous()
	c.Token, c.UserID, c.DeviceID = s.Token, s.UserID, s.DeviceID
	return c
}

// membershipIn reads user's membership in room as viewer sees it.
func membershipIn(t *testing.T, srv *testserver.Server, viewer hsSession, room, user string) string {
	t.Helper()
	r := hsDo(t, srv, "GET", csAPI+"/rooms/"+url.PathEscape(room)+"/state/m.room.member/"+url.PathEscape(user), viewer.Token, nil)
	hsOK(t, r, "member state of "+user)
	return r.str("membership")
}

func TestDeactivateAccount(t *testing.T) {
	t.Parallel()
	srv := hsStart(t, testserver.Options{})
	db := srv.HS.DB()
	ctx := context.Background()
	alice := hsRegister(t, srv, hsName("deact"), nil)
	phone := hsLogin(t, srv, alice.UserID)
	bob := hsRegister(t, srv, hsName("deactbob"), nil)
	ac, bc := clientOf(srv, alice), clientOf(srv, bob)

	joined := createRoom(t, bc, map[string]any{"preset": "public_chat"})
	joinRoom(t, ac, joined)
	invited := createRoom(t, bc, map[string]any{"preset": "private_chat"})
	inviteUser(t, bc, invited, alice.UserID)
	own := createRoom(t, ac, map[string]any{"preset": "public_chat", "room_alias_name": hsName("deactalias")})
	joinRoom(t, bc, own)
	hsOK(t, hsDo(t, srv, "PUT", csAPI+"/profile/"+url.PathEscape(alice.UserID)+"/displayname", alice.Token, map[string]any{"displayname": "Alice D"}), "displayname")
	hsOK(t, hsDo(t, srv, "PUT", csAPI+"/user/"+url.PathEscape(alice.UserID)+"/account_data/org.example.settings", alice.Token, map[string]any{"a": 1}), "account data")
	hsOK(t, hsDo(t, srv, "POST", csAPI+"/pushers/set", phone.Token, pusherBody("http://127.0.0.1:9/_matrix/push/v1/notify", "deactkey", nil)), "pusher")
	found := func() bool {
		r := hsDo(t, srv, "POST", csAPI+"/user_directory/search", bob.Token, map[string]any{"search_term": "Alice D"})
		hsOK(t, r, "directory search")
		res, _ := r.Body["results"].([]any)
		return len(res) > 0
	}
	if !found() {
		t.Fatal("alice is not in the user directory before deactivation")
	}

	t.Run("user-interactive auth", func(t *testing.T) {
		hsChallenge(t, hsDo(t, srv, "POST", deactivatePath, alice.Token, map[string]any{}), "m.login.password", "no auth")
		// Complement: "Can't deactivate account with wrong password".
		r := hsDo(t, srv, "POST", deactivatePath, alice.Token, map[string]any{"auth": hsPasswordAuth(alice.UserID, "wrong password", "")})
		hsChallenge(t, r, "m.login.password", "wrong password")
		if r.errcode() != "M_FORBIDDEN" {
			t.Errorf("wrong password: errcode %q, want M_FORBIDDEN", r.errcode())
		}
		// Another account's password: 403, as for devices.
		r = hsDo(t, srv, "POST", deactivatePath, alice.Token, map[string]any{"auth": hsPasswordAuth(bob.UserID, hsPassword, "")})
		hsWantErr(t, r, http.StatusForbidden, "M_FORBIDDEN", "bob's password")
		hsWhoami(t, srv, alice)
		hsWhoami(t, srv, bob)
	})

	// Complement's deactivateAccount sends the deprecated top-level "user".
	r := hsDo(t, srv, "POST", deactivatePath, phone.Token, map[string]any{
		"auth": map[string]any{"type": "m.login.password", "user": alice.UserID, "password": hsPassword}})
	hsOK(t, r, "deactivate")
	if got := r.str("id_server_unbind_result"); got != "success" {
		t.Errorf("id_server_unbind_result = %q, want success (no third-party IDs to unbind)", got)
	}

	t.Run("sessions", func(t *testing.T) {
		hsTokenDead(t, srv, alice.Token, "alice's token")
		hsTokenDead(t, srv, phone.Token, "the token that deactivated")
		devs, err := db.Devices(ctx, roomdag.UserID(alice.UserID))
		if err != nil || len(devs) != 0 {
			t.Errorf("devices left: %v %v", devs, err)
		}
		ps, err := db.Pushers(ctx, roomdag.UserID(alice.UserID))
		if err != nil || len(ps) != 0 {
			t.Errorf("pushers left: %v %v", ps, err)
		}
		if _, err := db.AccountData(ctx, roomdag.UserID(alice.UserID), "", "org.example.settings"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("account data left: %v", err)
		}
	})

	t.Run("login and registration", func(t *testing.T) {
		for _, pw := range []string{hsPassword, "wrong password"} {
			hsWantErr(t, hsDo(t, srv, "POST", csAPI+"/login", "", hsLoginBody(alice.UserID, pw)), http.StatusForbidden, "M_USER_DEACTIVATED", "login")
		}
		local := roomdag.UserID(alice.UserID).Localpart()
		body := map[string]any{"username": local, "password": hsPassword, "auth": map[string]any{"type": "m.login.dummy"}}
		hsWantErr(t, hsDo(t, srv, "POST", csAPI+"/register", "", body), http.StatusBadRequest, "M_USER_IN_USE", "register the same name")
		hsWantErr(t, hsDo(t, srv, "GET", csAPI+"/register/available?username="+local, "", nil), http.StatusBadRequest, "M_USER_IN_USE", "available")
	})

	t.Run("rooms", func(t *testing.T) {
		// Real leave events, which the other members see.
		for name, room := range map[string]string{"joined": joined, "invited": invited, "own": own} {
			if m := membershipIn(t, srv, bob, room, alice.UserID); m != "leave" {
				t.Errorf("%s room: alice's membership is %q, want leave", name, m)
			}
		}
		ms, err := db.UserRooms(ctx, roomdag.UserID(alice.UserID))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			if !m.Forgotten {
				t.Errorf("room %s not forgotten", m.RoomID)
			}
		}
		var sync struct {
			Rooms struct {
				Join map[string]struct {
					Timeline struct {
						Events []clientEvent `json:"events"`
					} `json:"timeline"`
				} `json:"join"`
			} `json:"rooms"`
		}
		wantOK(t, bc.Do("GET", csAPI+"/sync?timeout=0", nil), &sync)
		saw := false
		for _, ev := range sync.Rooms.Join[joined].Timeline.Events {
			saw = saw || ev.Type == "m.room.member" && ev.StateKey != nil && *ev.StateKey == alice.UserID && ev.membership() == "leave"
		}
		if !saw {
			t.Errorf("bob's sync of the joined room has no leave of alice")
		}
	})

	t.Run("directory and profile", func(t *testing.T) {
		if found() {
			t.Error("a deactivated account is still in the user directory")
		}
		// Without erase the profile stays (Synapse).
		r := hsDo(t, srv, "GET", csAPI+"/profile/"+url.PathEscape(alice.UserID), "", nil)
		if r.str("displayname") != "Alice D" {
			t.Errorf("profile without erase = %s", r)
		}
	})
}

func TestDeactivateErase(t *testing.T) {
	t.Parallel()
	srv := hsStart(t, testserver.Options{})
	alice := hsRegister(t, srv, hsName("erase"), nil)
	hsOK(t, hsDo(t, srv, "PUT", csAPI+"/profile/"+url.PathEscape(alice.UserID)+"/displayname", alice.Token, map[string]any{"displayname": "Erase Me"}), "displayname")
	hsOK(t, hsDo(t, srv, "PUT", csAPI+"/profile/"+url.PathEscape(alice.UserID)+"/avatar_url", alice.Token, map[string]any{"avatar_url": "mxc://localhost/abc"}), "avatar")
	hsWantErr(t, hsDo(t, srv, "POST", deactivatePath, alice.Token, map[string]any{"erase": "yes", "auth": hsPasswordAuth(alice.UserID, hsPassword, "")}),
		http.StatusBadRequest, "M_BAD_JSON", "erase not a boolean")
	hsWhoami(t, srv, alice)
	hsOK(t, hsDo(t, srv, "POST", deactivatePath, alice.Token, map[string]any{"erase": true, "auth": hsPasswordAuth(alice.UserID, hsPassword, "")}), "deactivate")
	r := hsDo(t, srv, "GET", csAPI+"/profile/"+url.PathEscape(alice.UserID), "", nil)
	hsOK(t, r, "profile")
	if len(r.Body) != 0 {
		t.Errorf("erased profile = %s, want {}", r.Raw)
	}
}

func TestDeactivateByAppService(t *testing.T) {
	t.Parallel()
	reg := bridgeReg("deas")
	srv := testserver.Start(t, astest.Options(t, nil, reg))
	as := asClient(srv, reg)
	ghost := asRegister(t, as, "_deas_ghost")
	q := "?user_id=" + url.QueryEscape(ghost)
	// A service deactivates its users without user-interactive auth.
	var out map[string]string
	as.MustDo("POST", deactivatePath+q, map[string]any{}, &out)
	if out["id_server_unbind_result"] != "success" {
		t.Errorf("reply %v", out)
	}
	asWantErr(t, as.Do("POST", csAPI+"/login", map[string]any{"type": "m.login.application_service",
		"identifier": map[string]any{"type": "m.id.user", "user": "_deas_ghost"}}), http.StatusForbidden, "M_USER_DEACTIVATED", "login of a deactivated ghost")
	asWantErr(t, as.Do("POST", csAPI+"/register", map[string]any{"type": "m.login.application_service", "username": "_deas_ghost"}),
		http.StatusBadRequest, "M_USER_IN_USE", "registering it again")
}

func TestAdminDeactivate(t *testing.T) {
	t.Parallel()
	const secret = "deactivate-admin-secret"
	srv := hsStart(t, testserver.Options{Configure: func(c *configs.Config) { c.RegistrationSharedSecret = configs.NewSecret(secret) }})
	admin := registerAdmin(t, srv, secret)
	alice := hsRegister(t, srv, hsName("admdeact"), nil)
	bob := hsRegister(t, srv, hsName("admdeactbob"), nil)
	hsOK(t, hsDo(t, srv, "PUT", csAPI+"/profile/"+url.PathEscape(alice.UserID)+"/displayname", alice.Token, map[string]any{"displayname": "Gone"}), "displayname")
	path := func(u string) string { return "/_synapse/admin/v1/deactivate/" + url.PathEscape(u) }

	hsWantErr(t, hsDo(t, srv, "POST", path(alice.UserID), bob.Token, map[string]any{}), http.StatusForbidden, "M_FORBIDDEN", "not an admin")
	hsWantErr(t, hsDo(t, srv, "POST", path("@nobody:localhost"), admin.Token, map[string]any{}), http.StatusNotFound, "M_NOT_FOUND", "unknown user")
	hsWantErr(t, hsDo(t, srv, "POST", path("@alice:elsewhere.example"), admin.Token, map[string]any{}), http.StatusBadRequest, "M_INVALID_PARAM", "remote user")
	hsWantErr(t, hsDo(t, srv, "POST", path("alice"), admin.Token, map[string]any{}), http.StatusBadRequest, "M_INVALID_PARAM", "malformed")
	hsWhoami(t, srv, alice)

	r := hsDo(t, srv, "POST", path(alice.UserID), admin.Token, map[string]any{"erase": true})
	hsOK(t, r, "admin deactivate")
	hsTokenDead(t, srv, alice.Token, "alice")
	hsWantErr(t, hsDo(t, srv, "POST", csAPI+"/login", "", hsLoginBody(alice.UserID, hsPassword)), http.StatusForbidden, "M_USER_DEACTIVATED", "login")
	r = hsDo(t, srv, "GET", csAPI+"/profile/"+url.PathEscape(alice.UserID), "", nil)
	if r.str("displayname") != "" {
		t.Errorf("erased profile = %s", r)
	}
	// An empty body is allowed (Synapse: "for backwards compatibility").
	hsOK(t, hsDo(t, srv, "POST", path(bob.UserID), admin.Token, nil), "empty body")
	hsTokenDead(t, srv, bob.Token, "bob")
}

// TestDeactivationResumes: a deactivation that stopped after its
// transaction but before its account had left every room (the server
// went down) is finished at the next start.
func TestDeactivationResumes(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("resume"), srv.Register("resumebob")
	room := createRoom(t, bob, map[string]any{"preset": "public_chat"})
	joinRoom(t, alice, room)
	// The transaction alone, as if the server had stopped right after it.
	if err := srv.HS.DB().DeactivateUser(context.Background(), roomdag.UserID(alice.UserID), false); err != nil {
		t.Fatal(err)
	}
	var m struct {
		Membership string `json:"membership"`
	}
	statePath := csAPI + "/rooms/" + url.PathEscape(room) + "/state/m.room.member/" + url.PathEscape(alice.UserID)
	wantOK(t, bob.Do("GET", statePath, nil), &m)
	if m.Membership != "join" {
		t.Fatalf("before the restart alice's membership is %q", m.Membership)
	}
	srv.Stop()
	again := testserver.Start(t, testserver.Options{DataDir: srv.DataDir})
	bob.Base, bob.HTTP = again.URL, again.Anonymous().HTTP
	wantOK(t, bob.Do("GET", statePath, nil), &m)
	if m.Membership != "leave" {
		t.Errorf("after the restart alice's membership is %q, want leave", m.Membership)
	}
}
