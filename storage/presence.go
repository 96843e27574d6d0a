package storage

import "github.com/persistentchat/homeserver/roomdag"

// Presence is a user's stored presence (spec: "Presence"): one row per
// user, replaced at each change.
type Presence struct {
	UserID roomdag.UserID
	// State is "online", "unavailable" or "offline".
	State string
	// StatusMsg is the user's status message; "" when none is set.
	StatusMsg string
	// LastActiveMS is when the user last did something (ms since the
	// epoch); 0 if never.
	LastActiveMS int64
	// Pos is the presence stream position of the row's last change.
	Pos int64
}
