package storage

import (
	"encoding/json"
	"errors"

	"github.com/persistentchat/homeserver/roomdag"
)

// End-to-end encryption keys (spec: client-server API, "End-to-End
// Encryption", "Key management API"): what package e2ee stores.

// ErrKeyConflict is returned by a key upload that would replace a stored
// one-time key with different content under the same key ID.
var ErrKeyConflict = errors.New("storage: a key with this ID is already stored with different content")

// KeyConflictError names the key an upload was refused for; it wraps
// ErrKeyConflict.
type KeyConflictError struct {
	KeyID string // "<algorithm>:<key ID>"
}

func (e *KeyConflictError) Error() string {
	return "one-time key " + e.KeyID + " already exists with different content"
}
func (e *KeyConflictError) Unwrap() error { return ErrKeyConflict }

// OneTimeKey is an uploaded one-time or fallback key.
type OneTimeKey struct {
	Algorithm string // "signed_curve25519"
	KeyID     string // without the algorithm
	// JSON is the key as uploaded: a string or a signed object.
	JSON json.RawMessage
	// Match is the key's content as compared against a re-upload under
	// the same ID (KeyMatch).
	Match string
}

// KeyUpload is one POST /keys/upload, already validated.
type KeyUpload struct {
	// DeviceKeys is the signed device keys object (canonical JSON), nil
	// when the upload has none.
	DeviceKeys json.RawMessage
	OneTime    []OneTimeKey
	// Fallback replaces the device's fallback key of each algorithm.
	Fallback []OneTimeKey
}

// DeviceKeys are one device's stored keys with its display name.
type DeviceKeys struct {
	User        roomdag.UserID
	Device      string
	JSON        json.RawMessage
	DisplayName string
}

// KeyClaim asks for one key of Algorithm from a device.
type KeyClaim struct {
	User      roomdag.UserID
	Device    string
	Algorithm string
}

// ClaimedKey is a key handed out to a claim.
type ClaimedKey struct {
	KeyClaim
	KeyID string
	JSON  json.RawMessage
}

// MemberChange is a member's latest membership in a room, changed within a
// range of the event stream, as seen by a user who is or was in the room.
type MemberChange struct {
	Room       roomdag.RoomID
	User       roomdag.UserID
	Membership string
	// Mine is the asking user's own latest membership in Room.
	Mine string
}

// KeyMatch is the form of a one-time key compared against a re-upload
// under the same ID: a string key itself, an object's JSON (keys sorted)
// without its signatures, so that a key signed again is the same key.
func KeyMatch(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) != nil {
		return string(raw)
	}
	delete(obj, "signatures")
	delete(obj, "unsigned")
	b, _ := json.Marshal(obj) // map keys sorted: a canonical order
	return string(b)
}

// DeviceChange is one device's part in a change of a local user's device
// list: its keys or name changed, or it was deleted. A change with no
// device ("") is of the user's cross-signing keys.
type DeviceChange struct {
	Device  string
	Deleted bool
}

// DeviceListOutboxEntry is a local device-list change waiting to be sent
// to other servers (m.device_list_update, m.signing_key_update): at Pos
// of the device-list stream; Prev is the user's previous position at
// which a device changed (0: none), the update's prev_id.
type DeviceListOutboxEntry struct {
	Pos  int64
	User roomdag.UserID
	DeviceChange
	Prev int64
}

// RemoteDevice is a device of another server's user as its server
// reported it: Keys nil for a device without keys (not cached).
type RemoteDevice struct {
	Device  string
	Deleted bool
	Keys    json.RawMessage
}

// RemoteDeviceList is the cached device list of another server's user:
// StreamID is the last update applied (their server's numbering), Devices
// the device keys by device ID, Master and SelfSigning their
// cross-signing keys (nil: none).
//
// ValidFrom is the event stream position at the last resync, as read
// back (it is set when the list is stored).
type RemoteDeviceList struct {
	StreamID            int64
	ValidFrom           roomdag.StreamPos
	Devices             map[string]json.RawMessage
	Master, SelfSigning json.RawMessage
}
