package roomdag

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/tidwall/gjson"
)

// Size limits from the spec ("Size limits", server-server API): a whole PDU,
// and the type, state_key, sender and room_id fields.
const (
	MaxEventBytes = 65536
	MaxFieldBytes = 255
)

// Event is one immutable PDU of a room. It keeps the exact JSON that was
// hashed and signed (without "unsigned"), plus the fields the core reads.
// Build one with NewEventFromJSON (received or stored events) or
// ProtoEvent.Build (our own events).
type Event struct {
	raw     []byte
	id      EventID
	version *RoomVersion

	roomID         RoomID
	sender         UserID
	typ            string
	stateKey       *string
	content        json.RawMessage
	prevEvents     []EventID
	authEvents     []EventID
	depth          int64
	originServerTS int64
	redacts        EventID
}

// eventFields is the wire shape of a PDU for room versions 3 and later
// (and, with eventFieldsV1, of v1 and v2).
type eventFields struct {
	RoomID         string          `json:"room_id"`
	Sender         string          `json:"sender"`
	Type           *string         `json:"type"`
	StateKey       *string         `json:"state_key"`
	Content        json.RawMessage `json:"content"`
	PrevEvents     []string        `json:"prev_events"`
	AuthEvents     []string        `json:"auth_events"`
	Depth          int64           `json:"depth"`
	OriginServerTS int64           `json:"origin_server_ts"`
	Redacts        string          `json:"redacts"`
}

// eventFieldsV1 is the wire shape of a PDU in room versions 1 and 2: the
// event carries its event_id, and cites events as [event_id, hashes] pairs
// (pdu_v1 in the server-server API definitions).
type eventFieldsV1 struct {
	eventFields
	PrevEvents []eventRefV1 `json:"prev_events"`
	AuthEvents []eventRefV1 `json:"auth_events"`
}

// eventRefV1 is one [event_id, {"sha256": ...}] pair. Only the ID is kept:
// like Synapse, we do not check the hashes against the events they name.
type eventRefV1 struct{ id string }

func (r *eventRefV1) UnmarshalJSON(b []byte) error {
	var pair []json.RawMessage
	if err := json.Unmarshal(b, &pair); err != nil || len(pair) != 2 {
		return errors.New("event reference is not an [event_id, hashes] pair")
	}
	if err := json.Unmarshal(pair[0], &r.id); err != nil {
		return errors.New("event reference's event_id is not a string")
	}
	if h := bytes.TrimSpace(pair[1]); len(h) == 0 || h[0] != '{' {
		return errors.New("event reference's hashes is not an object")
	}
	return nil
}

// decodeEventFields decodes the fields the core reads from a PDU of
// version v. (The event_id of v1 and v2 is read from the canonical form,
// by eventIDField.)
func decodeEventFields(v *RoomVersion, data []byte) (eventFields, error) {
	if v.EventFormat != EventFormatV1 {
		var f eventFields
		err := json.Unmarshal(data, &f)
		return f, err
	}
	var f1 eventFieldsV1
	if err := json.Unmarshal(data, &f1); err != nil {
		return eventFields{}, err
	}
	f := f1.eventFields
	f.PrevEvents, f.AuthEvents = refIDs(f1.PrevEvents), refIDs(f1.AuthEvents)
	return f, nil
}

func refIDs(refs []eventRefV1) []string {
	if refs == nil {
		return nil
	}
	out := make([]string, len(refs))
	for i, r := range refs {
		out[i] = r.id
	}
	return out
}

// ErrEventFormat wraps every reason an event's JSON is not a valid PDU.
var ErrEventFormat = errors.New("invalid event")

func formatErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrEventFormat, fmt.Sprintf(format, a...))
}

// NewEventFromJSON parses an event of room version v. The "unsigned" key, if
// any, is dropped. From v3 the event ID is computed from the reference hash,
// so it is never taken on trust; in v1 and v2 it is the event's event_id,
// which the signature of its server vouches for (the caller checks
// signatures). It does not check hashes or signatures.
func NewEventFromJSON(v *RoomVersion, data []byte) (*Event, error) {
	if len(data) > MaxEventBytes {
		return nil, formatErr("event is larger than %d bytes", MaxEventBytes)
	}
	f, err := decodeEventFields(v, data)
	if err != nil {
		return nil, formatErr("%v", err)
	}
	if f.Type == nil {
		return nil, formatErr("missing type")
	}
	if len(*f.Type) > MaxFieldBytes || len(f.Sender) > MaxFieldBytes || len(f.RoomID) > MaxFieldBytes ||
		(f.StateKey != nil && len(*f.StateKey) > MaxFieldBytes) {
		return nil, formatErr("type, state_key, sender or room_id longer than %d bytes", MaxFieldBytes)
	}
	if len(f.Content) == 0 || f.Content[0] != '{' {
		return nil, formatErr("content must be an object")
	}
	sender, err := ParseUserID(f.Sender)
	if err != nil {
		return nil, formatErr("bad sender %q", f.Sender)
	}
	e := &Event{
		version: v, sender: sender, typ: *f.Type, stateKey: f.StateKey,
		content: f.Content, depth: f.Depth, originServerTS: f.OriginServerTS,
	}
	if v.DomainlessRoomIDs && e.typ == TypeCreate && e.stateKey != nil && *e.stateKey == "" {
		if f.RoomID != "" {
			return nil, formatErr("a v12 create event has no room_id")
		}
	} else if e.roomID, err = ParseRoomID(f.RoomID); err != nil {
		return nil, formatErr("bad room_id %q", f.RoomID)
	}
	if e.prevEvents, err = parseEventIDs(f.PrevEvents); err != nil {
		return nil, err
	}
	if e.authEvents, err = parseEventIDs(f.AuthEvents); err != nil {
		return nil, err
	}
	// Canonical JSON bounds depth from v6; before, any int64 will do.
	if f.Depth < 0 || f.Depth > maxCanonicalInt && v.StrictCanonicalJSON {
		return nil, formatErr("depth out of range")
	}
	e.redacts = EventID(f.Redacts)
	if e.typ == TypeRedaction && v.UpdatedRedaction {
		// v11 moved redacts into content; the top-level copy is for old clients.
		if r := exactString(e.content, "redacts"); r != "" {
			e.redacts = EventID(r)
		}
	}
	raw, err := stripUnsigned(v, data)
	if err != nil {
		return nil, err
	}
	e.raw = raw
	if v.EventFormat == EventFormatV1 {
		e.id, err = eventIDField(raw)
	} else {
		var h [32]byte
		if h, err = referenceHashCanonical(v, raw); err == nil {
			e.id = hashEventID(v, h)
		}
	}
	if err != nil {
		return nil, err
	}
	if v.DomainlessRoomIDs && e.IsCreate() {
		e.roomID = RoomID("!" + string(e.id[1:]))
	}
	return e, nil
}

// EventFromTrustedJSON rebuilds an event this server already checked and
// stored: raw must be the canonical JSON NewEventFromJSON produced and id
// its ID. It skips re-hashing, which dominates the cost of reading events.
func EventFromTrustedJSON(v *RoomVersion, id EventID, raw []byte) (*Event, error) {
	f, err := decodeEventFields(v, raw)
	if err != nil || f.Type == nil {
		return nil, formatErr("stored event %s is corrupt", id)
	}
	e := &Event{
		raw: raw, id: id, version: v, roomID: RoomID(f.RoomID), sender: UserID(f.Sender), typ: *f.Type,
		stateKey: f.StateKey, content: f.Content, depth: f.Depth, originServerTS: f.OriginServerTS,
		redacts: EventID(f.Redacts),
	}
	for _, p := range f.PrevEvents {
		e.prevEvents = append(e.prevEvents, EventID(p))
	}
	for _, a := range f.AuthEvents {
		e.authEvents = append(e.authEvents, EventID(a))
	}
	if e.typ == TypeRedaction && v.UpdatedRedaction {
		if r := exactString(e.content, "redacts"); r != "" {
			e.redacts = EventID(r)
		}
	}
	if v.DomainlessRoomIDs && e.IsCreate() {
		e.roomID = RoomID("!" + string(id[1:]))
	}
	if len(e.content) == 0 {
		e.content = json.RawMessage("{}")
	}
	return e, nil
}

// maxCanonicalInt is the largest integer canonical JSON allows (2^53 - 1).
const maxCanonicalInt = 1<<53 - 1

func parseEventIDs(ids []string) ([]EventID, error) {
	out := make([]EventID, len(ids))
	for i, s := range ids {
		id, err := ParseEventID(s)
		if err != nil {
			return nil, formatErr("bad event ID %q", s)
		}
		out[i] = id
	}
	return out, nil
}

// stripUnsigned returns the event's canonical JSON (under v's rules)
// without "unsigned". Canonicalising first rejects invalid UTF-8 and, from
// v6, duplicate keys and numbers canonical JSON does not allow.
func stripUnsigned(v *RoomVersion, data []byte) ([]byte, error) {
	c, err := canonicalJSONFor(v, data)
	if err != nil {
		return nil, formatErr("%v", err)
	}
	return cjWithout(c, "unsigned"), nil
}

// referenceHashB64 is the event's reference hash in unpadded standard
// base64, as events of v1 and v2 cite it in prev_events and auth_events.
func (e *Event) referenceHashB64() (string, error) {
	h, err := referenceHashCanonical(e.version, e.raw)
	if err != nil {
		return "", err
	}
	return base64.RawStdEncoding.EncodeToString(h[:]), nil
}

func (e *Event) ID() EventID              { return e.id }
func (e *Event) Version() *RoomVersion    { return e.version }
func (e *Event) RoomID() RoomID           { return e.roomID }
func (e *Event) Sender() UserID           { return e.sender }
func (e *Event) Type() string             { return e.typ }
func (e *Event) Content() json.RawMessage { return e.content }
func (e *Event) PrevEvents() []EventID    { return e.prevEvents }
func (e *Event) AuthEvents() []EventID    { return e.authEvents }
func (e *Event) Depth() int64             { return e.depth }
func (e *Event) OriginServerTS() int64    { return e.originServerTS }
func (e *Event) Redacts() EventID         { return e.redacts }

// JSON is the event as hashed and signed: canonical, without "unsigned".
// Callers must not modify it.
func (e *Event) JSON() []byte { return e.raw }

// StateKey is nil for non-state events.
func (e *Event) StateKey() *string { return e.stateKey }

// IsState reports whether the event has a state key.
func (e *Event) IsState() bool { return e.stateKey != nil }

// StateKeyIs reports whether the event is a state event with that key.
func (e *Event) StateKeyIs(k string) bool { return e.stateKey != nil && *e.stateKey == k }

// IsCreate reports whether this is the room's m.room.create event.
func (e *Event) IsCreate() bool { return e.typ == TypeCreate && e.StateKeyIs("") }

// Tuple is the (type, state_key) pair of a state event.
func (e *Event) Tuple() StateKey {
	if e.stateKey == nil {
		return StateKey{}
	}
	return StateKey{Type: e.typ, StateKey: *e.stateKey}
}

// Membership returns content.membership of an m.room.member event.
func (e *Event) Membership() string {
	if e.typ != TypeMember {
		return ""
	}
	return exactString(e.content, "membership")
}

// exactString reads a top-level string field by its exact key, as the auth
// rules do; encoding/json would also match "Membership".
func exactString(obj []byte, key string) string {
	r := gjson.GetBytes(obj, gjsonEscape(key))
	if r.Type != gjson.String {
		return ""
	}
	return r.Str
}

// gjsonEscape escapes gjson's path syntax in a literal key.
func gjsonEscape(key string) string {
	var b strings.Builder
	for _, c := range key {
		if strings.ContainsRune(`.*?|#@\!=<>%`, c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// StateKey names one piece of room state.
type StateKey struct {
	Type     string
	StateKey string
}

// Event types the core reads. Every other package uses these constants.
const (
	TypeCreate            = "m.room.create"
	TypeMember            = "m.room.member"
	TypePowerLevels       = "m.room.power_levels"
	TypeJoinRules         = "m.room.join_rules"
	TypeHistoryVisibility = "m.room.history_visibility"
	TypeThirdPartyInvite  = "m.room.third_party_invite"
	TypeRedaction         = "m.room.redaction"
	TypeName              = "m.room.name"
	TypeTopic             = "m.room.topic"
	TypeAvatar            = "m.room.avatar"
	TypeCanonicalAlias    = "m.room.canonical_alias"
	TypeGuestAccess       = "m.room.guest_access"
	TypeEncryption        = "m.room.encryption"
	TypeServerACL         = "m.room.server_acl"
	TypeTombstone         = "m.room.tombstone"
	// TypeAliases is the historical m.room.aliases, which the auth rules
	// (v1-v5) and the redaction algorithm (v1-v5) still know.
	TypeAliases   = "m.room.aliases"
	TypeMessage   = "m.room.message"
	TypeEncrypted = "m.room.encrypted" // its m.new_content is inside the ciphertext
	// TypeBackchat is our room state event that sets how many recent events
	// a joining or reconnecting member gets. Content: {"limit": N}.
	TypeBackchat = "org.persistentchat.backchat"
)

// Membership values.
const (
	MembershipJoin   = "join"
	MembershipInvite = "invite"
	MembershipLeave  = "leave"
	MembershipBan    = "ban"
	MembershipKnock  = "knock"
)
