package roomdag

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"
)

// TestBuildEventV1: an event of room version 1 built from a template
// keeps the sender's event ID and cites its prev and auth events as the
// template's [id, hashes] pairs, which CiteEvents makes; what the format
// cannot carry is refused.
func TestBuildEventV1(t *testing.T) {
	v, _ := LookupRoomVersion("1")
	key := testKey()
	sender := UserID("@u:test.local")
	sk := ""
	create, err := BuildEvent(v, key, EventTemplate{EventID: "$create:test.local", RoomID: "!r:test.local", Sender: sender,
		Type: TypeCreate, StateKey: &sk, Content: json.RawMessage(`{"creator":"@u:test.local"}`), Depth: 1})
	if err != nil {
		t.Fatal(err)
	}
	if create.ID() != "$create:test.local" {
		t.Errorf("create's ID %s", create.ID())
	}
	refs, err := CiteEvents(v, []*Event{create})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := BuildEvent(v, key, EventTemplate{EventID: "$m1:test.local", RoomID: "!r:test.local", Sender: sender,
		Type: "m.room.message", Content: json.RawMessage(`{"body":"hi"}`), PrevRefs: refs, AuthRefs: refs, Depth: 2})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(msg.PrevEvents(), []EventID{create.ID()}) || !slices.Equal(msg.AuthEvents(), []EventID{create.ID()}) {
		t.Errorf("prev %v auth %v", msg.PrevEvents(), msg.AuthEvents())
	}
	var raw struct {
		Prev [][]json.RawMessage `json:"prev_events"`
	}
	if err := json.Unmarshal(msg.JSON(), &raw); err != nil || len(raw.Prev) != 1 || len(raw.Prev[0]) != 2 {
		t.Errorf("prev_events as sent: %s", msg.JSON())
	}

	for _, tc := range []struct {
		name string
		t    EventTemplate
	}{
		{"no event ID", EventTemplate{Sender: sender, Type: "m.room.message"}},
		{"event ID of another server", EventTemplate{EventID: "$x:elsewhere", Sender: sender, Type: "m.room.message"}},
		{"IDs without hashes", EventTemplate{EventID: "$x:test.local", Sender: sender, Type: "m.room.message", PrevEvents: []EventID{create.ID()}}},
		{"refs not pairs", EventTemplate{EventID: "$x:test.local", Sender: sender, Type: "m.room.message", PrevRefs: json.RawMessage(`["$create:test.local"]`)}},
		{"pair without a hash", EventTemplate{EventID: "$x:test.local", Sender: sender, Type: "m.room.message", PrevRefs: json.RawMessage(`[["$create:test.local",{}]]`)}},
	} {
		if _, err := BuildEvent(v, key, tc.t); !errors.Is(err, ErrEventFormat) {
			t.Errorf("%s: %v, want ErrEventFormat", tc.name, err)
		}
	}
	// From v3, refs are IDs.
	v11, _ := LookupRoomVersion("11")
	ev, err := BuildEvent(v11, key, EventTemplate{RoomID: "!r:test.local", Sender: sender, Type: "m.room.message",
		PrevRefs: json.RawMessage(`["$a"]`), AuthRefs: json.RawMessage(`["$b"]`), Depth: 2})
	if err != nil || !slices.Equal(ev.PrevEvents(), []EventID{"$a"}) || !slices.Equal(ev.AuthEvents(), []EventID{"$b"}) {
		t.Errorf("v11 from refs: %v %v", ev, err)
	}
}
