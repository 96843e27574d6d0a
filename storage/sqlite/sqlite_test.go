package sqlite

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

func openTest(t testing.TB) *DB {
	t.Helper()
	db, err := Open(filepath.Join(t.TempDir(), "test.db"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func newRooms(t testing.TB, db *DB) *roomdag.Rooms {
	key, err := roomdag.GenerateSigningKey("test.local", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return roomdag.NewRooms(db, key, clock.NewFake(time.Unix(1_700_000_000, 0)), rand.Reader, 0)
}

func sk(s string) *string { return &s }

// createRoom makes a public v11 room owned by @owner.
func createRoom(t *testing.T, rooms *roomdag.Rooms, id roomdag.RoomID) roomdag.UserID {
	t.Helper()
	owner := roomdag.UserID("@owner:test.local")
	v, _ := roomdag.LookupRoomVersion("11")
	_, err := rooms.CreateRoom(context.Background(), v, id,
		roomdag.ProtoEvent{Type: roomdag.TypeCreate, StateKey: sk(""), Sender: owner, Content: json.RawMessage(`{"room_version":"11"}`)},
		[]roomdag.ProtoEvent{
			{Type: roomdag.TypeMember, StateKey: sk(string(owner)), Sender: owner, Content: json.RawMessage(`{"membership":"join"}`)},
			{Type: roomdag.TypeJoinRules, StateKey: sk(""), Sender: owner, Content: json.RawMessage(`{"join_rule":"public"}`)},
		})
	if err != nil {
		t.Fatal(err)
	}
	return owner
}

// Snapshots are deltas with a full copy every 64; every snapshot must read
// back as exactly the state at that point, across several full copies.
func TestSnapshotChains(t *testing.T) {
	db := openTest(t)
	rooms := newRooms(t, db)
	ctx := context.Background()
	room := roomdag.RoomID("!snap:test.local")
	owner := createRoom(t, rooms, room)
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
	db.snapshots = newLRU[int64, map[roomdag.StateKey]roomdag.EventID](snapshotCacheSize) // read from disk
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
	if err := db.r.QueryRow(`SELECT COUNT(*) FROM state_snapshots WHERE parent_id IS NULL`).Scan(&full); err != nil {
		t.Fatal(err)
	}
	if full < 3 {
		t.Errorf("%d full snapshots for ~203 state events, want at least 3 (one per 64)", full)
	}
	// A fresh write path loads the same state from storage.
	again, err := newRooms(t, db).State(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	cur, _ := rooms.State(ctx, room)
	if len(again.State) != len(cur.State) || again.Snapshot != cur.Snapshot || again.Depth != cur.Depth {
		t.Errorf("reloaded state differs: %d/%d entries, snapshot %d/%d", len(again.State), len(cur.State), again.Snapshot, cur.Snapshot)
	}
}

// One failing write in a batch does not undo the others (savepoints).
func TestBatchIsolatesFailures(t *testing.T) {
	db := openTest(t)
	boom := errors.New("boom")
	var chans []<-chan error
	for i := 0; i < 50; i++ {
		i := i
		chans = append(chans, db.enqueue(func(tx *sql.Tx) error {
			if _, err := tx.Exec(`INSERT INTO filters (user_id, filter_id, filter) VALUES ('@u:x', ?, '{}')`, i); err != nil {
				return err
			}
			if i%7 == 0 {
				return boom // its insert must be rolled back
			}
			return nil
		}, nil))
	}
	for i, ch := range chans {
		err := <-ch
		if (i%7 == 0) != errors.Is(err, boom) {
			t.Errorf("write %d: err = %v", i, err)
		}
	}
	var n int
	db.r.QueryRow(`SELECT COUNT(*) FROM filters`).Scan(&n)
	if n != 50-8 {
		t.Errorf("%d rows committed, want 42", n)
	}
}

// When an event fails to persist, later events of the same generation
// (built on it) fail too, and the room reloads from storage and goes on.
func TestFailedEventPoisonsItsGeneration(t *testing.T) {
	db := openTest(t)
	rooms := newRooms(t, db)
	ctx := context.Background()
	room := roomdag.RoomID("!fail:test.local")
	owner := createRoom(t, rooms, room)
	before, _ := rooms.State(ctx, room)
	// Simulate a failed write of the room's current generation: what the
	// writer records when a commit fails.
	done := make(chan struct{})
	db.enqueueJob(&job{fn: func(*sql.Tx) error {
		db.failedGen[string(room)] = 1 // generation 0 failed
		return nil
	}, after: func() { close(done) }})
	<-done
	// The first attempt is refused as stale; Append rebuilds it on the
	// stored state and succeeds.
	ev, _, err := rooms.Append(ctx, room, roomdag.ProtoEvent{Type: "m.room.message", Sender: owner, Content: json.RawMessage(`{"body":"y"}`)})
	if err != nil {
		t.Fatalf("append on a failed generation: %v", err)
	}
	var stale int
	db.r.QueryRow(`SELECT COUNT(*) FROM events WHERE json LIKE '%"body":"y"%'`).Scan(&stale)
	if stale != 1 {
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

func TestAccountsAndTokens(t *testing.T) {
	db := openTest(t)
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
