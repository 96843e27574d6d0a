package storagetest

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"testing"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// testOutOfBand: an invite from another server to a room this server
// does not hold (roomdag.Rooms.StoreOutOfBand) is stored at a stream
// position with its stripped state, and sets the invitee's membership,
// with nothing of the room's state or extremities; its rejection moves
// the membership on; both survive a reload of the room.
func testOutOfBand(t *testing.T, open Opener) {
	db := open(t)
	rooms := NewRooms(t, db)
	ctx := context.Background()
	v, _ := roomdag.LookupRoomVersion("11")
	remote, err := roomdag.GenerateSigningKey("other.test", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	me := roomdag.UserID("@me:test.local")
	room := roomdag.RoomID("!far:other.test")
	invite, err := roomdag.BuildEvent(v, remote, roomdag.EventTemplate{RoomID: room, Sender: "@host:other.test",
		Type: roomdag.TypeMember, StateKey: sk(string(me)), Content: json.RawMessage(`{"membership":"invite"}`),
		PrevEvents: []roomdag.EventID{"$p"}, AuthEvents: []roomdag.EventID{"$a"}, Depth: 4})
	if err != nil {
		t.Fatal(err)
	}
	stripped := json.RawMessage(`[{"type":"m.room.name","state_key":"","sender":"@host:other.test","content":{"name":"Far"}}]`)
	pos, err := rooms.StoreOutOfBand(ctx, invite, stripped)
	if err != nil {
		t.Fatal(err)
	}
	m, err := db.UserMembership(ctx, me, room)
	if err != nil || m.Membership != roomdag.MembershipInvite || m.Pos != pos {
		t.Fatalf("membership after the invite: %+v, %v (invite at %d)", m, err, pos)
	}
	all, err := db.UserRooms(ctx, me)
	if err != nil || len(all) != 1 || all[0].RoomID != room {
		t.Fatalf("UserRooms: %+v, %v", all, err)
	}
	if got, err := db.InviteState(ctx, pos); err != nil || string(got) != string(stripped) {
		t.Fatalf("invite state: %s, %v", got, err)
	}
	evs, _, err := db.RecentEvents(ctx, room, pos-1, pos, 1)
	if err != nil || len(evs) != 1 || evs[0].ID() != invite.ID() {
		t.Fatalf("the invite at its position: %v, %v", evs, err)
	}
	leave, err := rooms.BuildLocalRejection(invite, "")
	if err != nil {
		t.Fatal(err)
	}
	lpos, err := rooms.StoreOutOfBand(ctx, leave, nil)
	if err != nil || lpos <= pos {
		t.Fatalf("the rejection: pos %d, %v", lpos, err)
	}
	if m, err := db.UserMembership(ctx, me, room); err != nil || m.Membership != roomdag.MembershipLeave || m.Pos != lpos {
		t.Fatalf("membership after the rejection: %+v, %v", m, err)
	}
	st, err := db.LoadRoom(ctx, room)
	if err != nil || st.Create() != nil || len(st.State) != 0 || len(st.Extremities) != 0 || st.Version.ID != "11" {
		t.Fatalf("the room as stored: %+v, %v", st, err)
	}
	if _, err := db.UserMembership(ctx, "@nobody:test.local", room); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("membership of a user with none: %v", err)
	}
}
