package testserver

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Peer is a homeserver of any implementation that a test reaches only
// through its client-server API: the other side of an interoperability
// test (server/interop_test.go).
type Peer struct {
	t testing.TB
	// Base is the peer's client-server API URL.
	Base string
	// SharedSecret is its registration_shared_secret; "" to register
	// through open registration (m.login.dummy) instead.
	SharedSecret string
	http         *http.Client
}

// NewPeer returns the peer at base.
func NewPeer(t testing.TB, base, sharedSecret string) *Peer {
	return &Peer{t: t, Base: strings.TrimRight(base, "/"), SharedSecret: sharedSecret,
		http: &http.Client{Timeout: 60 * time.Second}}
}

// Anonymous returns a client of the peer without a token.
func (p *Peer) Anonymous() *Client {
	return &Client{t: p.t, Base: p.Base, HTTP: p.http}
}

// Register makes a new user on the peer with a name unique to this test
// run, by Synapse's shared-secret admin API (which Dendrite and this
// server serve too) when SharedSecret is set, else by open registration.
func (p *Peer) Register(prefix string) *Client {
	p.t.Helper()
	// The peer outlives the test process: names must not repeat across runs.
	name := fmt.Sprintf("%s%d%d", prefix, time.Now().UnixNano()%1e9, userCounter.Add(1))
	const password = "correct horse battery"
	c := p.Anonymous()
	var out struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
		DeviceID    string `json:"device_id"`
	}
	if p.SharedSecret == "" {
		body := map[string]any{"username": name, "password": password, "auth": map[string]string{"type": "m.login.dummy"}}
		c.MustDo("POST", "/_matrix/client/v3/register", body, &out)
	} else {
		var n struct {
			Nonce string `json:"nonce"`
		}
		c.MustDo("GET", "/_synapse/admin/v1/register", nil, &n)
		// Synapse's MAC: HMAC-SHA1 over nonce, user, password and
		// "admin"/"notadmin", NUL-separated.
		m := hmac.New(sha1.New, []byte(p.SharedSecret))
		m.Write([]byte(n.Nonce + "\x00" + name + "\x00" + password + "\x00notadmin"))
		body := map[string]any{"nonce": n.Nonce, "username": name, "password": password, "admin": false,
			"mac": hex.EncodeToString(m.Sum(nil))}
		c.MustDo("POST", "/_synapse/admin/v1/register", body, &out)
	}
	c.UserID, c.Token, c.DeviceID = out.UserID, out.AccessToken, out.DeviceID
	return c
}
