package storage

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/persistentchat/homeserver/roomdag"
)

func TestChangeWireRoundTrip(t *testing.T) {
	c := Change{FirstEvent: 4, LastEvent: 9,
		AccountData:   []UserPos{{"@a:hs", 3}},
		Receipts:      []ReceiptChange{{Room: "!r:hs", User: "@a:hs", Private: true, Pos: 7}},
		Presence:      []UserPos{{"@b:hs", 2}},
		Notifications: &NotificationsChange{Pos: 9, Users: []roomdag.UserID{"@b:hs"}},
		SessionsEnded: []roomdag.UserID{"@c:hs"}, Erased: []roomdag.UserID{"@c:hs"},
		Typing:      []TypingRow{{Room: "!r:hs", User: "@a:hs", ExpiresMS: 1700000000000, Pos: 4}, {Room: "!r:hs", User: "@b:hs", Pos: 5}},
		ToDevice:    []UserPos{{"@a:hs", 6}, {"@b:hs", 8}},
		DeviceLists: []UserPos{{User: "@a:hs", Pos: 9}}}
	a, err := DecodeChange(EncodeChange("p1", &c))
	if err != nil {
		t.Fatal(err)
	}
	if a.Origin != "p1" || a.Reload || !reflect.DeepEqual(a.Change, c) {
		t.Fatalf("decoded %+v, want %+v", a, c)
	}
}

// A change too long for NOTIFY degrades to "reload", keeping its range.
func TestChangeWireOverflow(t *testing.T) {
	var c Change
	c.NoteEvent(10)
	c.NoteEvent(12)
	for i := range 1000 {
		c.AccountData = append(c.AccountData, UserPos{roomdag.UserID(fmt.Sprintf("@user%d:hs", i)), int64(i)})
	}
	p := EncodeChange("p1", &c)
	if len(p) > MaxChangePayload {
		t.Fatalf("payload of %d bytes", len(p))
	}
	a, err := DecodeChange(p)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Reload || a.Change.FirstEvent != 10 || a.Change.LastEvent != 12 || len(a.Change.AccountData) != 0 {
		t.Fatalf("decoded %+v", a)
	}
}

func TestActivityWireRoundTrip(t *testing.T) {
	acts := []PresenceActivity{{User: "@a:hs", Connected: true}, {User: "@b:hs"}}
	a, err := DecodeChange(EncodeActivity("p2", acts))
	if err != nil {
		t.Fatal(err)
	}
	if a.Origin != "p2" || !reflect.DeepEqual(a.Activity, acts) || !a.Change.Empty() {
		t.Fatalf("decoded %+v, want %+v", a, acts)
	}
}
