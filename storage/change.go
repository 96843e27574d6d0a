package storage

import "github.com/persistentchat/homeserver/roomdag"

// Change is what one writer transaction (a batch of writes) changed that
// readers must hear of: the new positions of the streams it advanced and
// the keys (users, rooms) those changes concern. The store builds it while
// the batch runs and hands it, after the commit and in commit order, to
// whoever announces changes in this process (the same code that applies the
// changes other processes commit to a shared database, which get it as the
// payload of a PostgreSQL NOTIFY sent in the same transaction).
//
// Room events are not listed one by one: FirstEvent..LastEvent is the
// batch's range of the event stream, and a reader in another process reads
// the events back from storage (they are durable once the Change exists).
type Change struct {
	// FirstEvent..LastEvent (inclusive) are the event positions the batch
	// committed; both zero when it stored no event.
	FirstEvent, LastEvent roomdag.StreamPos
	AccountData           []UserPos
	Receipts              []ReceiptChange
	Presence              []UserPos
	// Notifications is set when the notification worker stored a step.
	Notifications *NotificationsChange
	// SessionsEnded lists users some of whose sessions (access tokens,
	// devices) were deleted.
	SessionsEnded []roomdag.UserID
	// Erased lists users marked erased.
	Erased []roomdag.UserID
	// Typing lists the typing changes the batch stored (on a database
	// several processes share), in position order.
	Typing []TypingRow
	// ToDevice lists the users to-device messages were stored for, each
	// with the newest position stored for them (storage.ToDeviceSend).
	ToDevice []UserPos
	// DeviceLists lists users whose device list (device keys, devices,
	// cross-signing keys) changed, at their new position in the
	// device-list stream.
	DeviceLists []UserPos
}

// TypingRow is a stored typing change: User types in Room until ExpiresMS
// (milliseconds since the epoch), or, with ExpiresMS 0, stopped; Pos is
// its position in the typing stream.
type TypingRow struct {
	Room      roomdag.RoomID
	User      roomdag.UserID
	ExpiresMS int64
	Pos       int64
}

// UserPos is a change of a user's entry in a stream, at a position.
type UserPos struct {
	User roomdag.UserID
	Pos  int64
}

// ReceiptChange is a receipt that moved, at Pos in the receipt stream.
type ReceiptChange struct {
	Room    roomdag.RoomID
	User    roomdag.UserID
	Private bool // m.read.private: only its owner sees it
	Pos     int64
}

// NotificationsChange is a step of the notification worker: every
// notification up to event position Pos is stored, and Users got new ones.
type NotificationsChange struct {
	Pos   roomdag.StreamPos
	Users []roomdag.UserID
}

// Empty reports whether the change announces nothing.
func (c *Change) Empty() bool {
	return c.LastEvent == 0 && len(c.AccountData) == 0 && len(c.Receipts) == 0 && len(c.Presence) == 0 &&
		c.Notifications == nil && len(c.SessionsEnded) == 0 && len(c.Erased) == 0 && len(c.Typing) == 0 &&
		len(c.ToDevice) == 0 && len(c.DeviceLists) == 0
}

// Merge appends o, a later change of the same batch, to c.
func (c *Change) Merge(o *Change) {
	if o.LastEvent != 0 {
		if c.FirstEvent == 0 {
			c.FirstEvent = o.FirstEvent
		}
		c.LastEvent = o.LastEvent
	}
	c.AccountData = append(c.AccountData, o.AccountData...)
	c.Receipts = append(c.Receipts, o.Receipts...)
	c.Presence = append(c.Presence, o.Presence...)
	if o.Notifications != nil {
		if c.Notifications == nil {
			c.Notifications = &NotificationsChange{}
		}
		c.Notifications.Pos = max(c.Notifications.Pos, o.Notifications.Pos)
		c.Notifications.Users = append(c.Notifications.Users, o.Notifications.Users...)
	}
	c.SessionsEnded = append(c.SessionsEnded, o.SessionsEnded...)
	c.Erased = append(c.Erased, o.Erased...)
	c.Typing = append(c.Typing, o.Typing...)
	c.ToDevice = append(c.ToDevice, o.ToDevice...)
	c.DeviceLists = append(c.DeviceLists, o.DeviceLists...)
}

// NoteEvent records that the batch stored an event at pos (positions
// rise within a batch).
func (c *Change) NoteEvent(pos roomdag.StreamPos) {
	if c.FirstEvent == 0 {
		c.FirstEvent = pos
	}
	c.LastEvent = pos
}

// StreamHeads are the newest committed positions of the durable streams.
type StreamHeads struct {
	Events        roomdag.StreamPos
	AccountData   int64
	Receipts      int64
	Presence      int64
	Notifications roomdag.StreamPos
	ToDevice      int64
	DeviceLists   int64
}
