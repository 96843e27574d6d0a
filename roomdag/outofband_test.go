package roomdag

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"slices"
	"testing"
)

// TestBuildThenAppendBuilt: an event Build made is stored by AppendBuilt
// as Append would have stored it, with the signature another server
// added; once the room moved on it is refused with ErrRoomChanged and
// nothing is stored.
func TestBuildThenAppendBuilt(t *testing.T) {
	rooms, store := newTestRooms(t)
	ctx := context.Background()
	owner := UserID("@owner:test.local")
	v, _ := LookupRoomVersion("11")
	id, err := rooms.CreateRoom(ctx, v, "!r:test.local", ProtoEvent{Type: TypeCreate, StateKey: strp(""), Sender: owner, Content: json.RawMessage(`{"room_version":"11"}`)},
		[]ProtoEvent{{Type: TypeMember, StateKey: strp(string(owner)), Sender: owner, Content: json.RawMessage(`{"membership":"join"}`)}})
	if err != nil {
		t.Fatal(err)
	}
	remote, err := GenerateSigningKey("other.test", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	invitee := "@guest:other.test"
	invite := ProtoEvent{Type: TypeMember, StateKey: &invitee, Sender: owner, Content: json.RawMessage(`{"membership":"invite"}`)}
	ev, err := rooms.Build(ctx, id, invite)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(store.events); n != 2 {
		t.Fatalf("Build stored something: %d events", n)
	}
	theirs, err := SignEvent(v, remote, ev.JSON())
	if err != nil {
		t.Fatal(err)
	}
	signed, err := WithSignatures(ev, "other.test", theirs)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyEventSignature(v, "other.test", remote.KeyID, remote.Public(), signed.JSON()); err != nil {
		t.Fatalf("the added signature: %v", err)
	}
	if _, err := rooms.AppendBuilt(ctx, signed); err != nil {
		t.Fatal(err)
	}
	st, _ := rooms.State(ctx, id)
	if got := st.State.Get(TypeMember, invitee); got == nil || got.ID() != ev.ID() || !slices.Equal(st.Extremities, []EventID{ev.ID()}) {
		t.Fatalf("after AppendBuilt: member %v, extremities %v", got, st.Extremities)
	}

	// Built, then the room moves on: refused.
	stale, err := rooms.Build(ctx, id, ProtoEvent{Type: TypeMessage, Sender: owner, Content: json.RawMessage(`{"body":"late"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := rooms.Append(ctx, id, ProtoEvent{Type: TypeMessage, Sender: owner, Content: json.RawMessage(`{"body":"first"}`)}); err != nil {
		t.Fatal(err)
	}
	n := len(store.events)
	if _, err := rooms.AppendBuilt(ctx, stale); !errors.Is(err, ErrRoomChanged) || len(store.events) != n {
		t.Fatalf("AppendBuilt on a room that moved on: %v, %d events (was %d)", err, len(store.events), n)
	}
	// Someone else's event is not appended as local.
	foreign, err := BuildEvent(v, remote, EventTemplate{RoomID: id, Sender: "@x:other.test", Type: TypeMessage,
		PrevEvents: st.Extremities, Depth: st.Depth + 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rooms.AppendBuilt(ctx, foreign); !errors.Is(err, ErrEventFormat) {
		t.Fatalf("AppendBuilt of a remote sender's event: %v", err)
	}
}

// TestStoreOutOfBand: an invite from another server to a room this server
// does not hold is stored with a position and leaves the room without
// state; storing it again does nothing; its local rejection cites it and
// is stored the same way; a room with state refuses.
func TestStoreOutOfBand(t *testing.T) {
	rooms, store := newTestRooms(t)
	ctx := context.Background()
	v, _ := LookupRoomVersion("10")
	remote, err := GenerateSigningKey("other.test", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	me := "@me:test.local"
	invite, err := BuildEvent(v, remote, EventTemplate{RoomID: "!far:other.test", Sender: "@host:other.test", Type: TypeMember,
		StateKey: &me, Content: json.RawMessage(`{"membership":"invite"}`), PrevEvents: []EventID{"$p"}, AuthEvents: []EventID{"$a"}, Depth: 7})
	if err != nil {
		t.Fatal(err)
	}
	pos, err := rooms.StoreOutOfBand(ctx, invite, json.RawMessage(`[]`))
	if err != nil || pos == 0 {
		t.Fatalf("StoreOutOfBand: pos %d, %v", pos, err)
	}
	if pos, err := rooms.StoreOutOfBand(ctx, invite, nil); err != nil || pos != 0 {
		t.Fatalf("storing it again: pos %d, %v", pos, err)
	}
	st, err := rooms.State(ctx, invite.RoomID())
	if err != nil || st.Create() != nil || len(st.State) != 0 || len(st.Extremities) != 0 {
		t.Fatalf("the room after an out-of-band invite: %+v, %v", st, err)
	}
	leave, err := rooms.BuildLocalRejection(invite, "no thanks")
	if err != nil {
		t.Fatal(err)
	}
	if leave.Membership() != MembershipLeave || !slices.Equal(leave.PrevEvents(), []EventID{invite.ID()}) ||
		!slices.Equal(leave.AuthEvents(), []EventID{invite.ID()}) || leave.Depth() != 8 || leave.Sender() != UserID(me) {
		t.Fatalf("local rejection: %s", leave.JSON())
	}
	if _, err := rooms.StoreOutOfBand(ctx, leave, nil); err != nil {
		t.Fatal(err)
	}
	if n := len(store.events); n != 2 {
		t.Fatalf("%d events stored, want the invite and its rejection", n)
	}

	// Not a local user's membership.
	other := "@someone:other.test"
	ev, _ := BuildEvent(v, remote, EventTemplate{RoomID: "!far:other.test", Sender: "@host:other.test", Type: TypeMember,
		StateKey: &other, Content: json.RawMessage(`{"membership":"invite"}`), Depth: 7})
	if _, err := rooms.StoreOutOfBand(ctx, ev, nil); !errors.Is(err, ErrEventFormat) {
		t.Fatalf("out-of-band membership of a remote user: %v", err)
	}
	// A room this server is in.
	owner := UserID("@owner:test.local")
	id, err := rooms.CreateRoom(ctx, v, "!here:test.local", ProtoEvent{Type: TypeCreate, StateKey: strp(""), Sender: owner, Content: json.RawMessage(`{"room_version":"10","creator":"@owner:test.local"}`)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ev, _ = BuildEvent(v, remote, EventTemplate{RoomID: id, Sender: "@host:other.test", Type: TypeMember,
		StateKey: &me, Content: json.RawMessage(`{"membership":"invite"}`), Depth: 2})
	if _, err := rooms.StoreOutOfBand(ctx, ev, nil); !errors.Is(err, ErrRoomHere) {
		t.Fatalf("out-of-band membership in a room with state: %v", err)
	}
}
