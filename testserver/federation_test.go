package testserver_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/federation"
	"github.com/persistentchat/homeserver/netguard"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/server"
	"github.com/persistentchat/homeserver/testserver"
)

// TestFederation: two servers named after their TLS federation listeners
// reach each other through the real transport: A's keyring fetches B's
// keys from B over TLS, and A's client reads B's version; a server off
// the whitelist and a denied address are refused before anything is sent.
func TestFederation(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{Configure: func(c *configs.Config) {
		// An address on the deny-list (loopback, less the federation's
		// 127.0.0.1): whitelisted, so that the IP check is what refuses.
		c.FederationDomainWhitelist = append(c.FederationDomainWhitelist, "127.0.0.2:9")
	}})
	a, b := fed[0], fed[1]
	if got := b.HS.FederationAddr().String(); b.Name() != got {
		t.Fatalf("B is named %s but its federation listener is %s", b.Name(), got)
	}
	// The certificate was made on first start, in the data directory.
	cert, key, self := b.Config.TLSPaths()
	if !self {
		t.Fatal("no self-signed certificate configured")
	}
	for _, p := range []string{cert, key} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("self-signed pair: %v", err)
		}
	}
	bKey, err := server.LoadOrCreateKey(b.Config.SigningKeyPath(), roomdag.ServerName(b.Name()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	pub, err := a.HS.Keyring.RequestKey(ctx, roomdag.ServerName(b.Name()), bKey.KeyID)
	if err != nil {
		t.Fatalf("A fetching B's key: %v", err)
	}
	if !pub.Equal(bKey.Public()) {
		t.Fatal("A fetched a key for B that is not B's")
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "/_matrix/federation/v1/version", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := a.HS.Federation.Do(ctx, roomdag.ServerName(b.Name()), req)
	if err != nil {
		t.Fatalf("A asking B's version: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var v struct {
		Server struct {
			Version string `json:"version"`
		} `json:"server"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &v) != nil || v.Server.Version != server.Version {
		t.Fatalf("B's version: status %d, %s", resp.StatusCode, body)
	}

	for _, tc := range []struct {
		dest string
		want error
	}{
		{"example.org", federation.ErrNotWhitelisted},
		{"127.0.0.2:9", netguard.ErrBlocked},
	} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "/_matrix/federation/v1/version", nil)
		resp, err := a.HS.Federation.Do(ctx, roomdag.ServerName(tc.dest), req)
		if err == nil {
			resp.Body.Close()
			t.Errorf("%s: answered %d, want refused", tc.dest, resp.StatusCode)
		} else if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.dest, err, tc.want)
		}
	}
}
