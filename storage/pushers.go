package storage

import (
	"encoding/json"

	"github.com/persistentchat/homeserver/roomdag"
)

// Pusher is one of a user's pushers (spec: client-server API, "Push
// Notifications", POST /pushers/set): where and how the user's
// notifications are sent to a push gateway. A user has at most one
// pusher per (AppID, PushKey).
type Pusher struct {
	ID   int64 // the row's ID, filled when read
	User roomdag.UserID
	// DeviceID is the device whose access token created the pusher;
	// deleting the device (logout) deletes the pusher, as Synapse does.
	DeviceID          string
	Kind              string // "http"
	AppID             string
	PushKey           string
	AppDisplayName    string
	DeviceDisplayName string
	ProfileTag        string
	Lang              string
	// Data is the data object as the client gave it, url included.
	Data json.RawMessage
	// PushKeyTS is when the pusher was last set, in ms.
	PushKeyTS int64
	// LastPos: every notification of the user for an event at or before
	// this position was delivered, skipped or given up on. A new pusher
	// starts at the notification worker's position.
	LastPos roomdag.StreamPos
	// FailingSince is when the gateway started failing for the oldest
	// undelivered notification, in ms; 0 while it is not failing.
	FailingSince int64
}
