package storage

import (
	"encoding/json"

	"github.com/persistentchat/homeserver/roomdag"
)

// Row types of the notification pipeline (push.Worker writes them, /sync
// and /notifications read them).

// NotifyEvent is a committed event as the notification worker reads it:
// with the snapshots of the room state before and after it.
type NotifyEvent struct {
	*roomdag.StoredEvent
	StateAfter int64
}

// Notification is one user's notification for one event.
type Notification struct {
	User      roomdag.UserID
	Room      roomdag.RoomID
	EventPos  roomdag.StreamPos
	EventID   roomdag.EventID // filled when read back
	Actions   json.RawMessage
	Highlight bool
	TS        int64 // ms
	// Read is filled when read back: the user's read receipt in the room
	// is at or after the event.
	Read bool
}

// UnreadCount is a user's unread notification counts in one room.
type UnreadCount struct {
	Notifications int64
	Highlights    int64
}
