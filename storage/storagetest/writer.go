package storagetest

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

func testSnapshotChains(t *testing.T, open Opener) {
	db := open(t)
	rooms := NewRooms(t, db)
	ctx := context.Background()
	room := roomdag.RoomID("!snap:test.local")
	owner := CreateRoom(t, rooms, room)
	want := map[int64]map[roomdag.StateKey]roomdag.EventID{}
	for i := 0; i < 200; i++ {
		key := fmt.Sprintf("k%d", i%37) // overwrite some keys, add others
		if _, _, err := rooms.Append(ctx, room, roomdag.ProtoEvent{Type: "org.test.state", StateKey: sk(key), Sender: owner,
			Content: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))}); err != nil {
			t.Fatal(err)
		}
		st, err := rooms.State(ctx, room)
		if err != nil {
			t.Fatal(err)
		}
		want[st.Snapshot] = st.State.IDs()
	}
	db.DropCaches() // read from disk
	for id, w := range want {
		got, err := db.Snapshot(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(w) {
			t.Fatalf("snapshot %d has %d entries, want %d", id, len(got), len(w))
		}
		for k, v := range w {
			if got[k] != v {
				t.Fatalf("snapshot %d: %v = %s, want %s", id, k, got[k], v)
			}
		}
	}
	var full int
	if err := db.Reader().QueryRow(`SELECT COUNT(*) FROM state_snapshots WHERE parent_id IS NULL`).Scan(&full); err != nil {
		t.Fatal(err)
	}
	if full < 3 {
		t.Errorf("%d full snapshots for ~203 state events, want at least 3 (one per 64)", full)
	}
	// A fresh write path loads the same state from storage.
	again, err := NewRooms(t, db).State(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	cur, _ := rooms.State(ctx, room)
	if len(again.State) != len(cur.State) || again.Snapshot != cur.Snapshot || again.Depth != cur.Depth {
		t.Errorf("reloaded state differs: %d/%d entries, snapshot %d/%d", len(again.State), len(cur.State), again.Snapshot, cur.Snapshot)
	}
}

func testBatchIsolatesFailures(t *testing.T, open Opener) {
	db := open(t)
	boom := errors.New("boom")
	var chans []<-chan error
	for i := 0; i < 50; i++ {
		i := i
		chans = append(chans, db.Enqueue(func(tx *sql.Tx) error {
			if _, err := tx.Exec(`INSERT INTO filters (user_id, filter_id, filter) VALUES ('@u:x', ?, '{}')`, i); err != nil {
				return err
			}
			if i%7 == 0 {
				return boom // its insert must be rolled back
			}
			return nil
		}))
	}
	for i, ch := range chans {
		err := <-ch
		if (i%7 == 0) != errors.Is(err, boom) {
			t.Errorf("write %d: err = %v", i, err)
		}
	}
	var n int
	db.Reader().QueryRow(`SELECT COUNT(*) FROM filters`).Scan(&n)
	if n != 50-8 {
		t.Errorf("%d rows committed, want 42", n)
	}
}

func testFailedEventPoisonsItsGeneration(t *testing.T, open Opener) {
	db := open(t)
	rooms := NewRooms(t, db)
	ctx := context.Background()
	room := roomdag.RoomID("!fail:test.local")
	owner := CreateRoom(t, rooms, room)
	before, _ := rooms.State(ctx, room)
	// A write of the room's current generation (0) that fails: the
	// create event again, whose ID is taken.
	create := before.State[roomdag.StateKey{Type: roomdag.TypeCreate}]
	if err := <-db.EnqueueEvent(&roomdag.Persist{Event: create, ExtremitiesBefore: before.Extremities,
		StateBefore: before.Snapshot, StateAfter: before.Snapshot}); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("storing an event twice: %v, want storage.ErrConflict", err)
	}
	// The first attempt is refused as stale; Append rebuilds it on the
	// stored state and succeeds.
	ev, _, err := rooms.Append(ctx, room, roomdag.ProtoEvent{Type: "m.room.message", Sender: owner, Content: json.RawMessage(`{"body":"y"}`)})
	if err != nil {
		t.Fatalf("append on a failed generation: %v", err)
	}
	if stale := countBodies(t, db, "y"); stale != 1 {
		t.Errorf("%d copies of the retried event stored, want 1", stale)
	}
	// The new event builds on what is stored, not on the failed event.
	if got := ev.PrevEvents(); len(got) != 1 || got[0] != before.Extremities[0] {
		t.Errorf("prev_events = %v, want the last stored event %v", got, before.Extremities)
	}
	if _, err := db.Event(ctx, ev.ID()); err != nil {
		t.Errorf("event after reload not stored: %v", err)
	}
}

func testAccountsAndTokens(t *testing.T, open Opener) {
	db := open(t)
	ctx := context.Background()
	u := roomdag.UserID("@a:x")
	if err := db.CreateUser(ctx, storage.User{ID: u, PasswordHash: "h"}, 1); err != nil {
		t.Fatal(err)
	}
	if err := db.CreateUser(ctx, storage.User{ID: u}, 1); !errors.Is(err, storage.ErrConflict) {
		t.Errorf("duplicate user: %v", err)
	}
	if err := db.CreateSession(ctx, storage.Session{UserID: u, DeviceID: "D1", TokenHash: []byte("t1"), RefreshHash: []byte("r1")}); err != nil {
		t.Fatal(err)
	}
	if o, err := db.TokenOwner(ctx, []byte("t1")); err != nil || o.DeviceID != "D1" {
		t.Fatalf("token owner = %+v, %v", o, err)
	}
	if _, _, err := db.Refresh(ctx, []byte("r1"), storage.Session{TokenHash: []byte("t2"), RefreshHash: []byte("r2")}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.TokenOwner(ctx, []byte("t1")); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("old access token still valid after refresh: %v", err)
	}
	if _, _, err := db.Refresh(ctx, []byte("r1"), storage.Session{TokenHash: []byte("t3")}); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("refresh token reused: %v", err)
	}
	if err := db.DeleteDevices(ctx, u, nil, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := db.TokenOwner(ctx, []byte("t2")); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("token survives device deletion: %v", err)
	}
}

func testPingAndStats(t *testing.T, open Opener) {
	db := open(t)
	ctx := context.Background()
	if err := db.Ping(ctx); err != nil {
		t.Fatalf("Ping on an open database: %v", err)
	}
	stats := db.Stats()
	byName := map[string]int{}
	for _, s := range stats {
		byName[s.Name] = s.MaxOpen
	}
	if byName["read"] < 1 || byName["write"] != 1 {
		t.Errorf("Stats() = %+v; want a read pool and a write pool of 1", stats)
	}
	for _, s := range stats {
		if s.Open != s.InUse+s.Idle {
			t.Errorf("%s pool: open %d != in use %d + idle %d", s.Name, s.Open, s.InUse, s.Idle)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Ping(ctx); err == nil {
		t.Fatal("Ping on a closed database succeeded")
	}
}

func testWriteOnAChangedRoom(t *testing.T, open Opener) {
	db := open(t)
	a, b := NewRooms(t, db), NewRooms(t, db)
	ctx := context.Background()
	room := roomdag.RoomID("!changed:test.local")
	owner := CreateRoom(t, a, room)
	stA, err := a.State(ctx, room) // cached by a
	if err != nil {
		t.Fatal(err)
	}
	stB, err := b.State(ctx, room) // loaded from the database by b
	if err != nil {
		t.Fatal(err)
	}
	if stA.LastPos == 0 || stB.LastPos != stA.LastPos {
		t.Fatalf("last positions: committed %d, loaded %d", stA.LastPos, stB.LastPos)
	}
	evB, _, err := b.Append(ctx, room, roomdag.ProtoEvent{Type: "m.room.message", Sender: owner, Content: json.RawMessage(`{"body":"b"}`)})
	if err != nil {
		t.Fatal(err)
	}
	evA, posA, err := a.Append(ctx, room, roomdag.ProtoEvent{Type: "m.room.message", Sender: owner, Content: json.RawMessage(`{"body":"a"}`)})
	if err != nil {
		t.Fatalf("append on a room another writer moved: %v", err)
	}
	if got := evA.PrevEvents(); len(got) != 1 || got[0] != evB.ID() {
		t.Errorf("prev_events = %v, want the other writer's %s", got, evB.ID())
	}
	if n := countBodies(t, db, "a"); n != 1 {
		t.Errorf("%d copies of the rebuilt event stored, want 1", n)
	}
	ext, err := queryStrings(ctx, db.Reader(), `SELECT event_id FROM forward_extremities`)
	if err != nil || len(ext) != 1 || ext[0] != string(evA.ID()) {
		t.Errorf("forward extremities %v, %v; want [%s]", ext, err, evA.ID())
	}
	st, err := NewRooms(t, db).State(ctx, room)
	if err != nil || st.LastPos != posA {
		t.Errorf("reloaded room at %d (%v), want %d", st.LastPos, err, posA)
	}
}
