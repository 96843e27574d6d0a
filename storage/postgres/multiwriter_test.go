package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage/sqlstore"
	"github.com/persistentchat/homeserver/storage/storagetest"
)

// process is one homeserver process's share of a database: its store
// and its write path.
type process struct {
	db    *sqlstore.DB
	rooms *roomdag.Rooms
}

func openProcesses(t testing.TB, dsn string, n int) []process {
	t.Helper()
	ps := make([]process, n)
	for i := range ps {
		db, err := Open(Options{DSN: dsn, MinConns: 1, MaxConns: 4}, discard())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		ps[i] = process{db: db, rooms: storagetest.NewRooms(t, db)}
	}
	return ps
}

// readStream reads the whole committed event stream through db.
func readStream(t *testing.T, db *sqlstore.DB) []*roomdag.StoredEvent {
	t.Helper()
	var out []*roomdag.StoredEvent
	for after := roomdag.StreamPos(0); ; {
		evs, err := db.StreamEvents(context.Background(), after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			return out
		}
		for _, ev := range evs {
			out = append(out, ev.StoredEvent)
		}
		after = evs[len(evs)-1].Pos
	}
}

// Three processes on one database write to one shared room and to a room
// each at once, messages and state events, while a reader on each follows
// the event stream. No reader may see a position appear below one it has
// already read past (the out-of-order commit between processes: N+1
// visible before N), no write may be lost or duplicated, and the shared
// room's DAG never forks: every event's one prev_event is the room's
// event before it in stream order. Room IDs and room NIDs made by one
// process are found by the others, and state snapshot IDs allocated by
// different processes never collide (a collision fails the write).
func TestSeveralProcessesWriteOneDatabase(t *testing.T) {
	ps := openProcesses(t, testDSN(t), 3)
	ctx := context.Background()
	shared := roomdag.RoomID("!shared:test.local")
	owner := storagetest.CreateRoom(t, ps[0].rooms, shared)
	own := make([]roomdag.RoomID, len(ps))
	for i, p := range ps {
		own[i] = roomdag.RoomID(fmt.Sprintf("!own%d:test.local", i))
		storagetest.CreateRoom(t, p.rooms, own[i])
	}

	const (
		sharedWriters = 3  // per process
		ownWriters    = 1  // per process
		perWriter     = 40 // events each
	)
	var readers sync.WaitGroup
	stop := make(chan struct{})
	type readerResult struct {
		seen map[roomdag.StreamPos]bool
		hi   roomdag.StreamPos
		err  error
	}
	results := make([]readerResult, len(ps))
	for i, p := range ps {
		readers.Add(1)
		go func() {
			defer readers.Done()
			res := readerResult{seen: map[roomdag.StreamPos]bool{}}
			defer func() { results[i] = res }()
			for {
				select {
				case <-stop:
					return
				default:
				}
				evs, err := p.db.StreamEvents(ctx, res.hi, 50)
				if err != nil {
					res.err = err
					return
				}
				for _, ev := range evs {
					if ev.Pos <= res.hi {
						res.err = fmt.Errorf("read position %d after %d", ev.Pos, res.hi)
						return
					}
					res.seen[ev.Pos] = true
					res.hi = ev.Pos
				}
			}
		}()
	}

	type sent struct {
		id   roomdag.EventID
		room roomdag.RoomID
		body string
	}
	var (
		mu      sync.Mutex
		written []sent
		errs    []error
	)
	var writers sync.WaitGroup
	write := func(p process, room roomdag.RoomID, name string) {
		defer writers.Done()
		for k := range perWriter {
			body := fmt.Sprintf("%s-%d", name, k)
			pe := roomdag.ProtoEvent{Type: roomdag.TypeMessage, Sender: owner,
				Content: json.RawMessage(fmt.Sprintf(`{"msgtype":"m.text","body":%q}`, body))}
			if k%10 == 9 { // a state event now and then: a new snapshot ID
				pe = roomdag.ProtoEvent{Type: "m.room.topic", StateKey: new(string), Sender: owner,
					Content: json.RawMessage(fmt.Sprintf(`{"topic":%q}`, body))}
			}
			ev, _, err := p.rooms.Append(ctx, room, pe)
			mu.Lock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", body, err))
			} else {
				written = append(written, sent{ev.ID(), room, body})
			}
			mu.Unlock()
		}
	}
	start := time.Now()
	for i, p := range ps {
		for w := range sharedWriters {
			writers.Add(1)
			go write(p, shared, fmt.Sprintf("p%d-shared%d", i, w))
		}
		for w := range ownWriters {
			writers.Add(1)
			go write(p, own[(i+w)%len(own)], fmt.Sprintf("p%d-own%d", i, w))
		}
	}
	writers.Wait()
	close(stop)
	readers.Wait()
	t.Logf("%d writes in %v", len(written), time.Since(start))

	for _, err := range errs {
		t.Errorf("write failed: %v", err)
	}
	want := len(ps) * (sharedWriters + ownWriters) * perWriter
	if len(written) != want && len(errs) == 0 {
		t.Errorf("%d writes succeeded, want %d", len(written), want)
	}

	stream := readStream(t, ps[1].db)
	// Nothing appeared below a position a reader had read past.
	for i, r := range results {
		if r.err != nil {
			t.Errorf("reader %d: %v", i, r.err)
			continue
		}
		late := 0
		for _, ev := range stream {
			if ev.Pos <= r.hi && !r.seen[ev.Pos] {
				if late++; late <= 5 {
					t.Errorf("reader %d read up to %d but never saw position %d: it was not visible when a higher one was", i, r.hi, ev.Pos)
				}
			}
		}
		t.Logf("reader %d followed the stream to %d (%d positions)", i, r.hi, len(r.seen))
	}

	// Every acknowledged write is stored exactly once.
	byID := map[roomdag.EventID]int{}
	for _, ev := range stream {
		byID[ev.ID()]++
	}
	for _, s := range written {
		if byID[s.id] != 1 {
			t.Errorf("%s (%s) stored %d times, want once", s.body, s.id, byID[s.id])
		}
	}

	// Every room is one chain in stream order: no fork.
	last := map[roomdag.RoomID]*roomdag.StoredEvent{}
	perRoom := map[roomdag.RoomID]int{}
	for _, ev := range stream {
		room := ev.RoomID()
		perRoom[room]++
		prev := ev.PrevEvents()
		if before := last[room]; before != nil {
			if len(prev) != 1 || prev[0] != before.ID() {
				t.Errorf("room %s: %s at %d has prev_events %v, want [%s] (at %d)", room, ev.ID(), ev.Pos, prev, before.ID(), before.Pos)
			}
			if ev.Depth() != before.Depth()+1 {
				t.Errorf("room %s: depth %d after %d", room, ev.Depth(), before.Depth())
			}
		}
		last[room] = ev
	}
	for _, room := range append([]roomdag.RoomID{shared}, own...) {
		st, err := ps[2].db.LoadRoom(ctx, room)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Extremities) != 1 || st.Extremities[0] != last[room].ID() {
			t.Errorf("room %s: extremities %v, want [%s]", room, st.Extremities, last[room].ID())
		}
	}
	t.Logf("events per room: %v", perRoom)
}

// A process reading events of a room another process created learns the
// room's version from the rooms table. It must not do so while it holds
// the connection its event query runs on: with every read connection held
// by a reader waiting for another, the process stops for good (it did:
// the room-upgrade test across processes hung with its three read
// connections held by two stream readers and a named lock, each waiting).
// The reading process here has one read connection, so one nested
// acquisition is enough to hang.
func TestReadsOfAnotherProcessesRoomHoldOneConnection(t *testing.T) {
	dsn := testDSN(t)
	a := openProcesses(t, dsn, 1)[0]
	room := roomdag.RoomID("!created-elsewhere:test.local")
	storagetest.CreateRoom(t, a.rooms, room)
	ctx := context.Background()
	evs, err := a.db.StreamEvents(ctx, 0, 100)
	if err != nil || len(evs) == 0 {
		t.Fatalf("stream on the creating process: %d events, %v", len(evs), err)
	}
	ids := make([]roomdag.EventID, len(evs))
	for i, ev := range evs {
		ids[i] = ev.ID()
	}
	for _, tc := range []struct {
		name string
		read func(b *sqlstore.DB) (int, error)
	}{
		{"StreamEvents", func(b *sqlstore.DB) (int, error) {
			got, err := b.StreamEvents(ctx, 0, 100)
			return len(got), err
		}},
		{"Events", func(b *sqlstore.DB) (int, error) {
			got, err := b.Events(ctx, ids)
			return len(got), err
		}},
		{"DAGEvents", func(b *sqlstore.DB) (int, error) {
			got, err := b.DAGEvents(ctx, ids)
			return len(got), err
		}},
		{"LoadRoom", func(b *sqlstore.DB) (int, error) {
			st, err := b.LoadRoom(ctx, room)
			if err != nil {
				return 0, err
			}
			if len(st.State) == 0 {
				return 0, fmt.Errorf("no state")
			}
			return len(evs), nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A fresh process each time: what one read puts in the
			// room index and the event cache would hide the next's.
			b, err := Open(Options{DSN: dsn, MinConns: 1, MaxConns: 2}, discard())
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			type result struct {
				n   int
				err error
			}
			done := make(chan result, 1)
			go func() {
				n, err := tc.read(b)
				done <- result{n, err}
			}()
			select {
			case r := <-done:
				if r.err != nil || r.n != len(evs) {
					t.Fatalf("%d of %d events, %v", r.n, len(evs), r.err)
				}
			case <-time.After(time.Minute):
				t.Fatal("no answer in a minute: the read waits for a second connection while holding the only one")
			}
		})
	}
}

// Exclusive's lock is held by a connection that is not the read pool's:
// what runs under it reads, and waits for writes whose writer may need a
// read connection (snapshot IDs), so a lock holding one of them could
// stop the process. Here the process has one read connection, which the
// reads under the lock need.
func TestExclusiveHoldsNoReadConnection(t *testing.T) {
	b, err := Open(Options{DSN: testDSN(t), MinConns: 1, MaxConns: 2}, discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	rooms := storagetest.NewRooms(t, b)
	done := make(chan error, 1)
	go func() {
		done <- b.Exclusive(context.Background(), "a room's creation", func() error {
			storagetest.CreateRoom(t, rooms, "!under-lock:test.local")
			evs, err := b.StreamEvents(context.Background(), 0, 100)
			if err == nil && len(evs) == 0 {
				err = fmt.Errorf("no events read under the lock")
			}
			return err
		})
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("no answer in a minute: the reads under the lock wait for the connection that holds it")
	}
}
