package sqlite

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/persistentchat/homeserver/roomdag"
)

// Two write paths on one database, as two processes would be: a write
// built on a state the other has since moved on from is refused
// (roomdag.ErrRoomChanged) with nothing of it stored, and Append rebuilds
// it on the stored room.
func TestWriteOnAChangedRoom(t *testing.T) {
	db := openTest(t)
	a, b := newRooms(t, db), newRooms(t, db)
	ctx := context.Background()
	room := roomdag.RoomID("!changed:test.local")
	owner := createRoom(t, a, room)
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
	var n int
	db.r.QueryRow(`SELECT COUNT(*) FROM events WHERE json LIKE '%"body":"a"%'`).Scan(&n)
	if n != 1 {
		t.Errorf("%d copies of the rebuilt event stored, want 1", n)
	}
	ext, err := queryStrings(ctx, db.r, `SELECT event_id FROM forward_extremities`)
	if err != nil || len(ext) != 1 || ext[0] != string(evA.ID()) {
		t.Errorf("forward extremities %v, %v; want [%s]", ext, err, evA.ID())
	}
	st, err := newRooms(t, db).State(ctx, room)
	if err != nil || st.LastPos != posA {
		t.Errorf("reloaded room at %d (%v), want %d", st.LastPos, err, posA)
	}
}
