package storage

import "github.com/persistentchat/homeserver/roomdag"

// UIASession is a user-interactive auth session (spec: client-server API,
// "User-Interactive Authentication API") as the database keeps it, so that
// each step of a flow may land on any process serving the client API.
type UIASession struct {
	ID string
	// Endpoint is the request the session is bound to (method and path):
	// a session begun for one request cannot complete another.
	Endpoint string
	// Completed are the stages done so far, in the order they were.
	Completed []string
	// User is the account a completed m.login.password stage proved; ""
	// before one has.
	User roomdag.UserID
	// ExpiresMS is when the session is forgotten (ms since the epoch).
	ExpiresMS int64
}
