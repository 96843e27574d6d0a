package federation_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/federation"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
)

// The request authentication middleware, by case (spec: "Request
// Authentication"): only a request signed by its origin with a current
// key, for this server, reaches the handler, with its origin in the
// context and its body readable.
func TestAuthenticator(t *testing.T) {
	clk := clock.NewFake(epoch)
	net := newNetwork()
	us, a, b, gone, rotating := startNode(t, net, clk), startNode(t, net, clk), startNode(t, net, clk), startNode(t, net, clk), startNode(t, net, clk)
	ctx := context.Background()

	// gone's key is cached, then expires while gone is down.
	if _, err := us.keyring.RequestKey(ctx, gone.name, gone.own.Key.KeyID); err != nil {
		t.Fatal(err)
	}
	goneKey := gone.own.Key
	net.setDown(gone.name, true)
	// rotating moves its key to old_verify_keys.
	oldKey := rotating.own.Key
	newKey, _ := roomdag.GenerateSigningKey(rotating.name, rand.Reader)
	rotating.setKeys(net, federation.OwnKeys{Key: newKey, Old: []federation.OldKey{{KeyID: oldKey.KeyID, Public: oldKey.Public(), ExpiredTS: epoch.UnixMilli()}}}, nil)
	clk.Advance(25 * time.Hour)

	auth := federation.NewAuthenticator(us.name, us.keyring, 1024)
	adapter := httpapi.NewAdapter(discard(), nil)
	calls := 0
	h := adapter.Handler("/test", auth.Wrap(func(r *http.Request) (any, error) {
		calls++
		var body map[string]any
		if err := httpapi.DecodeJSON(r, &body); err != nil {
			return nil, err
		}
		return map[string]any{"origin": federation.Origin(r.Context()), "body": body}, nil
	}))

	const uri = "/_matrix/federation/v1/test?a=1&b=%20"
	sign := func(key roomdag.SigningKey, dest roomdag.ServerName, method, uri, body string) string {
		var content []byte
		if body != "" {
			content = []byte(body)
		}
		x, err := federation.SignRequest(key, dest, method, uri, content)
		if err != nil {
			t.Fatal(err)
		}
		return x.String()
	}
	good := sign(a.own.Key, us.name, "POST", uri, `{"x":1}`)
	noDest, _ := federation.ParseXMatrix(good)
	noDest.Destination = ""
	forOther := sign(a.own.Key, b.name, "POST", uri, `{"x":1}`)
	badJSON := sign(a.own.Key, us.name, "POST", uri, "")

	for _, tc := range []struct {
		name, method, body string
		headers            []string
		status             int
		errcode            string
	}{
		{"valid", "POST", `{"x":1}`, []string{good}, 200, ""},
		{"valid GET", "GET", "", []string{sign(a.own.Key, us.name, "GET", uri, "")}, 200, ""},
		{"valid beside another scheme", "POST", `{"x":1}`, []string{"Bearer abc", good}, 200, ""},
		{"no destination (older senders)", "POST", `{"x":1}`, []string{noDest.String()}, 200, ""},
		{"body with white space around", "POST", " \n{\"x\": 1}\n", []string{good}, 200, ""},
		{"missing header", "POST", `{"x":1}`, nil, 401, "M_UNAUTHORIZED"},
		{"other scheme only", "POST", `{"x":1}`, []string{"Bearer abc"}, 401, "M_UNAUTHORIZED"},
		{"malformed header", "POST", `{"x":1}`, []string{`X-Matrix origin="` + string(a.name)}, 401, "M_UNAUTHORIZED"},
		{"wrong signature (other body)", "POST", `{"x":2}`, []string{good}, 401, "M_UNAUTHORIZED"},
		{"wrong signature (other method)", "PUT", `{"x":1}`, []string{good}, 401, "M_UNAUTHORIZED"},
		{"wrong destination", "POST", `{"x":1}`, []string{forOther}, 401, "M_UNAUTHORIZED"},
		{"signed for another destination", "POST", `{"x":1}`, []string{strings.Replace(forOther, string(b.name), string(us.name), 1)}, 401, "M_UNAUTHORIZED"},
		{"wrong origin", "POST", `{"x":1}`, []string{strings.Replace(good, string(a.name), string(b.name), 1)}, 401, "M_UNAUTHORIZED"},
		{"expired key, server down", "POST", `{"x":1}`, []string{sign(goneKey, us.name, "POST", uri, `{"x":1}`)}, 401, "M_UNAUTHORIZED"},
		{"old key", "POST", `{"x":1}`, []string{sign(oldKey, us.name, "POST", uri, `{"x":1}`)}, 401, "M_UNAUTHORIZED"},
		{"rotated-to key", "POST", `{"x":1}`, []string{sign(newKey, us.name, "POST", uri, `{"x":1}`)}, 200, ""},
		{"unknown key ID", "POST", `{"x":1}`, []string{strings.Replace(good, a.own.Key.KeyID, "ed25519:zzz", 1)}, 401, "M_UNAUTHORIZED"},
		{"not JSON", "POST", `{"x":`, []string{badJSON}, 400, "M_NOT_JSON"},
		{"not UTF-8", "POST", "{\"x\":\"\xff\"}", []string{badJSON}, 400, "M_NOT_JSON"},
		{"not an object", "POST", `[1]`, []string{badJSON}, 400, "M_BAD_JSON"},
		{"too large", "POST", `{"x":"` + strings.Repeat("a", 2000) + `"}`, []string{badJSON}, 413, "M_TOO_LARGE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := calls
			req := httptest.NewRequest(tc.method, uri, strings.NewReader(tc.body))
			for _, h := range tc.headers {
				req.Header.Add("Authorization", h)
			}
			w := httptest.NewRecorder()
			h(w, req)
			var resp struct {
				Errcode string
				Origin  roomdag.ServerName
				Body    map[string]any
			}
			json.Unmarshal(w.Body.Bytes(), &resp)
			if w.Code != tc.status || resp.Errcode != tc.errcode {
				t.Fatalf("%d %s, want %d %s", w.Code, w.Body, tc.status, tc.errcode)
			}
			ran := calls > before
			if ran != (tc.status == 200) {
				t.Errorf("handler ran: %v", ran)
			}
			if tc.status == 200 && !strings.Contains(tc.name, "rotated") && resp.Origin != a.name {
				t.Errorf("origin %q, want %s", resp.Origin, a.name)
			}
			if tc.status == 200 && tc.method == "POST" && resp.Body["x"] != float64(1) {
				t.Errorf("handler read body %v", resp.Body)
			}
		})
	}
}
