package roomdag

import (
	"bytes"
	"encoding/base64"
	"errors"
	"slices"
	"strings"
	"testing"
)

// FuzzNewEventFromJSON: parsing never panics, and an accepted event has a
// canonical form that parses again to the same ID.
func FuzzNewEventFromJSON(f *testing.F) {
	f.Add([]byte(`{"type":"m.room.message","sender":"@a:x","room_id":"!r:x","content":{"body":"hi"},"prev_events":[],"auth_events":[],"depth":3,"origin_server_ts":1}`))
	f.Add([]byte(`{"type":"m.room.create","state_key":"","sender":"@a:x","content":{"room_version":"12"},"prev_events":[],"auth_events":[],"depth":1,"origin_server_ts":1,"unsigned":{"age":5}}`))
	f.Add([]byte(`{"type":"m.room.redaction","sender":"@a:x","room_id":"!r:x","content":{"redacts":"$e"},"prev_events":["$p"],"auth_events":["$a"],"depth":9,"origin_server_ts":1}`))
	f.Add([]byte(`{"type":1}`))
	f.Add([]byte(`{"type":"m.room.message","event_id":"$e:x","sender":"@a:x","room_id":"!r:x","content":{"n":1.5},"prev_events":[["$p:x",{"sha256":"h"}]],"auth_events":[],"depth":3,"origin_server_ts":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, v := range RoomVersions() {
			id := v.ID
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
			if err != nil || trusted.Type() != ev.Type() || trusted.RoomID() != ev.RoomID() || trusted.Redacts() != ev.Redacts() ||
				!slices.Equal(trusted.PrevEvents(), ev.PrevEvents()) || !slices.Equal(trusted.AuthEvents(), ev.AuthEvents()) {
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

// Each event format parses its own wire shape and refuses the others'.
func TestNewEventFromJSONFormats(t *testing.T) {
	const tail = `"type":"m.room.message","sender":"@a:x.org","room_id":"!r:x.org","content":{"body":"hi"},"depth":3,"origin_server_ts":1`
	pairs := `"prev_events":[["$p:x.org",{"sha256":"aGFzaA"}]],"auth_events":[["$c:x.org",{"sha256":"aGFzaA"}],["$m:x.org",{}]]`
	plain := `"prev_events":["$p"],"auth_events":["$c","$m"]`
	for _, tc := range []struct {
		versions []string
		json     string
		wantID   string // "" for invalid; "hash" for the reference hash form
	}{
		{[]string{"1", "2"}, `{"event_id":"$e1:x.org",` + pairs + `,` + tail + `}`, "$e1:x.org"},
		{[]string{"1", "2"}, `{"event_id":"$e1:x.org",` + pairs + `,` + tail + `,"unsigned":{"age":1}}`, "$e1:x.org"},
		{[]string{"1", "2"}, `{` + pairs + `,` + tail + `}`, ""},                             // no event_id
		{[]string{"1", "2"}, `{"event_id":"$e1",` + pairs + `,` + tail + `}`, ""},            // no server
		{[]string{"1", "2"}, `{"event_id":"$e1:bad server",` + pairs + `,` + tail + `}`, ""}, // bad server
		{[]string{"1", "2"}, `{"event_id":7,` + pairs + `,` + tail + `}`, ""},                // not a string
		{[]string{"1", "2"}, `{"event_id":"$e1:x.org",` + plain + `,` + tail + `}`, ""},      // v3 references
		{[]string{"1", "2"}, `{"event_id":"$e1:x.org","prev_events":[["$p:x.org"]],"auth_events":[],` + tail + `}`, ""},
		{[]string{"1", "2"}, `{"event_id":"$e1:x.org","prev_events":[["$p:x.org","h"]],"auth_events":[],` + tail + `}`, ""},
		{[]string{"3", "4", "11"}, `{` + plain + `,` + tail + `}`, "hash"},
		{[]string{"3", "4", "11"}, `{` + pairs + `,` + tail + `}`, ""},
	} {
		for _, id := range tc.versions {
			v := lookupVersionT(t, id)
			ev, err := NewEventFromJSON(v, []byte(tc.json))
			if tc.wantID == "" {
				if !errors.Is(err, ErrEventFormat) {
					t.Errorf("v%s accepted %s: %v", id, tc.json, err)
				}
				continue
			}
			if err != nil {
				t.Errorf("v%s: %v: %s", id, err, tc.json)
				continue
			}
			want := EventID(tc.wantID)
			if tc.wantID == "hash" {
				h, _ := ReferenceHash(v, []byte(tc.json))
				enc := base64.RawURLEncoding
				if id == "3" {
					enc = base64.RawStdEncoding
				}
				want = EventID("$" + enc.EncodeToString(h[:]))
			}
			if ev.ID() != want {
				t.Errorf("v%s: ID %s, want %s", id, ev.ID(), want)
			}
			if v.EventFormat == EventFormatV1 {
				if !slices.Equal(ev.PrevEvents(), []EventID{"$p:x.org"}) || !slices.Equal(ev.AuthEvents(), []EventID{"$c:x.org", "$m:x.org"}) {
					t.Errorf("v%s: prev %v auth %v", id, ev.PrevEvents(), ev.AuthEvents())
				}
				if strings.Contains(string(ev.JSON()), "unsigned") {
					t.Errorf("v%s kept unsigned", id)
				}
			}
		}
	}
	// v3 and v4 IDs are the same hash in two alphabets.
	ev3 := mustEvent(t, lookupVersionT(t, "3"), "%s", `{`+plain+`,`+tail+`}`)
	ev4 := mustEvent(t, lookupVersionT(t, "4"), "%s", `{`+plain+`,`+tail+`}`)
	b3, err3 := base64.RawStdEncoding.DecodeString(string(ev3.ID()[1:]))
	b4, err4 := base64.RawURLEncoding.DecodeString(string(ev4.ID()[1:]))
	if err3 != nil || err4 != nil || !bytes.Equal(b3, b4) {
		t.Errorf("v3 %s and v4 %s are not one hash: %v %v", ev3.ID(), ev4.ID(), err3, err4)
	}
	// Depth: canonical JSON bounds it from v6 only.
	big := `{` + plain + `,"type":"m.room.message","sender":"@a:x.org","room_id":"!r:x.org","content":{},"depth":9007199254740993,"origin_server_ts":1}`
	if _, err := NewEventFromJSON(lookupVersionT(t, "5"), []byte(big)); err != nil {
		t.Errorf("v5 refused a large depth: %v", err)
	}
	if _, err := NewEventFromJSON(lookupVersionT(t, "6"), []byte(big)); !errors.Is(err, ErrEventFormat) {
		t.Errorf("v6 accepted depth beyond 2^53: %v", err)
	}
}
