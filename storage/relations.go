package storage

import "github.com/persistentchat/homeserver/roomdag"

// Row types of event relationships (spec: "Forming relationships between
// events"): /relations, /threads and bundled aggregations read them.

// MaxRelationDepth is how many levels of relationships a recursive
// /relations query follows: the direct children of the parent are level
// 1. The spec recommends at least 3.
const MaxRelationDepth = 3

// RelationsQuery selects the children of a parent event for /relations.
// Pages are in topological order; tokens name the place just before the
// event at their position, as /messages tokens do.
type RelationsQuery struct {
	Room      roomdag.RoomID
	Parent    roomdag.EventID
	RelType   string // "" for any
	EventType string // "" for any
	// Recurse also returns children of children, up to MaxRelationDepth
	// levels; RelType and EventType then apply at every level.
	Recurse bool
	// NoEdits leaves out the m.replace children of Parent: the parent is
	// redacted and its edits would leak what was redacted.
	NoEdits bool
	// Backwards pages newest first from From (exclusive) down to To
	// (inclusive); forwards pages oldest first from From (inclusive) up to
	// To (exclusive). A nil bound is open.
	Backwards bool
	From, To  *TopoPos
	Limit     int
}

// RelatedEvent is one child event found by a RelationsQuery.
type RelatedEvent struct {
	EventID roomdag.EventID
	Place   TopoPos
}

// ThreadRoot is a thread of a room's thread list, with the place of its
// latest event (which orders the list).
type ThreadRoot struct {
	Root   roomdag.EventID
	Latest TopoPos
}

// ThreadSummary is what the m.thread aggregation of a thread root holds
// before its latest event is loaded (spec: "Server-side aggregation of
// m.thread relationships").
type ThreadSummary struct {
	// Count and Latest leave out the viewer's ignored users.
	Count        int
	Latest       roomdag.EventID
	Participated bool // the viewer sent an event in the thread
}

// RelationAggregates are the children of a set of parents that bundled
// aggregations show, keyed by parent. Children in another room than
// their parent are left out.
type RelationAggregates struct {
	Threads map[roomdag.EventID]ThreadSummary
	// Edits holds the m.replace children from the parent's sender, of the
	// parent's type and not state events, newest first (by
	// origin_server_ts, then event ID, as the spec orders edits). The
	// caller checks the rest of the validity rules on the events.
	Edits map[roomdag.EventID][]roomdag.EventID
	// References holds the m.reference children from users the viewer
	// does not ignore, oldest first.
	References map[roomdag.EventID][]roomdag.EventID
}
