package appservice_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/appservice/astest"
	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/testserver"
)

// An unknown user or alias in a service's namespace is asked of the
// service, which creates it through the client-server API before it
// answers; the homeserver then uses what it made.
func TestQueriesCreateUsersAndRooms(t *testing.T) {
	fake := astest.NewAS(t, "hs-qy")
	r := reg("qy", fake.URL)
	srv := testserver.Start(t, astest.Options(t, nil, r))
	as := asClient(srv, r)
	server := srv.Config.ServerName
	fake.OnUser(func(user string) int {
		if !strings.HasPrefix(user, "@_qy_known") {
			return http.StatusNotFound
		}
		local := strings.TrimPrefix(strings.Split(user, ":")[0], "@")
		if resp := as.Do("POST", csAPI+"/register", map[string]any{"type": "m.login.application_service", "username": local, "inhibit_login": true}); resp.Status != http.StatusOK {
			t.Errorf("fake service registering %s: %d %s", user, resp.Status, resp.Body)
		}
		return http.StatusOK
	})
	var portal string
	fake.OnAlias(func(alias string) int {
		if alias != "#qy_portal:"+server {
			return http.StatusNotFound
		}
		var out struct {
			RoomID string `json:"room_id"`
		}
		if resp := as.Do("POST", csAPI+"/createRoom", map[string]any{"preset": "public_chat", "room_alias_name": "qy_portal"}); resp.Status != http.StatusOK {
			t.Errorf("fake service creating the portal: %d %s", resp.Status, resp.Body)
		} else {
			_ = resp.JSON(&out)
			portal = out.RoomID
		}
		return http.StatusOK
	})
	alice := srv.Register("alice")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})

	// Inviting an unknown ghost asks the service, which registers it.
	known := "@_qy_known1:" + server
	alice.MustDo("POST", csAPI+"/rooms/"+url.PathEscape(room)+"/invite", map[string]any{"user_id": known}, nil)
	fake.WaitEvent("the invite", func(e astest.Event) bool {
		return e.Type == "m.room.member" && e.StateKey != nil && *e.StateKey == known
	})
	// One the service does not know stays unknown.
	if resp := alice.Do("POST", csAPI+"/rooms/"+url.PathEscape(room)+"/invite", map[string]any{"user_id": "@_qy_other:" + server}); resp.Status != http.StatusNotFound {
		t.Errorf("inviting a user the service denies: %d %s", resp.Status, resp.Body)
	}
	// Users outside every namespace are not asked about.
	before := len(fake.Paths())
	if resp := alice.Do("GET", csAPI+"/profile/"+url.PathEscape("@nobody:"+server), nil); resp.Status != http.StatusNotFound {
		t.Errorf("profile of nobody: %d", resp.Status)
	}
	if len(fake.Paths()) != before {
		t.Errorf("the service was asked about a user outside its namespace: %v", fake.Paths()[before:])
	}
	// Profiles ask too.
	alice.MustDo("GET", csAPI+"/profile/"+url.PathEscape("@_qy_known2:"+server), nil, nil)

	// Joining an unknown alias in the namespace asks the service, which
	// creates the room; the join lands there.
	var joined struct {
		RoomID string `json:"room_id"`
	}
	alice.MustDo("POST", csAPI+"/join/"+url.PathEscape("#qy_portal:"+server), map[string]any{}, &joined)
	if portal == "" || joined.RoomID != portal {
		t.Fatalf("joined %q, the service made %q", joined.RoomID, portal)
	}
	if resp := alice.Do("GET", csAPI+"/directory/room/"+url.PathEscape("#qy_nothing:"+server), nil); resp.Status != http.StatusNotFound {
		t.Errorf("alias the service denies: %d %s", resp.Status, resp.Body)
	}
	wantPaths := []string{"/_matrix/app/v1/users/" + url.PathEscape(known), "/_matrix/app/v1/rooms/" + url.PathEscape("#qy_portal:"+server)}
	for _, p := range wantPaths {
		found := false
		for _, got := range fake.Paths() {
			found = found || got == p
		}
		if !found {
			t.Errorf("the service was never asked %s; paths %v", p, fake.Paths())
		}
	}
}

func TestPing(t *testing.T) {
	fake := astest.NewAS(t, "hs-pg")
	good := reg("pg", fake.URL)
	wrongToken := reg("pw", fake.URL) // the fake expects hs-pg, not hs-pw
	noURL := reg("pn", "")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := l.Addr().String()
	l.Close()
	dead := reg("pd", "http://"+deadAddr)
	srv := testserver.Start(t, astest.Options(t, nil, good, wrongToken, noURL, dead))

	var out map[string]any
	asClient(srv, good).MustDo("POST", "/_matrix/client/v1/appservice/pg/ping", map[string]any{"transaction_id": "meow"}, &out)
	if _, ok := out["duration_ms"].(float64); !ok {
		t.Errorf("ping answer %v", out)
	}
	if p := fake.Pings(); len(p) != 1 || p[0] != "meow" {
		t.Errorf("pings received %v", p)
	}
	resp := asClient(srv, wrongToken).Do("POST", "/_matrix/client/v1/appservice/pw/ping", map[string]any{})
	var bad struct {
		Errcode string `json:"errcode"`
		Status  int    `json:"status"`
		Body    string `json:"body"`
	}
	_ = json.Unmarshal(resp.Body, &bad)
	if resp.Status != http.StatusBadGateway || bad.Errcode != "M_BAD_STATUS" || bad.Status != http.StatusForbidden || !strings.Contains(bad.Body, "M_FORBIDDEN") {
		t.Errorf("ping with a wrong hs_token: %d %s", resp.Status, resp.Body)
	}
	for _, c := range []struct {
		client       *testserver.Client
		id           string
		status       int
		code, reason string
	}{
		{asClient(srv, noURL), "pn", http.StatusBadRequest, "M_URL_NOT_SET", "no url"},
		{asClient(srv, dead), "pd", http.StatusBadGateway, "M_CONNECTION_FAILED", "unreachable"},
		{asClient(srv, good), "pn", http.StatusForbidden, "M_FORBIDDEN", "another service's ID"},
		{srv.Register("alice"), "pg", http.StatusForbidden, "M_FORBIDDEN", "a user's token"},
	} {
		resp := c.client.Do("POST", "/_matrix/client/v1/appservice/"+c.id+"/ping", map[string]any{})
		if resp.Status != c.status || resp.Errcode() != c.code {
			t.Errorf("%s: %d %s, want %d %s", c.reason, resp.Status, resp.Body, c.status, c.code)
		}
	}
}

func TestThirdPartyLookups(t *testing.T) {
	fake := astest.NewAS(t, "hs-tp")
	r := reg("tp", fake.URL)
	r.Protocols = []string{"chat"}
	srv := testserver.Start(t, astest.Options(t, nil, r))
	fake.OnThirdParty(func(path string, q url.Values) (int, any) {
		switch path {
		case "protocol/chat":
			return http.StatusOK, map[string]any{
				"user_fields": []string{"name"}, "location_fields": []string{"channel"}, "icon": "mxc://x/y",
				"field_types": map[string]any{}, "instances": []map[string]any{{"network_id": "main", "desc": "Main", "fields": map[string]any{}}},
			}
		case "user/chat":
			return http.StatusOK, []map[string]any{{"userid": "@_tp_" + q.Get("name") + ":" + srv.Config.ServerName, "protocol": "chat", "fields": map[string]string{"name": q.Get("name")}}}
		case "location/chat":
			return http.StatusOK, []map[string]any{{"alias": "#tp_" + q.Get("channel") + ":" + srv.Config.ServerName, "protocol": "chat", "fields": map[string]string{"channel": q.Get("channel")}}}
		case "location":
			return http.StatusOK, []map[string]any{{"alias": q.Get("alias"), "protocol": "chat", "fields": map[string]string{"channel": "x"}}}
		case "user":
			return http.StatusOK, []map[string]any{{"userid": q.Get("userid"), "protocol": "chat", "fields": map[string]string{"name": "x"}}}
		}
		return http.StatusNotFound, map[string]string{"errcode": "M_NOT_FOUND"}
	})
	alice := srv.Register("alice")
	var protocols map[string]struct {
		UserFields []string `json:"user_fields"`
		Instances  []struct {
			NetworkID  string `json:"network_id"`
			InstanceID string `json:"instance_id"`
		} `json:"instances"`
	}
	alice.MustDo("GET", csAPI+"/thirdparty/protocols", nil, &protocols)
	p, ok := protocols["chat"]
	if !ok || len(p.UserFields) != 1 || len(p.Instances) != 1 || p.Instances[0].InstanceID == "" {
		t.Fatalf("protocols: %+v", protocols)
	}
	alice.MustDo("GET", csAPI+"/thirdparty/protocol/chat", nil, nil)
	if resp := alice.Do("GET", csAPI+"/thirdparty/protocol/other", nil); resp.Status != http.StatusNotFound {
		t.Errorf("unknown protocol: %d", resp.Status)
	}
	var users []struct {
		UserID string `json:"userid"`
	}
	alice.MustDo("GET", csAPI+"/thirdparty/user/chat?name=bob", nil, &users)
	if len(users) != 1 || users[0].UserID != "@_tp_bob:"+srv.Config.ServerName {
		t.Errorf("user lookup: %+v", users)
	}
	var locs []struct {
		Alias string `json:"alias"`
	}
	alice.MustDo("GET", csAPI+"/thirdparty/location/chat?channel=dev", nil, &locs)
	if len(locs) != 1 || locs[0].Alias != "#tp_dev:"+srv.Config.ServerName {
		t.Errorf("location lookup: %+v", locs)
	}
	alice.MustDo("GET", csAPI+"/thirdparty/location?alias="+url.QueryEscape("#a:b"), nil, &locs)
	if len(locs) != 1 || locs[0].Alias != "#a:b" {
		t.Errorf("reverse location lookup: %+v", locs)
	}
	alice.MustDo("GET", csAPI+"/thirdparty/user?userid="+url.QueryEscape("@a:b"), nil, &users)
	if len(users) != 1 || users[0].UserID != "@a:b" {
		t.Errorf("reverse user lookup: %+v", users)
	}
}

// Typing and receipts reach services with receive_ephemeral, in rooms
// they are interested in; private receipts only for their own users.
func TestEphemeral(t *testing.T) {
	fake := astest.NewAS(t, "hs-ep")
	r := reg("ep", fake.URL)
	r.ReceiveEphemeral = true
	quiet := astest.NewAS(t, "hs-eq")
	rq := reg("eq", quiet.URL)
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	opts := astest.Options(t, nil, r, rq)
	opts.Clock = clk
	srv := testserver.Start(t, opts)
	alice := srv.Register("alice")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	g, q := ghost(t, srv, r, "_ep_g")
	_, q2 := ghost(t, srv, rq, "_eq_g")
	asClient(srv, r).MustDo("POST", csAPI+"/join/"+url.PathEscape(room)+q, map[string]any{}, nil)
	asClient(srv, rq).MustDo("POST", csAPI+"/join/"+url.PathEscape(room)+q2, map[string]any{}, nil)
	other := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	msg := alice.SendText(room, "read me")

	typingPath := func(c *testserver.Client, in string, user string) string {
		return csAPI + "/rooms/" + url.PathEscape(in) + "/typing/" + url.PathEscape(user)
	}
	alice.MustDo("PUT", typingPath(alice, other, alice.UserID), map[string]any{"typing": true, "timeout": 5000}, nil)
	alice.MustDo("PUT", typingPath(alice, room, alice.UserID), map[string]any{"typing": true, "timeout": 5000}, nil)
	typingOf := func(e astest.Event) []string {
		var c struct {
			UserIDs []string `json:"user_ids"`
		}
		_ = json.Unmarshal(e.Content, &c)
		return c.UserIDs
	}
	fake.Wait("alice typing", func() bool {
		for _, e := range fake.Ephemeral() {
			if e.Type == "m.typing" && len(typingOf(e)) == 1 && typingOf(e)[0] == alice.UserID {
				return true
			}
		}
		return false
	})
	// The timeout ends it: the fake clock moves, nothing sleeps.
	clk.Advance(5 * time.Second)
	fake.Wait("alice stopping", func() bool {
		evs := fake.Ephemeral()
		return len(evs) > 0 && evs[len(evs)-1].Type == "m.typing" && len(typingOf(evs[len(evs)-1])) == 0
	})
	for _, e := range fake.Ephemeral() {
		if e.RoomID == other {
			t.Errorf("typing in an uninteresting room delivered")
		}
	}

	alice.MustDo("POST", csAPI+"/rooms/"+url.PathEscape(room)+"/receipt/m.read.private/"+url.PathEscape(msg), map[string]any{}, nil)
	alice.MustDo("POST", csAPI+"/rooms/"+url.PathEscape(room)+"/receipt/m.read/"+url.PathEscape(msg), map[string]any{}, nil)
	asClient(srv, r).MustDo("POST", csAPI+"/rooms/"+url.PathEscape(room)+"/receipt/m.read.private/"+url.PathEscape(msg)+q, map[string]any{}, nil)
	var receipts []map[string]map[string]map[string]any
	fake.Wait("both receipts", func() bool {
		receipts = nil
		for _, e := range fake.Ephemeral() {
			if e.Type == "m.receipt" && e.RoomID == room {
				var c map[string]map[string]map[string]any
				_ = json.Unmarshal(e.Content, &c)
				receipts = append(receipts, c)
			}
		}
		return len(receipts) >= 2
	})
	if len(receipts) != 2 || receipts[0][msg]["m.read"][alice.UserID] == nil || receipts[1][msg]["m.read.private"][string(g)] == nil {
		t.Errorf("receipts delivered: %v (alice's private receipt must not be among them)", receipts)
	}

	// Presence of a user who shares a room with the service's user.
	alice.MustDo("PUT", csAPI+"/presence/"+url.PathEscape(alice.UserID)+"/status", map[string]any{"presence": "online", "status_msg": "at lunch"}, nil)
	fake.Wait("alice's presence", func() bool {
		for _, e := range fake.Ephemeral() {
			var c struct {
				Presence  string `json:"presence"`
				StatusMsg string `json:"status_msg"`
			}
			_ = json.Unmarshal(e.Content, &c)
			if e.Type == "m.presence" && e.Sender == alice.UserID && c.Presence == "online" && c.StatusMsg == "at lunch" {
				return true
			}
		}
		return false
	})

	// The service without receive_ephemeral got events but no ephemeral.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.HS.AppServices.Delivered(ctx, "eq", srv.HS.Syncer.Notifier().Current().Events); err != nil {
		t.Fatal(err)
	}
	if len(quiet.Events()) == 0 {
		t.Error("the quiet service got no events")
	}
	for _, txn := range quiet.Requests() {
		if strings.Contains(string(txn.Raw), `"ephemeral"`) {
			t.Errorf("ephemeral sent without receive_ephemeral: %s", txn.Raw)
		}
	}
}
