package sync

import (
	"context"
	"fmt"
	"testing"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// countingTrails is a MembershipStore that counts its lookups.
type countingTrails struct {
	trails map[roomdag.RoomID]roomdag.MembershipTrail
	calls  map[roomdag.RoomID]int
}

func (c *countingTrails) MembershipChanges(_ context.Context, room roomdag.RoomID, _ roomdag.UserID) (roomdag.MembershipTrail, error) {
	c.calls[room]++
	return c.trails[room], nil
}

func (c *countingTrails) ErasedUsers() map[roomdag.UserID]bool { return nil }

func storedAt(t *testing.T, room roomdag.RoomID, pos roomdag.StreamPos) *roomdag.StoredEvent {
	t.Helper()
	v, _ := roomdag.LookupRoomVersion("11")
	ev, err := roomdag.NewEventFromJSON(v, []byte(fmt.Sprintf(`{"type":"m.room.message","sender":"@a:x","room_id":%q,"content":{},"prev_events":[],"auth_events":[],"depth":%d,"origin_server_ts":1}`, room, pos)))
	if err != nil {
		t.Fatal(err)
	}
	return &roomdag.StoredEvent{Event: ev, Pos: pos}
}

// TestMembershipTrailsLookups: a room's trail costs no lookup when every
// event follows the viewer's newest membership event there, and one
// whatever the number of events otherwise.
func TestMembershipTrailsLookups(t *testing.T) {
	full := roomdag.MembershipTrail{{Pos: 10, Membership: "join"}, {Pos: 20, Membership: "leave"}, {Pos: 30, Membership: "join"}}
	store := &countingTrails{trails: map[roomdag.RoomID]roomdag.MembershipTrail{"!a:x": full, "!b:x": full}, calls: map[roomdag.RoomID]int{}}
	known := map[roomdag.RoomID]storage.RoomMembership{
		"!a:x": {RoomID: "!a:x", Membership: "join", Pos: 30},
		"!b:x": {RoomID: "!b:x", Membership: "join", Pos: 30},
	}
	view := roomdag.ClientView{UserID: "@v:x"}
	// Room a: events after the join at 30 only; room b: events across it.
	a := []*roomdag.StoredEvent{storedAt(t, "!a:x", 31), storedAt(t, "!a:x", 40)}
	b := []*roomdag.StoredEvent{storedAt(t, "!b:x", 15), storedAt(t, "!b:x", 25), storedAt(t, "!b:x", 35)}
	got, err := MembershipTrails(context.Background(), store, view, known, a, b)
	if err != nil {
		t.Fatal(err)
	}
	if store.calls["!a:x"] != 0 || store.calls["!b:x"] != 1 {
		t.Errorf("lookups = %v, want none for a and one for b", store.calls)
	}
	for _, tc := range []struct {
		ev   *roomdag.StoredEvent
		want string
	}{{a[0], "join"}, {a[1], "join"}, {b[0], "join"}, {b[1], "leave"}, {b[2], "join"}} {
		if m := got.Memberships[tc.ev.RoomID()].At(tc.ev.Pos); m != tc.want {
			t.Errorf("%s at %d = %s, want %s", tc.ev.RoomID(), tc.ev.Pos, m, tc.want)
		}
	}
	// A later page of room a reaching back before the join needs the
	// whole trail: the one known from the newest change does not serve.
	older := []*roomdag.StoredEvent{storedAt(t, "!a:x", 12)}
	if got, err = MembershipTrails(context.Background(), store, got, known, older); err != nil {
		t.Fatal(err)
	}
	if store.calls["!a:x"] != 1 || got.Memberships["!a:x"].At(12) != "join" || got.Memberships["!a:x"].At(22) != "leave" {
		t.Errorf("older page of a: %d lookups, trail %v", store.calls["!a:x"], got.Memberships["!a:x"])
	}
	// Without known memberships, one lookup per room.
	store.calls = map[roomdag.RoomID]int{}
	if _, err := MembershipTrails(context.Background(), store, view, nil, a, b); err != nil {
		t.Fatal(err)
	}
	if store.calls["!a:x"] != 1 || store.calls["!b:x"] != 1 {
		t.Errorf("lookups without known = %v, want one each", store.calls)
	}
}
