package api_test

import (
	"bytes"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/persistentchat/homeserver/testserver"
)

// TestHeadRequests: HEAD on a GET resource answers what GET answers, the
// same status and headers (Content-Length included), without a body, as
// Synapse does (it serves HEAD with render_GET); health checks, load
// balancers and net/http clients probe with HEAD. Errors alike: a missing
// event is 404 both ways, and a path that has no GET is 405 for HEAD too.
func TestHeadRequests(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat", "name": "head"})
	media := upload(t, alice, "text/plain; charset=utf-8", "notes.txt", bytes.Repeat([]byte("a large body, "), 1000))
	anon := srv.Anonymous()

	tests := []struct {
		name   string
		c      *testserver.Client
		path   string
		status int
	}{
		{"versions, no auth", anon, "/_matrix/client/versions", http.StatusOK},
		{"well-known", anon, "/.well-known/matrix/client", http.StatusOK},
		{"whoami", alice, csAPI + "/account/whoami", http.StatusOK},
		{"whoami on r0", alice, "/_matrix/client/r0/account/whoami", http.StatusOK},
		// Paths whose answers stay the same from one request to the next:
		// events carry their age.
		{"a state event's content", alice, roomPath(room, "state", "m.room.name", ""), http.StatusOK},
		{"joined members", alice, roomPath(room, "joined_members"), http.StatusOK},
		{"push rules, a large body", alice, csAPI + "/pushrules/", http.StatusOK},
		{"profile", anon, csAPI + "/profile/" + url.PathEscape(alice.UserID), http.StatusOK},
		{"media download", alice, dl + media, http.StatusOK},
		{"media config, v1", alice, "/_matrix/client/v1/media/config", http.StatusOK},
		{"server keys, federation", anon, "/_matrix/key/v2/server", http.StatusOK},
		{"federation version", anon, "/_matrix/federation/v1/version", http.StatusOK},
		{"no token", anon, csAPI + "/account/whoami", http.StatusUnauthorized},
		{"missing event", alice, roomPath(room, "event", "$nosuchevent"), http.StatusNotFound},
		{"an event of a room alice is not in", alice, roomPath("!nosuchroom:localhost", "event", "$x"), http.StatusNotFound},
		{"unknown path", alice, csAPI + "/nosuchthing", http.StatusNotFound},
		{"POST-only path", alice, csAPI + "/createRoom", http.StatusMethodNotAllowed},
		{"federation path not served", anon, "/_matrix/federation/v1/nosuchthing", http.StatusNotFound},
		{"PUT-only federation path", anon, "/_matrix/federation/v1/send/1", http.StatusMethodNotAllowed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			get := mediaDo(t, tc.c, "GET", tc.path, "", nil)
			head := mediaDo(t, tc.c, "HEAD", tc.path, "", nil)
			if get.Status != tc.status || head.Status != get.Status {
				t.Fatalf("GET %d, HEAD %d; want %d both", get.Status, head.Status, tc.status)
			}
			if len(head.Body) != 0 {
				t.Errorf("HEAD has a body of %d bytes", len(head.Body))
			}
			if len(get.Body) == 0 {
				t.Errorf("GET has no body: nothing is compared")
			}
			for _, h := range []string{"Content-Type", "Content-Length", "Content-Disposition", "Cache-Control", "Access-Control-Allow-Origin", "Access-Control-Allow-Methods"} {
				if g, hd := get.Header.Get(h), head.Header.Get(h); g != hd {
					t.Errorf("%s: GET %q, HEAD %q", h, g, hd)
				}
			}
			if cl := get.Header.Get("Content-Length"); cl == "" && len(get.Body) < 2048 {
				t.Errorf("GET of %d bytes has no Content-Length to compare", len(get.Body))
			}
		})
	}
	if m := mediaDo(t, anon, "OPTIONS", csAPI+"/account/whoami", "", nil).Header.Get("Access-Control-Allow-Methods"); !strings.Contains(m, "HEAD") {
		t.Errorf("CORS preflight allows %q, want HEAD among them (as Synapse)", m)
	}
}
