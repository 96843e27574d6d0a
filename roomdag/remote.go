package roomdag

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
)

// EventTemplate is the fields of a PDU another server (or a test playing
// one) fills in itself. Only event formats from room v3 on (event IDs
// from hashes) are built this way.
type EventTemplate struct {
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
	if v.EventFormat == EventFormatV1 {
		return nil, fmt.Errorf("roomdag: BuildEvent does not build events of room version %s", v.ID)
	}
	prev, auth := t.PrevEvents, t.AuthEvents
	if prev == nil {
		prev = []EventID{}
	}
	if auth == nil {
		auth = []EventID{}
	}
	content := t.Content
	if len(content) == 0 {
		content = json.RawMessage("{}")
	}
	e := pdu{
		AuthEvents: auth, PrevEvents: prev, Content: content, Depth: t.Depth, OriginServerTS: t.OriginServerTS,
		RoomID: t.RoomID, Sender: t.Sender, StateKey: t.StateKey, Type: t.Type,
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
