package storage

import "github.com/persistentchat/homeserver/roomdag"

// ServerKey is a remote server's signing key as this server last learnt
// it (federation/keyring.go decides what to keep; spec: server-server
// API, "Retrieving server keys").
type ServerKey struct {
	ServerName roomdag.ServerName
	// KeyID is the algorithm and version: "ed25519:abc".
	KeyID string
	// PublicKey is the raw ed25519 public key.
	PublicKey []byte
	// ValidUntilTS is when the key stops being valid (ms), as the server
	// published it in verify_keys, capped at 7 days after it was fetched;
	// 0 if it was only ever seen in old_verify_keys.
	ValidUntilTS int64
	// ExpiredTS is when the server stopped using the key (ms, its
	// old_verify_keys entry); 0 for a current key.
	ExpiredTS int64
	// FetchedTS is when the key was last fetched (ms).
	FetchedTS int64
	// Response is the signed key response it came from, as received, which
	// a notary serves again (key/v2/query).
	Response []byte
}
