package roomdag

import "encoding/json"

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
	// Membership of the viewer at the event (MSC4115), "" to omit.
	Membership string
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
	if v.Membership != "" {
		u["membership"] = v.Membership
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
