package roomdag

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"

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
	// NewSnapshotID allocates a state snapshot ID, unique among every
	// process writing the store. Safe for concurrent use.
	NewSnapshotID(ctx context.Context) (int64, error)
	// EnqueueEvent queues a write. Writes are committed in the order they
	// are queued; the channel yields the result once the write is durable
	// (or has failed). p.Committed, if set, runs after the commit, in commit
	// order, before the result is sent. A write whose room's stored forward
	// extremities are not p.ExtremitiesBefore fails with ErrRoomChanged.
	EnqueueEvent(p *Persist) <-chan error
	// EnqueueBuilt queues a write whose event is built inside the store's
	// write transaction, under the lock that orders every writer of the
	// store (every process's): build gets the room as stored in that
	// transaction (as LoadRoom returns it) and returns what to persist in
	// it, or an error that fails the write with nothing stored. No other
	// writer can commit in between, so the write cannot find the room
	// changed. build runs on the store's writer and holds up every
	// writer while it runs: it is the last resort of a write that lost
	// the race for its room several times (see Append), never the common
	// path. The channel yields the result once durable, as EnqueueEvent's.
	EnqueueBuilt(id RoomID, build func(st *RoomState) (*Persist, error)) <-chan error

	// DAGEvents returns what is stored of the events among ids, in any
	// room and of any status; unknown ones are absent from the map. It
	// sees committed writes only.
	DAGEvents(ctx context.Context, ids []EventID) (map[EventID]*DAGEvent, error)
	// StateEvents returns the state of a snapshot (0: empty).
	StateEvents(ctx context.Context, snapshot int64) (StateMap, error)
	// HasChildren reports whether a stored timeline event (live or
	// backfilled) cites id among its prev_events.
	HasChildren(ctx context.Context, id EventID) (bool, error)
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

	// OutOfBand is a local user's membership event in a room the server
	// holds no state of (Rooms.StoreOutOfBand): stored with a stream
	// position and the user's membership (and InviteState), nothing of
	// the room's DAG, state or extremities.
	OutOfBand bool

	// The fields below are set by Receive only (Received true); local
	// events leave them zero and are stored as before.
	Received bool
	// Kind is how the event came (live, backfill, outlier) and Status what
	// was made of it. Only a live timeline event gets a stream position
	// /sync reads; a backfilled one gets a negative one; the others none
	// (they are kept out of the timeline, with Reason for a rejection).
	Kind   EventKind
	Status DAGStatus
	Reason string
	// KeepExtremities: the room's forward extremities, current state and
	// head do not change (every received event but a live timeline one).
	KeepExtremities bool
	// Snapshots are state snapshots to write (StateBefore and StateAfter
	// among them when new), in order: a delta on Parent, or a full copy
	// when Parent is 0.
	Snapshots []SnapshotWrite
	// CurrentSnapshot is the snapshot of the room's current state after
	// the event (StateAfter unless the DAG is forked), CurrentChainLen its
	// delta chain length; CurrentChanges are the state events that become
	// current and CurrentRemoved the keys that leave the current state.
	CurrentSnapshot int64
	CurrentChainLen int
	CurrentChanges  []*Event
	CurrentRemoved  []StateKey
}

// SnapshotWrite is one state snapshot for the store to write.
type SnapshotWrite struct {
	ID       int64
	Parent   int64
	ChainLen int
	Entries  map[StateKey]EventID
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
	// LoadRoom and Rooms.State return; 0 in the write path's own states
	// built on events not yet committed.
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
	// ErrEventExists is what a store returns for a received event that
	// another write stored since it was read as unknown (a /send PDU and
	// a join storing the same event, another process): Receive and
	// ReceiveOutliers then take it as known.
	ErrEventExists = errors.New("event already stored")
	// ErrRoomChanged is what a store returns for an event built on a state
	// of the room that is no longer its stored one: another writer (another
	// process) has appended to the room since (see
	// Persist.ExtremitiesBefore).
	ErrRoomChanged = errors.New("the room changed since the event was built")
)

// staleRetries bounds how often Append rebuilds an event whose predecessor
// failed to persist or whose room changed underneath it on the state it
// has cached (optimistically, pipelined with the room's other writes);
// the attempt after those is built under the store's write lock
// (Store.EnqueueBuilt), where the room cannot change, so a write to a room
// that other processes keep writing to is never starved. Under contention
// the optimistic loser tends to keep losing: it reloads the room outside
// the lock while the winner, whose cached state stays right, commits its
// next batch.
const staleRetries = 3

// ErrRoomBusy is what Append returns for a write that could not be
// stored because the room kept changing or its predecessors kept failing
// (only if even the locked attempt failed so): nothing was stored and the
// client may send it again.
var ErrRoomBusy = errors.New("the room is busy: try again")

// snapshotFullEvery bounds the delta chain a state lookup walks.
const snapshotFullEvery = 64

// Rooms is the way into every room, with two doors: local events are
// appended by Append (and CreateRoom), events built elsewhere taken in by
// Receive (receive.go); both share the same preparation and store.
//
// Each cached room has two states. Its head is what the next event is
// built on: the state after every event queued so far, committed or not, so
// that writes to one room pipeline into the store's group commit. Its
// durable state is the state after its newest committed event, advanced in
// commit order by the store's after-commit hook: it is the only state
// readers (State) ever see, so nothing reads an event's effects before the
// event is durable, nor ever reads those of an event that failed.
type Rooms struct {
	store     Store
	key       SigningKey
	clock     clock.Clock
	random    io.Reader // for the event IDs of v1 and v2 rooms
	listeners []Listener
	cache     *roomCache
}

// room is one room's cache entry. Its fields are guarded as marked; the
// cache's shard mutex guards id's place in the cache, pins and the LRU
// links.
type room struct {
	id         RoomID
	pins       int   // shard mutex: writers, queued writes and loads using the entry
	prev, next *room // shard mutex: LRU ring

	mu sync.Mutex // serialises appends; held while building and queueing
	// Guarded by mu.
	head *RoomState // nil until loaded
	gen  uint64
	// reload is set when the head can no longer be trusted (a write
	// failed, or Invalidate): the next writer reloads it from storage.
	reload atomic.Bool

	// smu guards changes to durable, epoch and loading; durable is read
	// without it.
	smu     sync.Mutex
	durable atomic.Pointer[RoomState] // nil until loaded
	// epoch counts Invalidate calls: a load or a write that began before
	// one does not publish its state after it.
	epoch   uint64
	loading *loadCall
}

// loadCall is one LoadRoom shared by every caller that needs the room
// while it runs (singleflight).
type loadCall struct {
	done chan struct{}
	st   *RoomState
	err  error
}

// NewRooms makes the write path. random supplies the event IDs of v1 and
// v2 rooms (pass crypto/rand.Reader outside tests). cacheSize bounds how
// many rooms keep their state in memory (0 means DefaultRoomCacheSize).
// Listeners hear of committed events.
func NewRooms(store Store, key SigningKey, clk clock.Clock, random io.Reader, cacheSize int, listeners ...Listener) *Rooms {
	if cacheSize <= 0 {
		cacheSize = DefaultRoomCacheSize
	}
	return &Rooms{store: store, key: key, clock: clk, random: random, listeners: listeners, cache: newRoomCache(cacheSize)}
}

// ServerName is the name of the server whose key signs local events.
func (rs *Rooms) ServerName() ServerName { return rs.key.ServerName }

// publish makes st the room's durable state unless it is older than the
// one there, or an Invalidate came after epoch was read.
func (r *room) publish(st *RoomState, epoch uint64) {
	r.smu.Lock()
	defer r.smu.Unlock()
	r.publishLocked(st, epoch)
}

// publishLocked is publish for a caller that holds r.smu.
func (r *room) publishLocked(st *RoomState, epoch uint64) {
	if r.epoch != epoch {
		return
	}
	if old := r.durable.Load(); old == nil || old.LastPos < st.LastPos {
		r.durable.Store(st)
	}
}

// currentEpoch is read before a load or a write whose state publish will
// offer.
func (r *room) currentEpoch() uint64 {
	r.smu.Lock()
	defer r.smu.Unlock()
	return r.epoch
}

// load reads the room from storage, sharing one LoadRoom among concurrent
// callers, and publishes what it read as the durable state. The caller
// holds a pin on r. A caller whose context ends stops waiting; if the one
// that ran the load gave up that way, the others load again.
//
// A caller that only needs the durable state (fresh false) takes one that
// a load published since it looked, rather than starting another load.
func (rs *Rooms) load(ctx context.Context, r *room, fresh bool) (*RoomState, error) {
	for {
		r.smu.Lock()
		if st := r.durable.Load(); !fresh && st != nil {
			r.smu.Unlock()
			return st, nil
		}
		c, epoch := r.loading, r.epoch
		if c == nil {
			c = &loadCall{done: make(chan struct{})}
			r.loading = c
			r.smu.Unlock()
			c.st, c.err = rs.store.LoadRoom(ctx, r.id)
			r.smu.Lock()
			if r.loading == c {
				r.loading = nil
			}
			// Published as the load ends, under the same lock: a caller
			// that finds no load in flight finds its state.
			if c.err == nil {
				r.publishLocked(c.st, epoch)
			}
			r.smu.Unlock()
			close(c.done)
			return c.st, c.err
		}
		r.smu.Unlock()
		select {
		case <-c.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if c.err != nil && (errors.Is(c.err, context.Canceled) || errors.Is(c.err, context.DeadlineExceeded)) && ctx.Err() == nil {
			continue
		}
		return c.st, c.err
	}
}

// headLocked returns the state the room's next event is built on,
// (re)loading it if needed. Caller holds r.mu and a pin on r.
func (rs *Rooms) headLocked(ctx context.Context, r *room) (*RoomState, error) {
	if r.head != nil && !r.reload.Load() {
		return r.head, nil
	}
	// A first load may take the durable state a reader's load published;
	// a reload (the head went stale) must read storage again.
	fresh := r.head != nil
	r.reload.Store(false)
	st, err := rs.load(ctx, r, fresh)
	if err != nil {
		// Not loaded: the next writer tries again.
		r.reload.Store(r.head != nil)
		return nil, err
	}
	// A load shared with a reader may have begun before the newest commit
	// of ours; the durable state is then the newer.
	if d := r.durable.Load(); d != nil && d.LastPos > st.LastPos {
		st = d
	}
	r.head = st
	return st, nil
}

// State returns the durable state of a room (the state after its newest
// committed event), or ErrUnknownRoom.
func (rs *Rooms) State(ctx context.Context, id RoomID) (*RoomState, error) {
	if r := rs.cache.peek(id); r != nil {
		if st := r.durable.Load(); st != nil {
			return st, nil
		}
	}
	r := rs.cache.acquire(id)
	defer rs.cache.release(r)
	if st := r.durable.Load(); st != nil {
		return st, nil
	}
	st, err := rs.load(ctx, r, false)
	if err != nil {
		return nil, err
	}
	if d := r.durable.Load(); d != nil && d.LastPos > st.LastPos {
		st = d
	}
	return st, nil
}

// Invalidate drops what is cached of a room, so that the next read or
// write of it loads it from storage: for a room another process has
// written to. Writes already queued go on; one that was built on the
// dropped state and finds the room changed is rebuilt (see Append).
func (rs *Rooms) Invalidate(id RoomID) {
	if rs.cache.drop(id) {
		return
	}
	r := rs.cache.peek(id)
	if r == nil {
		return
	}
	r.smu.Lock()
	r.epoch++
	r.durable.Store(nil)
	r.loading = nil
	r.smu.Unlock()
	r.reload.Store(true)
}

// CachedRooms reports how many rooms have an entry in memory.
func (rs *Rooms) CachedRooms() int { return rs.cache.len() }

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
// If the event was built on one that then failed to persist, or on a state
// of the room that another writer has since moved on from, it is rebuilt
// on the stored state: the caller has not been answered yet, so nothing
// was promised about the first attempt.
func (rs *Rooms) Append(ctx context.Context, id RoomID, p ProtoEvent) (*Event, StreamPos, error) {
	for attempt := 0; attempt < staleRetries; attempt++ {
		r := rs.cache.acquire(id)
		r.mu.Lock()
		head, err := rs.headLocked(ctx, r)
		var q *queuedEvent
		if err == nil {
			var pr *prepared
			if pr, err = rs.prepareProto(ctx, id, head, p); err == nil {
				q = rs.enqueue(r, pr)
			}
		}
		r.mu.Unlock()
		if err != nil {
			rs.cache.release(r)
			return nil, 0, err
		}
		ev, pos, err := q.wait(r)
		rs.cache.release(r)
		if errors.Is(err, ErrStale) || errors.Is(err, ErrRoomChanged) {
			continue
		}
		return ev, pos, err
	}
	ev, pos, err := rs.appendLocked(ctx, id, p)
	if errors.Is(err, ErrStale) || errors.Is(err, ErrRoomChanged) {
		return nil, 0, fmt.Errorf("room %s: gave up after %d attempts: %w (%w)", id, staleRetries+1, ErrRoomBusy, err)
	}
	return ev, pos, err
}

// appendLocked is Append's last attempt: the event is built by the store's
// writer on the room as stored, under the store's write lock
// (Store.EnqueueBuilt). It holds r.mu until the write is durable, so the
// room's other local writers wait for it instead of building on a state
// about to be replaced; what it stores becomes the room's head.
func (rs *Rooms) appendLocked(ctx context.Context, id RoomID, p ProtoEvent) (*Event, StreamPos, error) {
	r := rs.cache.acquire(id)
	defer rs.cache.release(r)
	r.mu.Lock()
	defer r.mu.Unlock()
	gen, epoch := r.gen, r.currentEpoch()
	var pr *prepared
	var pos StreamPos
	err := <-rs.store.EnqueueBuilt(id, func(st *RoomState) (*Persist, error) {
		var err error
		if pr, err = rs.prepareProto(ctx, id, st, p); err != nil {
			return nil, err
		}
		pr.per.Generation = gen
		ev, next := pr.per.Event, pr.next
		pr.per.Committed = func(at StreamPos) {
			pos = at // read after the result arrives
			durable := *next
			durable.LastPos = at
			r.publish(&durable, epoch)
			for _, l := range rs.listeners {
				l.EventCommitted(ev, at)
			}
		}
		return pr.per, nil
	})
	if err != nil {
		r.gen++
		r.reload.Store(true)
		return nil, 0, err
	}
	head := *pr.next
	head.LastPos = pos
	r.head = &head
	r.reload.Store(false)
	return pr.per.Event, pos, nil
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
	r := rs.cache.acquire(id)
	defer rs.cache.release(r)
	r.mu.Lock()
	if r.head != nil || r.durable.Load() != nil {
		r.mu.Unlock()
		return "", ErrRoomExists
	}
	// Every event is built and authorised before any is stored, so a
	// rejected event leaves no half-made room behind.
	cur := &RoomState{Version: v, State: StateMap{}}
	all := make([]*prepared, 0, len(rest)+1)
	pr, err := rs.prepare(ctx, cur, ev, create, true)
	if err != nil {
		r.mu.Unlock()
		return "", err
	}
	all = append(all, pr)
	for _, p := range rest {
		if pr, err = rs.prepareProto(ctx, id, pr.next, p); err != nil {
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
		if _, _, werr := q.wait(r); werr != nil && err == nil {
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
func (rs *Rooms) prepareProto(ctx context.Context, id RoomID, cur *RoomState, p ProtoEvent) (*prepared, error) {
	ev, err := rs.buildOn(id, cur, p)
	if err != nil {
		return nil, err
	}
	return rs.prepare(ctx, cur, ev, p, false)
}

// buildOn builds a local event on top of cur and authorises it there.
func (rs *Rooms) buildOn(id RoomID, cur *RoomState, p ProtoEvent) (*Event, error) {
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
	return ev, nil
}

// Build builds, signs and authorises a local event on the room's head
// without storing it, for an event another server must sign before it is
// stored (an invite of a remote user: server-server API, "Inviting to a
// room"). AppendBuilt stores it afterwards; until then the room may move
// on, and AppendBuilt then refuses it with ErrRoomChanged.
func (rs *Rooms) Build(ctx context.Context, id RoomID, p ProtoEvent) (*Event, error) {
	r := rs.cache.acquire(id)
	defer rs.cache.release(r)
	r.mu.Lock()
	defer r.mu.Unlock()
	head, err := rs.headLocked(ctx, r)
	if err != nil {
		return nil, err
	}
	return rs.buildOn(id, head, p)
}

// AppendBuilt appends an event Build made (other servers' signatures
// added since, nothing else changed), and returns once it is durable. If
// the room's head is no longer the state Build built the event on, it
// stores nothing and returns ErrRoomChanged: the event names its
// prev_events and cannot be rebuilt here, so the caller builds another.
func (rs *Rooms) AppendBuilt(ctx context.Context, ev *Event) (StreamPos, error) {
	if ev.Sender().Server() != rs.key.ServerName {
		return 0, fmt.Errorf("%w: sender %s is not local", ErrEventFormat, ev.Sender())
	}
	r := rs.cache.acquire(ev.RoomID())
	defer rs.cache.release(r)
	r.mu.Lock()
	head, err := rs.headLocked(ctx, r)
	var q *queuedEvent
	if err == nil {
		err = builtOn(ev, head)
	}
	if err == nil {
		var pr *prepared
		if pr, err = rs.prepare(ctx, head, ev, ProtoEvent{}, false); err == nil {
			q = rs.enqueue(r, pr)
		}
	}
	r.mu.Unlock()
	if err != nil {
		return 0, err
	}
	_, pos, err := q.wait(r)
	return pos, err
}

// builtOn checks that ev was built on head (as buildOn builds): it cites
// head's extremities and is allowed there.
func builtOn(ev *Event, head *RoomState) error {
	prev := head.Extremities
	if len(prev) > maxPrevEvents {
		prev = prev[:maxPrevEvents]
	}
	if ev.Version().ID != head.Version.ID || !slices.Equal(ev.PrevEvents(), prev) || ev.Depth() != min(head.Depth+1, maxCanonicalInt) {
		return ErrRoomChanged
	}
	return Authorise(ev, head.State)
}

// prepare computes the state after ev and what to persist. It changes
// nothing but allocating a snapshot ID (enqueue sets the generation).
func (rs *Rooms) prepare(ctx context.Context, cur *RoomState, ev *Event, p ProtoEvent, newRoom bool) (*prepared, error) {
	// The event cites the first maxPrevEvents extremities (build); any
	// beyond stay extremities.
	ext := []EventID{ev.ID()}
	if len(cur.Extremities) > maxPrevEvents {
		ext = append(ext, cur.Extremities[maxPrevEvents:]...)
	}
	next := &RoomState{
		Version: cur.Version, State: cur.State, Extremities: ext,
		Depth: ev.Depth(), Snapshot: cur.Snapshot, ChainLen: cur.ChainLen,
	}
	if cur.Version.EventFormat == EventFormatV1 {
		next.ExtremityEvents = []*Event{ev}
		for _, e := range cur.ExtremityEvents {
			if slices.Contains(ext[1:], e.ID()) {
				next.ExtremityEvents = append(next.ExtremityEvents, e)
			}
		}
	}
	per := &Persist{
		Event: ev, NewRoom: newRoom, Txn: p.Txn,
		StateBefore: cur.Snapshot, StateAfter: cur.Snapshot, Extremities: next.Extremities,
		ExtremitiesBefore: cur.Extremities,
	}
	if ev.IsState() {
		k := ev.Tuple()
		if old := cur.State[k]; old != nil {
			per.Unsigned = replacesState(old)
		}
		next.State = cur.State.With(ev)
		snap, err := rs.store.NewSnapshotID(ctx)
		if err != nil {
			return nil, err
		}
		next.Snapshot = snap
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
	return &prepared{per: per, next: next}, nil
}

// enqueue queues a prepared event and makes the state after it the room's
// head; the store's after-commit hook makes it the durable state. Caller
// holds r.mu and a pin on r, kept until wait returns.
func (rs *Rooms) enqueue(r *room, pr *prepared) *queuedEvent {
	per, ev, next := pr.per, pr.per.Event, pr.next
	per.Generation = r.gen
	q := &queuedEvent{ev: ev, gen: r.gen}
	epoch := r.currentEpoch()
	per.Committed = func(pos StreamPos) {
		q.pos = pos // read by wait after the result arrives on done
		// Published before the listeners hear of the event, so that what
		// they wake reads the state after it.
		durable := *next
		durable.LastPos = pos
		r.publish(&durable, epoch)
		for _, l := range rs.listeners {
			l.EventCommitted(ev, pos)
		}
	}
	q.done = rs.store.EnqueueEvent(per)
	r.head = next
	return q
}

type queuedEvent struct {
	ev   *Event
	gen  uint64
	done <-chan error
	pos  StreamPos
}

// wait blocks until the event is durable. On failure it marks the room's
// head for reloading from storage, once per generation: the events queued
// after it were built on it and fail too (ErrStale).
func (q *queuedEvent) wait(r *room) (*Event, StreamPos, error) {
	if err := <-q.done; err != nil {
		r.mu.Lock()
		if r.gen == q.gen {
			r.gen++
			r.reload.Store(true)
		}
		r.mu.Unlock()
		return nil, 0, err
	}
	return q.ev, q.pos, nil
}

// replacesState is the unsigned fields a state event that replaces old
// keeps for clients.
func replacesState(old *Event) json.RawMessage {
	b, _ := json.Marshal(map[string]any{
		"replaces_state": old.ID(), "prev_content": old.Content(), "prev_sender": old.Sender(),
	})
	return b
}
