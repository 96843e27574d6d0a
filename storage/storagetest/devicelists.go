package storagetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// testDeviceListOutbox: each local device-list change lands in the
// outbox at its position, with the user's previous device position as
// prev (cross-signing changes aside, which no device update follows);
// the sender's position moves with the EDUs it queues, once, and drops
// what it passed; remote users' changes never enter the outbox.
func testDeviceListOutbox(t *testing.T, open Opener) {
	db := open(t)
	ctx := context.Background()
	const alice = roomdag.UserID("@alice:test.local")
	dk := json.RawMessage(`{"device_id":"D","user_id":"@alice:test.local"}`)
	if _, err := db.UploadKeys(ctx, alice, "D", storage.KeyUpload{DeviceKeys: dk}); err != nil { // 1
		t.Fatal(err)
	}
	if err := db.CreateSession(ctx, storage.Session{UserID: alice, DeviceID: "E", TokenHash: []byte("tok-e")}); err != nil { // 2
		t.Fatal(err)
	}
	if _, err := db.DeviceListChanged(ctx, alice); err != nil { // 3: cross-signing keys
		t.Fatal(err)
	}
	if err := db.SetDeviceName(ctx, alice, "E", "phone"); err != nil { // 4
		t.Fatal(err)
	}
	if err := db.DeleteDevices(ctx, alice, []string{"E"}, ""); err != nil { // 5
		t.Fatal(err)
	}
	if _, err := db.DevicesChanged(ctx, alice, []string{"D"}); err != nil { // 6: a signature of D
		t.Fatal(err)
	}
	// A remote user's change (their server told us): no outbox entry.
	if err := db.ReplaceRemoteDeviceList(ctx, "@carol:remote.test", storage.RemoteDeviceList{StreamID: 1}); err != nil { // 7
		t.Fatal(err)
	}
	all, err := db.DeviceListOutbox(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	want := []storage.DeviceListOutboxEntry{
		{Pos: 1, User: alice, DeviceChange: storage.DeviceChange{Device: "D"}, Prev: 0},
		{Pos: 2, User: alice, DeviceChange: storage.DeviceChange{Device: "E"}, Prev: 1},
		{Pos: 3, User: alice, DeviceChange: storage.DeviceChange{}, Prev: 2},
		{Pos: 4, User: alice, DeviceChange: storage.DeviceChange{Device: "E"}, Prev: 2},
		{Pos: 5, User: alice, DeviceChange: storage.DeviceChange{Device: "E", Deleted: true}, Prev: 4},
		{Pos: 6, User: alice, DeviceChange: storage.DeviceChange{Device: "D"}, Prev: 5},
	}
	if fmt.Sprint(all) != fmt.Sprint(want) {
		t.Fatalf("outbox\n%v\nwant\n%v", all, want)
	}
	if p, err := db.DevicePos(ctx, alice); err != nil || p != 6 {
		t.Fatalf("alice's device position %d %v, want 6", p, err)
	}
	if p, err := db.DevicePos(ctx, "@nobody:test.local"); err != nil || p != 0 {
		t.Fatalf("nobody's device position %d %v", p, err)
	}
	if part, _ := db.DeviceListOutbox(ctx, 1, 2); len(part) != 2 || part[0].Pos != 2 || part[1].Pos != 3 {
		t.Fatalf("two positions after 1: %v", part)
	}
	from, err := db.DeviceListSenderPos(ctx)
	if err != nil || from != 0 {
		t.Fatalf("sender position %d %v", from, err)
	}
	dest := roomdag.ServerName("remote.test")
	edu := json.RawMessage(`{"edu_type":"m.device_list_update","content":{}}`)
	items := map[roomdag.ServerName][]storage.FederationItem{dest: {{EDU: edu}}}
	if err := db.QueueDeviceListEDUs(ctx, 0, 3, items, 1000); err != nil {
		t.Fatal(err)
	}
	if err := db.QueueDeviceListEDUs(ctx, 0, 3, items, 1000); err == nil {
		t.Fatal("a step from a position passed was queued again")
	}
	if p, _ := db.DeviceListSenderPos(ctx); p != 3 {
		t.Fatalf("sender position %d, want 3", p)
	}
	if rest, _ := db.DeviceListOutbox(ctx, 0, 100); len(rest) != 3 || rest[0].Pos != 4 {
		t.Fatalf("outbox after the step: %v", rest)
	}
	q, err := db.FederationQueue(ctx, dest, 10)
	if err != nil || len(q) != 1 || string(q[0].EDU) != string(edu) {
		t.Fatalf("queue of %s: %+v %v", dest, q, err)
	}
	// A dehydrated device replaced, then deleted: each a deletion.
	for _, d := range []string{"DH1", "DH2"} {
		if _, err := db.PutDehydratedDevice(ctx, alice, d, json.RawMessage(`{}`), nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.DeleteDehydratedDevice(ctx, alice); err != nil {
		t.Fatal(err)
	}
	rest, _ := db.DeviceListOutbox(ctx, 6, 100)
	if fmt.Sprint(rest) != fmt.Sprint([]storage.DeviceListOutboxEntry{
		{Pos: 8, User: alice, DeviceChange: storage.DeviceChange{Device: "DH1", Deleted: true}, Prev: 6},
		{Pos: 9, User: alice, DeviceChange: storage.DeviceChange{Device: "DH2", Deleted: true}, Prev: 8},
	}) {
		t.Fatalf("dehydrated devices' deletions: %v", rest)
	}
	// A device an application service creates (no session): announced
	// once, when it is new.
	for range 2 {
		if _, err := db.CreateDevice(ctx, alice, "AS", nil); err != nil {
			t.Fatal(err)
		}
	}
	rest, _ = db.DeviceListOutbox(ctx, 9, 100)
	if fmt.Sprint(rest) != fmt.Sprint([]storage.DeviceListOutboxEntry{
		{Pos: 10, User: alice, DeviceChange: storage.DeviceChange{Device: "AS"}, Prev: 9},
	}) {
		t.Fatalf("application service's device: %v", rest)
	}
}

// testRemoteDeviceLists: the cache of remote users' device lists:
// nothing to update before a resync; a resync replaces the list; updates
// store and drop devices and never lower the stream_id; cross-signing
// updates keep the other key; each change advances the user's device
// list; dropping forgets everything; a resync is valid from the event
// stream's head. SharedSince follows the joined members of rooms with a
// local account, and when their memberships last changed.
func testRemoteDeviceLists(t *testing.T, open Opener) {
	db := open(t)
	ctx := context.Background()
	const carol = roomdag.UserID("@carol:remote.test")
	keys := func(d string) json.RawMessage {
		return json.RawMessage(fmt.Sprintf(`{"device_id":%q,"user_id":%q}`, d, carol))
	}
	if _, ok, err := db.RemoteDeviceStream(ctx, carol); ok || err != nil {
		t.Fatalf("stream of an uncached user: %v %v", ok, err)
	}
	if ok, err := db.ApplyRemoteDeviceUpdates(ctx, carol, 3, []storage.RemoteDevice{{Device: "X", Keys: keys("X")}}); ok || err != nil {
		t.Fatalf("update of an uncached user applied: %v %v", ok, err)
	}
	master := json.RawMessage(`{"user_id":"@carol:remote.test","usage":["master"]}`)
	ssk := json.RawMessage(`{"user_id":"@carol:remote.test","usage":["self_signing"]}`)
	before, _ := db.DeviceListPos(ctx)
	if err := db.ReplaceRemoteDeviceList(ctx, carol, storage.RemoteDeviceList{StreamID: 5,
		Devices: map[string]json.RawMessage{"X": keys("X"), "Z": keys("Z")}, Master: master}); err != nil {
		t.Fatal(err)
	}
	get := func() *storage.RemoteDeviceList {
		t.Helper()
		got, err := db.RemoteDeviceLists(ctx, []roomdag.UserID{carol, "@dave:remote.test"})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := got["@dave:remote.test"]; ok || len(got) > 1 {
			t.Fatalf("lists of users never cached: %v", got)
		}
		return got[carol]
	}
	devices := func(l *storage.RemoteDeviceList) []string {
		var out []string
		for d := range l.Devices {
			out = append(out, d)
		}
		slices.Sort(out)
		return out
	}
	if l := get(); l == nil || l.StreamID != 5 || fmt.Sprint(devices(l)) != "[X Z]" || string(l.Master) != string(master) || l.SelfSigning != nil {
		t.Fatalf("after the resync: %+v", l)
	}
	if ok, err := db.ApplyRemoteDeviceUpdates(ctx, carol, 7, []storage.RemoteDevice{{Device: "Y", Keys: keys("Y")}, {Device: "X", Deleted: true}, {Device: "Z"}}); !ok || err != nil {
		t.Fatalf("update: %v %v", ok, err)
	}
	if ok, err := db.ApplyRemoteDeviceUpdates(ctx, carol, 6, nil); !ok || err != nil {
		t.Fatalf("update at an older stream_id: %v %v", ok, err)
	}
	if s, ok, _ := db.RemoteDeviceStream(ctx, carol); !ok || s != 7 {
		t.Fatalf("stream_id %d, want 7 (never lowered)", s)
	}
	if err := db.PutRemoteCrossSigningKeys(ctx, carol, nil, ssk); err != nil {
		t.Fatal(err)
	}
	if l := get(); fmt.Sprint(devices(l)) != "[Y]" || string(l.Master) != string(master) || string(l.SelfSigning) != string(ssk) {
		t.Fatalf("after the updates: %+v", l)
	}
	after, _ := db.DeviceListPos(ctx)
	if users, _ := db.DeviceListsChangedSince(ctx, before, after); fmt.Sprint(users) != "["+string(carol)+"]" || after-before != 4 {
		t.Fatalf("device list changes %v over %d positions, want carol's over 4", users, after-before)
	}
	if out, _ := db.DeviceListOutbox(ctx, 0, 100); len(out) != 0 {
		t.Fatalf("a remote user's changes in the outbox: %v", out)
	}
	if err := db.DropRemoteDeviceList(ctx, carol); err != nil {
		t.Fatal(err)
	}
	if l := get(); l != nil {
		t.Fatalf("after the drop: %+v", l)
	}

	// Sharing a room: carol's server joins her to a room of a local
	// account's; she changes her name (a new join); then she leaves.
	rooms := NewRooms(t, db)
	room := roomdag.RoomID("!shared:test.local")
	owner := CreateRoom(t, rooms, room)
	st, err := rooms.State(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	r := newRemoteServer(t, room, st)
	r.bob = carol
	join := receive(t, rooms, r, r.build("join", "start", roomdag.TypeMember, sk(string(carol)), `{"membership":"join"}`, "start"), roomdag.KindLive, roomdag.StatusTimeline)
	shared := func(pos roomdag.StreamPos) bool {
		t.Helper()
		ok, err := db.SharedSince(ctx, carol, pos)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	const now = roomdag.StreamPos(1 << 60)
	if shared(now) {
		t.Fatal("shares a room whose only other member has no account here")
	}
	if err := db.CreateUser(ctx, storage.User{ID: owner}, 0); err != nil {
		t.Fatal(err)
	}
	if !shared(now) || !shared(join.Pos) || shared(join.Pos-1) {
		t.Fatalf("shared now %t, since her join %t, since before it %t; want true, true, false", shared(now), shared(join.Pos), shared(join.Pos-1))
	}
	if ok, _ := db.SharedSince(ctx, "@dave:remote.test", now); ok {
		t.Fatal("a user in no room shares one")
	}
	// A resync now holds from the head: her join.
	if err := db.ReplaceRemoteDeviceList(ctx, carol, storage.RemoteDeviceList{StreamID: 8}); err != nil {
		t.Fatal(err)
	}
	if l := get(); l == nil || l.ValidFrom != join.Pos {
		t.Fatalf("resynced list %+v, want valid from %d", l, join.Pos)
	}
	rename := receive(t, rooms, r, r.build("rename", "join", roomdag.TypeMember, sk(string(carol)), `{"membership":"join","displayname":"C"}`, "join"), roomdag.KindLive, roomdag.StatusTimeline)
	if shared(join.Pos) || !shared(rename.Pos) {
		t.Fatalf("after a new join event: since the first %t, since the second %t", shared(join.Pos), shared(rename.Pos))
	}
	receive(t, rooms, r, r.build("leave", "rename", roomdag.TypeMember, sk(string(carol)), `{"membership":"leave"}`, "rename"), roomdag.KindLive, roomdag.StatusTimeline)
	if shared(now) {
		t.Fatal("shares the room after leaving it")
	}
	if _, err := db.RemoteDeviceLists(ctx, nil); err != nil && !errors.Is(err, storage.ErrNotFound) {
		t.Fatal(err)
	}
}
