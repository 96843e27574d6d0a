package configs

import (
	"strings"
	"testing"
)

// A bad old_signing_keys entry or trusted_key_servers entry fails
// validation, naming the setting.
func TestOldSigningKeysValidated(t *testing.T) {
	c := Default()
	c.OldSigningKeys = map[string]OldSigningKey{"ed25519:bad key": {Key: "AAAA", ExpiredTS: 1}}
	c.TrustedKeyServers = []TrustedKeyServer{{ServerName: "not a name"}}
	err := c.Validate()
	if err == nil {
		t.Fatal("bad old_signing_keys and trusted_key_servers accepted")
	}
	for _, field := range []string{"old_signing_keys", "trusted_key_servers"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error %q does not name %s", err, field)
		}
	}
}

func TestFederationKeysValid(t *testing.T) {
	c := Default()
	key := "Cbx614xYkqJeQSOKZvoV+eEYzKouYUM31mzaxLUhkNQ"
	c.OldSigningKeys = map[string]OldSigningKey{"ed25519:a_old": {Key: key, ExpiredTS: 1}}
	c.TrustedKeyServers = []TrustedKeyServer{{ServerName: "127.0.0.1:8481", VerifyKeys: map[string]string{"ed25519:a_Bc9": key}}, {ServerName: "[::1]:8448"}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []OldSigningKey{{Key: key}, {Key: key[:20], ExpiredTS: 1}, {Key: "!!", ExpiredTS: 1}} {
		c.OldSigningKeys = map[string]OldSigningKey{"ed25519:a_old": bad}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "old_signing_keys") {
			t.Errorf("%+v: %v", bad, err)
		}
	}
}
