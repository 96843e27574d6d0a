package storage

import (
	"encoding/json"

	"github.com/persistentchat/homeserver/roomdag"
)

// ToDeviceSend is one PUT /sendToDevice for local recipients (spec:
// "Send-to-Device messaging").
type ToDeviceSend struct {
	Sender roomdag.UserID
	// SenderDevice and TxnID are the idempotency key: a second send with
	// the same pair stores nothing.
	SenderDevice, TxnID string
	// NowMS is when the send was made (ms since the epoch): transaction
	// IDs are remembered for TxnLifetimeMS after it.
	NowMS int64
	Type  string
	// Messages maps recipient user -> device ID -> content; device "*" is
	// every device of the user. A device named beside "*" gets its own
	// content rather than the wildcard's. Devices that do not exist (at
	// the commit) get nothing.
	Messages map[roomdag.UserID]map[string]json.RawMessage
}

// TxnLifetimeMS is how long a to-device transaction ID is remembered: a
// day, well past any client's retries (Synapse's transaction cache keeps
// them half an hour).
const TxnLifetimeMS = 24 * 60 * 60 * 1000

// ToDeviceMessage is a to-device message waiting for its device: Event is
// the event as /sync serves it ({"content", "sender", "type"}), Pos its
// position in the to-device stream.
type ToDeviceMessage struct {
	Pos   int64
	Event json.RawMessage
}

// DehydratedDevice is a user's dehydrated device (MSC3814): a device
// without an access token whose private keys, encrypted by the client, are
// Data (opaque to the server).
type DehydratedDevice struct {
	DeviceID string
	Data     json.RawMessage
}
