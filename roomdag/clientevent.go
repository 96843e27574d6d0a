package roomdag

import (
	"encoding/json"
	"sort"

	"github.com/tidwall/gjson"
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
	// Erased holds the users who asked for their events to be erased
	// (POST /account/deactivate with erase: true). It is shared and must
	// not be modified; nil when nobody has. See ClientJSON.
	Erased map[UserID]bool
}

// ClientJSON renders the event for a client: age, the sender device's
// transaction_id (clients match local echoes with it), and the server-kept
// unsigned fields. Redaction events carry a top-level redacts in every
// version, for clients that predate v11.
//
// An event whose sender is erased is served redacted to a viewer who was
// not joined to the room at the event (spec: POST /account/deactivate,
// "erase": users who join after the request see redacted copies). That
// is Synapse's rule (visibility.py, filter_events_for_client): the
// original is kept for those who saw it when it was sent, whenever they
// read it again. The copy is the room version's redaction of the event,
// with only replaces_state of the server-kept unsigned fields and no
// bundled edit, as Synapse's pruned copy has. It needs the viewer's
// membership trail in the room; events rendered without one (state
// sections, bundled events, application services) are served whole, as
// Synapse serves them.
func (e *StoredEvent) ClientJSON(v ClientView) json.RawMessage {
	if v.Erased[e.Sender()] {
		if t, ok := v.Memberships[e.RoomID()]; ok && !t.joinedAt(e, v.UserID) {
			if b, ok := e.erasedJSON(v); ok {
				return b
			}
		}
	}
	u := map[string]any{}
	if len(e.Unsigned) > 0 {
		_ = json.Unmarshal(e.Unsigned, &u)
	}
	return e.render(e.Event, u, v, v.Relations[e.ID()])
}

// erasedJSON renders the redacted copy of an event of an erased sender;
// false if the stored event cannot be redacted (it always can: it was
// checked when stored).
func (e *StoredEvent) erasedJSON(v ClientView) (json.RawMessage, bool) {
	red, err := Redact(e.Version(), e.JSON())
	if err != nil {
		return nil, false
	}
	rev, err := EventFromTrustedJSON(e.Version(), e.ID(), red)
	if err != nil {
		return nil, false
	}
	u := map[string]any{}
	if r := gjson.GetBytes(e.Unsigned, "replaces_state"); r.Exists() {
		u["replaces_state"] = r.Value()
	}
	rel := v.Relations[e.ID()]
	if len(rel) > 0 && gjson.GetBytes(rel, gjsonEscape(RelReplace)).Exists() {
		// A redacted event gets no edit (spec: "If the original event is
		// redacted, any m.replace relationship should not be bundled with
		// it"); threads and references stay, as in Synapse.
		var m map[string]json.RawMessage
		if json.Unmarshal(rel, &m) == nil {
			delete(m, RelReplace)
			rel = nil
			if len(m) > 0 {
				rel, _ = json.Marshal(m)
			}
		}
	}
	return e.render(rev, u, v, rel), true
}

// render writes ev (the event or its redacted copy) with the unsigned
// fields u, adding those that depend on the viewer.
func (e *StoredEvent) render(ev *Event, u map[string]any, v ClientView, rel json.RawMessage) json.RawMessage {
	u["age"] = max(v.NowMS-e.OriginServerTS(), 0)
	if e.TxnID != "" && e.Sender() == v.UserID && e.TxnDevice == v.DeviceID {
		u["transaction_id"] = e.TxnID
	}
	if t, ok := v.Memberships[e.RoomID()]; ok {
		u["membership"] = t.At(e.Pos)
	}
	if len(rel) > 0 && !e.IsState() {
		u["m.relations"] = rel
	}
	ce := clientEvent{
		Content: ev.Content(), EventID: e.ID(), OriginServerTS: ev.OriginServerTS(), RoomID: e.RoomID(),
		Sender: ev.Sender(), StateKey: ev.StateKey(), Type: ev.Type(), Redacts: ev.Redacts(), Unsigned: u,
	}
	b, _ := json.Marshal(ce)
	return b
}

// joinedAt reports whether user, whose membership trail in the room is
// t, was joined at ev, as Synapse's _check_membership tells it for
// erased senders: their membership after ev, except that for their own
// membership event the more joined of the old and new membership counts,
// and a leave that ends a join or an invite counts as not joined.
func (t MembershipTrail) joinedAt(ev *StoredEvent, user UserID) bool {
	if ev.Type() != TypeMember || !ev.StateKeyIs(string(user)) {
		return t.At(ev.Pos) == MembershipJoin
	}
	next := ev.Membership()
	// The old membership as the event's prev_content has it, as Synapse
	// reads it: a trail known only from its newest change has no older one.
	prev := gjson.GetBytes(ev.Unsigned, "prev_content.membership").String()
	if next == MembershipLeave && (prev == MembershipJoin || prev == MembershipInvite) {
		return false
	}
	return next == MembershipJoin || prev == MembershipJoin && rank(membershipOrder, next) < len(membershipOrder)
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
