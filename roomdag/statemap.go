package roomdag

import "encoding/json"

// StateMap is a room's state: one event per (type, state_key). Maps handed
// out by RoomState are shared and must not be modified; use With.
type StateMap map[StateKey]*Event

// Get returns the state event for (type, state_key), or nil.
func (m StateMap) Get(evType, stateKey string) *Event {
	return m[StateKey{Type: evType, StateKey: stateKey}]
}

// With returns a copy of m with ev set. Copying keeps published maps
// immutable; a persistent map would avoid the copy for very large rooms.
func (m StateMap) With(ev *Event) StateMap {
	out := make(StateMap, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	out[ev.Tuple()] = ev
	return out
}

// IDs returns the event ID of every entry.
func (m StateMap) IDs() map[StateKey]EventID {
	out := make(map[StateKey]EventID, len(m))
	for k, v := range m {
		out[k] = v.ID()
	}
	return out
}

// strippedTypes are the state events shown to invitees and knockers
// (spec: "Stripped state"); m.room.create is required since v1.16
// (MSC4311).
var strippedTypes = []string{
	TypeCreate, TypeJoinRules, TypeName, TypeAvatar, TypeCanonicalAlias,
	TypeEncryption, TypeTopic, TypeGuestAccess,
}

// StrippedEvent is a state event reduced to what an invitee may see.
type StrippedEvent struct {
	Type     string          `json:"type"`
	StateKey string          `json:"state_key"`
	Sender   UserID          `json:"sender"`
	Content  json.RawMessage `json:"content"`
}

// StrippedState is the invite_room_state for an invite, or the
// knock_room_state for a knock, as clients see it: the room's stripped
// state plus the membership event of the invite's sender (for a knock,
// the knock itself, which the caller shows whole, so it is left out
// here). In rooms with DomainlessRoomIDs (v12) the m.room.create event is
// the full event, as Synapse sends it: the room ID is its reference hash,
// so the invitee can check which room, and which server's creator, the
// invite is for (MSC4311).
func StrippedState(state StateMap, membership *Event) json.RawMessage {
	return StrippedEvents(strippedEvents(state, membership))
}

// StrippedStatePDUs is the invite_room_state of an invite sent over
// federation: the events StrippedState shows, as full PDUs, so that the
// invitee's server can check them (MSC4311, Matrix v1.16).
func StrippedStatePDUs(state StateMap, membership *Event) json.RawMessage {
	out := []json.RawMessage{}
	for _, ev := range strippedEvents(state, membership) {
		out = append(out, ev.JSON())
	}
	b, _ := json.Marshal(out)
	return b
}

// StrippedEvents renders stripped state events for clients, as
// StrippedState does.
func StrippedEvents(evs []*Event) json.RawMessage {
	out := []json.RawMessage{}
	for _, ev := range evs {
		if ev.IsCreate() && ev.Version().DomainlessRoomIDs {
			out = append(out, ev.JSON())
			continue
		}
		b, _ := json.Marshal(StrippedEvent{Type: ev.Type(), StateKey: *ev.StateKey(), Sender: ev.Sender(), Content: ev.Content()})
		out = append(out, b)
	}
	b, _ := json.Marshal(out)
	return b
}

// strippedEvents are the events of the stripped state of membership.
func strippedEvents(state StateMap, membership *Event) []*Event {
	var out []*Event
	for _, t := range strippedTypes {
		if ev := state.Get(t, ""); ev != nil {
			out = append(out, ev)
		}
	}
	if ev := state.Get(TypeMember, string(membership.Sender())); ev != nil && ev.ID() != membership.ID() {
		out = append(out, ev)
	}
	return out
}
