package storage

import "github.com/persistentchat/homeserver/roomdag"

// Hold is a legal hold on a user's events or on a room (package
// retention): while it is active (ReleasedMS 0), no purge deletes what it
// covers and a held user's account cannot be erased. Exactly one of User
// and Room is set.
type Hold struct {
	ID         int64
	User       roomdag.UserID
	Room       roomdag.RoomID
	Reason     string
	CreatedBy  roomdag.UserID
	CreatedMS  int64
	ReleasedBy roomdag.UserID // "" while active
	ReleasedMS int64          // 0 while active
}

// Active reports whether the hold is in force.
func (h *Hold) Active() bool { return h.ReleasedMS == 0 }

// RetentionRoom is a room and the content of its current m.room.retention
// state event (nil when it has none), for the purge jobs.
type RetentionRoom struct {
	Room    roomdag.RoomID
	Content []byte
}

// PurgeResult is what one PurgeHistory call deleted.
type PurgeResult struct {
	// Events is how many events were deleted.
	Events int
	// MediaURIs are the mxc:// URIs the deleted events referred to
	// (content.url, content.info.thumbnail_url, content.file.url and
	// content.info.thumbnail_file.url), each once.
	MediaURIs []string
	// More says that expired events are left: call again.
	More bool
}
