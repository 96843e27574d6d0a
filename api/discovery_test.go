package api_test

// Integration tests of server discovery and the router's edges: /versions
// (spec versions.yaml), /.well-known/matrix/client (wellknown.yaml),
// /capabilities (capabilities.yaml), the OAuth 2.0 probe, unknown
// endpoints and CORS (spec: "Web Browser Clients").

import (
	"net/http"
	"strings"
	"testing"

	"github.com/persistentchat/homeserver/testserver"
)

func TestVersions(t *testing.T) {
	t.Parallel()
	srv := hsStart(t, testserver.Options{})
	s := hsRegister(t, srv, hsName("versions"), nil)

	// Authentication is optional: the same answer with and without it.
	for _, token := range []string{"", s.Token} {
		r := hsDo(t, srv, "GET", "/_matrix/client/versions", token, nil)
		hsOK(t, r, "versions")
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type = %q", ct)
		}
		versions, ok := r.Body["versions"].([]any)
		if !ok {
			t.Fatalf("versions is not a list: %s", r.Raw)
		}
		have := map[string]bool{}
		for _, v := range versions {
			s, ok := v.(string)
			if !ok {
				t.Errorf("version %v is not a string", v)
			}
			have[s] = true
		}
		// v1.5 is the least the brief asks; v1.1 keeps older clients.
		for _, want := range []string{"v1.1", "v1.5"} {
			if !have[want] {
				t.Errorf("versions %v lack %s", versions, want)
			}
		}
		if uf, ok := r.Body["unstable_features"]; ok {
			if _, isObj := uf.(map[string]any); !isObj {
				t.Errorf("unstable_features must be an object: %s", r.Raw)
			}
		}
	}
}

func TestWellKnownClient(t *testing.T) {
	t.Parallel()
	srv := hsStart(t, testserver.Options{})
	r := hsDo(t, srv, "GET", "/.well-known/matrix/client", "", nil)
	hsOK(t, r, "well-known")
	hs, _ := r.Body["m.homeserver"].(map[string]any)
	base, _ := hs["base_url"].(string)
	// testserver sets public_baseurl to http://127.0.0.1/.
	if base != "http://127.0.0.1" && base != "http://127.0.0.1/" {
		t.Errorf("m.homeserver.base_url = %q, want http://127.0.0.1: %s", base, r.Raw)
	}
	if r.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("the spec requires CORS on .well-known: %v", r.Header)
	}
}

func TestCapabilities(t *testing.T) {
	t.Parallel()
	srv := hsStart(t, testserver.Options{})
	hsWantErr(t, hsDo(t, srv, "GET", "/_matrix/client/v3/capabilities", "", nil), 401, "M_MISSING_TOKEN", "no token")

	s := hsRegister(t, srv, hsName("caps"), nil)
	r := hsDo(t, srv, "GET", "/_matrix/client/v3/capabilities", s.Token, nil)
	hsOK(t, r, "capabilities")
	caps, _ := r.Body["capabilities"].(map[string]any)
	rv, _ := caps["m.room_versions"].(map[string]any)
	if rv["default"] != "11" {
		t.Errorf("m.room_versions.default = %v, want \"11\"", rv["default"])
	}
	available, _ := rv["available"].(map[string]any)
	// Rooms made elsewhere are of every version: all are offered.
	for _, v := range []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"} {
		if available[v] != "stable" {
			t.Errorf("room version %s: %v, want \"stable\" (available: %v)", v, available[v], available)
		}
	}
	for v, stability := range available {
		if stability != "stable" && stability != "unstable" {
			t.Errorf("room version %s has stability %v", v, stability)
		}
	}
	cp, _ := caps["m.change_password"].(map[string]any)
	if cp["enabled"] != true {
		t.Errorf("m.change_password = %v; POST /account/password is served", caps["m.change_password"])
	}
	// The same through the r0 prefix.
	hsOK(t, hsDo(t, srv, "GET", "/_matrix/client/r0/capabilities", s.Token, nil), "r0 capabilities")
}

func TestUnrecognizedEndpoints(t *testing.T) {
	t.Parallel()
	srv := hsStart(t, testserver.Options{})
	s := hsRegister(t, srv, hsName("unrec"), nil)

	tests := []struct {
		method, path string
		status       int
	}{
		// Clients probe auth_metadata to choose between OAuth 2.0 and
		// legacy login; 404 M_UNRECOGNIZED means legacy.
		{"GET", "/_matrix/client/v1/auth_metadata", 404},
		{"GET", "/_matrix/client/v3/no_such_endpoint", 404},
		{"POST", "/_matrix/client/v3/no_such_endpoint", 404},
		{"GET", "/_matrix/client/v4/versions", 404},
		{"GET", "/_matrix/client/v3/login/extra", 404},
		{"GET", "/_matrix/client/v3/devices/a/b", 404},
		{"GET", "/", 404},
		{"GET", "/_matrix", 404},
		{"GET", "/.well-known/matrix/nothing", 404},
		// The spec: an unknown method on a known endpoint is 405
		// M_UNRECOGNIZED.
		{"POST", "/_matrix/client/versions", 405},
		{"DELETE", "/_matrix/client/v3/login", 405},
		{"PUT", "/_matrix/client/v3/register", 405},
		{"GET", "/_matrix/client/v3/logout", 405},
		{"PATCH", "/_matrix/client/v3/devices", 405},
		{"POST", "/.well-known/matrix/client", 405},
		{"PUT", "/_matrix/client/r0/login", 405},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			t.Parallel()
			for _, token := range []string{"", s.Token} {
				r := hsDo(t, srv, tc.method, tc.path, token, nil)
				hsWantErr(t, r, tc.status, "M_UNRECOGNIZED", tc.method+" "+tc.path)
				if r.Header.Get("Access-Control-Allow-Origin") != "*" {
					t.Errorf("no CORS header on an error")
				}
			}
		})
	}
}

func TestCORS(t *testing.T) {
	t.Parallel()
	srv := hsStart(t, testserver.Options{})
	s := hsRegister(t, srv, hsName("cors"), nil)

	wantCORS := func(t *testing.T, r *hsReply, what string) {
		t.Helper()
		h := r.Header
		if h.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("%s: Access-Control-Allow-Origin = %q", what, h.Get("Access-Control-Allow-Origin"))
		}
		methods := h.Get("Access-Control-Allow-Methods")
		for _, m := range []string{"GET", "POST", "PUT", "DELETE", "OPTIONS"} {
			if !strings.Contains(methods, m) {
				t.Errorf("%s: Access-Control-Allow-Methods %q lacks %s", what, methods, m)
			}
		}
		headers := strings.ToLower(h.Get("Access-Control-Allow-Headers"))
		for _, hd := range []string{"x-requested-with", "content-type", "authorization"} {
			if !strings.Contains(headers, hd) {
				t.Errorf("%s: Access-Control-Allow-Headers %q lacks %s", what, headers, hd)
			}
		}
	}

	// Preflights carry no token and must succeed on every endpoint,
	// authenticated ones included.
	for _, path := range []string{
		"/_matrix/client/versions",
		"/_matrix/client/v3/login",
		"/_matrix/client/v3/account/whoami",
		"/_matrix/client/v3/devices/SOMEDEVICE",
		"/_matrix/client/v3/rooms/!room:localhost/send/m.room.message/txn1",
		"/_matrix/client/v3/no_such_endpoint",
		"/.well-known/matrix/client",
	} {
		req := hsRequest(t, srv, "OPTIONS", path, nil)
		req.Header.Set("Origin", "https://app.element.io")
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
		r := hsSend(t, hsClient(srv), req)
		if r.Status != http.StatusOK && r.Status != http.StatusNoContent {
			t.Errorf("OPTIONS %s: status %d, want 200 or 204", path, r.Status)
		}
		wantCORS(t, r, "OPTIONS "+path)
	}

	// Actual requests carry the headers too, errors included.
	req := hsRequest(t, srv, "GET", "/_matrix/client/v3/account/whoami", nil)
	req.Header.Set("Origin", "https://app.element.io")
	req.Header.Set("Authorization", "Bearer "+s.Token)
	r := hsSend(t, hsClient(srv), req)
	hsOK(t, r, "whoami")
	wantCORS(t, r, "GET whoami")
	r = hsDo(t, srv, "GET", "/_matrix/client/v3/account/whoami", "", nil)
	hsWantErr(t, r, 401, "M_MISSING_TOKEN", "whoami without token")
	wantCORS(t, r, "401")
}

// TestMethodNotAllowed: a path that names an endpoint, asked with a
// method it does not take, is 405 M_UNRECOGNIZED on every API the server
// serves: client, media and federation (spec: "API Standards"; Synapse);
// a path that names none stays 404 M_UNRECOGNIZED. CORS preflights
// (OPTIONS) keep working on all of them.
func TestMethodNotAllowed(t *testing.T) {
	t.Parallel()
	srv := hsStart(t, testserver.Options{})
	s := hsRegister(t, srv, hsName("method"), nil)
	for _, tc := range []struct {
		method, path string
		status       int
	}{
		// Client API, POST-only endpoints asked with GET.
		{"GET", "/_matrix/client/v3/logout", 405},
		{"GET", "/_matrix/client/v3/logout/all", 405},
		{"GET", "/_matrix/client/v3/createRoom", 405},
		{"GET", "/_matrix/client/v3/join/!room:localhost", 405},
		{"GET", "/_matrix/client/v3/rooms/!room:localhost/join", 405},
		{"GET", "/_matrix/client/v3/rooms/!room:localhost/leave", 405},
		{"GET", "/_matrix/client/v3/rooms/!room:localhost/receipt/m.read/$ev", 405},
		{"GET", "/_matrix/client/v3/user/@a:localhost/filter", 405},
		{"GET", "/_matrix/client/v3/search", 405},
		{"GET", "/_matrix/client/r0/createRoom", 405},
		{"GET", "/_matrix/client/v1/appservice/x/ping", 405},
		{"DELETE", "/_matrix/client/v3/sync", 405},
		{"PUT", "/_matrix/client/v3/rooms/!room:localhost/messages", 405},
		// Media.
		{"GET", "/_matrix/media/v3/upload", 405},
		{"GET", "/_matrix/media/v1/create", 405},
		{"POST", "/_matrix/media/v3/download/localhost/abc", 405},
		{"POST", "/_matrix/client/v1/media/download/localhost/abc", 405},
		{"PUT", "/_matrix/client/v1/media/config", 405},
		// Federation and keys.
		{"POST", "/_matrix/federation/v1/version", 405},
		{"PUT", "/_matrix/key/v2/server", 405},
		{"DELETE", "/_matrix/key/v2/server/ed25519:abc", 405},
		// Unknown paths: 404, whatever the method.
		{"GET", "/_matrix/client/v3/rooms/!room:localhost/nothing", 404},
		{"POST", "/_matrix/media/v3/nothing", 404},
		{"GET", "/_matrix/federation/v1/nothing", 404},
		{"POST", "/_matrix/federation/v9/version", 404},
		{"GET", "/_matrix/key/v9/server", 404},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			t.Parallel()
			path := strings.NewReplacer("!", "%21", "$", "%24", "@", "%40").Replace(tc.path)
			for _, token := range []string{"", s.Token} {
				r := hsDo(t, srv, tc.method, path, token, nil)
				hsWantErr(t, r, tc.status, "M_UNRECOGNIZED", tc.method+" "+tc.path)
			}
			req := hsRequest(t, srv, "OPTIONS", path, nil)
			req.Header.Set("Origin", "https://app.element.io")
			req.Header.Set("Access-Control-Request-Method", "POST")
			r := hsSend(t, hsClient(srv), req)
			if r.Status != http.StatusOK || r.Header.Get("Access-Control-Allow-Origin") != "*" {
				t.Errorf("OPTIONS %s: %d, Access-Control-Allow-Origin %q", tc.path, r.Status, r.Header.Get("Access-Control-Allow-Origin"))
			}
		})
	}
	// The endpoints themselves still answer their own methods.
	for _, p := range []string{"/_matrix/federation/v1/version", "/_matrix/key/v2/server"} {
		if r := hsDo(t, srv, "GET", p, "", nil); r.Status != http.StatusOK {
			t.Errorf("GET %s: %s", p, r)
		}
	}
}
