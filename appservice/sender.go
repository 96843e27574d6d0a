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
)

// The transaction sender: one goroutine per service with a URL. It reads
// committed events back from storage after its stored position, keeps
// those the service is interested in, and sends them in stream order as
// transactions (spec: "Pushing events"). A transaction is stored, body
// and all, together with the new position before it is first sent, and
// deleted once the service answers 2xx; until then it is retried with the
// same ID and the same bytes, with exponential back-off, across restarts
// too. So every event reaches the service, in order, and only a retried
// transaction is ever seen twice.

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
	svc *Service
	reg *Registration
	log *slog.Logger

	signal chan struct{} // capacity 1: "there may be new events"
	kick   chan struct{} // capacity 1: "retry now" (after a good ping)
	quit   chan struct{}
	done   chan struct{}
	ctx    context.Context // cancelled on stop: cuts a request in flight
	cancel context.CancelFunc
	// running is set by start; start and stop run on the caller's
	// goroutine, one after the other.
	running  bool
	stopOnce gosync.Once

	// Owned by the sender's goroutine.
	pos     roomdag.StreamPos
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
	ctx, cancel := context.WithCancel(context.Background())
	s := &sender{svc: svc, reg: reg, log: svc.log.With("appservice", reg.ID),
		signal: make(chan struct{}, 1), kick: make(chan struct{}, 1),
		quit: make(chan struct{}), done: make(chan struct{}), ctx: ctx, cancel: cancel,
		rooms: map[roomdag.RoomID]*roomInterest{}, changed: make(chan struct{})}
	s.signal <- struct{}{} // catch up on whatever committed while the server was down
	return s
}

// start reads the stored queue; run then sends.
func (s *sender) start(ctx context.Context) error {
	st, err := s.svc.store.AppServiceStream(ctx, s.reg.ID)
	if err != nil {
		return err
	}
	s.pos, s.lastTxn, s.pending = st.EventPos, st.LastTxn, st.Pending
	if len(s.pending) == 0 {
		s.setDelivered(s.pos)
	}
	s.running = true
	go s.run()
	return nil
}

// stop stops the goroutine after the request in flight, which it cuts.
func (s *sender) stop() {
	s.stopOnce.Do(func() {
		close(s.quit)
		s.cancel()
	})
	if s.running {
		<-s.done
	}
}

func (s *sender) wake() {
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

func (s *sender) retryNow() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

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
		case <-s.quit:
			return errors.New("appservice: sender stopped")
		}
	}
}

func (s *sender) run() {
	defer close(s.done)
	for {
		for len(s.pending) > 0 {
			if !s.deliver(s.pending[0]) {
				return
			}
			s.setDelivered(s.pending[0].UpTo)
			s.pending = s.pending[1:]
		}
		more, err := s.step(s.ctx)
		if err != nil {
			select {
			case <-s.quit:
				return
			default:
			}
			s.log.Error("appservice sender", "err", err, "pos", s.pos)
			select {
			case <-s.quit:
				return
			case <-s.svc.clock.After(storeRetryDelay):
			}
			continue
		}
		if more {
			continue
		}
		select {
		case <-s.quit:
			return
		case <-s.signal:
		}
	}
}

// step reads the next events after the position and either builds a
// transaction (stored, and queued in s.pending) or, when none concerns
// the service, moves the stored position past them. more says whether to
// step again at once.
func (s *sender) step(ctx context.Context) (more bool, err error) {
	evs, err := s.svc.store.StreamEvents(ctx, s.pos, readBatch)
	if err != nil {
		return false, err
	}
	from, upTo := s.pos, s.pos
	var events []json.RawMessage
	aliases := map[roomdag.RoomID]bool{}
	now := s.svc.clock.Now().UnixMilli()
	for _, ev := range evs {
		ok, err := s.interested(ctx, ev, aliases)
		if err != nil {
			return false, err
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
				return false, err
			}
			s.pos = upTo
			s.setDelivered(upTo)
		}
		return read, nil
	}
	if events == nil {
		events = []json.RawMessage{}
	}
	body, err := json.Marshal(transaction{Events: events, Ephemeral: eph, EphemeralUnstable: eph})
	if err != nil {
		s.putBackEphemeral(eph)
		return false, err
	}
	t := storage.AppServiceTxn{ID: s.lastTxn + 1, Body: body, UpTo: upTo}
	if err := s.svc.store.PutAppServiceTxn(ctx, s.reg.ID, from, t); err != nil {
		s.putBackEphemeral(eph)
		return false, err
	}
	s.pos, s.lastTxn = upTo, t.ID
	s.pending = append(s.pending, t)
	return true, nil
}

// deliver sends a stored transaction until the service accepts it; it
// returns false if the sender was stopped first.
func (s *sender) deliver(t storage.AppServiceTxn) bool {
	delay := initialBackoff
	for {
		err := s.svc.client.putTransaction(s.ctx, s.reg, strconv.FormatInt(t.ID, 10), t.Body)
		if err == nil {
			if err := s.svc.store.DeleteAppServiceTxn(context.Background(), s.reg.ID, t.ID); err != nil {
				// It stays stored and is sent again, under the same ID,
				// after a restart: the service ignores a repeat.
				s.log.Error("forgetting an acknowledged transaction", "txn", t.ID, "err", err)
			}
			return true
		}
		select {
		case <-s.quit:
			return false
		default:
		}
		s.log.Warn("application service unreachable; retrying", "txn", t.ID, "err", err, "retry_in", delay)
		// Take the timer before announcing the back-off, so that whoever
		// waits for the announcement (a test moving a fake clock) cannot
		// move the clock before the timer exists.
		timer := s.svc.clock.After(delay)
		s.noteBackoff(delay)
		select {
		case <-s.quit:
			return false
		case <-s.kick:
		case <-timer:
		}
		delay = min(2*delay, maxBackoff)
	}
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
