package configs

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"strings"
)

// OldSigningKey is an entry of old_signing_keys.
type OldSigningKey struct {
	// Key is the public key, unpadded base64.
	Key string `yaml:"key"`
	// ExpiredTS is when the key stopped being used, in milliseconds.
	ExpiredTS int64 `yaml:"expired_ts"`
}

// TrustedKeyServer is an entry of trusted_key_servers.
type TrustedKeyServer struct {
	// ServerName is the notary's server name.
	ServerName string `yaml:"server_name"`
	// VerifyKeys are the notary's public keys (unpadded base64) by key
	// ID; empty to fetch them from the notary.
	VerifyKeys map[string]string `yaml:"verify_keys"`
}

// ParseVerifyKey decodes a key ID and its unpadded base64 ed25519 public
// key as the config gives them.
func ParseVerifyKey(keyID, b64 string) (ed25519.PublicKey, error) {
	alg, version, _ := strings.Cut(keyID, ":")
	if alg != "ed25519" || version == "" || strings.Trim(version, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") != "" {
		return nil, fmt.Errorf("key ID %q is not ed25519:<letters, digits or _>", keyID)
	}
	pub, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(b64, "="))
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("key %s is not base64 of %d bytes", keyID, ed25519.PublicKeySize)
	}
	return pub, nil
}

// validateFederationKeys checks old_signing_keys and trusted_key_servers.
func (c *Config) validateFederationKeys(bad func(field, format string, args ...any)) {
	for id, k := range c.OldSigningKeys {
		if _, err := ParseVerifyKey(id, k.Key); err != nil {
			bad("old_signing_keys", "%v", err)
		}
		if k.ExpiredTS <= 0 {
			bad("old_signing_keys", "%s: expired_ts must be a positive time in milliseconds", id)
		}
	}
	for i, n := range c.TrustedKeyServers {
		if err := checkServerName(n.ServerName); err != nil {
			bad("trusted_key_servers", "entry %d: server_name %q: %v", i, n.ServerName, err)
		}
		for id, k := range n.VerifyKeys {
			if _, err := ParseVerifyKey(id, k); err != nil {
				bad("trusted_key_servers", "%s: %v", n.ServerName, err)
			}
		}
	}
}
