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
