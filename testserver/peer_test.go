package testserver_test

import (
	"strings"
	"testing"

	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/testserver"
)

// A Peer makes users both ways the interop test may need: by the shared
// secret with open registration off, and by open registration.
func TestPeerRegister(t *testing.T) {
	closed := testserver.Start(t, testserver.Options{Configure: func(c *configs.Config) {
		c.EnableRegistration = false
		c.RegistrationSharedSecret = configs.NewSecret("peer-secret")
	}})
	open := testserver.Start(t, testserver.Options{})
	for _, tc := range []struct {
		name   string
		s      *testserver.Server
		secret string
	}{{"SharedSecret", closed, "peer-secret"}, {"Open", open, ""}} {
		t.Run(tc.name, func(t *testing.T) {
			p := testserver.NewPeer(t, tc.s.URL+"/", tc.secret)
			a, b := p.Register("user"), p.Register("user")
			if a.UserID == b.UserID || !strings.HasPrefix(a.UserID, "@user") || a.Token == "" || a.DeviceID == "" {
				t.Fatalf("users %+v and %+v", a, b)
			}
			var who struct {
				UserID string `json:"user_id"`
			}
			a.MustDo("GET", "/_matrix/client/v3/account/whoami", nil, &who)
			if who.UserID != a.UserID {
				t.Fatalf("whoami %q, registered %q", who.UserID, a.UserID)
			}
		})
	}
	// The closed server refuses open registration: its users came by the
	// secret.
	r := closed.Anonymous().Do("POST", "/_matrix/client/v3/register", map[string]any{"username": "nobody", "password": "correct horse battery",
		"auth": map[string]string{"type": "m.login.dummy"}})
	if r.Status != 403 {
		t.Fatalf("open registration on the closed server: %d %s", r.Status, r.Body)
	}
}
