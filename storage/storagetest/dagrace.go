package storagetest

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"maps"
	gosync "sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage/sqlstore"
)

// lateStore is db as a write path sees it that read the events before
// another stored them: DAGEvents hides the events of hide until the write
// path queues one of them itself.
type lateStore struct {
	*sqlstore.DB
	mu   gosync.Mutex
	hide map[roomdag.EventID]bool
}

func (s *lateStore) DAGEvents(ctx context.Context, ids []roomdag.EventID) (map[roomdag.EventID]*roomdag.DAGEvent, error) {
	m, err := s.DB.DAGEvents(ctx, ids)
	s.mu.Lock()
	defer s.mu.Unlock()
	maps.DeleteFunc(m, func(id roomdag.EventID, _ *roomdag.DAGEvent) bool { return s.hide[id] })
	return m, err
}

func (s *lateStore) EnqueueEvent(p *roomdag.Persist) <-chan error {
	s.mu.Lock()
	delete(s.hide, p.Event.ID())
	s.mu.Unlock()
	return s.DB.EnqueueEvent(p)
}

// testDAGStoredConcurrently: an event another write path (another
// process on the database) stored after this one read it as unknown is
// known to Receive and ReceiveOutliers, not a storage conflict, live or
// outlier.
func testDAGStoredConcurrently(t *testing.T, open Opener) {
	ctx := context.Background()
	db := open(t)
	rooms := NewRooms(t, db)
	room := roomdag.RoomID("!race:test.local")
	CreateRoom(t, rooms, room)
	start, err := rooms.State(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	r := newRemoteServer(t, room, start)
	join := r.build("join", "start", roomdag.TypeMember, sk(string(r.bob)), `{"membership":"join"}`, "start")
	one := r.build("one", "join", roomdag.TypeMessage, nil, `{"body":"one"}`, "join")
	two := r.build("name", "join", roomdag.TypeMessage, nil, `{"body":"two"}`, "join")

	late := &lateStore{DB: db, hide: map[roomdag.EventID]bool{join.ID(): true, one.ID(): true, two.ID(): true}}
	key, err := roomdag.GenerateSigningKey("test.local", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other := roomdag.NewRooms(late, key, clock.NewFake(time.Unix(1_700_000_000, 0)), rand.Reader, 0)

	// Live: a /send PDU and a send_join taking the same join.
	first := receive(t, rooms, r, join, roomdag.KindLive, roomdag.StatusTimeline)
	res, err := other.Receive(ctx, join, roomdag.ReceiveOptions{Kind: roomdag.KindLive, Verifier: r.keys})
	if err != nil {
		t.Fatalf("Receive of a join stored meanwhile: %v", err)
	}
	if res.Status != roomdag.StatusTimeline || res.Event.ID() != join.ID() {
		t.Errorf("Receive of a join stored meanwhile: %s %s", res.Status, res.Event.ID())
	}
	if res.Pos != 0 && res.Pos != first.Pos {
		t.Errorf("stored again at %d (first at %d)", res.Pos, first.Pos)
	}

	// Outliers: one stored by Receive, one by ReceiveOutliers, meanwhile.
	receive(t, rooms, r, one, roomdag.KindOutlier, roomdag.StatusOutlier)
	if _, err := rooms.ReceiveOutliers(ctx, []*roomdag.Event{two}, r.keys); err != nil {
		t.Fatal(err)
	}
	out, err := other.ReceiveOutliers(ctx, []*roomdag.Event{one, two}, r.keys)
	if err != nil {
		t.Fatalf("ReceiveOutliers of events stored meanwhile: %v", err)
	}
	for i, o := range out {
		if o.Err != nil || o.Result == nil || o.Result.Status != roomdag.StatusOutlier {
			t.Errorf("outlier %d: %+v", i, o)
		}
	}
	got, err := db.DAGEvents(ctx, []roomdag.EventID{join.ID(), one.ID(), two.ID()})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Errorf("stored: %d of 3", len(got))
	}
	// The room goes on: the next event is written on top of the join.
	if _, _, err := other.Append(ctx, room, roomdag.ProtoEvent{Type: roomdag.TypeMessage, Sender: "@owner:test.local",
		Content: json.RawMessage(`{"body":"after"}`)}); err != nil {
		t.Fatalf("Append after: %v", err)
	}
}

// testDAGEventMovedBetweenReads: an outlier taken into the timeline while
// DAGEvents reads (a backfill of the events a concurrent send_join answer
// holds as outliers) is found, not reported unknown: Receive would call
// it a missing auth event.
func testDAGEventMovedBetweenReads(t *testing.T, open Opener) {
	ctx := context.Background()
	db := open(t)
	rooms := NewRooms(t, db)
	room := roomdag.RoomID("!moved:test.local")
	CreateRoom(t, rooms, room)
	start, err := rooms.State(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	r := newRemoteServer(t, room, start)
	join := r.build("join", "start", roomdag.TypeMember, sk(string(r.bob)), `{"membership":"join"}`, "start")
	receive(t, rooms, r, join, roomdag.KindOutlier, roomdag.StatusOutlier)

	var armed atomic.Bool
	db.BetweenDAGReads(func() {
		if armed.CompareAndSwap(true, false) {
			receive(t, rooms, r, join, roomdag.KindLive, roomdag.StatusTimeline)
		}
	})
	armed.Store(true)
	got, err := db.DAGEvents(ctx, []roomdag.EventID{join.ID()})
	if err != nil {
		t.Fatal(err)
	}
	if armed.Load() {
		t.Fatal("DAGEvents did not read dag_events")
	}
	if d := got[join.ID()]; d == nil || d.Status != roomdag.StatusTimeline {
		t.Errorf("an event moved to the timeline between DAGEvents' reads: %+v, want it in the timeline", d)
	}
}
