package storage

import (
	"encoding/json"

	"github.com/persistentchat/homeserver/roomdag"
)

// Row types of the application service transaction queues (appservice
// writes and reads them).

// AppServiceStream is one service's queue as stored.
type AppServiceStream struct {
	// EventPos is the event stream position up to which every event has
	// been either delivered or put into a pending transaction.
	EventPos roomdag.StreamPos
	// LastTxn is the last transaction ID handed out.
	LastTxn int64
	// Pending are the transactions not yet acknowledged, oldest first.
	Pending []AppServiceTxn
}

// AppServiceTxn is a transaction built for a service: its ID and the
// exact body to send, kept so a retry sends the same bytes.
type AppServiceTxn struct {
	ID   int64
	Body json.RawMessage
	// UpTo is the event stream position of the newest event the
	// transaction covers.
	UpTo roomdag.StreamPos
}
