package sqlite

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/persistentchat/homeserver/roomdag"
)

// Two write paths on one database, as two processes would be: a write
// built on a state the other has since moved on from is refused
// (roomdag.ErrRoomChanged) with nothing of it stored.
func TestWriteOnAChangedRoom(t *testing.T) {
	db := openTest(t)
	a, b := newRooms(t, db), newRooms(t, db)
	ctx := context.Background()
	room := roomdag.RoomID("!changed:test.local")
	owner := createRoom(t, a, room)
	if _, err := a.State(ctx, room); err != nil { // cached by a
		t.Fatal(err)
	}
	stB, err := b.State(ctx, room) // loaded from the database by b
	if err != nil {
		t.Fatal(err)
	}
	var last int64
	db.r.QueryRow(`SELECT MAX(stream_pos) FROM events`).Scan(&last)
	if stB.LastPos == 0 || int64(stB.LastPos) != last {
		t.Fatalf("loaded room at position %d, want its newest event's %d", stB.LastPos, last)
	}
	evB, _, err := b.Append(ctx, room, roomdag.ProtoEvent{Type: "m.room.message", Sender: owner, Content: json.RawMessage(`{"body":"b"}`)})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = a.Append(ctx, room, roomdag.ProtoEvent{Type: "m.room.message", Sender: owner, Content: json.RawMessage(`{"body":"a"}`)})
	if !errors.Is(err, roomdag.ErrRoomChanged) {
		t.Fatalf("append built on a state another writer moved on from: %v, want ErrRoomChanged", err)
	}
	var n int
	db.r.QueryRow(`SELECT COUNT(*) FROM events WHERE json LIKE '%"body":"a"%'`).Scan(&n)
	if n != 0 {
		t.Errorf("%d copies of the refused event stored", n)
	}
	ext, err := queryStrings(ctx, db.r, `SELECT event_id FROM forward_extremities`)
	if err != nil || len(ext) != 1 || ext[0] != string(evB.ID()) {
		t.Errorf("forward extremities %v, %v; want [%s]", ext, err, evB.ID())
	}
}
