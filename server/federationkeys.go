package server

import (
	"crypto/ed25519"

	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/federation"
	"github.com/persistentchat/homeserver/roomdag"
)

// federationKeys is this server's signing key and the old keys of
// old_signing_keys (which Validate has checked).
func federationKeys(cfg *configs.Config, key roomdag.SigningKey) federation.OwnKeys {
	own := federation.OwnKeys{Key: key}
	for id, k := range cfg.OldSigningKeys {
		pub, err := configs.ParseVerifyKey(id, k.Key)
		if err != nil {
			continue
		}
		own.Old = append(own.Old, federation.OldKey{KeyID: id, Public: pub, ExpiredTS: k.ExpiredTS})
	}
	return own
}

// notaries are the trusted_key_servers (which Validate has checked).
func notaries(cfg *configs.Config) []federation.Notary {
	var out []federation.Notary
	for _, n := range cfg.TrustedKeyServers {
		keys := map[string]ed25519.PublicKey{}
		for id, k := range n.VerifyKeys {
			if pub, err := configs.ParseVerifyKey(id, k); err == nil {
				keys[id] = pub
			}
		}
		out = append(out, federation.Notary{ServerName: roomdag.ServerName(n.ServerName), VerifyKeys: keys})
	}
	return out
}
