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
// knock_room_state for a knock: the room's stripped state plus the
// membership event of the invite's sender (for a knock, the knock itself,
// which the caller shows whole, so it is left out here). In rooms with
// DomainlessRoomIDs (v12) the m.room.create event is the full event, as
// Synapse sends it: the room ID is its reference hash, so the invitee can
// check which room, and which server's creator, the invite is for (MSC4311).
func StrippedState(state StateMap, membership *Event) json.RawMessage {
	out := []json.RawMessage{}
	add := func(ev StrippedEvent) {
		b, _ := json.Marshal(ev)
		out = append(out, b)
	}
	for _, t := range strippedTypes {
		ev := state.Get(t, "")
		switch {
		case ev == nil:
		case ev.IsCreate() && ev.Version().DomainlessRoomIDs:
			out = append(out, ev.JSON())
		default:
			add(StrippedEvent{Type: t, Sender: ev.Sender(), Content: ev.Content()})
		}
	}
	if ev := state.Get(TypeMember, string(membership.Sender())); ev != nil && ev.ID() != membership.ID() {
		add(StrippedEvent{Type: TypeMember, StateKey: string(membership.Sender()), Sender: ev.Sender(), Content: ev.Content()})
	}
	b, _ := json.Marshal(out)
	return b
}
