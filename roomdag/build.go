package roomdag

import (
	"encoding/json"
	"fmt"
)

// pdu is the wire shape of a local event before hashing and signing.
// Field order does not matter: the result is made canonical.
type pdu struct {
	// AuthEvents and PrevEvents are []EventID, or for event format v1
	// []eventRef pairs.
	AuthEvents     any             `json:"auth_events"`
	Content        json.RawMessage `json:"content"`
	Depth          int64           `json:"depth"`
	EventID        EventID         `json:"event_id,omitempty"` // v1, v2 only
	OriginServerTS int64           `json:"origin_server_ts"`
	PrevEvents     any             `json:"prev_events"`
	Redacts        EventID         `json:"redacts,omitempty"`
	RoomID         RoomID          `json:"room_id,omitempty"`
	Sender         UserID          `json:"sender"`
	StateKey       *string         `json:"state_key,omitempty"`
	Type           string          `json:"type"`
}

// eventRef is how v1 and v2 events cite another: [event_id, {"sha256":
// reference hash}] (server-server API, pdu_v1).
type eventRef [2]any

// refsV1 cites events in the v1 format, from their reference hashes.
func refsV1(events []*Event) ([]eventRef, error) {
	out := make([]eventRef, len(events))
	for i, ev := range events {
		h, err := ev.referenceHashB64()
		if err != nil {
			return nil, err
		}
		out[i] = eventRef{ev.ID(), map[string]string{"sha256": h}}
	}
	return out, nil
}

// build makes a signed event of version v from a proto event, on top of
// the room state cur (nil for the create event), citing auth.
func (rs *Rooms) build(v *RoomVersion, room RoomID, p ProtoEvent, cur *RoomState, auth []*Event) (*Event, error) {
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
	var prev []EventID
	depth := int64(1)
	if cur != nil {
		// Every forward extremity, so that the DAG merges (up to
		// maxPrevEvents; prepare keeps the rest as extremities).
		prev, depth = cur.Extremities, min(cur.Depth+1, maxCanonicalInt)
		if len(prev) > maxPrevEvents {
			prev = prev[:maxPrevEvents]
		}
	}
	e := pdu{
		Content: content, Depth: depth, OriginServerTS: ts,
		RoomID: room, Sender: p.Sender, StateKey: p.StateKey, Type: p.Type,
	}
	if v.EventFormat == EventFormatV1 {
		// rooms/v1 "Event IDs": $opaque_id:domain, opaque and locally
		// unique; 18 random letters and digits make a clash unlikely.
		local, err := randomAlnum(rs.random, 18)
		if err != nil {
			return nil, fmt.Errorf("event ID: %w", err)
		}
		e.EventID = EventID("$" + local + ":" + string(rs.key.ServerName))
		prevEvents := make([]*Event, len(prev))
		for i, id := range prev {
			for _, ev := range cur.ExtremityEvents {
				if ev.ID() == id {
					prevEvents[i] = ev
				}
			}
			if prevEvents[i] == nil {
				return nil, fmt.Errorf("roomdag: forward extremity %s of a v%s room was not loaded", id, v.ID)
			}
		}
		if e.PrevEvents, err = refsV1(prevEvents); err != nil {
			return nil, err
		}
		if e.AuthEvents, err = refsV1(auth); err != nil {
			return nil, err
		}
	} else {
		if prev == nil {
			prev = []EventID{}
		}
		ids := make([]EventID, len(auth))
		for i, ev := range auth {
			ids[i] = ev.ID()
		}
		e.PrevEvents, e.AuthEvents = prev, ids
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
		}
		// The top-level copy too, in v11+ as Synapse sends it: Dendrite
		// (gomatrixserverlib) reads only the top-level key, in every
		// version, and drops a v11 redaction without it.
		e.Redacts = p.Redacts
	}
	raw, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEventFormat, err)
	}
	if raw, err = canonicalJSONFor(v, raw); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEventFormat, err)
	}
	if raw, err = AddContentHash(v, raw); err != nil {
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
