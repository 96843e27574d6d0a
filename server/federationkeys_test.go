package server_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/testserver"
)

// The server publishes the keys of old_signing_keys in old_verify_keys,
// and answers a notary query for its own name with its key response.
func TestOldSigningKeysPublished(t *testing.T) {
	oldPub, _, _ := ed25519.GenerateKey(rand.Reader)
	b64 := base64.RawStdEncoding.EncodeToString(oldPub)
	srv := testserver.Start(t, testserver.Options{Configure: func(c *configs.Config) {
		c.OldSigningKeys = map[string]configs.OldSigningKey{"ed25519:old_1": {Key: b64, ExpiredTS: 1_600_000_000_000}}
	}})
	for _, path := range []string{"/_matrix/key/v2/server", "/_matrix/key/v2/query/" + srv.Config.ServerName} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, raw)
		}
		var r struct {
			ServerName    string `json:"server_name"`
			OldVerifyKeys map[string]struct {
				Key       string `json:"key"`
				ExpiredTS int64  `json:"expired_ts"`
			} `json:"old_verify_keys"`
		}
		if path != "/_matrix/key/v2/server" {
			var q struct {
				ServerKeys []json.RawMessage `json:"server_keys"`
			}
			if err := json.Unmarshal(raw, &q); err != nil || len(q.ServerKeys) != 1 {
				t.Fatalf("GET %s: %s", path, raw)
			}
			raw = q.ServerKeys[0]
		}
		if err := json.Unmarshal(raw, &r); err != nil {
			t.Fatal(err)
		}
		if old := r.OldVerifyKeys["ed25519:old_1"]; r.ServerName != srv.Config.ServerName || old.Key != b64 || old.ExpiredTS != 1_600_000_000_000 {
			t.Errorf("GET %s: %s", path, raw)
		}
	}
}
