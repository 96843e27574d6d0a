package roomdag

import (
	"github.com/tidwall/gjson"
)

// Relationship types (spec: client-server API, "Relationship types").
// Replies use m.in_reply_to without a rel_type and are not relationships
// in this sense.
const (
	RelThread     = "m.thread"
	RelReplace    = "m.replace"
	RelAnnotation = "m.annotation"
	RelReference  = "m.reference"
)

// Relation is an event's relationship to its parent, from the cleartext
// content."m.relates_to" (spec: "Forming relationships between events").
type Relation struct {
	RelType string
	Parent  EventID
	// Key is the annotation key of an m.annotation ("" otherwise or when
	// absent).
	Key string
}

// Relation returns the event's relationship when its m.relates_to has a
// string rel_type and a well-formed event_id. Anything else is "simply
// ignored" (spec), so the event has no relationship.
//
// storage/sqlite's migration that indexes already-stored events applies
// the same rule in SQL; keep the two in step.
func (e *Event) Relation() (Relation, bool) { return ParseRelation(e.content) }

// ParseRelation reads the relationship of an event's content, by the rule
// of Event.Relation: for checks before the event is built.
func ParseRelation(content []byte) (Relation, bool) {
	rt := gjson.GetBytes(content, `m\.relates_to`)
	if !rt.IsObject() {
		return Relation{}, false
	}
	typ, parent := rt.Get("rel_type"), rt.Get("event_id")
	if typ.Type != gjson.String || typ.Str == "" || parent.Type != gjson.String {
		return Relation{}, false
	}
	id, err := ParseEventID(parent.Str)
	if err != nil {
		return Relation{}, false
	}
	rel := Relation{RelType: typ.Str, Parent: id}
	if k := rt.Get("key"); typ.Str == RelAnnotation && k.Type == gjson.String {
		rel.Key = k.Str
	}
	return rel, true
}

// ValidReplacement reports whether edit validly replaces orig (spec:
// "Validity of replacement events"): an m.replace of orig in the same
// room, from the same sender, of the same type, neither of them a state
// event, orig not itself an edit, and edit carrying m.new_content (which an
// encrypted edit carries inside its ciphertext, out of the server's sight).
func ValidReplacement(orig, edit *Event) bool {
	rel, ok := edit.Relation()
	if !ok || rel.RelType != RelReplace || rel.Parent != orig.ID() {
		return false
	}
	if orig.RoomID() != edit.RoomID() || orig.Sender() != edit.Sender() || orig.Type() != edit.Type() ||
		orig.IsState() || edit.IsState() {
		return false
	}
	if r, ok := orig.Relation(); ok && r.RelType == RelReplace {
		return false
	}
	return edit.Type() == TypeEncrypted || gjson.GetBytes(edit.Content(), `m\.new_content`).IsObject()
}
