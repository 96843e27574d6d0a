package storage

import "github.com/persistentchat/homeserver/roomdag"

// ComplianceEvent is a committed event as the compliance archiver reads
// it: its stored JSON and, for an event a redaction has since
// overwritten, the original JSON copied aside in the redaction's
// transaction (Original; nil when the event is not redacted, or was
// redacted while compliance was off).
type ComplianceEvent struct {
	Pos      roomdag.StreamPos
	ID       roomdag.EventID
	Room     roomdag.RoomID
	Type     string
	Sender   roomdag.UserID
	TS       int64 // origin_server_ts, ms
	JSON     []byte
	Redacted bool
	Original []byte
}

// ComplianceReceived is an event received from another server and
// stored outside the timeline (an outlier, a rejected or a soft-failed
// event), as the compliance archiver reads it: Status is "outlier",
// "rejected" or "soft_failed", Reason why a rejected one was.
type ComplianceReceived struct {
	ID     roomdag.EventID
	Room   roomdag.RoomID
	Status string
	Reason string
	JSON   []byte
}

// ComplianceEntry is a record that is not an event (a media upload or
// download, a history read, an admin action), queued in the request's
// path until the archiver appends it to the chain. ID is the queue's.
type ComplianceEntry struct {
	ID      int64
	TS      int64 // ms
	Kind    string
	Actor   string
	Room    string
	Payload string // canonical JSON
}

// ComplianceRecord is one record of the archive's hash chain. Payload is
// empty once the retention purge dropped it; RecordHash stays, so that
// the chain still verifies.
type ComplianceRecord struct {
	Seq        int64
	TS         int64 // ms
	Kind       string
	Actor      string
	Room       string
	Payload    string
	Purged     bool
	RecordHash string // hex sha256 of the record's canonical JSON
	PrevHash   string // hex; the previous record's Hash
	Hash       string // hex sha256(PrevHash bytes || RecordHash bytes)
}

// ComplianceCheckpoint is a signed statement of the chain's length (Seq,
// the number of the last record it covers) and head (that record's
// Hash).
type ComplianceCheckpoint struct {
	Seq       int64
	Head      string
	TS        int64
	KeyID     string
	Signature string // unpadded base64 ed25519
}

// ComplianceBatch is one archiver step: records appended after the head
// (Records[0].Seq == head + 1), the queue entries they drained, an
// optional checkpoint, and the archiver's new event position. It commits
// only if the stored position is still From and the head is still the
// one the records were linked to.
type ComplianceBatch struct {
	From, To   roomdag.StreamPos
	Records    []ComplianceRecord
	Drained    []int64
	Checkpoint *ComplianceCheckpoint
	// BackfillFrom and BackfillTo are the position among backfilled
	// events (negative, going down) before and after the step; the
	// batch commits only if the stored one is still BackfillFrom.
	BackfillFrom, BackfillTo roomdag.StreamPos
	// Received are the received events outside the timeline the
	// records archive, marked archived in the same transaction.
	Received []roomdag.EventID
}

// ComplianceFilter selects records for an export: empty fields match
// everything; times are ms, To exclusive; Seq bounds are inclusive, 0
// for none.
type ComplianceFilter struct {
	Actor, Room    string
	FromTS, ToTS   int64
	FromSeq, ToSeq int64
}

// ComplianceStats summarise the archive.
type ComplianceStats struct {
	Records  int64
	Bytes    int64 // payload bytes
	FirstSeq int64
	HeadSeq  int64
	OldestTS int64
	Queued   int64
	Received int64 // received events outside the timeline not archived yet
	Pos      roomdag.StreamPos
	// BackfillPos is the archiver's position among backfilled events,
	// Lowest the lowest event position stored (0 when none is negative).
	BackfillPos, Lowest roomdag.StreamPos
	Checkpoints         int64
	LastCheckSeq        int64
}
