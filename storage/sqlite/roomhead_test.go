package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

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

// takeExtremities accepts exactly the stored set, in any order, and
// refuses anything else leaving the stored set as it was.
func TestTakeExtremities(t *testing.T) {
	for _, tc := range []struct {
		name          string
		stored, built []roomdag.EventID
		changed       bool
	}{
		{"same", []roomdag.EventID{"$a"}, []roomdag.EventID{"$a"}, false},
		{"same two, other order", []roomdag.EventID{"$a", "$b"}, []roomdag.EventID{"$b", "$a"}, false},
		{"moved on", []roomdag.EventID{"$b"}, []roomdag.EventID{"$a"}, true},
		{"one more stored", []roomdag.EventID{"$a", "$b"}, []roomdag.EventID{"$a"}, true},
		{"one fewer stored", []roomdag.EventID{"$a"}, []roomdag.EventID{"$a", "$b"}, true},
		{"none built", []roomdag.EventID{"$a"}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := openTest(t)
			if err := db.write(func(tx *sql.Tx) error {
				for _, id := range tc.stored {
					if _, err := tx.Exec(`INSERT INTO forward_extremities (room_nid, event_id) VALUES (1, ?)`, string(id)); err != nil {
						return err
					}
				}
				return nil
			}, nil); err != nil {
				t.Fatal(err)
			}
			err := db.write(func(tx *sql.Tx) error { return takeExtremities(tx, 1, tc.built) }, nil)
			if got := errors.Is(err, roomdag.ErrRoomChanged); got != tc.changed || (err != nil && !got) {
				t.Fatalf("err = %v, want changed %v", err, tc.changed)
			}
			left, _ := queryStrings(context.Background(), db.r, `SELECT event_id FROM forward_extremities ORDER BY event_id`)
			if want := len(tc.stored); tc.changed && len(left) != want || !tc.changed && len(left) != 0 {
				t.Errorf("left %v after the check (changed %v)", left, tc.changed)
			}
		})
	}
}

// BenchmarkRoomCacheMemory measures what one cached room costs: the heap
// its state takes once loaded from the database, for rooms of a few sizes
// (each with a create event, power levels, join rules, history
// visibility, name, topic and its members' joins). B/room counts
// everything loading the rooms added (state maps and events); B/room-own
// what stays once the event cache has let go of their events, which is
// what a room cache entry keeps alive on a server with more state events
// than the event cache holds; µs/load is what a cache miss costs, with
// the events read from the database. Run with -benchtime=1x.
func BenchmarkRoomCacheMemory(b *testing.B) {
	for _, tc := range []struct{ rooms, members int }{{400, 12}, {40, 100}, {4, 1000}} {
		b.Run(fmt.Sprintf("members=%d", tc.members), func(b *testing.B) {
			db := openTest(b)
			rooms := newRooms(b, db)
			ids := make([]roomdag.RoomID, tc.rooms)
			var wg sync.WaitGroup
			sem := make(chan struct{}, 8)
			for i := range ids {
				ids[i] = roomdag.RoomID(fmt.Sprintf("!mem%d:test.local", i))
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer func() { <-sem; wg.Done() }()
					if err := typicalRoom(rooms, ids[i], tc.members); err != nil {
						b.Error(err)
					}
				}()
			}
			wg.Wait()
			if b.Failed() {
				return
			}
			heap := func() uint64 {
				runtime.GC()
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				return ms.HeapAlloc
			}
			for range b.N {
				rooms = nil
				db.events = newLRU[roomdag.EventID, *roomdag.StoredEvent](eventCacheSize)
				db.snapshots = newLRU[int64, map[roomdag.StateKey]roomdag.EventID](snapshotCacheSize)
				fresh := newRooms(b, db)
				base := heap()
				start := time.Now()
				for _, id := range ids {
					if _, err := fresh.State(context.Background(), id); err != nil {
						b.Fatal(err)
					}
				}
				took := time.Since(start)
				loaded := heap()
				db.events = newLRU[roomdag.EventID, *roomdag.StoredEvent](eventCacheSize)
				own := heap()
				if fresh.CachedRooms() != len(ids) {
					b.Fatalf("%d rooms cached, want %d", fresh.CachedRooms(), len(ids))
				}
				b.ReportMetric(float64(loaded-base)/float64(len(ids)), "B/room")
				b.ReportMetric(float64(own-base)/float64(len(ids)), "B/room-own")
				b.ReportMetric(float64(took.Microseconds())/float64(len(ids)), "µs/load")
				runtime.KeepAlive(fresh)
			}
		})
	}
}

// typicalRoom makes a room as a client's createRoom would, then joins
// members into it.
func typicalRoom(rooms *roomdag.Rooms, id roomdag.RoomID, members int) error {
	ctx := context.Background()
	owner := roomdag.UserID("@owner:test.local")
	v, _ := roomdag.LookupRoomVersion("11")
	state := func(typ, key, content string) roomdag.ProtoEvent {
		return roomdag.ProtoEvent{Type: typ, StateKey: sk(key), Sender: owner, Content: json.RawMessage(content)}
	}
	if _, err := rooms.CreateRoom(ctx, v, id, state(roomdag.TypeCreate, "", `{"room_version":"11"}`), []roomdag.ProtoEvent{
		state(roomdag.TypeMember, string(owner), `{"membership":"join","displayname":"Owner"}`),
		state(roomdag.TypePowerLevels, "", `{"users":{"@owner:test.local":100},"users_default":0,"events":{"m.room.name":50,"m.room.power_levels":100},"events_default":0,"state_default":50,"ban":50,"kick":50,"redact":50,"invite":0}`),
		state(roomdag.TypeJoinRules, "", `{"join_rule":"public"}`),
		state("m.room.history_visibility", "", `{"history_visibility":"shared"}`),
		state(roomdag.TypeName, "", `{"name":"Project planning"}`),
		state(roomdag.TypeTopic, "", `{"topic":"Where the team plans the next release"}`),
	}); err != nil {
		return err
	}
	for i := 1; i < members; i++ {
		u := roomdag.UserID(fmt.Sprintf("@member%d:test.local", i))
		if _, _, err := rooms.Append(ctx, id, roomdag.ProtoEvent{Type: roomdag.TypeMember, StateKey: sk(string(u)), Sender: u,
			Content: json.RawMessage(fmt.Sprintf(`{"membership":"join","displayname":"Member %d"}`, i))}); err != nil {
			return err
		}
	}
	return nil
}
