package e2ee_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/testserver"
)

// fedDo sends a request signed by from's federation transport to server
// to and returns the status and body.
func fedDo(t *testing.T, from *testserver.Server, to, method, path string, body any) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, path, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := from.HS.Federation.Do(ctx, roomdag.ServerName(to), req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// remoteQuery is a /keys/query answer.
type remoteQuery struct {
	DeviceKeys      map[string]map[string]map[string]any `json:"device_keys"`
	MasterKeys      map[string]map[string]any            `json:"master_keys"`
	SelfSigningKeys map[string]map[string]any            `json:"self_signing_keys"`
	UserSigningKeys map[string]map[string]any            `json:"user_signing_keys"`
	Failures        map[string]map[string]any            `json:"failures"`
}

// TestKeysOverFederation: alice on A uploads device, one-time and
// cross-signing keys; bob on B queries and claims them through B, which
// asks A over federation; A's federation endpoints serve only local
// users, never their user-signing keys, and only to signed requests; a
// server that does not answer is in failures.
func TestKeysOverFederation(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice := newDevice(t, a.Register("fedalice"))
	alice.upload(t, map[string]any{"device_keys": alice.deviceKeys(t), "one_time_keys": alice.otks(t, "AAA1", "AAA2")})
	xs := newXSUser(t, alice.Client)
	alice.MustDo("POST", signingUpload, xs.body(), nil)
	// The self-signing key signs alice's device.
	alice.MustDo("POST", sigUpload, map[string]any{alice.UserID: map[string]any{
		alice.DeviceID: xsSign(t, alice.deviceKeys(t), alice.UserID, xs.ssk.pub, xs.ssk)}}, nil)
	bob := newDevice(t, b.Register("fedbob"))

	t.Run("query through B", func(t *testing.T) {
		var out remoteQuery
		bob.MustDo("POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{alice.UserID: []string{}}}, &out)
		if len(out.Failures) != 0 {
			t.Fatalf("failures %v", out.Failures)
		}
		dk := out.DeviceKeys[alice.UserID][alice.DeviceID]
		if dk == nil {
			t.Fatalf("device keys %v: want alice's device", out.DeviceKeys)
		}
		sigs, _ := dk["signatures"].(map[string]any)
		mine, _ := sigs[alice.UserID].(map[string]any)
		if mine["ed25519:"+alice.DeviceID] == nil || mine["ed25519:"+xs.ssk.pub] == nil {
			t.Fatalf("device signatures %v: want the device's and the self-signing key's", sigs)
		}
		keys, _ := dk["keys"].(map[string]any)
		if keys["ed25519:"+alice.DeviceID] != b64(alice.pub) {
			t.Fatalf("device keys %v", keys)
		}
		if _, ok := out.MasterKeys[alice.UserID]; !ok {
			t.Fatalf("master keys %v: want alice's", out.MasterKeys)
		}
		if _, ok := out.SelfSigningKeys[alice.UserID]; !ok {
			t.Fatalf("self-signing keys %v: want alice's", out.SelfSigningKeys)
		}
		if len(out.UserSigningKeys) != 0 {
			t.Fatalf("user-signing keys %v: want none of another user", out.UserSigningKeys)
		}
	})

	t.Run("claim through B", func(t *testing.T) {
		first := claim(t, bob.Client, map[string][]string{alice.UserID: {alice.DeviceID}})
		second := claim(t, bob.Client, map[string][]string{alice.UserID: {alice.DeviceID}})
		k1, k2 := first[alice.UserID][alice.DeviceID], second[alice.UserID][alice.DeviceID]
		if k1 == "" || k2 == "" || k1 == k2 {
			t.Fatalf("claims %q then %q: want two different one-time keys", k1, k2)
		}
		if k1 != "signed_curve25519:AAA1" || k2 != "signed_curve25519:AAA2" {
			t.Fatalf("claims %q then %q: want the oldest first", k1, k2)
		}
	})

	t.Run("federation endpoints on A", func(t *testing.T) {
		st, body := fedDo(t, b, a.Name(), "POST", "/_matrix/federation/v1/user/keys/query",
			map[string]any{"device_keys": map[string]any{alice.UserID: []string{}, bob.UserID: []string{}}})
		var q remoteQuery
		if st != http.StatusOK || json.Unmarshal(body, &q) != nil {
			t.Fatalf("user/keys/query: %d %s", st, body)
		}
		if q.DeviceKeys[alice.UserID][alice.DeviceID] == nil || q.DeviceKeys[bob.UserID] != nil {
			t.Fatalf("user/keys/query device keys %v: want alice's only", q.DeviceKeys)
		}
		if q.UserSigningKeys != nil || bytes.Contains(body, []byte("user_signing")) {
			t.Fatalf("user/keys/query gave user-signing keys: %s", body)
		}
		st, body = fedDo(t, b, a.Name(), "GET", "/_matrix/federation/v1/user/devices/"+url.PathEscape(alice.UserID), nil)
		var d struct {
			UserID   string `json:"user_id"`
			StreamID int64  `json:"stream_id"`
			Devices  []struct {
				DeviceID string         `json:"device_id"`
				Keys     map[string]any `json:"keys"`
			} `json:"devices"`
			MasterKey      map[string]any `json:"master_key"`
			SelfSigningKey map[string]any `json:"self_signing_key"`
		}
		if st != http.StatusOK || json.Unmarshal(body, &d) != nil {
			t.Fatalf("user/devices: %d %s", st, body)
		}
		if d.UserID != alice.UserID || len(d.Devices) != 1 || d.Devices[0].DeviceID != alice.DeviceID || d.Devices[0].Keys == nil ||
			d.MasterKey == nil || d.SelfSigningKey == nil || d.StreamID <= 0 || bytes.Contains(body, []byte("user_signing")) {
			t.Fatalf("user/devices: %s", body)
		}
		for _, tc := range []struct {
			name, method, path string
			body               any
			status             int
			code               string
		}{
			{"devices of another server's user", "GET", "/_matrix/federation/v1/user/devices/" + url.PathEscape(bob.UserID), nil, 400, "M_INVALID_PARAM"},
			{"devices of a malformed user ID", "GET", "/_matrix/federation/v1/user/devices/nobody", nil, 400, "M_INVALID_PARAM"},
			{"query without device_keys", "POST", "/_matrix/federation/v1/user/keys/query", map[string]any{}, 400, "M_BAD_JSON"},
			{"query of a malformed user ID", "POST", "/_matrix/federation/v1/user/keys/query", map[string]any{"device_keys": map[string]any{"nobody": []string{}}}, 400, "M_INVALID_PARAM"},
			{"claim without an algorithm", "POST", "/_matrix/federation/v1/user/keys/claim", map[string]any{"one_time_keys": map[string]any{alice.UserID: map[string]any{alice.DeviceID: ""}}}, 400, "M_INVALID_PARAM"},
			{"claim of a list", "POST", "/_matrix/federation/v1/user/keys/claim", map[string]any{"one_time_keys": []string{}}, 400, "M_BAD_JSON"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				st, body := fedDo(t, b, a.Name(), tc.method, tc.path, tc.body)
				var e struct {
					Errcode string `json:"errcode"`
				}
				_ = json.Unmarshal(body, &e)
				if st != tc.status || e.Errcode != tc.code {
					t.Fatalf("%d %s, want %d %s", st, body, tc.status, tc.code)
				}
			})
		}
	})

	t.Run("unsigned requests", func(t *testing.T) {
		c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		defer c.CloseIdleConnections()
		for _, tc := range []struct{ method, path, body string }{
			{"POST", "/_matrix/federation/v1/user/keys/query", `{"device_keys":{"` + alice.UserID + `":[]}}`},
			{"POST", "/_matrix/federation/v1/user/keys/claim", `{"one_time_keys":{"` + alice.UserID + `":{"` + alice.DeviceID + `":"signed_curve25519"}}}`},
			{"GET", "/_matrix/federation/v1/user/devices/" + url.PathEscape(alice.UserID), ""},
		} {
			var rd io.Reader
			if tc.body != "" {
				rd = bytes.NewReader([]byte(tc.body))
			}
			req, _ := http.NewRequest(tc.method, "https://"+a.Name()+tc.path, rd)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || !bytes.Contains(body, []byte("M_UNAUTHORIZED")) {
				t.Fatalf("unsigned %s %s: %d %s, want 401 M_UNAUTHORIZED", tc.method, tc.path, resp.StatusCode, body)
			}
		}
	})

	t.Run("unreachable servers in failures", func(t *testing.T) {
		unknown := "@someone:unknown.example"
		var out remoteQuery
		bob.MustDo("POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{unknown: []string{}, bob.UserID: []string{}}}, &out)
		if out.Failures["unknown.example"] == nil || out.DeviceKeys[bob.UserID] == nil {
			t.Fatalf("query of an unknown server's user: %+v", out)
		}
		a.Stop()
		for _, timeout := range []any{nil, 2000} {
			body := map[string]any{"device_keys": map[string]any{alice.UserID: []string{}}}
			if timeout != nil {
				body["timeout"] = timeout
			}
			out = remoteQuery{}
			bob.MustDo("POST", "/_matrix/client/v3/keys/query", body, &out)
			if f := out.Failures[a.Name()]; f == nil || f["status"] != float64(503) {
				t.Fatalf("query of a stopped server (timeout %v): failures %v", timeout, out.Failures)
			}
		}
		var c struct {
			Keys     map[string]any `json:"one_time_keys"`
			Failures map[string]any `json:"failures"`
		}
		bob.MustDo("POST", "/_matrix/client/v3/keys/claim", map[string]any{"timeout": 2000, "one_time_keys": map[string]any{
			alice.UserID: map[string]any{alice.DeviceID: "signed_curve25519"}}}, &c)
		if c.Failures[a.Name()] == nil || len(c.Keys) != 0 {
			t.Fatalf("claim from a stopped server: %+v", c)
		}
	})
}

// TestKeysQueryRemoteTimeout: a server that never answers holds
// /keys/query and /keys/claim up for the request's timeout only, and is
// then in failures, while the other servers' keys are served.
func TestKeysQueryRemoteTimeout(t *testing.T) {
	// Accepts connections and never says a word, not even TLS's.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	silent := l.Addr().String()
	fed := testserver.Federation(t, 2, testserver.Options{Configure: func(c *configs.Config) {
		c.FederationDomainWhitelist = append(c.FederationDomainWhitelist, silent)
	}})
	a, b := fed[0], fed[1]
	alice := newDevice(t, a.Register("toalice"))
	alice.upload(t, map[string]any{"device_keys": alice.deviceKeys(t), "one_time_keys": alice.otks(t, "T1")})
	bob := b.Register("tobob")
	someone := "@someone:" + silent

	for _, tc := range []struct {
		name, path string
		body       map[string]any
		found      func(r *testserver.Response) bool
	}{
		{"query", "/_matrix/client/v3/keys/query", map[string]any{"timeout": 300, "device_keys": map[string]any{
			someone: []string{}, alice.UserID: []string{}}}, func(r *testserver.Response) bool {
			var out remoteQuery
			return r.JSON(&out) == nil && out.DeviceKeys[alice.UserID][alice.DeviceID] != nil
		}},
		{"claim", "/_matrix/client/v3/keys/claim", map[string]any{"timeout": 300, "one_time_keys": map[string]any{
			someone: map[string]any{"DEV": "signed_curve25519"}, alice.UserID: map[string]any{alice.DeviceID: "signed_curve25519"}}},
			func(r *testserver.Response) bool {
				var out struct {
					Keys map[string]map[string]map[string]any `json:"one_time_keys"`
				}
				return r.JSON(&out) == nil && out.Keys[alice.UserID][alice.DeviceID]["signed_curve25519:T1"] != nil
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			r := bob.Do("POST", tc.path, tc.body)
			took := time.Since(start)
			var out struct {
				Failures map[string]map[string]any `json:"failures"`
			}
			if r.Status != http.StatusOK || r.JSON(&out) != nil {
				t.Fatalf("%d %s", r.Status, r.Body)
			}
			if f := out.Failures[silent]; f == nil || f["status"] != float64(503) {
				t.Fatalf("failures %v: want %s with 503", out.Failures, silent)
			}
			if len(out.Failures) != 1 || !tc.found(r) {
				t.Fatalf("%s: want alice's keys from %s", r.Body, a.Name())
			}
			// The default timeout is 10 s: 300 ms it is, with room for a
			// slow machine.
			if took > 5*time.Second {
				t.Fatalf("took %v with a timeout of 300 ms", took)
			}
		})
	}
}
