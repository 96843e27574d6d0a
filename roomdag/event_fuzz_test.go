package roomdag

import (
	"bytes"
	"testing"
)

// FuzzNewEventFromJSON: parsing never panics, and an accepted event has a
// canonical form that parses again to the same ID.
func FuzzNewEventFromJSON(f *testing.F) {
	f.Add([]byte(`{"type":"m.room.message","sender":"@a:x","room_id":"!r:x","content":{"body":"hi"},"prev_events":[],"auth_events":[],"depth":3,"origin_server_ts":1}`))
	f.Add([]byte(`{"type":"m.room.create","state_key":"","sender":"@a:x","content":{"room_version":"12"},"prev_events":[],"auth_events":[],"depth":1,"origin_server_ts":1,"unsigned":{"age":5}}`))
	f.Add([]byte(`{"type":"m.room.redaction","sender":"@a:x","room_id":"!r:x","content":{"redacts":"$e"},"prev_events":["$p"],"auth_events":["$a"],"depth":9,"origin_server_ts":1}`))
	f.Add([]byte(`{"type":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, id := range []string{"10", "11", "12"} {
			v, _ := LookupRoomVersion(id)
			ev, err := NewEventFromJSON(v, data)
			if err != nil {
				continue
			}
			again, err := NewEventFromJSON(v, ev.JSON())
			if err != nil {
				t.Fatalf("v%s: re-parsing accepted event: %v", id, err)
			}
			if again.ID() != ev.ID() || !bytes.Equal(again.JSON(), ev.JSON()) {
				t.Fatalf("v%s: event not stable across a round trip", id)
			}
			trusted, err := EventFromTrustedJSON(v, ev.ID(), ev.JSON())
			if err != nil || trusted.Type() != ev.Type() || trusted.RoomID() != ev.RoomID() || trusted.Redacts() != ev.Redacts() {
				t.Fatalf("v%s: trusted parse differs: %v", id, err)
			}
		}
	})
}

func TestMembershipReadsExactKey(t *testing.T) {
	v, _ := LookupRoomVersion("11")
	for _, tc := range []struct {
		content, want string
	}{
		{`{"membership":"join"}`, "join"},
		{`{"Membership":"join"}`, ""},
		{`{"membership":5}`, ""},
		{`{"membership.x":"join"}`, ""},
	} {
		ev, err := NewEventFromJSON(v, []byte(`{"type":"m.room.member","state_key":"@a:x","sender":"@a:x","room_id":"!r:x","content":`+
			tc.content+`,"prev_events":[],"auth_events":[],"depth":2,"origin_server_ts":1}`))
		if err != nil {
			t.Fatal(err)
		}
		if got := ev.Membership(); got != tc.want {
			t.Errorf("Membership of %s = %q, want %q", tc.content, got, tc.want)
		}
	}
}
