package roomdag

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
)

// memStore is an in-memory Store for testing the write path's own logic;
// the SQLite store has its own tests. It keeps the store's contract: writes
// commit in queue order, an event of a failed generation fails with
// ErrStale, one built on extremities that are no longer the room's fails
// with ErrRoomChanged. Several Rooms may share one memStore, as several
// processes share one database.
type memStore struct {
	// writeMu is the store's write lock: every write is applied, and
	// every EnqueueBuilt event built, holding it.
	writeMu   sync.Mutex
	mu        sync.Mutex
	rooms     map[RoomID]*RoomState
	events    []*Persist // committed, in commit order
	snap      int64
	failedGen map[RoomID]uint64
	loads     int
	built     int           // EnqueueBuilt calls
	rejected  map[error]int // writes failed, by error

	// gated holds queued writes in queue until the test commits them
	// with commitNext; queued hears of each.
	gated  bool
	queue  []*pendingWrite
	queued chan *Persist
	// loadGate, if set, holds every LoadRoom until it is closed.
	loadGate chan struct{}
	// beforeWrite, if set, runs before each write is applied, without mu.
	beforeWrite func(p *Persist)
	// pos is the position of every event applied, set before its
	// Committed hook runs: a reader that sees an event's effects and then
	// finds it has none has seen them before they were durable.
	pos map[EventID]StreamPos
	// The DAG (receive_test.go): every stored event by ID with its
	// status, snapshots by ID, and which events have children.
	dag       map[EventID]*DAGEvent
	snapshots map[int64]map[StateKey]EventID
	children  map[EventID]bool
	backfill  StreamPos
}

type pendingWrite struct {
	p    *Persist
	done chan error
}

func newMemStore() *memStore {
	return &memStore{rooms: map[RoomID]*RoomState{}, failedGen: map[RoomID]uint64{}, rejected: map[error]int{},
		queued: make(chan *Persist, 100), pos: map[EventID]StreamPos{},
		dag: map[EventID]*DAGEvent{}, snapshots: map[int64]map[StateKey]EventID{}, children: map[EventID]bool{}}
}

func (m *memStore) LoadRoom(ctx context.Context, id RoomID) (*RoomState, error) {
	m.mu.Lock()
	m.loads++
	gate := m.loadGate
	m.mu.Unlock()
	if gate != nil {
		<-gate
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if st, ok := m.rooms[id]; ok {
		return st, nil
	}
	return nil, ErrUnknownRoom
}

func (m *memStore) NewSnapshotID(context.Context) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.snap++
	return m.snap, nil
}

// EnqueueBuilt builds and applies the write under writeMu, on the room as
// stored; built counts them.
func (m *memStore) EnqueueBuilt(id RoomID, build func(*RoomState) (*Persist, error)) <-chan error {
	ch := make(chan error, 1)
	m.writeMu.Lock()
	defer m.writeMu.Unlock()
	m.mu.Lock()
	m.built++
	st := m.rooms[id]
	m.mu.Unlock()
	if st == nil {
		ch <- ErrUnknownRoom
		return ch
	}
	p, err := build(st)
	if err != nil {
		ch <- err
		return ch
	}
	ch <- m.apply(p, nil, false)
	return ch
}

func (m *memStore) EnqueueEvent(p *Persist) <-chan error {
	ch := make(chan error, 1)
	m.mu.Lock()
	if m.gated {
		m.queue = append(m.queue, &pendingWrite{p: p, done: ch})
		m.mu.Unlock()
		m.queued <- p
		return ch
	}
	m.mu.Unlock()
	ch <- m.commit(p, nil)
	return ch
}

// commitNext commits (or, with fail set, fails) the oldest gated write and
// returns its result.
func (m *memStore) commitNext(t *testing.T, fail error) error {
	t.Helper()
	m.mu.Lock()
	if len(m.queue) == 0 {
		m.mu.Unlock()
		t.Fatal("no write is queued")
	}
	w := m.queue[0]
	m.queue = m.queue[1:]
	m.mu.Unlock()
	err := m.commit(w.p, fail)
	w.done <- err
	return err
}

// commit applies one write, then runs its Committed hook.
func (m *memStore) commit(p *Persist, fail error) error {
	if m.beforeWrite != nil {
		m.beforeWrite(p)
	}
	m.writeMu.Lock()
	defer m.writeMu.Unlock()
	return m.apply(p, fail, true)
}

// apply is commit under writeMu; checkGen says whether a failed
// generation fails p (not for an event EnqueueBuilt built on the stored
// state).
func (m *memStore) apply(p *Persist, fail error, checkGen bool) error {
	m.mu.Lock()
	id := p.Event.RoomID()
	st := m.rooms[id]
	err := fail
	switch {
	case err != nil:
	case checkGen && m.failedGen[id] > p.Generation:
		err = ErrStale
	case p.NewRoom && st != nil:
		err = ErrRoomExists
	case !p.NewRoom && st == nil:
		err = ErrUnknownRoom
	case !p.NewRoom && !p.KeepExtremities && !sameEventIDs(st.Extremities, p.ExtremitiesBefore):
		err = ErrRoomChanged
	}
	if err != nil {
		m.rejected[err]++
		if m.failedGen[id] < p.Generation+1 {
			m.failedGen[id] = p.Generation + 1
		}
		m.mu.Unlock()
		return err
	}
	if p.OutOfBand {
		// Stored with a position, outside the DAG: the room (made if
		// new, with no state) does not change.
		m.events = append(m.events, p)
		pos := StreamPos(len(m.events))
		if st == nil {
			m.rooms[id] = &RoomState{Version: p.Event.Version(), State: StateMap{}}
		}
		m.dag[p.Event.ID()] = &DAGEvent{Event: p.Event, Status: StatusTimeline}
		m.pos[p.Event.ID()] = pos
		m.mu.Unlock()
		if p.Committed != nil {
			p.Committed(pos)
		}
		return nil
	}
	if p.Received {
		pos := m.applyReceived(p, st)
		m.mu.Unlock()
		if p.Committed != nil {
			p.Committed(pos)
		}
		return nil
	}
	m.recordLocal(p)
	m.events = append(m.events, p)
	pos := StreamPos(len(m.events))
	if st == nil {
		st = &RoomState{Version: p.Event.Version(), State: StateMap{}}
	}
	next := &RoomState{Version: st.Version, State: st.State, Extremities: p.Extremities, Depth: p.Event.Depth(),
		Snapshot: p.StateAfter, ChainLen: p.ChainLen, LastPos: pos}
	if st.Version.EventFormat == EventFormatV1 {
		next.ExtremityEvents = []*Event{p.Event}
	}
	if p.Event.IsState() {
		next.State = st.State.With(p.Event)
	}
	m.rooms[id] = next
	m.pos[p.Event.ID()] = pos
	m.mu.Unlock()
	if p.Committed != nil {
		p.Committed(pos)
	}
	return nil
}

// posOf returns the stream position of a committed event, 0 for any
// other.
func (m *memStore) posOf(id EventID) StreamPos {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pos[id]
}

func sameEventIDs(a, b []EventID) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

func newTestRooms(t *testing.T) (*Rooms, *memStore) {
	return newTestRoomsSize(t, 0)
}

func newTestRoomsSize(t testing.TB, cacheSize int) (*Rooms, *memStore) {
	st := newMemStore()
	return newRoomsOn(t, st, cacheSize), st
}

var testKey = sync.OnceValue(func() SigningKey {
	key, err := GenerateSigningKey("test.local", rand.Reader)
	if err != nil {
		panic(err)
	}
	return key
})

// newRoomsOn makes a write path on st: another process, when st already
// has one.
func newRoomsOn(t testing.TB, st *memStore, cacheSize int) *Rooms {
	t.Helper()
	return NewRooms(st, testKey(), clock.NewFake(time.Unix(1_700_000_000, 0)), rand.Reader, cacheSize)
}

func strp(s string) *string { return &s }

func TestWritePathChainsEvents(t *testing.T) {
	rooms, store := newTestRooms(t)
	ctx := context.Background()
	owner := UserID("@owner:test.local")
	v, _ := LookupRoomVersion("12")
	id, err := rooms.CreateRoom(ctx, v, "", ProtoEvent{Type: TypeCreate, StateKey: strp(""), Sender: owner, Content: json.RawMessage(`{"room_version":"12"}`)},
		[]ProtoEvent{{Type: TypeMember, StateKey: strp(string(owner)), Sender: owner, Content: json.RawMessage(`{"membership":"join"}`)}})
	if err != nil {
		t.Fatal(err)
	}
	create := store.events[0].Event
	if id != RoomID("!"+string(create.ID()[1:])) {
		t.Errorf("v12 room ID %s does not derive from the create event %s", id, create.ID())
	}
	var prev *Event = store.events[1].Event
	for i := 0; i < 5; i++ {
		ev, _, err := rooms.Append(ctx, id, ProtoEvent{Type: TypeMessage, Sender: owner, Content: json.RawMessage(fmt.Sprintf(`{"body":"%d"}`, i))})
		if err != nil {
			t.Fatal(err)
		}
		if len(ev.PrevEvents()) != 1 || ev.PrevEvents()[0] != prev.ID() || ev.Depth() != prev.Depth()+1 {
			t.Fatalf("event %d: prev %v depth %d, want [%s] depth %d", i, ev.PrevEvents(), ev.Depth(), prev.ID(), prev.Depth()+1)
		}
		// v12: the create event is never an auth event; the sender's
		// membership is.
		for _, a := range ev.AuthEvents() {
			if a == create.ID() {
				t.Errorf("v12 event lists the create event in auth_events")
			}
		}
		prev = ev
	}
	// A non-member is refused by the auth rules, naming the rule.
	_, _, err = rooms.Append(ctx, id, ProtoEvent{Type: TypeMessage, Sender: "@stranger:test.local", Content: json.RawMessage(`{}`)})
	if ae, ok := err.(*AuthError); !ok || ae.Rule == "" {
		t.Errorf("stranger's message: err = %v, want an AuthError with a rule", err)
	}
}

func TestUnknownRoomsDoNotGrowTheMap(t *testing.T) {
	rooms, _ := newTestRooms(t)
	ctx := context.Background()
	for i := 0; i < 100; i++ {
		if _, err := rooms.State(ctx, RoomID(fmt.Sprintf("!nope%d:x", i))); err != ErrUnknownRoom {
			t.Fatalf("State of unknown room: %v", err)
		}
	}
	if n := rooms.CachedRooms(); n != 0 {
		t.Errorf("%d entries kept for unknown rooms", n)
	}
}

// Concurrent appends to one room make one chain: every event's prev is the
// one before it in commit order.
func TestConcurrentAppendsMakeOneChain(t *testing.T) {
	rooms, store := newTestRooms(t)
	ctx := context.Background()
	owner := UserID("@owner:test.local")
	v, _ := LookupRoomVersion("11")
	id, err := rooms.CreateRoom(ctx, v, "!c:test.local", ProtoEvent{Type: TypeCreate, StateKey: strp(""), Sender: owner, Content: json.RawMessage(`{"room_version":"11"}`)},
		[]ProtoEvent{{Type: TypeMember, StateKey: strp(string(owner)), Sender: owner, Content: json.RawMessage(`{"membership":"join"}`)}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				if _, _, err := rooms.Append(ctx, id, ProtoEvent{Type: TypeMessage, Sender: owner, Content: json.RawMessage(`{}`)}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	for i := 1; i < len(store.events); i++ {
		ev, before := store.events[i].Event, store.events[i-1].Event
		if ev.PrevEvents()[0] != before.ID() {
			t.Fatalf("event %d does not follow event %d: the DAG forked", i, i-1)
		}
	}
}

// Each event format chains events its own way: v1 and v2 events carry a
// random "$opaque:server" ID and cite their prev and auth events with the
// events' reference hashes; v3 IDs are standard base64, v4+ URL-safe.
func TestWritePathEventFormats(t *testing.T) {
	for _, tc := range []struct {
		ver    string
		idForm *regexp.Regexp
	}{
		{"1", regexp.MustCompile(`^\$[A-Za-z0-9]{18}:test\.local$`)},
		{"2", regexp.MustCompile(`^\$[A-Za-z0-9]{18}:test\.local$`)},
		{"3", regexp.MustCompile(`^\$[A-Za-z0-9+/]{43}$`)},
		{"4", regexp.MustCompile(`^\$[A-Za-z0-9_-]{43}$`)},
	} {
		t.Run("v"+tc.ver, func(t *testing.T) {
			rooms, store := newTestRooms(t)
			ctx := context.Background()
			owner := UserID("@owner:test.local")
			v := lookupVersionT(t, tc.ver)
			id, err := rooms.CreateRoom(ctx, v, "!r:test.local",
				ProtoEvent{Type: TypeCreate, StateKey: strp(""), Sender: owner, Content: json.RawMessage(`{"creator":"@owner:test.local","room_version":"` + tc.ver + `"}`)},
				[]ProtoEvent{{Type: TypeMember, StateKey: strp(string(owner)), Sender: owner, Content: json.RawMessage(`{"membership":"join"}`)}})
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 3; i++ {
				if _, _, err := rooms.Append(ctx, id, ProtoEvent{Type: TypeMessage, Sender: owner, Content: json.RawMessage(`{"body":"x"}`)}); err != nil {
					t.Fatal(err)
				}
			}
			byID := map[EventID]*Event{}
			for _, p := range store.events {
				ev := p.Event
				byID[ev.ID()] = ev
				if !tc.idForm.MatchString(string(ev.ID())) {
					t.Errorf("event ID %s is not the v%s format", ev.ID(), tc.ver)
				}
				if got, err := EventIDFromJSON(v, ev.JSON()); err != nil || got != ev.ID() {
					t.Errorf("EventIDFromJSON = %s, %v; want %s", got, err, ev.ID())
				}
				if err := CheckContentHash(v, ev.JSON()); err != nil {
					t.Errorf("%s: %v", ev.ID(), err)
				}
				if err := VerifyEventSignature(v, "test.local", rooms.key.KeyID, rooms.key.Public(), ev.JSON()); err != nil {
					t.Errorf("%s: %v", ev.ID(), err)
				}
				var refs struct {
					Prev, Auth []json.RawMessage
				}
				var raw map[string]json.RawMessage
				_ = json.Unmarshal(ev.JSON(), &raw)
				_ = json.Unmarshal(raw["prev_events"], &refs.Prev)
				_ = json.Unmarshal(raw["auth_events"], &refs.Auth)
				for _, r := range append(refs.Prev, refs.Auth...) {
					if v.EventFormat != EventFormatV1 {
						if r[0] != '"' {
							t.Errorf("v%s cites %s, want a plain event ID", tc.ver, r)
						}
						continue
					}
					var pair []json.RawMessage
					var cited EventID
					var hashes map[string]string
					if json.Unmarshal(r, &pair) != nil || len(pair) != 2 || json.Unmarshal(pair[0], &cited) != nil || json.Unmarshal(pair[1], &hashes) != nil {
						t.Fatalf("v%s cites %s, want [event_id, hashes]", tc.ver, r)
					}
					target := byID[cited]
					if target == nil {
						t.Fatalf("cites unknown %s", cited)
					}
					h, _ := ReferenceHash(v, target.JSON())
					if want := base64.RawStdEncoding.EncodeToString(h[:]); hashes["sha256"] != want {
						t.Errorf("hash of %s is %s, want its reference hash %s", cited, hashes["sha256"], want)
					}
				}
				if _, err := EventFromTrustedJSON(v, ev.ID(), ev.JSON()); err != nil {
					t.Error(err)
				}
			}
			// The stored copy reloads and chains on.
			rooms.Invalidate(id)
			if _, _, err := rooms.Append(ctx, id, ProtoEvent{Type: TypeMessage, Sender: owner, Content: json.RawMessage(`{}`)}); err != nil {
				t.Fatalf("append after reload: %v", err)
			}
		})
	}
}
