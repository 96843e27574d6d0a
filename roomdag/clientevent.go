package roomdag

import (
	"encoding/json"
	"sort"
)

// StoredEvent is an event as read back from storage, with what the server
// keeps beside it for clients.
type StoredEvent struct {
	*Event
	Pos StreamPos
	// StateBefore is the snapshot of the room state before the event.
	StateBefore int64
	// Unsigned holds server-kept unsigned fields: replaces_state,
	// prev_content, prev_sender, redacted_because.
	Unsigned  json.RawMessage
	TxnDevice string
	TxnID     string
}

// clientEvent is the client-server API event format ("ClientEvent").
type clientEvent struct {
	Content        json.RawMessage `json:"content"`
	EventID        EventID         `json:"event_id"`
	OriginServerTS int64           `json:"origin_server_ts"`
	RoomID         RoomID          `json:"room_id"`
	Sender         UserID          `json:"sender"`
	StateKey       *string         `json:"state_key,omitempty"`
	Type           string          `json:"type"`
	Redacts        EventID         `json:"redacts,omitempty"`
	Unsigned       map[string]any  `json:"unsigned"`
}

// ClientView says who is looking at an event, for the unsigned fields that
// depend on it.
type ClientView struct {
	NowMS    int64
	UserID   UserID
	DeviceID string
	// Memberships holds the viewer's membership over the history of each
	// room (MSC4115: unsigned.membership); events of rooms without one get
	// none. sync.MembershipTrails computes them.
	Memberships map[RoomID]MembershipTrail
	// Relations holds the bundled aggregations the viewer gets (unsigned
	// "m.relations", spec: "Aggregations of child events"), by event;
	// sync.Bundle computes them. State events never get any.
	Relations map[EventID]json.RawMessage
}

// ClientJSON renders the event for a client: age, the sender device's
// transaction_id (clients match local echoes with it), and the server-kept
// unsigned fields. Redaction events carry a top-level redacts in every
// version, for clients that predate v11.
func (e *StoredEvent) ClientJSON(v ClientView) json.RawMessage {
	u := map[string]any{}
	if len(e.Unsigned) > 0 {
		_ = json.Unmarshal(e.Unsigned, &u)
	}
	u["age"] = max(v.NowMS-e.OriginServerTS(), 0)
	if e.TxnID != "" && e.Sender() == v.UserID && e.TxnDevice == v.DeviceID {
		u["transaction_id"] = e.TxnID
	}
	if t, ok := v.Memberships[e.RoomID()]; ok {
		u["membership"] = t.At(e.Pos)
	}
	if r, ok := v.Relations[e.ID()]; ok && !e.IsState() {
		u["m.relations"] = r
	}
	ce := clientEvent{
		Content: e.Content(), EventID: e.ID(), OriginServerTS: e.OriginServerTS(), RoomID: e.RoomID(),
		Sender: e.Sender(), StateKey: e.StateKey(), Type: e.Type(), Redacts: e.Redacts(), Unsigned: u,
	}
	b, _ := json.Marshal(ce)
	return b
}

// MembershipChange is one of a user's membership events in a room: its
// stream position and the membership it set.
type MembershipChange struct {
	Pos        StreamPos
	Membership string
}

// MembershipTrail is a user's membership events in one room, oldest
// first: enough to tell their membership at any event of the room
// without reading its state. It follows stream order, which is the
// room's order for the events this server appends (backfilled history,
// when federation brings it, would need the topological order instead).
type MembershipTrail []MembershipChange

// At is the user's membership at the event at pos, including any change
// the event itself makes (spec: unsigned.membership, "the membership
// property of the requesting user's m.room.member state at the point of
// the event, including any changes caused by the event"): the newest
// change at or before pos, and "leave" before the first.
func (t MembershipTrail) At(pos StreamPos) string {
	i := sort.Search(len(t), func(i int) bool { return t[i].Pos > pos })
	if i == 0 {
		return MembershipLeave
	}
	return t[i-1].Membership
}
