package roomdag

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
)

// createTestRoom makes a v11 room owned by @owner.
func createTestRoom(t testing.TB, rooms *Rooms, id RoomID) UserID {
	t.Helper()
	owner := UserID("@owner:test.local")
	v, _ := LookupRoomVersion("11")
	if _, err := rooms.CreateRoom(context.Background(), v, id,
		ProtoEvent{Type: TypeCreate, StateKey: strp(""), Sender: owner, Content: json.RawMessage(`{"room_version":"11"}`)},
		[]ProtoEvent{{Type: TypeMember, StateKey: strp(string(owner)), Sender: owner, Content: json.RawMessage(`{"membership":"join"}`)}}); err != nil {
		t.Fatal(err)
	}
	return owner
}

func topicEvent(sender UserID, topic string) ProtoEvent {
	c, _ := json.Marshal(map[string]string{"topic": topic})
	return ProtoEvent{Type: TypeTopic, StateKey: strp(""), Sender: sender, Content: c}
}

func message(sender UserID, body string) ProtoEvent {
	c, _ := json.Marshal(map[string]string{"body": body})
	return ProtoEvent{Type: TypeMessage, Sender: sender, Content: c}
}

// topicOf returns the room's topic in st, "" if none.
func topicOf(st *RoomState) string {
	ev := st.State.Get(TypeTopic, "")
	if ev == nil {
		return ""
	}
	var c struct{ Topic string }
	_ = json.Unmarshal(ev.Content(), &c)
	return c.Topic
}

// checkDurable fails unless st is exactly what the store held at
// st.LastPos: its newest event and its topic event are committed, the
// newest at st.LastPos.
func checkDurable(store *memStore, st *RoomState) error {
	if len(st.Extremities) != 1 {
		return fmt.Errorf("extremities %v", st.Extremities)
	}
	if pos := store.posOf(st.Extremities[0]); pos == 0 || pos != st.LastPos {
		return fmt.Errorf("state after %s at position %d, which the store has at %d (0: not committed)", st.Extremities[0], st.LastPos, pos)
	}
	if ev := st.State.Get(TypeTopic, ""); ev != nil && store.posOf(ev.ID()) == 0 {
		return fmt.Errorf("topic event %s is not committed", ev.ID())
	}
	return nil
}

type appendResult struct {
	ev  *Event
	pos StreamPos
	err error
}

// nextWrite waits for the next gated write, made by the append whose
// result pending will carry; if that append returns instead, the test fails
// with what it returned (rather than waiting for ever).
func nextWrite(t *testing.T, store *memStore, pending <-chan appendResult) *Persist {
	t.Helper()
	select {
	case p := <-store.queued:
		return p
	case r := <-pending:
		t.Fatalf("append returned %v, %v instead of queueing a write", r.ev, r.err)
		return nil
	}
}

func appendAsync(rooms *Rooms, id RoomID, p ProtoEvent) <-chan appendResult {
	ch := make(chan appendResult, 1)
	go func() {
		ev, pos, err := rooms.Append(context.Background(), id, p)
		ch <- appendResult{ev, pos, err}
	}()
	return ch
}

// Writes pipeline (the next event is built on one not yet committed), but
// readers see only durable state: never a queued event's effects, never
// those of an event that failed to persist, and a write's effects once it
// has returned.
func TestReadersSeeOnlyDurableState(t *testing.T) {
	rooms, store := newTestRooms(t)
	ctx := context.Background()
	id := RoomID("!durable:test.local")
	owner := createTestRoom(t, rooms, id)
	before, err := rooms.State(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	store.mu.Lock()
	store.gated = true
	store.mu.Unlock()

	// A reader races the writes throughout.
	stop, readerDone := make(chan struct{}), make(chan struct{})
	var readerErr error
	seen := map[string]bool{}
	go func() {
		defer close(readerDone)
		last := StreamPos(0)
		for {
			select {
			case <-stop:
				return
			default:
			}
			st, err := rooms.State(ctx, id)
			if err == nil {
				err = checkDurable(store, st)
			}
			if err == nil && st.LastPos < last {
				err = fmt.Errorf("state went back from position %d to %d", last, st.LastPos)
			}
			if err != nil {
				readerErr = err
				return
			}
			last = st.LastPos
			seen[topicOf(st)] = true
			runtime.Gosched()
		}
	}()
	unchanged := func(when string) {
		t.Helper()
		st, err := rooms.State(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if st.LastPos != before.LastPos || topicOf(st) != "" || st.Extremities[0] != before.Extremities[0] {
			t.Errorf("%s: State shows position %d topic %q, want the durable state at %d", when, st.LastPos, topicOf(st), before.LastPos)
		}
	}

	first := appendAsync(rooms, id, topicEvent(owner, "one"))
	p1 := nextWrite(t, store, first)
	second := appendAsync(rooms, id, topicEvent(owner, "two"))
	p2 := nextWrite(t, store, second)
	if got := p2.Event.PrevEvents(); len(got) != 1 || got[0] != p1.Event.ID() {
		t.Fatalf("second event's prev_events = %v, want the queued first %s: writes no longer pipeline", got, p1.Event.ID())
	}
	unchanged("two writes queued")

	// The first fails to persist; the second, built on it, is refused as
	// stale and rebuilt on the stored state.
	boom := errors.New("disk full")
	store.commitNext(t, boom)
	if r := <-first; !errors.Is(r.err, boom) {
		t.Fatalf("failed write returned %v, want %v", r.err, boom)
	}
	unchanged("first write failed")
	if err := store.commitNext(t, nil); !errors.Is(err, ErrStale) {
		t.Fatalf("write built on the failed one: %v, want ErrStale", err)
	}
	p3 := nextWrite(t, store, second)
	if got := p3.Event.PrevEvents(); len(got) != 1 || got[0] != before.Extremities[0] {
		t.Fatalf("rebuilt event's prev_events = %v, want the stored %v", got, before.Extremities)
	}
	unchanged("rebuilt write queued")
	if err := store.commitNext(t, nil); err != nil {
		t.Fatal(err)
	}
	r := <-second
	if r.err != nil || r.ev.ID() != p3.Event.ID() {
		t.Fatalf("second write returned %v, %v; want the rebuilt event", r.ev, r.err)
	}
	// Once the write has returned, every reader sees it.
	st, err := rooms.State(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if topicOf(st) != "two" || st.LastPos != r.pos {
		t.Errorf("after the write returned: topic %q at %d, want %q at %d", topicOf(st), st.LastPos, "two", r.pos)
	}
	close(stop)
	<-readerDone
	if readerErr != nil {
		t.Fatal(readerErr)
	}
	if seen["one"] {
		t.Error("a reader saw the topic of the write that failed")
	}
}

// With a cache far smaller than the rooms in use, concurrent writes and
// reads across them all get correct answers; rooms are evicted and
// reloaded, the cache stays bounded, and no room's DAG forks.
func TestBoundedRoomCache(t *testing.T) {
	const size, nRooms, workers, ops = 3, 20, 8, 60
	rooms, store := newTestRoomsSize(t, size)
	ctx := context.Background()
	ids := make([]RoomID, nRooms)
	var owner UserID
	for i := range ids {
		ids[i] = RoomID(fmt.Sprintf("!r%d:test.local", i))
		owner = createTestRoom(t, rooms, ids[i])
	}
	if n := rooms.CachedRooms(); n > size {
		t.Fatalf("%d rooms cached, bound %d", n, size)
	}
	type written struct {
		pos   StreamPos
		topic string
	}
	var mu sync.Mutex
	newest := map[RoomID]written{}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(w), 1))
			for i := range ops {
				id := ids[rnd.IntN(nRooms)]
				if rnd.IntN(2) == 0 {
					topic := fmt.Sprintf("%d-%d", w, i)
					_, pos, err := rooms.Append(ctx, id, topicEvent(owner, topic))
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					if pos > newest[id].pos {
						newest[id] = written{pos, topic}
					}
					mu.Unlock()
				} else {
					st, err := rooms.State(ctx, id)
					if err == nil {
						err = checkDurable(store, st)
					}
					if err != nil {
						t.Errorf("%s: %v", id, err)
						return
					}
				}
				// Each worker pins at most one room at a time.
				if n := rooms.CachedRooms(); n > size+workers {
					t.Errorf("%d rooms cached, bound %d plus %d pinned", n, size, workers)
				}
			}
		}()
	}
	wg.Wait()
	if n := rooms.CachedRooms(); n > size {
		t.Errorf("%d rooms cached once idle, bound %d", n, size)
	}
	for _, id := range ids {
		st, err := rooms.State(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		store.mu.Lock()
		stored := store.rooms[id]
		store.mu.Unlock()
		if st.LastPos != stored.LastPos || topicOf(st) != topicOf(stored) || topicOf(st) != newest[id].topic {
			t.Errorf("%s: State at %d topic %q; stored at %d topic %q; newest write %q", id, st.LastPos, topicOf(st),
				stored.LastPos, topicOf(stored), newest[id].topic)
		}
	}
	// Every room is one chain: no write was built on a stale copy.
	last := map[RoomID]EventID{}
	for _, p := range store.events {
		id := p.Event.RoomID()
		if prev := p.Event.PrevEvents(); last[id] != "" && (len(prev) != 1 || prev[0] != last[id]) {
			t.Fatalf("%s: %s does not follow %s", id, p.Event.ID(), last[id])
		}
		last[id] = p.Event.ID()
	}
	if store.loads <= nRooms {
		t.Errorf("%d loads for %d rooms: nothing was evicted and reloaded", store.loads, nRooms)
	}
	if n := store.rejected[ErrRoomChanged]; n != 0 {
		t.Errorf("%d writes were built on a stale state", n)
	}
}

// A room with writes in flight stays in memory however small the cache,
// so the next write is built on its head, not on a reload of the stored
// state that would fork the room.
func TestPinnedRoomIsNotEvicted(t *testing.T) {
	rooms, store := newTestRoomsSize(t, 1)
	ctx := context.Background()
	x, y := RoomID("!x:test.local"), RoomID("!y:test.local")
	owner := createTestRoom(t, rooms, x)
	createTestRoom(t, rooms, y)
	store.mu.Lock()
	store.gated = true
	store.mu.Unlock()
	first := appendAsync(rooms, x, message(owner, "1"))
	p1 := nextWrite(t, store, first)
	if _, err := rooms.State(ctx, y); err != nil {
		t.Fatal(err)
	}
	if rooms.cache.peek(x) == nil {
		t.Fatal("a room with a write in flight was evicted")
	}
	second := appendAsync(rooms, x, message(owner, "2"))
	p2 := nextWrite(t, store, second)
	if got := p2.Event.PrevEvents(); len(got) != 1 || got[0] != p1.Event.ID() {
		t.Fatalf("second write built on %v, want the queued %s", got, p1.Event.ID())
	}
	for range 2 {
		if err := store.commitNext(t, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, ch := range []<-chan appendResult{first, second} {
		if r := <-ch; r.err != nil {
			t.Fatal(r.err)
		}
	}
	if n := rooms.CachedRooms(); n != 1 {
		t.Errorf("%d rooms cached once idle, want 1", n)
	}
}

// Concurrent loads of one room, by readers and a writer, share one
// LoadRoom.
func TestConcurrentLoadsAreShared(t *testing.T) {
	store := newMemStore()
	id := RoomID("!shared:test.local")
	owner := createTestRoom(t, newRoomsOn(t, store, 0), id)
	rooms := newRoomsOn(t, store, 0) // nothing cached
	gate := make(chan struct{})
	store.mu.Lock()
	store.loadGate, store.loads = gate, 0
	store.mu.Unlock()
	const readers = 10
	errs := make(chan error, readers+1)
	for range readers {
		go func() {
			st, err := rooms.State(context.Background(), id)
			if err == nil {
				err = checkDurable(store, st)
			}
			errs <- err
		}()
	}
	written := appendAsync(rooms, id, message(owner, "hi"))
	// Release the load once every caller holds the entry: the writer and
	// the readers all wait on the one load.
	for {
		r := rooms.cache.peek(id)
		sh := rooms.cache.shard(id)
		sh.mu.Lock()
		pins := 0
		if r != nil {
			pins = r.pins
		}
		sh.mu.Unlock()
		if pins == readers+1 {
			break
		}
		runtime.Gosched()
	}
	close(gate)
	for range readers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if r := <-written; r.err != nil {
		t.Fatal(r.err)
	}
	if store.loads != 1 {
		t.Errorf("%d loads of one room, want 1", store.loads)
	}
}

// Another process (a second Rooms on the same store) writes to a room this
// one has cached: this one's next write is refused by the store as built
// on a stale state, and rebuilt on the reloaded room without the caller
// noticing. Invalidate makes readers see the other's writes.
func TestAnotherWriterMovedTheRoom(t *testing.T) {
	store := newMemStore()
	a, b := newRoomsOn(t, store, 0), newRoomsOn(t, store, 0)
	ctx := context.Background()
	id := RoomID("!moved:test.local")
	owner := createTestRoom(t, a, id)
	fromB, _, err := b.Append(ctx, id, topicEvent(owner, "from b"))
	if err != nil {
		t.Fatal(err)
	}
	ev, pos, err := a.Append(ctx, id, message(owner, "from a"))
	if err != nil {
		t.Fatalf("append after another writer: %v", err)
	}
	if got := ev.PrevEvents(); len(got) != 1 || got[0] != fromB.ID() {
		t.Errorf("rebuilt event's prev_events = %v, want the other writer's %s", got, fromB.ID())
	}
	if n := store.rejected[ErrRoomChanged]; n != 1 {
		t.Errorf("%d writes refused as built on a changed room, want 1", n)
	}
	st, _ := a.State(ctx, id)
	if topicOf(st) != "from b" || st.LastPos != pos {
		t.Errorf("after the rebuilt write: topic %q at %d, want %q at %d", topicOf(st), st.LastPos, "from b", pos)
	}

	// b writes again; a reads its cached state until told to drop it.
	if _, _, err := b.Append(ctx, id, topicEvent(owner, "again")); err != nil {
		t.Fatal(err)
	}
	if st, _ := a.State(ctx, id); topicOf(st) != "from b" {
		t.Fatalf("topic %q before Invalidate, want the cached %q", topicOf(st), "from b")
	}
	a.Invalidate(id)
	if st, _ := a.State(ctx, id); topicOf(st) != "again" {
		t.Errorf("topic %q after Invalidate, want %q", topicOf(st), "again")
	}
}

// Invalidate with writes in flight: the queued write still commits and is
// seen; a write built on the reloaded (older) state is refused by the store
// and rebuilt on the queued one.
func TestInvalidateWithWritesInFlight(t *testing.T) {
	rooms, store := newTestRooms(t)
	ctx := context.Background()
	id := RoomID("!inflight:test.local")
	owner := createTestRoom(t, rooms, id)
	before, _ := rooms.State(ctx, id)
	store.mu.Lock()
	store.gated = true
	store.mu.Unlock()
	first := appendAsync(rooms, id, topicEvent(owner, "one"))
	p1 := nextWrite(t, store, first)
	rooms.Invalidate(id)
	second := appendAsync(rooms, id, topicEvent(owner, "two"))
	p2 := nextWrite(t, store, second)
	if got := p2.Event.PrevEvents(); got[0] != before.Extremities[0] {
		t.Fatalf("write after Invalidate built on %v, want the stored %v", got, before.Extremities)
	}
	if err := store.commitNext(t, nil); err != nil {
		t.Fatal(err)
	}
	if r := <-first; r.err != nil {
		t.Fatal(r.err)
	}
	if err := store.commitNext(t, nil); !errors.Is(err, ErrRoomChanged) {
		t.Fatalf("write built on the state before the queued one: %v, want ErrRoomChanged", err)
	}
	p3 := nextWrite(t, store, second)
	if got := p3.Event.PrevEvents(); got[0] != p1.Event.ID() {
		t.Fatalf("rebuilt write built on %v, want %s", got, p1.Event.ID())
	}
	if err := store.commitNext(t, nil); err != nil {
		t.Fatal(err)
	}
	r := <-second
	if r.err != nil {
		t.Fatal(r.err)
	}
	if st, _ := rooms.State(ctx, id); topicOf(st) != "two" || st.LastPos != r.pos {
		t.Errorf("topic %q at %d, want %q at %d", topicOf(st), st.LastPos, "two", r.pos)
	}
}

// A room that changes underneath every optimistic attempt (another
// process keeps writing to it): after staleRetries rebuilds on reloaded
// states, Append builds the event under the store's write lock, where
// the room cannot change, and stores it on the newest state, never on a
// stale one.
func TestRoomThatKeepsChangingIsWrittenUnderTheLock(t *testing.T) {
	store := newMemStore()
	a, b := newRoomsOn(t, store, 0), newRoomsOn(t, store, 0)
	ctx := context.Background()
	id := RoomID("!busy:test.local")
	owner := createTestRoom(t, a, id)
	n := 0
	store.beforeWrite = func(p *Persist) {
		if p.Event.Type() == TypeMessage { // b's topics pass straight through
			n++
			if _, _, err := b.Append(ctx, id, topicEvent(owner, fmt.Sprint(n))); err != nil {
				t.Error(err)
			}
		}
	}
	ev, pos, err := a.Append(ctx, id, message(owner, "at last"))
	if err != nil {
		t.Fatal(err)
	}
	if got := store.rejected[ErrRoomChanged]; got != staleRetries {
		t.Errorf("%d optimistic attempts lost, want %d", got, staleRetries)
	}
	if store.built != 1 {
		t.Errorf("%d locked attempts, want 1", store.built)
	}
	var before *Persist
	for _, p := range store.events {
		if p.Event.ID() == ev.ID() {
			break
		}
		before = p
	}
	if prev := ev.PrevEvents(); len(prev) != 1 || before == nil || prev[0] != before.Event.ID() {
		t.Errorf("stored on %v, want on the newest event %s", prev, before.Event.ID())
	}
	if st, _ := a.State(ctx, id); st.LastPos != pos || topicOf(st) != fmt.Sprint(n) {
		t.Errorf("durable state at %d with topic %q, want %d and %q", st.LastPos, topicOf(st), pos, fmt.Sprint(n))
	}
	// The head is the stored state: the next write needs no reload.
	loads := store.loads
	store.beforeWrite = nil
	if _, _, err := a.Append(ctx, id, message(owner, "next")); err != nil {
		t.Fatal(err)
	}
	if store.loads != loads {
		t.Errorf("%d reloads after the locked write, want 0", store.loads-loads)
	}
}

// The room used least recently leaves first; a read counts as a use.
func TestRoomCacheEvictsLeastRecentlyUsed(t *testing.T) {
	store := newMemStore()
	ids := []RoomID{"!a:test.local", "!b:test.local", "!c:test.local"}
	creator := newRoomsOn(t, store, 0)
	for _, id := range ids {
		createTestRoom(t, creator, id)
	}
	rooms := newRoomsOn(t, store, 2)
	ctx := context.Background()
	for _, id := range []RoomID{ids[0], ids[1], ids[0], ids[2]} {
		if _, err := rooms.State(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	sh := rooms.cache.shard(ids[0]) // one shard: the cache is tiny
	sh.mu.Lock()
	_, a := sh.rooms[ids[0]]
	_, b := sh.rooms[ids[1]]
	_, c := sh.rooms[ids[2]]
	sh.mu.Unlock()
	if !a || b || !c {
		t.Errorf("cached a=%v b=%v c=%v; want a and c (b was used least recently)", a, b, c)
	}
}
