package roomdag

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
)

// EventTemplate is the fields of a PDU another server (or a test playing
// one) fills in itself.
type EventTemplate struct {
	// EventID is the sender's server's choice of ID in rooms v1 and v2
	// ("$opaque:server"); it is not set (the ID is a hash) from v3.
	EventID EventID
	// PrevRefs and AuthRefs, when set, are prev_events and auth_events
	// as a make_* template carried them: IDs, or in rooms v1 and v2
	// [id, hashes] pairs. They take the place of PrevEvents and
	// AuthEvents, which in v1 and v2 cannot carry the hashes.
	PrevRefs, AuthRefs json.RawMessage

	RoomID         RoomID // empty for a v12 create event
	Sender         UserID
	Type           string
	StateKey       *string
	Content        json.RawMessage
	PrevEvents     []EventID
	AuthEvents     []EventID
	Depth          int64
	OriginServerTS int64
	Redacts        EventID
}

// BuildEvent hashes and signs t with key as an event of room version v:
// what a remote server sends. It checks nothing the auth rules check.
func BuildEvent(v *RoomVersion, key SigningKey, t EventTemplate) (*Event, error) {
	prev, err := templateRefs(v, t.PrevRefs, t.PrevEvents)
	if err != nil {
		return nil, fmt.Errorf("%w: prev_events: %v", ErrEventFormat, err)
	}
	auth, err := templateRefs(v, t.AuthRefs, t.AuthEvents)
	if err != nil {
		return nil, fmt.Errorf("%w: auth_events: %v", ErrEventFormat, err)
	}
	content := t.Content
	if len(content) == 0 {
		content = json.RawMessage("{}")
	}
	e := pdu{
		AuthEvents: auth, PrevEvents: prev, Content: content, Depth: t.Depth, OriginServerTS: t.OriginServerTS,
		RoomID: t.RoomID, Sender: t.Sender, StateKey: t.StateKey, Type: t.Type,
	}
	if v.EventFormat == EventFormatV1 {
		// rooms/v1 "Event IDs": the sender's server names it.
		if _, server, err := splitID(string(t.EventID), '$'); err != nil || server != t.Sender.Server() {
			return nil, fmt.Errorf("%w: event ID %q is not $opaque:%s", ErrEventFormat, t.EventID, t.Sender.Server())
		}
		e.EventID = t.EventID
	}
	if t.Redacts != "" {
		if v.UpdatedRedaction {
			var c map[string]json.RawMessage
			if err := json.Unmarshal(content, &c); err != nil || c == nil {
				return nil, fmt.Errorf("%w: content must be an object", ErrEventFormat)
			}
			c["redacts"], _ = json.Marshal(t.Redacts)
			e.Content, _ = json.Marshal(c)
		} else {
			e.Redacts = t.Redacts
		}
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
	if raw, err = SignEvent(v, key, raw); err != nil {
		return nil, err
	}
	return NewEventFromJSON(v, raw)
}

// templateRefs is the prev_events or auth_events of an event of version
// v built from a template: refs as the template gave them, else ids
// (which in v1 and v2 must then be none: they need the hashes).
func templateRefs(v *RoomVersion, refs json.RawMessage, ids []EventID) (any, error) {
	if len(refs) == 0 {
		if v.EventFormat == EventFormatV1 {
			if len(ids) > 0 {
				return nil, fmt.Errorf("rooms of version %s cite events with their hashes", v.ID)
			}
			return []eventRef{}, nil
		}
		if ids == nil {
			ids = []EventID{}
		}
		return ids, nil
	}
	if v.EventFormat != EventFormatV1 {
		var out []EventID
		if err := json.Unmarshal(refs, &out); err != nil {
			return nil, err
		}
		if out == nil {
			out = []EventID{}
		}
		return out, nil
	}
	var raw [][]json.RawMessage
	if err := json.Unmarshal(refs, &raw); err != nil {
		return nil, err
	}
	out := make([]eventRef, 0, len(raw))
	for _, r := range raw {
		var id EventID
		var hashes map[string]string
		if len(r) != 2 || json.Unmarshal(r[0], &id) != nil || json.Unmarshal(r[1], &hashes) != nil || hashes["sha256"] == "" {
			return nil, fmt.Errorf("%s is not an [event ID, hashes] pair", r)
		}
		out = append(out, eventRef{id, hashes})
	}
	return out, nil
}

// CiteEvents is how an event of version v cites evs among its prev_events
// or auth_events (what a make_* template holds): their IDs, or in rooms
// v1 and v2 [id, {"sha256": reference hash}] pairs.
func CiteEvents(v *RoomVersion, evs []*Event) (json.RawMessage, error) {
	if v.EventFormat != EventFormatV1 {
		ids := make([]EventID, len(evs))
		for i, ev := range evs {
			ids[i] = ev.ID()
		}
		return json.Marshal(ids)
	}
	refs, err := refsV1(evs)
	if err != nil {
		return nil, err
	}
	return json.Marshal(refs)
}

// KeySet is a SignatureVerifier over public keys known in advance: each
// event needs a valid signature of its sender's server with one of that
// server's keys. It is for tests and tools; federation's Keyring fetches
// keys and knows the other servers an event needs signatures of.
type KeySet map[ServerName]map[string]ed25519.PublicKey

// Add records key's public half.
func (ks KeySet) Add(key SigningKey) {
	if ks[key.ServerName] == nil {
		ks[key.ServerName] = map[string]ed25519.PublicKey{}
	}
	ks[key.ServerName][key.KeyID] = key.Public()
}

// VerifyEventSignatures implements SignatureVerifier.
func (ks KeySet) VerifyEventSignatures(_ context.Context, ev *Event, _ int64) error {
	server := ev.Sender().Server()
	for id, pub := range ks[server] {
		if err := VerifyEventSignature(ev.Version(), server, id, pub, ev.JSON()); err == nil {
			return nil
		}
	}
	return fmt.Errorf("%w: event %s has no valid signature of %s", ErrSignature, ev.ID(), server)
}
