package storage

import (
	"encoding/json"

	"github.com/persistentchat/homeserver/roomdag"
)

// Row types of the notification pipeline (push.Worker writes them, /sync
// and /notifications read them).
//
// The layout is compact, because in a big room nearly every member gets
// the same outcome for an event: one EventNotification per event carries
// that default outcome for every local member joined at the event, and a
// Notification row exists only where a user's outcome differs (the
// sender, a mention, the user's own rules). Which members the default
// covers is kept as join spans, and a running per-room total on the
// default rows makes a count one subtraction.

// EventNotification is the default outcome of an event that notifies: it
// applies to every local member whose join span covers the event and who
// has no Notification row (an exception) for it.
type EventNotification struct {
	Room     roomdag.RoomID
	EventPos roomdag.StreamPos
	// Thread is the root of the thread the event is in, "" for the main
	// timeline.
	Thread    roomdag.EventID
	Actions   json.RawMessage
	Highlight bool
	TS        int64 // ms
	// Running totals of the room's default notifications and highlights,
	// this event included, and the same within the event's thread (the
	// main timeline being one).
	NotifyTotal, HighlightTotal             int64
	ThreadNotifyTotal, ThreadHighlightTotal int64
}

// Notification is one user's notification for one event. As an exception
// row, Actions is nil when the user is not notified, and the deltas say
// how the user's outcome differs from the event's default (-1, 0 or 1).
type Notification struct {
	User      roomdag.UserID
	Room      roomdag.RoomID
	EventPos  roomdag.StreamPos
	EventID   roomdag.EventID // filled when read back
	Thread    roomdag.EventID // as in EventNotification
	Actions   json.RawMessage
	Highlight bool
	TS        int64 // ms
	// NotifyDelta and HighlightDelta: exception rows only.
	NotifyDelta, HighlightDelta int
	// Read is filled when read back: the user's read receipt in the room
	// is at or after the event.
	Read bool
}

// JoinChange opens (Joined) or closes a local user's join span in a room
// at an event position: the span covers the events after its opening
// event up to and including its closing event.
type JoinChange struct {
	User   roomdag.UserID
	Room   roomdag.RoomID
	Pos    roomdag.StreamPos
	Joined bool
}

// NotifyBatch is what one step of the notification worker stores, with
// its position moving from From to To, in one transaction.
type NotifyBatch struct {
	From, To   roomdag.StreamPos
	Events     []EventNotification
	Exceptions []Notification
	Joins      []JoinChange
	// Wake lists the users whose notifications changed, for the
	// processes sharing the database to wake (storage.Change).
	Wake []roomdag.UserID
}

// UnreadCount is a user's unread notification counts in one room's main
// timeline, or in one thread; Threads holds the room's threads with
// unread notifications (spec: "Receiving notifications", threads).
type UnreadCount struct {
	Notifications int64
	Highlights    int64
	Threads       map[roomdag.EventID]UnreadCount
}

// Total is the room's counts with its threads' added in, as a client that
// does not count threads apart sees them.
func (c UnreadCount) Total() (notifications, highlights int64) {
	notifications, highlights = c.Notifications, c.Highlights
	for _, t := range c.Threads {
		notifications += t.Notifications
		highlights += t.Highlights
	}
	return notifications, highlights
}
