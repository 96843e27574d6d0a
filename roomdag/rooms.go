package roomdag

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/persistentchat/homeserver/clock"
)

// StreamPos is an event's position in the server-wide event stream: the
// order in which events were committed.
type StreamPos int64

// Store is what the write path needs from storage.
type Store interface {
	// LoadRoom returns the room as last committed (LastPos set), or
	// ErrUnknownRoom. It may run concurrently with writes to the room.
	LoadRoom(ctx context.Context, id RoomID) (*RoomState, error)
	// NewSnapshotID allocates a state snapshot ID. Safe for concurrent use.
	NewSnapshotID() int64
	// EnqueueEvent queues a write. Writes are committed in the order they
	// are queued; the channel yields the result once the write is durable
	// (or has failed). p.Committed, if set, runs after the commit, in commit
	// order, before the result is sent. A write whose room's stored forward
	// extremities are not p.ExtremitiesBefore fails with ErrRoomChanged.
	EnqueueEvent(p *Persist) <-chan error
}

// Persist is one event to store with everything the store must write
// in the same transaction.
type Persist struct {
	Event   *Event
	NewRoom bool
	// Generation of the room's in-memory state the event was built on; if an
	// earlier event of that generation failed, the store must fail this one
	// too, since it may reference the failed event.
	Generation uint64
	// ExtremitiesBefore are the room's forward extremities in the state
	// the event was built on (nil for a new room). If the stored ones
	// differ, another writer has moved the room on since that state was
	// read: the store fails the write with ErrRoomChanged and writes
	// nothing.
	ExtremitiesBefore []EventID
	// StateBefore is the snapshot of the state before the event;
	// StateAfter equals it unless the event is a state event, in which case
	// a new snapshot StateAfter is written: a delta of Snapshot entries on
	// StateBefore, or, when SnapshotParent is 0, a full copy.
	StateBefore    int64
	StateAfter     int64
	SnapshotParent int64
	ChainLen       int
	Snapshot       map[StateKey]EventID
	// Extremities are the room's forward extremities after the event.
	Extremities []EventID
	// Unsigned holds the server-added fields kept with the event for clients
	// (replaces_state, prev_content, prev_sender).
	Unsigned json.RawMessage
	// Txn is the client transaction that sent the event, if any.
	Txn *Txn
	// InviteState is the stripped state shown to the invitee of an invite
	// or to the knocker of a knock.
	InviteState json.RawMessage
	// Redaction, for a redaction event that applies, is the redacted copy
	// of its target to store in the same transaction.
	Redaction *Redaction
	Committed func(pos StreamPos)
}

// Redaction replaces the stored copy of Target with JSON and records the
// redaction event (client format) as unsigned.redacted_because.
type Redaction struct {
	Target  EventID
	JSON    []byte
	Because json.RawMessage
}

// Txn identifies a client's send request for idempotency and local echo.
// Transaction IDs are scoped per device and per endpoint (spec:
// "Transaction identifiers"): Scope names the endpoint and room.
type Txn struct {
	DeviceID string
	Scope    string
	TxnID    string
}

// RoomState is the state of a room after its newest event. It is immutable:
// the write path replaces it, never changes it, so readers need no lock.
type RoomState struct {
	// LastPos is the stream position of that event, in the states that
	// LoadRoom returns; 0 in the write path's own states.
	LastPos     StreamPos
	Version     *RoomVersion
	State       StateMap
	Extremities []EventID
	// ExtremityEvents are the events of Extremities, in rooms whose
	// version has EventFormatV1 (v1, v2), where a new event cites each
	// prev event with its reference hash; nil in other rooms. The store
	// fills it when it loads such a room.
	ExtremityEvents []*Event
	Depth           int64
	Snapshot        int64
	ChainLen        int
}

// Create returns the room's m.room.create event.
func (s *RoomState) Create() *Event { return s.State.Get(TypeCreate, "") }

// Membership returns the user's current membership ("" if none).
func (s *RoomState) Membership(u UserID) string {
	if ev := s.State.Get(TypeMember, string(u)); ev != nil {
		return ev.Membership()
	}
	return ""
}

// Listener hears of every committed event, in commit order, on the storage
// writer's goroutine: it must return quickly and never block.
type Listener interface {
	EventCommitted(ev *Event, pos StreamPos)
}

// Errors the write path returns; api maps them to Matrix errors.
var (
	ErrUnknownRoom = errors.New("unknown room")
	ErrRoomExists  = errors.New("room already exists")
	ErrTooLarge    = errors.New("event too large")
	// ErrStale is what a store returns for an event built on an earlier
	// event that failed to persist (see Persist.Generation).
	ErrStale = errors.New("event was built on an event that failed to persist")
	// ErrRoomChanged is what a store returns for an event built on a state
	// of the room that is no longer its stored one: another writer (another
	// process) has appended to the room since (see
	// Persist.ExtremitiesBefore).
	ErrRoomChanged = errors.New("the room changed since the event was built")
)

// staleRetries bounds how often Append rebuilds an event whose predecessor
// failed to persist.
const staleRetries = 3

// snapshotFullEvery bounds the delta chain a state lookup walks.
const snapshotFullEvery = 64

// Rooms is the one door into every room: all events are appended here.
type Rooms struct {
	store     Store
	key       SigningKey
	clock     clock.Clock
	random    io.Reader // for the event IDs of v1 and v2 rooms
	listeners []Listener

	mu    sync.Mutex
	rooms map[RoomID]*room
}

type room struct {
	mu  sync.Mutex // serialises appends; held while building and queueing
	gen uint64
	cur *RoomState // nil until loaded; replaced atomically under mu
	// stale is set when a write failed: the next user reloads from storage.
	stale bool
}

// NewRooms makes the write path. random supplies the event IDs of v1 and
// v2 rooms (pass crypto/rand.Reader outside tests). Listeners hear of
// committed events.
func NewRooms(store Store, key SigningKey, clk clock.Clock, random io.Reader, listeners ...Listener) *Rooms {
	return &Rooms{store: store, key: key, clock: clk, random: random, listeners: listeners, rooms: map[RoomID]*room{}}
}

// ServerName is the name of the server whose key signs local events.
func (rs *Rooms) ServerName() ServerName { return rs.key.ServerName }

func (rs *Rooms) get(id RoomID) *room {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r := rs.rooms[id]
	if r == nil {
		r = &room{}
		rs.rooms[id] = r
	}
	return r
}

// lock returns the room's entry, locked. Entries of rooms that turn out
// not to exist are dropped, so after locking it checks that the entry is
// still the one in the map: two entries for one room would mean two
// writers. Lock order: r.mu before rs.mu.
func (rs *Rooms) lock(id RoomID) *room {
	for {
		r := rs.get(id)
		r.mu.Lock()
		rs.mu.Lock()
		current := rs.rooms[id] == r
		rs.mu.Unlock()
		if current {
			return r
		}
		r.mu.Unlock()
	}
}

// load fills r.cur from storage. For a room that does not exist it drops
// the entry, so requests naming made-up rooms do not grow the map. Caller
// holds r.mu (from lock).
func (rs *Rooms) load(ctx context.Context, id RoomID, r *room) error {
	if r.cur != nil && !r.stale {
		return nil
	}
	st, err := rs.store.LoadRoom(ctx, id)
	if errors.Is(err, ErrUnknownRoom) {
		r.cur = nil
		rs.mu.Lock()
		if rs.rooms[id] == r {
			delete(rs.rooms, id)
		}
		rs.mu.Unlock()
	}
	if err != nil {
		return err
	}
	r.cur, r.stale = st, false
	return nil
}

// State returns the current state of a room, or ErrUnknownRoom.
func (rs *Rooms) State(ctx context.Context, id RoomID) (*RoomState, error) {
	r := rs.lock(id)
	defer r.mu.Unlock()
	if err := rs.load(ctx, id, r); err != nil {
		return nil, err
	}
	return r.cur, nil
}

// loaded reports how many rooms have an in-memory entry (for tests).
func (rs *Rooms) loaded() int {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return len(rs.rooms)
}

// ProtoEvent is an event a local user wants to send, before the server
// fills in prev_events, auth_events, depth, hashes and signatures.
type ProtoEvent struct {
	Type     string
	StateKey *string
	Sender   UserID
	Content  json.RawMessage
	// Redacts is the redacted event, for m.room.redaction.
	Redacts EventID
	// TS overrides origin_server_ts (application services' timestamp
	// massaging); 0 means now.
	TS int64
	// Txn, if set, records the client transaction for idempotency.
	Txn *Txn
	// RedactTarget is the event an m.room.redaction redacts, when the
	// caller has checked that the redaction applies to it (since room v3
	// the auth rules cannot see the target).
	RedactTarget *Event
}

// Append authorises and appends a local event to an existing room, and
// returns once it is durable. An *AuthError means the event was not allowed.
// If the event was built on one that then failed to persist, it is rebuilt
// on the stored state: the caller has not been answered yet, so nothing
// was promised about the first attempt.
func (rs *Rooms) Append(ctx context.Context, id RoomID, p ProtoEvent) (*Event, StreamPos, error) {
	for attempt := 0; ; attempt++ {
		r := rs.lock(id)
		if err := rs.load(ctx, id, r); err != nil {
			r.mu.Unlock()
			return nil, 0, err
		}
		pr, err := rs.prepareProto(id, r.cur, p)
		var q *queuedEvent
		if err == nil {
			q = rs.enqueue(r, pr)
		}
		r.mu.Unlock()
		if err != nil {
			return nil, 0, err
		}
		ev, pos, err := q.wait(rs, r)
		if errors.Is(err, ErrStale) && attempt < staleRetries {
			continue
		}
		return ev, pos, err
	}
}

// CreateRoom creates a room from its create event and the events that
// follow it (creator join, power levels, presets...), all appended in order.
// For versions with domainless room IDs, id is ignored and the ID derives
// from the create event. It returns the room ID once every event is durable;
// if any event is rejected, the error names it and nothing is stored.
func (rs *Rooms) CreateRoom(ctx context.Context, v *RoomVersion, id RoomID, create ProtoEvent, rest []ProtoEvent) (RoomID, error) {
	ev, err := rs.build(v, id, create, nil, nil)
	if err != nil {
		return "", err
	}
	if err := Authorise(ev, StateMap{}); err != nil {
		return "", err
	}
	id = ev.RoomID()
	r := rs.lock(id)
	if r.cur != nil {
		r.mu.Unlock()
		return "", ErrRoomExists
	}
	// Every event is built and authorised before any is stored, so a
	// rejected event leaves no half-made room behind.
	cur := &RoomState{Version: v, State: StateMap{}}
	all := make([]*prepared, 0, len(rest)+1)
	pr := rs.prepare(r, cur, ev, create, true)
	all = append(all, pr)
	for _, p := range rest {
		if pr, err = rs.prepareProto(id, pr.next, p); err != nil {
			r.mu.Unlock()
			return "", fmt.Errorf("%s event: %w", p.Type, err)
		}
		all = append(all, pr)
	}
	queued := make([]*queuedEvent, len(all))
	for i, pr := range all {
		queued[i] = rs.enqueue(r, pr)
	}
	r.mu.Unlock()
	for _, q := range queued {
		if _, _, werr := q.wait(rs, r); werr != nil && err == nil {
			err = werr
		}
	}
	return id, err
}

// prepared is an event ready to queue, with the room state after it.
type prepared struct {
	per  *Persist
	next *RoomState
}

// prepareProto builds and authorises a local event on top of cur.
func (rs *Rooms) prepareProto(id RoomID, cur *RoomState, p ProtoEvent) (*prepared, error) {
	if p.Type == TypeCreate && p.StateKey != nil && *p.StateKey == "" {
		return nil, &AuthError{Rule: "1", Reason: "the room already has a create event"}
	}
	authTuples := AuthEventTuples(cur.Version, p.Type, p.StateKey, p.Sender, p.Content)
	auth := make([]*Event, 0, len(authTuples))
	for _, t := range authTuples {
		if ev := cur.State.Get(t.Type, t.StateKey); ev != nil {
			auth = append(auth, ev)
		}
	}
	ev, err := rs.build(cur.Version, id, p, cur, auth)
	if err != nil {
		return nil, err
	}
	if err := Authorise(ev, cur.State); err != nil {
		return nil, err
	}
	return rs.prepare(nil, cur, ev, p, false), nil
}

// prepare computes the state after ev and what to persist. It changes
// nothing but allocating a snapshot ID; r is only read for the generation
// when not nil (enqueue sets it otherwise).
func (rs *Rooms) prepare(r *room, cur *RoomState, ev *Event, p ProtoEvent, newRoom bool) *prepared {
	next := &RoomState{
		Version: cur.Version, State: cur.State, Extremities: []EventID{ev.ID()},
		Depth: ev.Depth(), Snapshot: cur.Snapshot, ChainLen: cur.ChainLen,
	}
	if cur.Version.EventFormat == EventFormatV1 {
		next.ExtremityEvents = []*Event{ev}
	}
	per := &Persist{
		Event: ev, NewRoom: newRoom, Txn: p.Txn,
		StateBefore: cur.Snapshot, StateAfter: cur.Snapshot, Extremities: next.Extremities,
		ExtremitiesBefore: cur.Extremities,
	}
	if ev.IsState() {
		k := ev.Tuple()
		if old := cur.State[k]; old != nil {
			per.Unsigned, _ = json.Marshal(map[string]any{
				"replaces_state": old.ID(), "prev_content": old.Content(), "prev_sender": old.Sender(),
			})
		}
		next.State = cur.State.With(ev)
		next.Snapshot = rs.store.NewSnapshotID()
		per.StateAfter = next.Snapshot
		if cur.Snapshot == 0 || cur.ChainLen+1 >= snapshotFullEvery {
			next.ChainLen = 0
			per.Snapshot = next.State.IDs()
		} else {
			next.ChainLen = cur.ChainLen + 1
			per.SnapshotParent = cur.Snapshot
			per.Snapshot = map[StateKey]EventID{k: ev.ID()}
		}
		per.ChainLen = next.ChainLen
		if ev.Type() == TypeMember && (ev.Membership() == MembershipInvite || ev.Membership() == MembershipKnock) {
			per.InviteState = StrippedState(next.State, ev)
		}
	}
	if t := p.RedactTarget; ev.Type() == TypeRedaction && t != nil && t.ID() == ev.Redacts() {
		if redacted, err := Redact(t.Version(), t.JSON()); err == nil {
			because := (&StoredEvent{Event: ev}).ClientJSON(ClientView{NowMS: ev.OriginServerTS()})
			per.Redaction = &Redaction{Target: t.ID(), JSON: redacted, Because: because}
			// A redacted state event stays in the state, stripped.
			if t.IsState() && cur.State[t.Tuple()] != nil && cur.State[t.Tuple()].ID() == t.ID() {
				if rev, err := EventFromTrustedJSON(t.Version(), t.ID(), redacted); err == nil {
					next.State = next.State.With(rev)
				}
			}
		}
	}
	return &prepared{per: per, next: next}
}

// enqueue queues a prepared event and publishes the state after it.
// Caller holds r.mu.
func (rs *Rooms) enqueue(r *room, pr *prepared) *queuedEvent {
	per, ev := pr.per, pr.per.Event
	per.Generation = r.gen
	q := &queuedEvent{ev: ev, gen: r.gen}
	per.Committed = func(pos StreamPos) {
		q.pos = pos // read by wait after the result arrives on done
		for _, l := range rs.listeners {
			l.EventCommitted(ev, pos)
		}
	}
	q.done = rs.store.EnqueueEvent(per)
	r.cur = pr.next
	return q
}

type queuedEvent struct {
	ev   *Event
	gen  uint64
	done <-chan error
	pos  StreamPos
}

// wait blocks until the event is durable. On failure it marks the room's
// in-memory state stale so the next append reloads it from storage.
func (q *queuedEvent) wait(rs *Rooms, r *room) (*Event, StreamPos, error) {
	if err := <-q.done; err != nil {
		r.mu.Lock()
		if r.gen == q.gen {
			r.gen++
			r.stale = true
		}
		r.mu.Unlock()
		return nil, 0, err
	}
	return q.ev, q.pos, nil
}
