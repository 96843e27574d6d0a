package storage

import (
	"encoding/json"

	"github.com/persistentchat/homeserver/roomdag"
)

// CrossSigningKey is one of a user's cross-signing keys (spec:
// client-server API, "Cross-signing"): Usage is "master", "self_signing"
// or "user_signing", KeyID its unpadded base64 ed25519 public key, JSON the
// key object as uploaded (with the signatures it was uploaded with).
type CrossSigningKey struct {
	User  roomdag.UserID
	Usage string
	KeyID string
	JSON  json.RawMessage
}

// KeySignature is a signature uploaded through /keys/signatures/upload:
// Signer's key SignerKeyID ("ed25519:" and a device ID or public key)
// signed TargetUser's key TargetKeyID (a device ID, or the public key of
// a cross-signing key).
type KeySignature struct {
	TargetUser  roomdag.UserID
	TargetKeyID string
	Signer      roomdag.UserID
	SignerKeyID string
	Signature   string
}

// BackupVersion is a version of a user's server-side key backup (spec:
// "Server-side key backups"). Count and ETag describe its sessions; ETag
// changes with every change of them.
type BackupVersion struct {
	Version   int64
	Algorithm string
	AuthData  json.RawMessage
	Count     int64
	ETag      int64
}

// BackupSession is one backed-up Megolm session of a room.
type BackupSession struct {
	Room              roomdag.RoomID
	Session           string
	FirstMessageIndex int64
	ForwardedCount    int64
	IsVerified        bool
	SessionData       json.RawMessage
}

// WrongBackupVersion refuses a write to a backup version that is not the
// user's newest, Current.
type WrongBackupVersion struct{ Current int64 }

func (e *WrongBackupVersion) Error() string { return "storage: not the current backup version" }
