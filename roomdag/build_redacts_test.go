package roomdag

import (
	"context"
	"encoding/json"
	"testing"
)

// A local redaction names its target at the top level in every room
// version, and from v11 in content too: v11 moved redacts into content,
// and Dendrite (gomatrixserverlib) reads only the top-level key, so a
// redaction without it never took effect there; Synapse sends both.
func TestLocalRedactionCarriesTopLevelRedacts(t *testing.T) {
	for _, ver := range []string{"10", "11", "12"} {
		t.Run("v"+ver, func(t *testing.T) {
			rooms, _ := newTestRooms(t)
			ctx := context.Background()
			owner := UserID("@owner:test.local")
			v, _ := LookupRoomVersion(ver)
			id, err := rooms.CreateRoom(ctx, v, "!r:test.local", ProtoEvent{Type: TypeCreate, StateKey: strp(""), Sender: owner,
				Content: json.RawMessage(`{"room_version":"` + ver + `","creator":"` + string(owner) + `"}`)},
				[]ProtoEvent{{Type: TypeMember, StateKey: strp(string(owner)), Sender: owner, Content: json.RawMessage(`{"membership":"join"}`)}})
			if err != nil {
				t.Fatal(err)
			}
			msg, _, err := rooms.Append(ctx, id, ProtoEvent{Type: TypeMessage, Sender: owner, Content: json.RawMessage(`{"body":"x"}`)})
			if err != nil {
				t.Fatal(err)
			}
			red, _, err := rooms.Append(ctx, id, ProtoEvent{Type: TypeRedaction, Sender: owner, Redacts: msg.ID(), Content: json.RawMessage(`{}`)})
			if err != nil {
				t.Fatal(err)
			}
			var wire struct {
				Redacts EventID `json:"redacts"`
				Content struct {
					Redacts EventID `json:"redacts"`
				} `json:"content"`
			}
			if err := json.Unmarshal(red.JSON(), &wire); err != nil {
				t.Fatal(err)
			}
			if wire.Redacts != msg.ID() {
				t.Errorf("top-level redacts %q, want %s: %s", wire.Redacts, msg.ID(), red.JSON())
			}
			want := EventID("")
			if v.UpdatedRedaction {
				want = msg.ID()
			}
			if wire.Content.Redacts != want {
				t.Errorf("content.redacts %q, want %q", wire.Content.Redacts, want)
			}
			if red.Redacts() != msg.ID() {
				t.Errorf("Redacts() = %s", red.Redacts())
			}
			// What others receive parses to the same target.
			back, err := NewEventFromJSON(v, red.JSON())
			if err != nil || back.Redacts() != msg.ID() {
				t.Errorf("received back: %v, redacts %s", err, back.Redacts())
			}
		})
	}
}
