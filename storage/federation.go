package storage

import "github.com/persistentchat/homeserver/roomdag"

// FederationItem is one thing queued for a destination server: a PDU
// (Event set; its JSON is the stored event's) or an EDU (EDU holds its
// JSON), in queue order (Seq).
type FederationItem struct {
	Seq   int64
	Room  roomdag.RoomID
	Event roomdag.EventID
	EDU   []byte
	// Txn is the transaction the item was put in, 0 while in none: a
	// transaction that failed is sent again with the same items and ID.
	Txn int64
}

// FederationDestination is a destination server's sending state.
type FederationDestination struct {
	Server roomdag.ServerName
	// LastTxn is the last transaction ID handed out for the server.
	LastTxn int64
	// Failures counts the transactions that failed in a row; RetryAtMS
	// is when the next attempt may be made, DownSinceMS when the first of
	// those failures happened (0: not failing).
	Failures    int
	RetryAtMS   int64
	DownSinceMS int64
}
