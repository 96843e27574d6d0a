package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/persistentchat/homeserver/appservice/astest"
	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/server"
	"github.com/persistentchat/homeserver/testserver"
)

// The client-server extensions for application services, over HTTP.

// bridgeReg is a bridge with an exclusive user and alias namespace and a
// non-exclusive one, and no URL (these tests need no transactions).
func bridgeReg(id string) astest.Registration {
	return astest.Registration{
		ID: id, ASToken: "as-" + id, HSToken: "hs-" + id, SenderLocalpart: id + "bot",
		Users: []astest.Namespace{
			{Regex: "@_" + id + "_.*", Exclusive: true},
			{Regex: "@shared_" + id + "_.*", Exclusive: false},
		},
		Aliases: []astest.Namespace{{Regex: "#_" + id + "_.*", Exclusive: true}},
	}
}

// asClient returns a client that sends the service's as_token.
func asClient(srv *testserver.Server, reg astest.Registration) *testserver.Client {
	c := srv.Anonymous()
	c.Token = reg.ASToken
	return c
}

func asWantErr(t *testing.T, r *testserver.Response, status int, code, what string) {
	t.Helper()
	if r.Status != status || r.Errcode() != code {
		t.Fatalf("%s: got %d %s, want %d %s", what, r.Status, r.Body, status, code)
	}
}

func asRegister(t *testing.T, as *testserver.Client, localpart string) string {
	t.Helper()
	var out struct {
		UserID string `json:"user_id"`
	}
	as.MustDo("POST", csAPI+"/register", map[string]any{"type": "m.login.application_service", "username": localpart, "inhibit_login": true}, &out)
	return out.UserID
}

func TestAppServiceIdentityAssertion(t *testing.T) {
	reg := bridgeReg("ia")
	srv := testserver.Start(t, astest.Options(t, nil, reg))
	as := asClient(srv, reg)
	server := srv.Config.ServerName

	// Without user_id the service is its sender, which exists from start.
	var who map[string]any
	as.MustDo("GET", csAPI+"/account/whoami", nil, &who)
	if who["user_id"] != "@iabot:"+server {
		t.Fatalf("whoami as the service: %v", who)
	}
	if _, has := who["device_id"]; has {
		t.Errorf("a service acting without a device has a device_id: %v", who)
	}

	ghost := "@_ia_alice:" + server
	q := "?user_id=" + url.QueryEscape(ghost)
	// A user in the namespace must be registered before it is used.
	asWantErr(t, as.Do("GET", csAPI+"/account/whoami"+q, nil), http.StatusForbidden, "M_FORBIDDEN", "unregistered ghost")
	if got := asRegister(t, as, "_ia_alice"); got != ghost {
		t.Fatalf("registered %s, want %s", got, ghost)
	}
	as.MustDo("GET", csAPI+"/account/whoami"+q, nil, &who)
	if who["user_id"] != ghost {
		t.Fatalf("whoami as the ghost: %v", who)
	}
	// Outside the namespaces: refused.
	alice := srv.Register("alice")
	asWantErr(t, as.Do("GET", csAPI+"/account/whoami?user_id="+url.QueryEscape(alice.UserID), nil),
		http.StatusForbidden, "M_FORBIDDEN", "masquerading as a normal user")
	// user_id on a normal user's token is ignored.
	alice.MustDo("GET", csAPI+"/account/whoami"+q, nil, &who)
	if who["user_id"] != alice.UserID {
		t.Errorf("a user's user_id parameter was honoured: %v", who)
	}

	// The ghost acts in rooms.
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	as.MustDo("POST", csAPI+"/join/"+url.PathEscape(room)+q, map[string]any{}, nil)
	var sent struct {
		EventID string `json:"event_id"`
	}
	as.MustDo("PUT", csAPI+"/rooms/"+url.PathEscape(room)+"/send/m.room.message/t1"+q, map[string]any{"msgtype": "m.text", "body": "from the ghost"}, &sent)
	var ev struct {
		Sender string `json:"sender"`
	}
	alice.MustDo("GET", csAPI+"/rooms/"+url.PathEscape(room)+"/event/"+url.PathEscape(sent.EventID), nil, &ev)
	if ev.Sender != ghost {
		t.Errorf("sender %s, want %s", ev.Sender, ghost)
	}

	// device_id (v1.17): unknown devices are refused, known ones used.
	asWantErr(t, as.Do("GET", csAPI+"/account/whoami"+q+"&device_id=NOPE", nil), http.StatusBadRequest, "M_UNKNOWN_DEVICE", "unknown device")
	var login struct {
		DeviceID    string `json:"device_id"`
		AccessToken string `json:"access_token"`
	}
	as.MustDo("POST", csAPI+"/login", map[string]any{"type": "m.login.application_service",
		"identifier": map[string]any{"type": "m.id.user", "user": "_ia_alice"}}, &login)
	as.MustDo("GET", csAPI+"/account/whoami"+q+"&device_id="+login.DeviceID, nil, &who)
	if who["device_id"] != login.DeviceID || who["user_id"] != ghost {
		t.Errorf("whoami with device_id: %v", who)
	}
	// The token /login issued is the ghost's own.
	ghostClient := srv.Anonymous()
	ghostClient.Token = login.AccessToken
	ghostClient.MustDo("GET", csAPI+"/account/whoami", nil, &who)
	if who["user_id"] != ghost {
		t.Errorf("the ghost's login token is %v's", who["user_id"])
	}

	// Once the ghost is deactivated (a service needs no UIA for its
	// users), the service can no longer act as it, as no login could.
	as.MustDo("POST", deactivatePath+q, map[string]any{}, nil)
	asWantErr(t, as.Do("PUT", csAPI+"/rooms/"+url.PathEscape(room)+"/send/m.room.message/t2"+q, map[string]any{"msgtype": "m.text", "body": "after"}),
		http.StatusForbidden, "M_USER_DEACTIVATED", "acting as a deactivated ghost")

	// A token that is no service's is an unknown access token.
	bad := srv.Anonymous()
	bad.Token = "as-nobody"
	asWantErr(t, bad.Do("GET", csAPI+"/account/whoami", nil), http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "unknown token")
}

func TestAppServiceRegisterAndLogin(t *testing.T) {
	reg := bridgeReg("rl")
	// Registration is closed: services register their users anyway.
	srv := testserver.Start(t, astest.Options(t, func(c *configs.Config) { c.EnableRegistration = false }, reg))
	as := asClient(srv, reg)
	server := srv.Config.ServerName

	var out map[string]any
	as.MustDo("POST", csAPI+"/register", map[string]any{"type": "m.login.application_service", "username": "_rl_bob"}, &out)
	if out["user_id"] != "@_rl_bob:"+server || out["access_token"] == nil || out["device_id"] == nil {
		t.Fatalf("register: %v", out)
	}
	out = nil
	as.MustDo("POST", csAPI+"/register", map[string]any{"type": "m.login.application_service", "username": "shared_rl_x", "inhibit_login": true}, &out)
	if out["user_id"] != "@shared_rl_x:"+server || out["access_token"] != nil {
		t.Fatalf("register with inhibit_login: %v", out)
	}
	asWantErr(t, as.Do("POST", csAPI+"/register", map[string]any{"type": "m.login.application_service", "username": "_rl_bob"}),
		http.StatusBadRequest, "M_USER_IN_USE", "registering twice")
	asWantErr(t, as.Do("POST", csAPI+"/register", map[string]any{"type": "m.login.application_service", "username": "carol"}),
		http.StatusBadRequest, "M_EXCLUSIVE", "registering outside the namespace")
	asWantErr(t, as.Do("POST", csAPI+"/register", map[string]any{"type": "m.login.dummy", "username": "_rl_x"}),
		http.StatusBadRequest, "M_BAD_JSON", "a service registering with another type")

	// The type without the token, or with a wrong one.
	anon := srv.Anonymous()
	srvOpen := testserver.Start(t, astest.Options(t, nil, bridgeReg("rl2")))
	anonOpen := srvOpen.Anonymous()
	asWantErr(t, anonOpen.Do("POST", csAPI+"/register", map[string]any{"type": "m.login.application_service", "username": "_rl2_x"}),
		http.StatusUnauthorized, "M_MISSING_TOKEN", "no as_token")
	anonOpen.Token = "not-a-token"
	asWantErr(t, anonOpen.Do("POST", csAPI+"/register", map[string]any{"type": "m.login.application_service", "username": "_rl2_x"}),
		http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "wrong as_token")

	// Login.
	var login map[string]any
	as.MustDo("POST", csAPI+"/login", map[string]any{"type": "m.login.application_service",
		"identifier": map[string]any{"type": "m.id.user", "user": "@_rl_bob:" + server}}, &login)
	if login["user_id"] != "@_rl_bob:"+server || login["access_token"] == nil {
		t.Fatalf("login: %v", login)
	}
	asWantErr(t, anon.Do("POST", csAPI+"/login", map[string]any{"type": "m.login.application_service",
		"identifier": map[string]any{"type": "m.id.user", "user": "_rl_bob"}}), http.StatusUnauthorized, "M_MISSING_TOKEN", "login without token")
	alice := srvOpen.Register("alice")
	asWantErr(t, asClient(srvOpen, bridgeReg("rl2")).Do("POST", csAPI+"/login", map[string]any{"type": "m.login.application_service",
		"identifier": map[string]any{"type": "m.id.user", "user": alice.UserID}}), http.StatusForbidden, "M_EXCLUSIVE", "login outside the namespace")
	asWantErr(t, as.Do("POST", csAPI+"/login", map[string]any{"type": "m.login.application_service",
		"identifier": map[string]any{"type": "m.id.user", "user": "_rl_nobody"}}), http.StatusForbidden, "M_FORBIDDEN", "login of an unregistered ghost")
	var flows struct {
		Flows []struct {
			Type string `json:"type"`
		} `json:"flows"`
	}
	anon.MustDo("GET", csAPI+"/login", nil, &flows)
	found := false
	for _, f := range flows.Flows {
		found = found || f.Type == "m.login.application_service"
	}
	if !found {
		t.Errorf("GET /login lacks m.login.application_service: %+v", flows)
	}
}

func TestAppServiceExclusiveNamespaces(t *testing.T) {
	reg := bridgeReg("ex")
	srv := testserver.Start(t, astest.Options(t, nil, reg))
	as := asClient(srv, reg)
	server := srv.Config.ServerName

	// Users.
	anon := srv.Anonymous()
	for _, name := range []string{"_ex_alice", "exbot"} {
		asWantErr(t, anon.Do("POST", csAPI+"/register", map[string]any{"username": name, "password": "correct horse battery",
			"auth": map[string]string{"type": "m.login.dummy"}}), http.StatusBadRequest, "M_EXCLUSIVE", "registering "+name)
		asWantErr(t, anon.Do("GET", csAPI+"/register/available?username="+name, nil), http.StatusBadRequest, "M_EXCLUSIVE", "available "+name)
	}
	// A non-exclusive namespace leaves the name to whoever comes first.
	anon.MustDo("POST", csAPI+"/register", map[string]any{"username": "shared_ex_1", "password": "correct horse battery",
		"auth": map[string]string{"type": "m.login.dummy"}}, nil)

	// Aliases: PUT /directory/room.
	alice := srv.Register("alice")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	exclusive := "#_ex_lobby:" + server
	asWantErr(t, alice.Do("PUT", aliasPath(exclusive), map[string]any{"room_id": room}), http.StatusBadRequest, "M_EXCLUSIVE", "user takes an exclusive alias")
	asWantErr(t, as.Do("PUT", aliasPath("#elsewhere:"+server), map[string]any{"room_id": room}), http.StatusBadRequest, "M_EXCLUSIVE", "service takes an alias outside its namespace")
	as.MustDo("PUT", aliasPath(exclusive), map[string]any{"room_id": room}, nil)
	if got, _ := resolveAlias(t, alice, exclusive); got != room {
		t.Errorf("alias resolves to %s, want %s", got, room)
	}
	alice.MustDo("PUT", aliasPath("#plain:"+server), map[string]any{"room_id": room}, nil)
	// Nor may a user delete it, even with the power to in the room.
	asWantErr(t, alice.Do("DELETE", aliasPath(exclusive), nil), http.StatusBadRequest, "M_EXCLUSIVE", "user deletes an exclusive alias")

	// createRoom with room_alias_name.
	asWantErr(t, alice.Do("POST", csAPI+"/createRoom", map[string]any{"room_alias_name": "_ex_new"}), http.StatusBadRequest, "M_EXCLUSIVE", "createRoom alias")
	var created struct {
		RoomID string `json:"room_id"`
	}
	as.MustDo("POST", csAPI+"/createRoom", map[string]any{"room_alias_name": "_ex_new"}, &created)
	if got, _ := resolveAlias(t, alice, "#_ex_new:"+server); got != created.RoomID {
		t.Errorf("service's createRoom alias resolves to %q", got)
	}

	// m.room.canonical_alias naming the service's exclusive alias.
	asWantErr(t, alice.Do("PUT", csAPI+"/rooms/"+url.PathEscape(room)+"/state/m.room.canonical_alias/", map[string]any{"alias": exclusive}),
		http.StatusBadRequest, "M_EXCLUSIVE", "canonical alias")
	asWantErr(t, alice.Do("POST", csAPI+"/createRoom", map[string]any{"initial_state": []map[string]any{{
		"type": "m.room.canonical_alias", "state_key": "", "content": map[string]any{"alt_aliases": []string{exclusive}}}}}),
		http.StatusBadRequest, "M_EXCLUSIVE", "canonical alias in initial_state")
	alice.MustDo("PUT", csAPI+"/rooms/"+url.PathEscape(room)+"/state/m.room.canonical_alias/", map[string]any{"alias": "#plain:" + server}, nil)
	// The service (as its sender, a member with power) may set it.
	as.MustDo("POST", csAPI+"/join/"+url.PathEscape(room), map[string]any{}, nil)
	alice.MustDo("PUT", csAPI+"/rooms/"+url.PathEscape(room)+"/state/m.room.power_levels/",
		map[string]any{"users": map[string]int{alice.UserID: 100, "@exbot:" + server: 50}}, nil)
	as.MustDo("PUT", csAPI+"/rooms/"+url.PathEscape(room)+"/state/m.room.canonical_alias/", map[string]any{"alias": exclusive}, nil)
}

func TestAppServiceTimestampMassaging(t *testing.T) {
	reg := bridgeReg("ts")
	srv := testserver.Start(t, astest.Options(t, nil, reg))
	as := asClient(srv, reg)
	alice := srv.Register("alice")
	room := as.CreateRoom(map[string]any{"preset": "public_chat"})
	alice.Join(room)
	path := func(kind, rest string, q string) string {
		return csAPI + "/rooms/" + url.PathEscape(room) + "/" + kind + "/" + rest + q
	}
	var sent struct {
		EventID string `json:"event_id"`
	}
	tsOf := func(id string) int64 {
		var ev struct {
			TS int64 `json:"origin_server_ts"`
		}
		alice.MustDo("GET", csAPI+"/rooms/"+url.PathEscape(room)+"/event/"+url.PathEscape(id), nil, &ev)
		return ev.TS
	}
	as.MustDo("PUT", path("send", "m.room.message/t1", "?ts=1234567890123"), map[string]any{"msgtype": "m.text", "body": "old"}, &sent)
	if ts := tsOf(sent.EventID); ts != 1234567890123 {
		t.Errorf("send with ts: origin_server_ts %d", ts)
	}
	as.MustDo("PUT", path("state", "m.room.topic/", "?ts=1000"), map[string]any{"topic": "old topic"}, &sent)
	if ts := tsOf(sent.EventID); ts != 1000 {
		t.Errorf("state with ts: origin_server_ts %d", ts)
	}
	for _, bad := range []string{"-1", "abc", "9007199254740992", "1.5"} {
		asWantErr(t, as.Do("PUT", path("send", "m.room.message/bad"+bad, "?ts="+url.QueryEscape(bad)), map[string]any{"body": "x"}),
			http.StatusBadRequest, "M_INVALID_PARAM", "ts="+bad)
	}
	// A user's ts is not honoured.
	alice.MustDo("PUT", path("send", "m.room.message/u1", "?ts=1000"), map[string]any{"msgtype": "m.text", "body": "now"}, &sent)
	if ts := tsOf(sent.EventID); ts == 1000 {
		t.Error("a normal user set origin_server_ts")
	}
}

func TestAppServiceRateLimits(t *testing.T) {
	free := bridgeReg("free")
	limited := bridgeReg("lim")
	limited.RateLimited = true
	srv := testserver.Start(t, astest.Options(t, func(c *configs.Config) {
		c.RateLimiting.Enabled = true
		c.RateLimiting.Message = configs.RateLimit{PerSecond: 0.001, BurstCount: 2}
		c.RateLimiting.Registration = configs.RateLimit{PerSecond: 0.001, BurstCount: 3}
	}, free, limited))
	alice := srv.Register("alice")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	send := func(c *testserver.Client, q string, i int) *testserver.Response {
		return c.Do("PUT", fmt.Sprintf("%s/rooms/%s/send/m.room.message/r%d%s", csAPI, url.PathEscape(room), i, q),
			map[string]any{"msgtype": "m.text", "body": "x"})
	}
	// A normal user runs into the limit.
	limitedAt := -1
	for i := range 5 {
		if r := send(alice, "", i); r.Status == http.StatusTooManyRequests {
			limitedAt = i
			break
		}
	}
	if limitedAt < 0 {
		t.Fatal("the message limit never applied to a user")
	}
	// The services register many users and send many messages.
	for _, reg := range []astest.Registration{free, limited} {
		as := asClient(srv, reg)
		for i := range 6 {
			asRegister(t, as, fmt.Sprintf("_%s_%d", reg.ID, i))
		}
		as.MustDo("POST", csAPI+"/join/"+url.PathEscape(room), map[string]any{}, nil)
		for i := range 6 {
			if r := send(as, "", 100+i); r.Status != http.StatusOK {
				t.Fatalf("%s's sender was limited: %d %s", reg.ID, r.Status, r.Body)
			}
		}
		ghost := "?user_id=" + url.QueryEscape(fmt.Sprintf("@_%s_0:%s", reg.ID, srv.Config.ServerName))
		as.MustDo("POST", csAPI+"/join/"+url.PathEscape(room)+ghost, map[string]any{}, nil)
		hit := false
		for i := range 6 {
			r := send(as, ghost, 200+i)
			if r.Status == http.StatusTooManyRequests {
				hit = true
				break
			}
			if r.Status != http.StatusOK {
				t.Fatalf("%s ghost: %d %s", reg.ID, r.Status, r.Body)
			}
		}
		if hit != reg.RateLimited {
			t.Errorf("%s (rate_limited %v): ghost limited = %v", reg.ID, reg.RateLimited, hit)
		}
	}
}

// A registration file with a mistake stops start-up, naming file and
// field.
func TestAppServiceBadRegistrationStopsStartup(t *testing.T) {
	reg := bridgeReg("bad")
	dir := t.TempDir()
	path := reg.Write(t, dir)
	raw := reg.YAML()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	delete(m, "hs_token")
	b, _ := json.Marshal(m)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := configs.Default()
	cfg.DataDir = t.TempDir()
	cfg.AppServiceConfigFiles = []string{path}
	hs, err := server.New(&cfg, slog.New(slog.DiscardHandler), clock.Real{})
	if err == nil {
		hs.Shutdown(context.Background())
		t.Fatal("the server started with a broken registration")
	}
	if want := path + ": hs_token: is required"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q lacks %q", err, want)
	}
}

// TestAppServiceDeviceManagement: a service creates its users' devices
// with PUT /devices/{deviceId} (201, then 200), acts as them with
// device_id, and deletes them without user-interactive auth (v1.17,
// MSC4190), while ordinary users still may not create devices and still
// need auth to delete them.
func TestAppServiceDeviceManagement(t *testing.T) {
	t.Parallel()
	reg := bridgeReg("dm")
	srv := testserver.Start(t, astest.Options(t, nil, reg))
	as := asClient(srv, reg)
	ghost := asRegister(t, as, "_dm_alice")
	q := "?user_id=" + url.QueryEscape(ghost)
	devices := func() map[string]string {
		t.Helper()
		var out struct {
			Devices []struct {
				DeviceID    string  `json:"device_id"`
				DisplayName *string `json:"display_name"`
			} `json:"devices"`
		}
		as.MustDo("GET", csAPI+"/devices"+q, nil, &out)
		m := map[string]string{}
		for _, d := range out.Devices {
			m[d.DeviceID] = ""
			if d.DisplayName != nil {
				m[d.DeviceID] = *d.DisplayName
			}
		}
		return m
	}

	// bob shares a room with the ghost: he tracks its devices.
	bob := srv.Register("bob")
	var created struct {
		RoomID string `json:"room_id"`
	}
	as.MustDo("POST", csAPI+"/createRoom"+q, map[string]any{"preset": "public_chat"}, &created)
	bob.Join(created.RoomID)
	since, _ := bob.Sync("timeout=0")["next_batch"].(string)

	r := as.Do("PUT", csAPI+"/devices/BRIDGEDEV"+q, map[string]any{"display_name": "Bridge"})
	if r.Status != http.StatusCreated || string(r.Body) != "{}" {
		t.Fatalf("creating a device: %d %s, want 201 {}", r.Status, r.Body)
	}
	// The new device changes the ghost's device list, as a login's does
	// (and goes to the servers sharing its rooms).
	s := bob.Sync("timeout=0&since=" + url.QueryEscape(since))
	lists, _ := s["device_lists"].(map[string]any)
	changed, _ := lists["changed"].([]any)
	if !slices.Contains(changed, any(ghost)) {
		t.Errorf("bob's device_lists after the ghost's new device: %v, want %s changed", s["device_lists"], ghost)
	}
	if d := devices(); len(d) != 1 || d["BRIDGEDEV"] != "Bridge" {
		t.Errorf("devices after creation: %v", d)
	}
	// Again: an update, 200.
	as.MustDo("PUT", csAPI+"/devices/BRIDGEDEV"+q, map[string]any{"display_name": "Bridge 2"}, nil)
	if r := as.Do("PUT", csAPI+"/devices/SECOND"+q, map[string]any{}); r.Status != http.StatusCreated {
		t.Errorf("creating a device without a name: %d %s", r.Status, r.Body)
	}
	if d := devices(); len(d) != 2 || d["BRIDGEDEV"] != "Bridge 2" {
		t.Errorf("devices after the update: %v", d)
	}
	// The service acts as the new device.
	var who map[string]any
	as.MustDo("GET", csAPI+"/account/whoami"+q+"&device_id=BRIDGEDEV", nil, &who)
	if who["device_id"] != "BRIDGEDEV" || who["user_id"] != ghost {
		t.Errorf("whoami as the created device: %v", who)
	}
	asWantErr(t, as.Do("PUT", csAPI+"/devices/"+strings.Repeat("d", 256)+q, map[string]any{}), http.StatusBadRequest, "M_INVALID_PARAM", "device ID too long")
	asWantErr(t, as.Do("PUT", csAPI+"/devices/a%01b"+q, map[string]any{}), http.StatusBadRequest, "M_INVALID_PARAM", "control character")

	// Deleting needs no auth from a service, alone or in a batch.
	as.MustDo("DELETE", csAPI+"/devices/BRIDGEDEV"+q, nil, nil)
	as.MustDo("POST", csAPI+"/delete_devices"+q, map[string]any{"devices": []string{"SECOND"}}, nil)
	if d := devices(); len(d) != 0 {
		t.Errorf("devices after deleting: %v", d)
	}
	asWantErr(t, as.Do("GET", csAPI+"/account/whoami"+q+"&device_id=BRIDGEDEV", nil), http.StatusBadRequest, "M_UNKNOWN_DEVICE", "deleted device")

	// An ordinary user: no new devices, and auth to delete.
	alice := srv.Register("alice")
	asWantErr(t, alice.Do("PUT", csAPI+"/devices/NEWDEV", map[string]any{}), http.StatusNotFound, "M_NOT_FOUND", "a user creating a device")
	for _, req := range []struct{ method, path string }{
		{"DELETE", csAPI + "/devices/" + alice.DeviceID},
		{"POST", csAPI + "/delete_devices"},
	} {
		r := alice.Do(req.method, req.path, map[string]any{"devices": []string{alice.DeviceID}})
		if r.Status != http.StatusUnauthorized || !strings.Contains(string(r.Body), "m.login.password") {
			t.Errorf("%s %s by a user without auth: %d %s, want the UIA challenge", req.method, req.path, r.Status, r.Body)
		}
	}
}
