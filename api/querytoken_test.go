package api_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/persistentchat/homeserver/appservice/astest"
)

// The access_token query parameter (spec: "Using access tokens"):
// deprecated since v1.11, but matrix-nio, bots built on it and older
// appservice bridges still send it, so it works on every authenticated
// route; when a request has both, the Authorization header wins, and the
// query's token must be valid too (a bad one is not silently ignored).

// withQueryToken adds access_token to a path that may already have a
// query string.
func withQueryToken(path, token string) string {
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	return path + sep + "access_token=" + url.QueryEscape(token)
}

func TestAccessTokenInQuery(t *testing.T) {
	t.Parallel()
	reg := bridgeReg("qtok")
	srv := hsStart(t, astest.Options(t, nil, reg))
	alice := hsRegister(t, srv, hsName("qtoken"), nil)
	bob := hsRegister(t, srv, hsName("qtoken_other"), nil)

	r := hsDo(t, srv, "POST", csAPI+"/createRoom", alice.Token, map[string]any{})
	hsOK(t, r, "createRoom")
	room := r.str("room_id")
	r = hsDo(t, srv, "POST", "/_matrix/media/v3/upload", alice.Token, "media bytes")
	hsOK(t, r, "upload")
	mxc := strings.TrimPrefix(r.str("content_uri"), "mxc://")

	var txn atomic.Int64
	endpoints := []struct {
		name, method string
		path         func() string
		body         any
		// check looks at a 200 reply beyond its status.
		check func(t *testing.T, r *hsReply)
	}{
		{"GET whoami", "GET", func() string { return csAPI + "/account/whoami" }, nil, func(t *testing.T, r *hsReply) {
			if r.str("user_id") != alice.UserID || r.str("device_id") != alice.DeviceID {
				t.Errorf("whoami = %s, want %s on %s", r.Raw, alice.UserID, alice.DeviceID)
			}
		}},
		{"PUT displayname", "PUT", func() string { return csAPI + "/profile/" + url.PathEscape(alice.UserID) + "/displayname" },
			map[string]any{"displayname": "Query Alice"}, nil},
		{"PUT send", "PUT", func() string {
			return csAPI + "/rooms/" + url.PathEscape(room) + fmt.Sprintf("/send/m.room.message/q%d", txn.Add(1))
		}, map[string]any{"msgtype": "m.text", "body": "hello"}, func(t *testing.T, r *hsReply) {
			if r.str("event_id") == "" {
				t.Errorf("send: no event_id in %s", r.Raw)
			}
		}},
		{"POST filter", "POST", func() string { return csAPI + "/user/" + url.PathEscape(alice.UserID) + "/filter" },
			map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 5}}}, nil},
		{"GET sync", "GET", func() string { return csAPI + "/sync?timeout=0" }, nil, func(t *testing.T, r *hsReply) {
			if r.str("next_batch") == "" {
				t.Errorf("sync: no next_batch in %s", r.Raw)
			}
		}},
		{"POST media v3 upload", "POST", func() string { return "/_matrix/media/v3/upload" }, "more bytes", nil},
		{"GET media v1 download", "GET", func() string { return "/_matrix/client/v1/media/download/" + mxc }, nil, func(t *testing.T, r *hsReply) {
			if string(r.Raw) != "media bytes" {
				t.Errorf("download = %q", r.Raw)
			}
		}},
		{"GET media v1 config", "GET", func() string { return "/_matrix/client/v1/media/config" }, nil, nil},
		{"GET r0 joined_rooms", "GET", func() string { return "/_matrix/client/r0/joined_rooms" }, nil, nil},
	}
	const bogus = "mat_not_a_real_token"
	modes := []struct {
		name, header, query string
		status              int
		errcode             string
	}{
		{"header only", alice.Token, "", 200, ""},
		{"query only", "", alice.Token, 200, ""},
		// Both: the header wins (the checks see alice, not bob). Synapse
		// refuses the mix instead, which breaks bots that send the token
		// both ways; the spec does not forbid it.
		{"same token both ways", alice.Token, alice.Token, 200, ""},
		{"valid header, another valid query", alice.Token, bob.Token, 200, ""},
		// ... but a bad query token is not ignored.
		{"valid header, bogus query", alice.Token, bogus, 401, "M_UNKNOWN_TOKEN"},
		{"bogus header, valid query", bogus, alice.Token, 401, "M_UNKNOWN_TOKEN"},
		{"bogus query", "", bogus, 401, "M_UNKNOWN_TOKEN"},
	}
	for _, ep := range endpoints {
		for _, m := range modes {
			t.Run(ep.name+"/"+m.name, func(t *testing.T) {
				path := ep.path()
				if m.query != "" {
					path = withQueryToken(path, m.query)
				}
				req := hsRequest(t, srv, ep.method, path, ep.body)
				if m.header != "" {
					req.Header.Set("Authorization", "Bearer "+m.header)
				}
				r := hsSend(t, hsClient(srv), req)
				if m.status != 200 {
					hsWantErr(t, r, m.status, m.errcode, m.name)
					return
				}
				if r.Status != 200 {
					t.Fatalf("%s %s: want 200, got %s", ep.method, ep.path(), r)
				}
				if ep.check != nil {
					ep.check(t, r)
				}
			})
		}
	}

	t.Run("application service as_token", func(t *testing.T) {
		// Registering a user and acting as it, with the as_token in the
		// query string only: how many bridges authenticate.
		server := srv.Config.ServerName
		r := hsDo(t, srv, "POST", withQueryToken(csAPI+"/register", reg.ASToken), "",
			map[string]any{"type": "m.login.application_service", "username": "_qtok_ghost", "inhibit_login": true})
		hsOK(t, r, "register with the as_token in the query")
		ghost := "@_qtok_ghost:" + server
		if r.str("user_id") != ghost {
			t.Fatalf("registered %s, want %s", r.Raw, ghost)
		}
		whoami := csAPI + "/account/whoami?user_id=" + url.QueryEscape(ghost)
		r = hsDo(t, srv, "GET", withQueryToken(whoami, reg.ASToken), "", nil)
		hsOK(t, r, "whoami as the ghost")
		if r.str("user_id") != ghost {
			t.Errorf("whoami = %s, want %s", r.Raw, ghost)
		}
		// The header still wins over the query, which must be valid too.
		r = hsDo(t, srv, "GET", withQueryToken(whoami, alice.Token), reg.ASToken, nil)
		hsOK(t, r, "as_token header, a user's token in the query")
		if r.str("user_id") != ghost {
			t.Errorf("whoami = %s, want %s (the header's)", r.Raw, ghost)
		}
		r = hsDo(t, srv, "GET", csAPI+"/account/whoami?access_token="+url.QueryEscape(reg.ASToken), alice.Token, nil)
		hsOK(t, r, "a user's token in the header, as_token query")
		if r.str("user_id") != alice.UserID {
			t.Errorf("whoami = %s, want %s (the header's)", r.Raw, alice.UserID)
		}
		hsWantErr(t, hsDo(t, srv, "GET", withQueryToken(whoami, bogus), reg.ASToken, nil), http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "as_token header, bogus query")
		hsWantErr(t, hsDo(t, srv, "GET", withQueryToken(whoami, reg.ASToken), bogus, nil), http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "bogus header, as_token query")
		// On public routes too, a bad query token beside the header is
		// refused.
		r = hsDo(t, srv, "POST", withQueryToken(csAPI+"/register", bogus), reg.ASToken,
			map[string]any{"type": "m.login.application_service", "username": "_qtok_ghost2", "inhibit_login": true})
		hsWantErr(t, r, http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "register: as_token header, bogus query")
		// A service logs its user in with the query token too.
		r = hsDo(t, srv, "POST", withQueryToken(csAPI+"/login", reg.ASToken), "",
			map[string]any{"type": "m.login.application_service", "identifier": map[string]any{"type": "m.id.user", "user": "_qtok_ghost"}})
		hsSessionOf(t, r, "appservice login with the query token")
	})
}
