package sync_test

import (
	"testing"

	"github.com/persistentchat/homeserver/sync"
)

func TestParseToken(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want sync.Token
	}{
		{"s72_4", sync.Token{Events: 72, AccountData: 4}}, // written before receipts and typing
		{"s72_4_9", sync.Token{Events: 72, AccountData: 4, Receipts: 9}},
		{"s72_4_9_3", sync.Token{Events: 72, AccountData: 4, Receipts: 9, Typing: 3}},                     // written before notifications
		{"s72_4_9_3_8", sync.Token{Events: 72, AccountData: 4, Receipts: 9, Typing: 3, Notifications: 8}}, // written before presence
		{"s72_4_9_3_8_6", sync.Token{Events: 72, AccountData: 4, Receipts: 9, Typing: 3, Notifications: 8, Presence: 6}},
		{"s72_4_9_3_8_6_1", sync.Token{Events: 72, AccountData: 4, Receipts: 9, Typing: 3, Notifications: 8, Presence: 6, ToDevice: 1}},
		{"s72_4_9_3_8_6_1_2_7", sync.Token{Events: 72, AccountData: 4, Receipts: 9, Typing: 3, Notifications: 8, Presence: 6, ToDevice: 1, DeviceLists: 2}}, // a later stream
		{"s5", sync.Token{Events: 5}},
	} {
		got, err := sync.ParseToken(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseToken(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	tok := sync.Token{Events: 1, AccountData: 2, Receipts: 3, Typing: 4, Notifications: 5, Presence: 6, ToDevice: 7, DeviceLists: 8}
	if s := tok.String(); s != "s1_2_3_4_5_6_7_8" {
		t.Errorf("String() = %q", s)
	}
	if back, err := sync.ParseToken(tok.String()); err != nil || back != tok {
		t.Errorf("round trip: %+v, %v", back, err)
	}
	for _, bad := range []string{"", "s", "x1_2", "s1__2", "s1_-2", "s1_2_x"} {
		if _, err := sync.ParseToken(bad); err == nil {
			t.Errorf("ParseToken(%q) accepted", bad)
		}
	}
}

// A /messages token names a place by depth and stream position; among
// backfilled history the position is negative.
func TestParseTopoToken(t *testing.T) {
	for _, tok := range []sync.TopoToken{{Depth: 17, Pos: 40}, {Depth: 17, Pos: -5}, {Depth: 0, Pos: 0}} {
		if back, err := sync.ParseTopoToken(tok.String()); err != nil || back != tok {
			t.Errorf("round trip of %+v: %+v, %v", tok, back, err)
		}
	}
	for _, bad := range []string{"", "t", "t1", "t-1_2", "t1_x", "s1_2", "t1_-9223372036854775808"} {
		if _, err := sync.ParseTopoToken(bad); err == nil {
			t.Errorf("ParseTopoToken(%q) accepted", bad)
		}
	}
}
