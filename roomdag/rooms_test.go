package roomdag

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
)

// memStore is an in-memory Store for testing the write path's own logic;
// the SQLite store has its own tests.
type memStore struct {
	mu     sync.Mutex
	rooms  map[RoomID]*RoomState
	events []*Persist
	snap   int64
}

func (m *memStore) LoadRoom(ctx context.Context, id RoomID) (*RoomState, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if st, ok := m.rooms[id]; ok {
		return st, nil
	}
	return nil, ErrUnknownRoom
}

func (m *memStore) NewSnapshotID() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.snap++
	return m.snap
}

func (m *memStore) EnqueueEvent(p *Persist) <-chan error {
	m.mu.Lock()
	m.events = append(m.events, p)
	pos := StreamPos(len(m.events))
	st := m.rooms[p.Event.RoomID()]
	if st == nil {
		st = &RoomState{Version: p.Event.Version(), State: StateMap{}}
	}
	next := &RoomState{Version: st.Version, State: st.State, Extremities: p.Extremities, Depth: p.Event.Depth(), Snapshot: p.StateAfter, ChainLen: p.ChainLen}
	if st.Version.EventFormat == EventFormatV1 {
		next.ExtremityEvents = []*Event{p.Event}
	}
	if p.Event.IsState() {
		next.State = st.State.With(p.Event)
	}
	if m.rooms == nil {
		m.rooms = map[RoomID]*RoomState{}
	}
	m.rooms[p.Event.RoomID()] = next
	m.mu.Unlock()
	if p.Committed != nil {
		p.Committed(pos)
	}
	ch := make(chan error, 1)
	ch <- nil
	return ch
}

func newTestRooms(t *testing.T) (*Rooms, *memStore) {
	key, err := GenerateSigningKey("test.local", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	st := &memStore{}
	return NewRooms(st, key, clock.NewFake(time.Unix(1_700_000_000, 0)), rand.Reader), st
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
	if n := rooms.loaded(); n != 0 {
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
			rooms.mu.Lock()
			rooms.rooms = map[RoomID]*room{}
			rooms.mu.Unlock()
			if _, _, err := rooms.Append(ctx, id, ProtoEvent{Type: TypeMessage, Sender: owner, Content: json.RawMessage(`{}`)}); err != nil {
				t.Fatalf("append after reload: %v", err)
			}
		})
	}
}
