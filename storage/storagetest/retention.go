package storagetest

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/persistentchat/homeserver/media"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// testRetentionPurge: PurgeHistory deletes expired events in batches with
// their search entries and relations, never state, the newest event nor
// the events of users kept; PurgeMedia deletes only media nothing refers
// to and names the content files left unused.
func testRetentionPurge(t *testing.T, open Opener) {
	db := open(t)
	rooms := NewRooms(t, db)
	ctx := context.Background()
	room := roomdag.RoomID("!purge:test.local")
	owner := CreateRoom(t, rooms, room)
	held := roomdag.UserID("@held:test.local")
	send := func(sender roomdag.UserID, typ string, stateKey *string, content string) *roomdag.Event {
		t.Helper()
		ev, _, err := rooms.Append(ctx, room, roomdag.ProtoEvent{Type: typ, StateKey: stateKey, Sender: sender, Content: json.RawMessage(content)})
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	send(held, roomdag.TypeMember, sk(string(held)), `{"membership":"join"}`)
	root := send(owner, roomdag.TypeMessage, nil, `{"msgtype":"m.text","body":"purgeword one"}`)
	send(owner, roomdag.TypeMessage, nil, `{"msgtype":"m.image","body":"purgeword pic","url":"mxc://test.local/gone","info":{"thumbnail_url":"mxc://test.local/thumb"}}`)
	send(owner, "m.reaction", nil, `{"m.relates_to":{"rel_type":"m.annotation","event_id":"`+string(root.ID())+`","key":"x"}}`)
	send(held, roomdag.TypeMessage, nil, `{"msgtype":"m.text","body":"purgeword held"}`)
	send(owner, roomdag.TypeMessage, nil, `{"msgtype":"m.image","body":"purgeword newest","url":"mxc://test.local/kept"}`)
	for _, id := range []string{"gone", "kept", "thumb", "other"} {
		if err := db.InsertMedia(ctx, media.Record{ID: media.ID(id), Uploader: owner, SHA256: "sum-" + id, CreatedMS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	// A second record of thumb's content keeps that file in use.
	if err := db.InsertMedia(ctx, media.Record{ID: "twin", Uploader: owner, SHA256: "sum-thumb", CreatedMS: 1}); err != nil {
		t.Fatal(err)
	}

	far := int64(1) << 50
	// Before the events' time: nothing.
	if res, err := db.PurgeHistory(ctx, room, 0, nil, 10); err != nil || res.Events != 0 || res.More {
		t.Fatalf("purge before everything: %+v %v", res, err)
	}
	res, err := db.PurgeHistory(ctx, room, far, []roomdag.UserID{held}, 2)
	if err != nil || res.Events != 2 || !res.More {
		t.Fatalf("first batch: %+v %v", res, err)
	}
	uris := res.MediaURIs
	res, err = db.PurgeHistory(ctx, room, far, []roomdag.UserID{held}, 2)
	if err != nil || res.Events != 1 || res.More {
		t.Fatalf("second batch: %+v %v", res, err)
	}
	uris = append(uris, res.MediaURIs...)
	slices.Sort(uris)
	if want := []string{"mxc://test.local/gone", "mxc://test.local/thumb"}; !slices.Equal(uris, want) {
		t.Errorf("media URIs %q, want %q", uris, want)
	}
	for body, want := range map[string]int{"purgeword one": 0, "purgeword pic": 0, "purgeword held": 1, "purgeword newest": 1} {
		if n := countBodies(t, db, body); n != want {
			t.Errorf("%q: %d stored, want %d", body, n, want)
		}
	}
	if got := SearchPositions(t, db, "purgeword", []roomdag.RoomID{room}); len(got) != 2 {
		t.Errorf("search after the purge: %v, want the 2 events left", got)
	}
	if _, err := db.Event(ctx, root.ID()); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("purged event read back: %v", err)
	}
	// State is whole and the room takes new events.
	st, err := db.LoadRoom(ctx, room)
	if err != nil || st.State.Get(roomdag.TypeJoinRules, "") == nil || st.State.Get(roomdag.TypeMember, string(held)) == nil {
		t.Fatalf("state after the purge: %v", err)
	}
	send(owner, roomdag.TypeMessage, nil, `{"msgtype":"m.file","body":"after","file":{"url":"mxc://test.local/kept"}}`)
	if ok, err := db.HasEventsBy(ctx, room, []roomdag.UserID{held}); err != nil || !ok {
		t.Errorf("HasEventsBy held: %v %v", ok, err)
	}
	if ok, err := db.HasEventsBy(ctx, room, []roomdag.UserID{"@nobody:test.local"}); err != nil || ok {
		t.Errorf("HasEventsBy nobody: %v %v", ok, err)
	}
	// Without keep, the held user's message goes too, not the state.
	if res, err := db.PurgeHistory(ctx, room, far, nil, 10); err != nil || res.Events != 2 {
		t.Errorf("purge without keep: %+v %v", res, err)
	}

	// Media a held user uploaded stays.
	if err := db.InsertMedia(ctx, media.Record{ID: "heldup", Uploader: held, SHA256: "sum-heldup", CreatedMS: 1}); err != nil {
		t.Fatal(err)
	}
	deleted, files, err := db.PurgeMedia(ctx, "test.local", []media.ID{"gone", "thumb", "kept", "missing", "heldup"}, []roomdag.UserID{held})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(deleted)
	if want := []media.ID{"gone", "thumb"}; !slices.Equal(deleted, want) {
		t.Errorf("deleted media %q, want %q", deleted, want)
	}
	if want := []string{"sum-gone"}; !slices.Equal(files, want) {
		t.Errorf("unused files %q, want %q (twin still uses sum-thumb)", files, want)
	}
	for id, want := range map[media.ID]bool{"gone": false, "thumb": false, "kept": true, "other": true, "twin": true, "heldup": true} {
		_, err := db.MediaRecord(ctx, id)
		if (err == nil) != want {
			t.Errorf("media %s: %v, want kept %v", id, err, want)
		}
	}
}

// testLegalHolds: holds are stored, listed, released once.
func testLegalHolds(t *testing.T, open Opener) {
	db := open(t)
	ctx := context.Background()
	a, err := db.CreateHold(ctx, storage.Hold{User: "@a:test.local", Reason: "r1", CreatedBy: "@admin:test.local", CreatedMS: 10})
	if err != nil {
		t.Fatal(err)
	}
	b, err := db.CreateHold(ctx, storage.Hold{Room: "!r:test.local", Reason: "r2", CreatedMS: 11})
	if err != nil {
		t.Fatal(err)
	}
	if a.ID != 1 || b.ID != 2 {
		t.Errorf("IDs %d %d", a.ID, b.ID)
	}
	hs, err := db.Holds(ctx, true)
	if err != nil || len(hs) != 2 || hs[0] != a || hs[1] != b {
		t.Fatalf("active holds %+v %v", hs, err)
	}
	r, err := db.ReleaseHold(ctx, 1, "@admin:test.local", 20)
	if err != nil || r.Active() || r.ReleasedMS != 20 || r.ReleasedBy != "@admin:test.local" || r.User != a.User {
		t.Fatalf("release %+v %v", r, err)
	}
	if _, err := db.ReleaseHold(ctx, 1, "", 21); !errors.Is(err, storage.ErrConflict) {
		t.Errorf("second release: %v", err)
	}
	if _, err := db.ReleaseHold(ctx, 9, "", 21); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("unknown release: %v", err)
	}
	if hs, err := db.Holds(ctx, true); err != nil || len(hs) != 1 || hs[0].ID != 2 {
		t.Errorf("active after release %+v %v", hs, err)
	}
	if hs, err := db.Holds(ctx, false); err != nil || len(hs) != 2 || hs[0] != r {
		t.Errorf("all holds %+v %v", hs, err)
	}
}

// testRetentionThreads: a purge drops the threads whose root or whose
// every reply it deleted, and points the others at their newest reply
// left.
func testRetentionThreads(t *testing.T, open Opener) {
	db := open(t)
	rooms := NewRooms(t, db)
	ctx := context.Background()
	room := roomdag.RoomID("!threads:test.local")
	owner := CreateRoom(t, rooms, room)
	held := roomdag.UserID("@held:test.local")
	send := func(sender roomdag.UserID, content string) (*roomdag.Event, roomdag.StreamPos) {
		t.Helper()
		ev, pos, err := rooms.Append(ctx, room, roomdag.ProtoEvent{Type: roomdag.TypeMessage, Sender: sender, Content: json.RawMessage(content)})
		if err != nil {
			t.Fatal(err)
		}
		return ev, pos
	}
	reply := func(sender roomdag.UserID, root *roomdag.Event) roomdag.StreamPos {
		t.Helper()
		_, pos := send(sender, `{"msgtype":"m.text","body":"r","m.relates_to":{"rel_type":"m.thread","event_id":"`+string(root.ID())+`"}}`)
		return pos
	}
	if _, _, err := rooms.Append(ctx, room, roomdag.ProtoEvent{Type: roomdag.TypeMember, StateKey: sk(string(held)), Sender: held, Content: json.RawMessage(`{"membership":"join"}`)}); err != nil {
		t.Fatal(err)
	}
	a, _ := send(owner, `{"msgtype":"m.text","body":"root a"}`)
	reply(held, a)
	b, _ := send(held, `{"msgtype":"m.text","body":"root b"}`)
	kept := reply(held, b)
	reply(owner, b)
	c, _ := send(held, `{"msgtype":"m.text","body":"root c"}`)
	reply(owner, c)
	send(owner, `{"msgtype":"m.text","body":"newest"}`)
	if ts, _, err := db.Threads(ctx, room, "", nil, 10); err != nil || len(ts) != 3 {
		t.Fatalf("threads before: %+v %v", ts, err)
	}
	if res, err := db.PurgeHistory(ctx, room, 1<<50, []roomdag.UserID{held}, 100); err != nil || res.Events != 3 {
		t.Fatalf("purge: %+v %v", res, err)
	}
	ts, _, err := db.Threads(ctx, room, "", nil, 10)
	if err != nil || len(ts) != 1 || ts[0].Root != b.ID() || ts[0].Latest.Pos != kept {
		t.Errorf("threads after: %+v %v, want %s with latest %d", ts, err, b.ID(), kept)
	}
}
