package storage

import (
	"encoding/json"

	"github.com/persistentchat/homeserver/roomdag"
)

// Row types shared by every engine and the packages that use them.

// User is an account row.
type User struct {
	ID           roomdag.UserID
	PasswordHash string
	Admin        bool
	Deactivated  bool
	DisplayName  *string
	AvatarURL    *string
	// Locked and Suspended are the administrators' reversible holds on
	// the account (spec: "Account locking", "Account suspension").
	Locked, Suspended bool
}

// Session is a device with a freshly issued access token.
type Session struct {
	UserID      roomdag.UserID
	DeviceID    string
	DisplayName *string // nil keeps an existing device's name
	TokenHash   []byte
	ExpiresMS   int64  // 0: never
	RefreshHash []byte // nil: no refresh token
}

// TokenOwner is who an access token belongs to.
type TokenOwner struct {
	UserID    roomdag.UserID
	DeviceID  string
	ExpiresMS int64
	// Locked and Suspended are the owner's (User), read with the token so
	// that every request learns them without another query.
	Locked, Suspended bool
}

// Device is one of a user's sessions.
type Device struct {
	DeviceID    string  `json:"device_id"`
	DisplayName *string `json:"display_name,omitempty"`
	LastSeenTS  *int64  `json:"last_seen_ts,omitempty"`
	LastSeenIP  *string `json:"last_seen_ip,omitempty"`
}

// AccountDataItem is one changed account data entry.
type AccountDataItem struct {
	RoomID  roomdag.RoomID
	Type    string
	Content json.RawMessage
}

// RoomMembership is a user's current membership in one room.
type RoomMembership struct {
	RoomID     roomdag.RoomID
	Membership string
	Pos        roomdag.StreamPos // of the membership event
	Forgotten  bool
}

// EventPlace is where an event sits: its stream and topological positions
// and the state snapshots around it.
type EventPlace struct {
	Pos         roomdag.StreamPos
	Depth       int64
	StateBefore int64
	StateAfter  int64
}

// TopoPos orders events within a room for /messages: by depth, then by
// stream position.
type TopoPos struct {
	Depth int64
	Pos   roomdag.StreamPos
}

// StreamEvent is a committed event with the snapshots of its room's state
// before and after it, as the listeners that read the event stream after
// commit (the notification worker, application service senders) see it.
type StreamEvent struct {
	*roomdag.StoredEvent
	StateAfter int64
}

// Profile is a user's whole profile (spec v1.16, extensible profiles):
// the display name and avatar URL kept on the account, and every other
// field by key, each value as JSON.
type Profile struct {
	DisplayName, AvatarURL *string
	Fields                 map[string]json.RawMessage
}
