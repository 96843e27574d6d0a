package sync

import (
	"encoding/json"
	"testing"

	"github.com/persistentchat/homeserver/roomdag"
)

func TestMatchType(t *testing.T) {
	for _, tc := range []struct {
		pattern, typ string
		want         bool
	}{
		{"m.room.message", "m.room.message", true},
		{"m.room.message", "m.room.messages", false},
		{"m.*", "m.room.message", true},
		{"m.*", "org.m.x", false},
		{"*", "anything", true},
		{"m.room.*.x", "m.room.a.x", true},
		{"m.room.*.x", "m.room.a.y", false},
		{"*.message", "m.room.message", true},
		{"a*b*c", "abc", true},
		{"a*b*c", "acb", false},
	} {
		if got := matchType(tc.pattern, tc.typ); got != tc.want {
			t.Errorf("matchType(%q, %q) = %v, want %v", tc.pattern, tc.typ, got, tc.want)
		}
	}
}

func TestParseFilter(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{`{}`, true},
		{`{"room":{"timeline":{"limit":10,"types":["m.*"],"not_senders":["@a:x"]},"include_leave":true}}`, true},
		{`{"event_format":"federation"}`, true},
		{`{"event_format":"xml"}`, false},
		{`{"room":{"timeline":{"limit":-1}}}`, false},
		{`{"room":{"timeline":{"limit":"10"}}}`, false},
		{`{"room":{"not_rooms":["not a room"]}}`, false},
		{`{"room":{"rooms":["!ok:x"],"not_rooms":["!ok2:x"],"timeline":{"rooms":["!ok:x"],"senders":["@a:x"]}}}`, true},
		// Every rooms, not_rooms, senders and not_senders list is checked.
		{`{"room":{"rooms":["#alias:x"]}}`, false},
		{`{"room":{"timeline":{"not_rooms":["x"]}}}`, false},
		{`{"room":{"state":{"rooms":["!ok:x","nope"]}}}`, false},
		{`{"room":{"ephemeral":{"not_rooms":["@a:x"]}}}`, false},
		{`{"room":{"account_data":{"rooms":[""]}}}`, false},
		{`{"room":{"timeline":{"senders":["alice"]}}}`, false},
		{`{"room":{"state":{"not_senders":["!room:x"]}}}`, false},
		{`{"room":{"ephemeral":{"senders":["@:x"]}}}`, false},
		{`{"room":{"account_data":{"not_senders":["@a"]}}}`, false},
		{`{"presence":{"senders":["a:x"]}}`, false},
		{`{"presence":{"not_senders":["@a:x"]},"account_data":{"senders":["@b:x"]}}`, true},
		{`{"account_data":{"not_senders":["b"]}}`, false},
		{`[]`, false},
		{`nope`, false},
	} {
		_, err := ParseFilter([]byte(tc.in))
		if (err == nil) != tc.ok {
			t.Errorf("ParseFilter(%s) error = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}

func TestEventFilterAllows(t *testing.T) {
	types := []string{"m.room.*"}
	senders := []string{"@a:x"}
	f := EventFilter{Types: &types, NotTypes: []string{"m.room.member"}, Senders: &senders}
	for _, tc := range []struct {
		typ    string
		sender roomdag.UserID
		want   bool
	}{
		{"m.room.message", "@a:x", true},
		{"m.room.member", "@a:x", false},
		{"m.room.message", "@b:x", false},
		{"org.custom", "@a:x", false},
	} {
		if got := f.Allows(tc.typ, tc.sender); got != tc.want {
			t.Errorf("Allows(%s, %s) = %v, want %v", tc.typ, tc.sender, got, tc.want)
		}
	}
	empty := []string{}
	none := EventFilter{Types: &empty}
	if none.Allows("m.room.message", "@a:x") {
		t.Errorf("an empty types list must match nothing")
	}
}

// FuzzParseFilter: never panics, and what it accepts re-encodes to a filter
// it accepts again.
func FuzzParseFilter(f *testing.F) {
	f.Add([]byte(`{"room":{"timeline":{"limit":5,"types":["m.*"]},"state":{"lazy_load_members":true}}}`))
	f.Add([]byte(`{"account_data":{"not_types":["*"]},"event_fields":["content.body"]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		flt, err := ParseFilter(data)
		if err != nil {
			return
		}
		b, err := json.Marshal(flt)
		if err != nil {
			t.Fatalf("marshal accepted filter: %v", err)
		}
		if _, err := ParseFilter(b); err != nil {
			t.Fatalf("re-parse of accepted filter %s: %v", b, err)
		}
		flt.Room.Timeline.Allows("m.room.message", "@a:x")
	})
}
