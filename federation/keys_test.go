package federation_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/federation"
	"github.com/persistentchat/homeserver/roomdag"
)

// The published key response is self-signed with the key it lists, so a
// remote server can verify it (spec: "Publishing Keys").
func TestServerKeysAreSelfSigned(t *testing.T) {
	key, err := roomdag.GenerateSigningKey("hs.test:8448", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	ks := federation.NewKeyServer(key, clock.NewFake(now), "test")
	body, err := ks.ServerKeys()
	if err != nil {
		t.Fatal(err)
	}
	var resp struct {
		ServerName   string `json:"server_name"`
		ValidUntilTS int64  `json:"valid_until_ts"`
		VerifyKeys   map[string]struct {
			Key string `json:"key"`
		} `json:"verify_keys"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.ServerName != "hs.test:8448" || resp.ValidUntilTS <= now.UnixMilli() {
		t.Errorf("server_name %q valid_until_ts %d", resp.ServerName, resp.ValidUntilTS)
	}
	vk, ok := resp.VerifyKeys[key.KeyID]
	if !ok {
		t.Fatalf("verify_keys lacks %s: %s", key.KeyID, body)
	}
	pub, err := base64.RawStdEncoding.DecodeString(vk.Key)
	if err != nil || !ed25519.PublicKey(pub).Equal(key.Public()) {
		t.Fatalf("published key does not match the signing key")
	}
	if err := roomdag.VerifyJSON("hs.test:8448", key.KeyID, pub, body); err != nil {
		t.Errorf("key response signature does not verify: %v", err)
	}
	tampered := []byte(string(body[:len(body)-1]) + `,"x":1}`)
	if err := roomdag.VerifyJSON("hs.test:8448", key.KeyID, pub, tampered); err == nil {
		t.Errorf("tampered response verified")
	}
}
