package roomdag

import (
	"encoding/json"
	"fmt"
)

// pdu is the wire shape of a local event before hashing and signing.
// Field order does not matter: the result is made canonical.
type pdu struct {
	AuthEvents     []EventID       `json:"auth_events"`
	Content        json.RawMessage `json:"content"`
	Depth          int64           `json:"depth"`
	OriginServerTS int64           `json:"origin_server_ts"`
	PrevEvents     []EventID       `json:"prev_events"`
	Redacts        EventID         `json:"redacts,omitempty"`
	RoomID         RoomID          `json:"room_id,omitempty"`
	Sender         UserID          `json:"sender"`
	StateKey       *string         `json:"state_key,omitempty"`
	Type           string          `json:"type"`
}

// build makes a signed event of version v from a proto event.
func (rs *Rooms) build(v *RoomVersion, room RoomID, p ProtoEvent, prev []EventID, depth int64, auth []EventID) (*Event, error) {
	if p.Sender.Server() != rs.key.ServerName {
		return nil, fmt.Errorf("%w: sender %s is not local", ErrEventFormat, p.Sender)
	}
	content := p.Content
	if len(content) == 0 {
		content = json.RawMessage("{}")
	}
	ts := p.TS
	if ts == 0 {
		ts = rs.clock.Now().UnixMilli()
	}
	if prev == nil {
		prev = []EventID{}
	}
	if auth == nil {
		auth = []EventID{}
	}
	e := pdu{
		AuthEvents: auth, Content: content, Depth: depth, OriginServerTS: ts,
		PrevEvents: prev, RoomID: room, Sender: p.Sender, StateKey: p.StateKey, Type: p.Type,
	}
	isCreate := p.Type == TypeCreate && p.StateKey != nil && *p.StateKey == ""
	if isCreate && v.DomainlessRoomIDs {
		e.RoomID = ""
	}
	if p.Type == TypeRedaction && p.Redacts != "" {
		if v.UpdatedRedaction {
			// v11 moved redacts into content (MSC2174).
			var c map[string]json.RawMessage
			if err := json.Unmarshal(content, &c); err != nil || c == nil {
				return nil, fmt.Errorf("%w: content must be an object", ErrEventFormat)
			}
			c["redacts"], _ = json.Marshal(p.Redacts)
			e.Content, _ = json.Marshal(c)
		} else {
			e.Redacts = p.Redacts
		}
	}
	raw, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEventFormat, err)
	}
	if raw, err = CanonicalJSON(raw); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEventFormat, err)
	}
	if raw, err = AddContentHash(raw); err != nil {
		return nil, err
	}
	if raw, err = SignEvent(v, rs.key, raw); err != nil {
		return nil, err
	}
	if len(raw) > MaxEventBytes {
		return nil, ErrTooLarge
	}
	return NewEventFromJSON(v, raw)
}
