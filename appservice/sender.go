package appservice

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	gosync "sync"
	"time"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"github.com/persistentchat/homeserver/streamworker"
)

// The transaction sender: one per service with a URL, on a
// streamworker.Loop. It reads committed events back from storage after
// its stored position, keeps those the service is interested in, and
// sends them in stream order as transactions (spec: "Pushing events"). A
// transaction is stored, body and all, together with the new position
// before it is first sent, and deleted once the service answers 2xx;
// until then it is retried with the same ID and the same bytes, with
// exponential back-off, across restarts too. So every event reaches the
// service, in order, and only a retried transaction is ever seen twice.
// The senders run while the process holds the "appservices" lease; the
// one that takes it over resumes from the stored queue.

// Transaction limits.
const (
	maxTxnEvents    = 100
	maxTxnEphemeral = 100
	// readBatch bounds the events one step reads.
	readBatch = 256
	// maxQueuedEphemeral bounds the ephemeral events waiting for a
	// transaction; past it the oldest are dropped (they are ephemeral).
	maxQueuedEphemeral = 1000
	// maxRoomCache bounds the rooms whose interest a sender remembers.
	maxRoomCache = 10000
)

// Back-off between attempts to send a transaction: it doubles from
// initialBackoff up to maxBackoff while the service stays unreachable.
const (
	initialBackoff = time.Second
	maxBackoff     = 5 * time.Minute
)

// storeRetryDelay is how long a sender waits after a storage error.
const storeRetryDelay = time.Second

type sender struct {
	svc  *Service
	reg  *Registration
	log  *slog.Logger
	loop *streamworker.Loop

	// Owned by the loop's goroutine (Resume and Step).
	lastTxn int64
	pending []storage.AppServiceTxn
	rooms   map[roomdag.RoomID]*roomInterest

	mu        gosync.Mutex
	ephemeral []json.RawMessage
	delivered roomdag.StreamPos // every interesting event up to here was acknowledged
	backoffs  []time.Duration   // the delay of every back-off so far
	changed   chan struct{}     // closed and replaced when delivered or backoffs change
}

// roomInterest is whether the service has a member in a room, at a state
// snapshot: the local joined members its namespaces cover.
type roomInterest struct {
	snapshot int64
	members  map[roomdag.UserID]bool
}

func newSender(svc *Service, reg *Registration) *sender {
	s := &sender{svc: svc, reg: reg, log: svc.log.With("appservice", reg.ID),
		rooms: map[roomdag.RoomID]*roomInterest{}, changed: make(chan struct{})}
	s.loop = streamworker.New(s, streamworker.Options{Name: "appservice sender", Clock: svc.clock, Log: s.log,
		Retry: storeRetryDelay, Backoff: streamworker.Backoff{Initial: initialBackoff, Max: maxBackoff},
		Holder: svc.holder, Failed: s.failed})
	return s
}

// start reads the stored queue and starts the loop.
func (s *sender) start(ctx context.Context) error { return s.loop.Start(ctx) }

// stop stops the loop after the request in flight, which it cuts.
func (s *sender) stop() { s.loop.Stop() }

func (s *sender) wake() { s.loop.Notify() }

// retryNow ends a back-off: the service answered a ping.
func (s *sender) retryNow() { s.loop.Kick() }

func (s *sender) addEphemeral(ev json.RawMessage) {
	s.mu.Lock()
	if len(s.ephemeral) >= maxQueuedEphemeral {
		s.ephemeral = s.ephemeral[1:]
	}
	s.ephemeral = append(s.ephemeral, ev)
	s.mu.Unlock()
	s.wake()
}

func (s *sender) takeEphemeral() []json.RawMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := min(len(s.ephemeral), maxTxnEphemeral)
	out := s.ephemeral[:n:n]
	s.ephemeral = s.ephemeral[n:]
	return out
}

// putBackEphemeral returns events taken for a transaction that could not
// be stored, ahead of any that arrived since.
func (s *sender) putBackEphemeral(evs []json.RawMessage) {
	if len(evs) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ephemeral = append(append([]json.RawMessage(nil), evs...), s.ephemeral...)
	if over := len(s.ephemeral) - maxQueuedEphemeral; over > 0 {
		s.ephemeral = s.ephemeral[over:]
	}
}

func (s *sender) setDelivered(pos roomdag.StreamPos) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if pos > s.delivered {
		s.delivered = pos
		close(s.changed)
		s.changed = make(chan struct{})
	}
}

func (s *sender) noteBackoff(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.backoffs = append(s.backoffs, d)
	close(s.changed)
	s.changed = make(chan struct{})
}

// waitFor returns once cond, checked under s.mu, holds, or when ctx ends
// or the sender stops.
func (s *sender) waitFor(ctx context.Context, cond func() bool) error {
	for {
		s.mu.Lock()
		ok, ch := cond(), s.changed
		s.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.loop.Stopped():
			return errors.New("appservice: sender stopped")
		}
	}
}

// unsent is a transaction the service did not accept.
type unsent struct {
	txn int64
	err error
}

func (u *unsent) Error() string {
	return "transaction " + strconv.FormatInt(u.txn, 10) + ": " + u.err.Error()
}
func (u *unsent) Unwrap() error { return u.err }

// failed hears of a failed step, once the retry's timer is set.
func (s *sender) failed(err error, retryIn time.Duration) {
	var u *unsent
	if errors.As(err, &u) {
		s.log.Warn("application service unreachable; retrying", "txn", u.txn, "err", u.err, "retry_in", retryIn)
		s.noteBackoff(retryIn)
		return
	}
	s.log.Error("appservice sender", "err", err, "pos", s.loop.Pos(), "retry_in", retryIn)
}

// Resume implements streamworker.Stepper: it reads the stored queue, the
// position and the transactions not yet acknowledged.
func (s *sender) Resume(ctx context.Context) (roomdag.StreamPos, error) {
	st, err := s.svc.store.AppServiceStream(ctx, s.reg.ID)
	if err != nil {
		return 0, err
	}
	s.lastTxn, s.pending = st.LastTxn, st.Pending
	s.rooms = map[roomdag.RoomID]*roomInterest{}
	if len(s.pending) == 0 {
		s.setDelivered(st.EventPos)
	}
	return st.EventPos, nil
}

// Step implements streamworker.Stepper. While a transaction is pending
// it sends the oldest (a failure is Remote: the loop backs off and the
// next step sends it again); otherwise it reads the next events after
// from, the stored position, and either builds a transaction (stored,
// with the new position, and queued to be sent) or, when none concerns
// the service, moves the stored position past them.
func (s *sender) Step(ctx context.Context, from roomdag.StreamPos) (roomdag.StreamPos, bool, error) {
	if len(s.pending) > 0 {
		t := s.pending[0]
		if err := s.svc.client.putTransaction(ctx, s.reg, strconv.FormatInt(t.ID, 10), t.Body); err != nil {
			return from, false, streamworker.Remote(&unsent{txn: t.ID, err: err})
		}
		if err := s.svc.store.DeleteAppServiceTxn(context.WithoutCancel(ctx), s.reg.ID, t.ID); err != nil {
			// It stays stored and is sent again, under the same ID,
			// after a restart: the service ignores a repeat.
			s.log.Error("forgetting an acknowledged transaction", "txn", t.ID, "err", err)
		}
		s.setDelivered(t.UpTo)
		s.pending = s.pending[1:]
		return from, true, nil
	}
	evs, err := s.svc.store.StreamEvents(ctx, from, readBatch)
	if err != nil {
		return from, false, err
	}
	upTo := from
	var events []json.RawMessage
	aliases := map[roomdag.RoomID]bool{}
	now := s.svc.clock.Now().UnixMilli()
	for _, ev := range evs {
		ok, err := s.interested(ctx, ev, aliases)
		if err != nil {
			return from, false, err
		}
		if ok {
			view := roomdag.ClientView{NowMS: now}
			if s.reg.OwnsUser(ev.Sender()) {
				// The service's own events carry their transaction_id, as
				// a client's do in its /sync.
				view.UserID, view.DeviceID = ev.Sender(), ev.TxnDevice
			}
			events = append(events, ev.ClientJSON(view))
		}
		upTo = ev.Pos
		if len(events) == maxTxnEvents {
			break
		}
	}
	read := len(evs) == readBatch || len(events) == maxTxnEvents
	eph := []json.RawMessage(nil)
	if s.reg.ReceiveEphemeral {
		eph = s.takeEphemeral()
	}
	if len(events) == 0 && len(eph) == 0 {
		if upTo != from {
			if err := s.svc.store.SetAppServicePos(ctx, s.reg.ID, from, upTo); err != nil {
				return from, false, err
			}
			s.setDelivered(upTo)
		}
		return upTo, read, nil
	}
	if events == nil {
		events = []json.RawMessage{}
	}
	body, err := json.Marshal(transaction{Events: events, Ephemeral: eph, EphemeralUnstable: eph})
	if err != nil {
		s.putBackEphemeral(eph)
		return from, false, err
	}
	t := storage.AppServiceTxn{ID: s.lastTxn + 1, Body: body, UpTo: upTo}
	if err := s.svc.store.PutAppServiceTxn(ctx, s.reg.ID, from, t); err != nil {
		s.putBackEphemeral(eph)
		return from, false, err
	}
	s.lastTxn = t.ID
	s.pending = append(s.pending, t)
	return upTo, true, nil
}

// interested reports whether the service is interested in ev: it happened
// in a room of the service's rooms namespaces or with an alias in its
// aliases namespaces, or its sender or target (a membership's state key)
// is one of the service's users, or one of those is joined to the room
// (spec: "Registration").
func (s *sender) interested(ctx context.Context, ev storage.StreamEvent, aliasCache map[roomdag.RoomID]bool) (bool, error) {
	room := ev.RoomID()
	ri, err := s.roomAt(ctx, room, ev.StateBefore)
	if err != nil {
		return false, err
	}
	defer s.advance(ri, ev)
	switch {
	case s.reg.InRoomNamespace(room), s.reg.OwnsUser(ev.Sender()), len(ri.members) > 0:
		return true, nil
	case ev.Type() == roomdag.TypeMember && ev.StateKey() != nil && s.reg.OwnsUser(roomdag.UserID(*ev.StateKey())):
		return true, nil
	}
	if len(s.reg.Aliases) == 0 {
		return false, nil
	}
	hit, ok := aliasCache[room]
	if !ok {
		aliases, err := s.svc.store.RoomAliases(ctx, room)
		if err != nil {
			return false, err
		}
		for _, a := range aliases {
			if s.reg.InAliasNamespace(roomdag.RoomAlias(a)) {
				hit = true
				break
			}
		}
		aliasCache[room] = hit
	}
	return hit, nil
}

// roomAt returns the service's members of a room at a state snapshot.
func (s *sender) roomAt(ctx context.Context, room roomdag.RoomID, snapshot int64) (*roomInterest, error) {
	if ri, ok := s.rooms[room]; ok && ri.snapshot == snapshot {
		return ri, nil
	}
	state, err := s.svc.store.StateEvents(ctx, snapshot)
	if err != nil {
		return nil, err
	}
	ri := &roomInterest{snapshot: snapshot, members: map[roomdag.UserID]bool{}}
	for k, ev := range state {
		if k.Type == roomdag.TypeMember && ev.Membership() == roomdag.MembershipJoin && s.reg.OwnsUser(roomdag.UserID(k.StateKey)) {
			ri.members[roomdag.UserID(k.StateKey)] = true
		}
	}
	if len(s.rooms) >= maxRoomCache {
		s.rooms = map[roomdag.RoomID]*roomInterest{}
	}
	s.rooms[room] = ri
	return ri, nil
}

// advance moves a room's cached interest past ev to the state after it.
// Local rooms are linear, so the state after a membership event is the
// state before with that membership changed.
func (s *sender) advance(ri *roomInterest, ev storage.StreamEvent) {
	if ev.StateAfter == ev.StateBefore {
		return
	}
	if ev.Type() == roomdag.TypeMember && ev.StateKey() != nil {
		u := roomdag.UserID(*ev.StateKey())
		if s.reg.OwnsUser(u) {
			if ev.Membership() == roomdag.MembershipJoin {
				ri.members[u] = true
			} else {
				delete(ri.members, u)
			}
		}
	}
	ri.snapshot = ev.StateAfter
}

// Interface guard.
var _ streamworker.Stepper = (*sender)(nil)
