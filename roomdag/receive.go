package roomdag

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// EventKind says how a received event came to this server, which decides
// what it may change.
type EventKind uint8

const (
	// KindLive is an event at the room's present (a /send transaction, an
	// event fetched by /get_missing_events to fill a gap before one): it
	// moves the forward extremities and the current state and reaches
	// /sync as new.
	KindLive EventKind = iota
	// KindBackfill is history older than what the server holds: it takes
	// its place in /messages by depth, under a negative stream position
	// that no stream reader asks for, and changes nothing of the present.
	KindBackfill
	// KindOutlier is an event known without its history (the auth chain
	// and state of a send_join response, a state event from /state_ids):
	// checked against its own auth events only, stored with no state, never
	// in the timeline.
	KindOutlier
)

// String names the kind as the storage does.
func (k EventKind) String() string {
	switch k {
	case KindLive:
		return "live"
	case KindBackfill:
		return "backfill"
	case KindOutlier:
		return "outlier"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// DAGStatus is what the server made of a stored event.
type DAGStatus uint8

const (
	// StatusTimeline is an accepted event in the room's timeline (live or
	// backfilled), with the state at it.
	StatusTimeline DAGStatus = iota
	// StatusOutlier is an event held without its history: no state.
	StatusOutlier
	// StatusRejected failed the auth rules; it is never state and never a
	// prev_event of a local event.
	StatusRejected
	// StatusSoftFailed passed against its auth events and the state before
	// it but not against the room's current state: kept, with the state at
	// it, but not current state, not an extremity and not shown to
	// clients (server-server API, "Soft failure").
	StatusSoftFailed
)

// String names the status as the storage does.
func (s DAGStatus) String() string {
	switch s {
	case StatusTimeline:
		return "timeline"
	case StatusOutlier:
		return "outlier"
	case StatusRejected:
		return "rejected"
	case StatusSoftFailed:
		return "soft_failed"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// DAGEvent is a stored event with what the DAG needs of it.
type DAGEvent struct {
	Event  *Event
	Status DAGStatus
	// StateAfter is the snapshot of the state after the event (0 for
	// outliers, and for rejected events whose state before was unknown);
	// ChainLen is that snapshot's delta chain length.
	StateAfter int64
	ChainLen   int
	// Reason is why a rejected event was rejected.
	Reason string
}

// SignatureVerifier checks the signatures a remote event must carry
// (federation's Keyring implements it): it returns an error wrapping
// ErrSignature when one is missing or wrong. roomdag calls it with the
// event's origin_server_ts as atTS.
type SignatureVerifier interface {
	VerifyEventSignatures(ctx context.Context, ev *Event, atTS int64) error
}

// ReceiveOptions say how Receive takes an event.
type ReceiveOptions struct {
	Kind EventKind
	// Verifier checks the event's signatures; required.
	Verifier SignatureVerifier
	// ExpectedID, if set, is the ID the caller asked for (a prev_event it
	// fetched, /event/{id}): an event whose ID differs is refused.
	ExpectedID EventID
	// StateBefore, if set, is the state before the event as another
	// server reported it (/state_ids), for an event whose prev_events are
	// not all known: the event is accepted with a gap behind it. Every
	// event named must already be stored (Receive them as outliers first).
	StateBefore []EventID
	// NoSoftFail skips the check against the current state, for this
	// server's own join that a resident server accepted (send_join): the
	// current state here is stale when none of its users was in the room
	// (a ban since lifted, say), and the join's state comes with it.
	NoSoftFail bool
}

// MissingEventsError is what Receive returns for an event it cannot place
// yet: Prev lists prev_events that are unknown (or held only as outliers,
// without state), for /get_missing_events, or pass ReceiveOptions.StateBefore
// to accept the event with a gap; Auth lists auth_events (or StateBefore
// entries) that are unknown, for /event_auth or /event. Nothing was stored.
type MissingEventsError struct {
	Event EventID
	Prev  []EventID
	Auth  []EventID
}

func (e *MissingEventsError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "event %s: missing", e.Event)
	if len(e.Prev) > 0 {
		fmt.Fprintf(&b, " prev_events %v", e.Prev)
	}
	if len(e.Auth) > 0 {
		fmt.Fprintf(&b, " auth events %v", e.Auth)
	}
	return b.String()
}

// ReceiveResult is what Receive made of an event it stored.
type ReceiveResult struct {
	Event  *Event
	Status DAGStatus
	// Pos is the stream position of a timeline event (negative for
	// backfill), 0 for the others.
	Pos StreamPos
	// Rejection is why a rejected event was rejected (an *AuthError), or,
	// for a soft-failed one, why the current state refused it.
	Rejection error
	// Redacted reports that the content hash did not match and the event
	// was taken in its redacted form (server-server API, "Validating
	// hashes and signatures on received events").
	Redacted bool
}

// ErrNoVerifier is Receive's error when the options carry no Verifier.
var ErrNoVerifier = errors.New("roomdag: Receive needs a SignatureVerifier")

// maxPrevEvents caps the prev_events of a local event. Citing every
// forward extremity merges the DAG; Synapse caps at 10 too so that a room
// with many forks (after a netsplit) does not produce one huge event; the
// extremities left out stay extremities and the next event cites them.
const maxPrevEvents = 10

// Receive takes an event built elsewhere (federation, backfill) into its
// room, and returns once what it made of the event is durable. It shares
// Append's preparation: the event's format and content hash per room
// version (a hash mismatch means the redacted form is taken), its ID, its
// signatures (opts.Verifier), and the auth rules against its own auth
// events, against the state before it (computed from its prev_events,
// resolved by ResolveState where they fork) and, for live events, against
// the current state (soft failure).
//
// The error is a *MissingEventsError when the event cannot be placed yet,
// a signature or format error for an event not to be stored at all, or
// the store's. A rejected or soft-failed event is not an error: it is
// stored as such and reported in the result. Receiving an event already
// stored returns what was made of it then.
//
// Receive sees committed events only: the events of one room must be
// received one at a time, each after those it cites (the order
// /get_missing_events and /backfill give, oldest first); an event
// received while its predecessor's Receive has not returned may find it
// missing. Only a live timeline event is announced to the listeners and
// moves the room on; redactions apply to timeline events as Append's do,
// a redacted current state event staying in the state, stripped (for a
// backfilled redaction, in storage: the cached state keeps the unredacted
// copy until the room is next loaded).
func (rs *Rooms) Receive(ctx context.Context, ev *Event, opts ReceiveOptions) (*ReceiveResult, error) {
	if opts.Verifier == nil {
		return nil, ErrNoVerifier
	}
	if opts.ExpectedID != "" && ev.ID() != opts.ExpectedID {
		return nil, fmt.Errorf("%w: event ID %s is not the %s asked for", ErrEventFormat, ev.ID(), opts.ExpectedID)
	}
	if known, err := rs.store.DAGEvents(ctx, []EventID{ev.ID()}); err != nil {
		return nil, err
	} else if d := known[ev.ID()]; d != nil && !(d.Status == StatusOutlier && opts.Kind != KindOutlier) {
		return &ReceiveResult{Event: d.Event, Status: d.Status, Rejection: reasonErr(d.Reason)}, nil
	}
	v := ev.Version()
	redacted := false
	if err := CheckContentHash(v, ev.JSON()); err != nil {
		raw, rerr := Redact(v, ev.JSON())
		if rerr != nil {
			return nil, rerr
		}
		red, rerr := NewEventFromJSON(v, raw)
		if rerr != nil {
			return nil, rerr
		}
		ev, redacted = red, true
	}
	if err := opts.Verifier.VerifyEventSignatures(ctx, ev, ev.OriginServerTS()); err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		res, err := rs.receiveOnce(ctx, ev, opts)
		if errors.Is(err, ErrEventExists) {
			// Stored meanwhile by another path: what it made of the event
			// is the answer (an outlier stored so is taken again live).
			known, kerr := rs.store.DAGEvents(ctx, []EventID{ev.ID()})
			if kerr != nil {
				return nil, kerr
			}
			if d := known[ev.ID()]; d != nil && !(d.Status == StatusOutlier && opts.Kind != KindOutlier) {
				return &ReceiveResult{Event: d.Event, Status: d.Status, Rejection: reasonErr(d.Reason)}, nil
			}
		}
		if errors.Is(err, ErrStale) || errors.Is(err, ErrRoomChanged) || errors.Is(err, ErrEventExists) {
			if attempt < staleRetries {
				continue
			}
			return nil, fmt.Errorf("room %s: gave up after %d attempts: %w (%w)", ev.RoomID(), attempt+1, ErrRoomBusy, err)
		}
		if res != nil {
			res.Redacted = redacted
		}
		return res, err
	}
}

func reasonErr(reason string) error {
	if reason == "" {
		return nil
	}
	return errors.New(reason)
}

// receiveOnce places ev on the room's head and waits for it to be durable.
func (rs *Rooms) receiveOnce(ctx context.Context, ev *Event, opts ReceiveOptions) (*ReceiveResult, error) {
	r := rs.cache.acquire(ev.RoomID())
	defer rs.cache.release(r)
	r.mu.Lock()
	head, err := rs.headLocked(ctx, r)
	newRoom := false
	if errors.Is(err, ErrUnknownRoom) {
		// The first event this server holds of a room: the create event,
		// or the outliers and the join of a send_join.
		head, err, newRoom = &RoomState{Version: ev.Version(), State: StateMap{}}, nil, true
	}
	if err != nil {
		r.mu.Unlock()
		return nil, err
	}
	if head.Version.ID != ev.Version().ID {
		r.mu.Unlock()
		return nil, fmt.Errorf("%w: event of room version %s in a room of version %s", ErrEventFormat, ev.Version().ID, head.Version.ID)
	}
	pr, res, err := rs.prepareReceived(ctx, head, ev, opts)
	if err != nil {
		r.mu.Unlock()
		return nil, err
	}
	pr.per.NewRoom = newRoom
	live := res.Status == StatusTimeline && opts.Kind == KindLive
	q := rs.enqueueReceived(r, pr, live)
	r.mu.Unlock()
	_, pos, err := q.wait(r)
	if err != nil {
		return nil, err
	}
	if res.Status == StatusTimeline {
		res.Pos = pos
	}
	return res, nil
}

// enqueueReceived is enqueue for a received event: only a live timeline
// event moves the room's head on and is announced to the listeners.
func (rs *Rooms) enqueueReceived(r *room, pr *prepared, live bool) *queuedEvent {
	if live {
		return rs.enqueue(r, pr)
	}
	per, ev, next := pr.per, pr.per.Event, pr.next
	per.Generation = r.gen
	q := &queuedEvent{ev: ev, gen: r.gen}
	epoch := r.currentEpoch()
	per.Committed = func(pos StreamPos) {
		q.pos = pos
		if per.NewRoom {
			durable := *next
			r.publish(&durable, epoch)
		}
	}
	q.done = rs.store.EnqueueEvent(per)
	if per.NewRoom {
		r.head = next
	}
	return q
}

// dagSource is an EventSource over the store, for state resolution.
type dagSource struct {
	ctx   context.Context
	store Store
	extra map[EventID]*Event
	seen  map[EventID]*DAGEvent
}

func (s *dagSource) Event(id EventID) (*Event, error) {
	if ev := s.extra[id]; ev != nil {
		return ev, nil
	}
	if d := s.seen[id]; d != nil {
		return d.Event, nil
	}
	m, err := s.store.DAGEvents(s.ctx, []EventID{id})
	if err != nil {
		return nil, err
	}
	d := m[id]
	if d == nil {
		return nil, fmt.Errorf("%w %s", ErrUnknownEvent, id)
	}
	s.seen[id] = d
	return d.Event, nil
}

func (s *dagSource) Rejected(id EventID) bool {
	if d := s.seen[id]; d != nil {
		return d.Status == StatusRejected
	}
	if _, err := s.Event(id); err != nil {
		return false
	}
	return s.seen[id] != nil && s.seen[id].Status == StatusRejected
}

// prepareReceived decides what ev is (accepted, rejected, soft-failed,
// outlier) on top of head and what to persist. It allocates snapshot IDs
// and reads the store; it changes nothing else.
func (rs *Rooms) prepareReceived(ctx context.Context, head *RoomState, ev *Event, opts ReceiveOptions) (*prepared, *ReceiveResult, error) {
	v := ev.Version()
	// Everything the event cites, in one read.
	want := append(slices.Clone(ev.AuthEvents()), ev.PrevEvents()...)
	want = append(want, opts.StateBefore...)
	createID := EventID("")
	if v.DomainlessRoomIDs && !ev.IsCreate() {
		createID = EventID("$" + string(ev.RoomID())[1:])
		want = append(want, createID)
	}
	known, err := rs.store.DAGEvents(ctx, want)
	if err != nil {
		return nil, nil, err
	}
	res := &ReceiveResult{Event: ev}
	per := &Persist{Event: ev, Received: true, Kind: opts.Kind, KeepExtremities: true, ExtremitiesBefore: head.Extremities}
	next := head
	pr := &prepared{per: per, next: next}
	reject := func(why error, before int64) (*prepared, *ReceiveResult, error) {
		res.Status, res.Rejection = StatusRejected, why
		per.Status, per.Reason = StatusRejected, why.Error()
		per.StateBefore, per.StateAfter = before, before
		return pr, res, nil
	}

	// 1. The event's own auth events (server-server API, "Checks performed
	// on receipt of a PDU", 4).
	missingAuth, why, err := checkOwnAuth(ev, known, createID, opts.StateBefore)
	if err != nil {
		return nil, nil, err
	}
	if len(missingAuth) > 0 {
		return nil, nil, &MissingEventsError{Event: ev.ID(), Auth: missingAuth}
	}
	if why != nil {
		return reject(why, 0)
	}
	if opts.Kind == KindOutlier {
		res.Status, per.Status = StatusOutlier, StatusOutlier
		return pr, res, nil
	}

	// 2. The state before the event, from its prev_events.
	src := &dagSource{ctx: ctx, store: rs.store, extra: map[EventID]*Event{}, seen: known}
	var before StateMap
	var beforeSnap int64
	var beforeChain int
	var missingPrev []EventID
	var prevStates []StateMap
	var prevSnaps []int64
	var prevChains []int
	if opts.StateBefore == nil {
		for _, id := range ev.PrevEvents() {
			d := known[id]
			if d == nil || d.Status == StatusOutlier || (d.Status == StatusRejected && d.StateAfter == 0) {
				missingPrev = append(missingPrev, id)
				continue
			}
			if slices.Contains(prevSnaps, d.StateAfter) {
				continue
			}
			st, err := rs.snapshotState(ctx, head, d.StateAfter)
			if err != nil {
				return nil, nil, err
			}
			prevStates, prevSnaps, prevChains = append(prevStates, st), append(prevSnaps, d.StateAfter), append(prevChains, d.ChainLen)
		}
		if len(missingPrev) > 0 {
			return nil, nil, &MissingEventsError{Event: ev.ID(), Prev: missingPrev}
		}
	}
	switch {
	case opts.StateBefore != nil:
		before = StateMap{}
		for _, id := range opts.StateBefore {
			if d := known[id]; d.Event.IsState() && d.Status != StatusRejected {
				before[d.Event.Tuple()] = d.Event
			}
		}
	case len(prevStates) == 1:
		before, beforeSnap, beforeChain = prevStates[0], prevSnaps[0], prevChains[0]
	case len(prevStates) == 0:
		before = StateMap{} // the create event
	default:
		if before, err = ResolveState(v, prevStates, src); err != nil {
			return nil, nil, fmt.Errorf("resolving the state before %s: %w", ev.ID(), err)
		}
	}
	if beforeSnap == 0 && len(before) > 0 {
		// A state no snapshot holds yet (resolved, or given): a full copy.
		if beforeSnap, err = rs.store.NewSnapshotID(ctx); err != nil {
			return nil, nil, err
		}
		beforeChain = 0
		per.Snapshots = append(per.Snapshots, SnapshotWrite{ID: beforeSnap, Entries: before.IDs()})
	}
	per.StateBefore, per.StateAfter = beforeSnap, beforeSnap

	// 3. The auth rules against the state before it (5).
	if err := Authorise(ev, before); err != nil {
		return reject(err, beforeSnap)
	}
	after := before
	afterChain := beforeChain
	if ev.IsState() {
		after = before.With(ev)
		snap, err := rs.store.NewSnapshotID(ctx)
		if err != nil {
			return nil, nil, err
		}
		w := SnapshotWrite{ID: snap}
		if beforeSnap == 0 || beforeChain+1 >= snapshotFullEvery {
			w.Entries, afterChain = after.IDs(), 0
		} else {
			w.Parent, w.ChainLen, afterChain = beforeSnap, beforeChain+1, beforeChain+1
			w.Entries = map[StateKey]EventID{ev.Tuple(): ev.ID()}
		}
		per.Snapshots = append(per.Snapshots, w)
		per.StateAfter = snap
		if old := before[ev.Tuple()]; old != nil {
			per.Unsigned = replacesState(old)
		}
		if ev.Type() == TypeMember && (ev.Membership() == MembershipInvite || ev.Membership() == MembershipKnock) {
			per.InviteState = StrippedState(after, ev)
		}
	}
	per.ChainLen = afterChain

	// 4. Soft failure: the current state (6). Backfilled history is not
	// judged by the present.
	if opts.Kind == KindLive && !opts.NoSoftFail && len(head.State) > 0 && beforeSnap != head.Snapshot && !sameState(before, head.State) {
		if err := Authorise(ev, head.State); err != nil {
			res.Status, res.Rejection = StatusSoftFailed, err
			per.Status = StatusSoftFailed
			return pr, res, nil
		}
	}
	res.Status, per.Status = StatusTimeline, StatusTimeline
	if ev.Type() == TypeRedaction {
		if err := rs.receivedRedaction(ctx, per, after, ev, head); err != nil {
			return nil, nil, err
		}
	}
	if opts.Kind == KindBackfill {
		return pr, res, nil
	}

	// 5. The forward extremities and the current state.
	hasChildren, err := rs.store.HasChildren(ctx, ev.ID())
	if err != nil {
		return nil, nil, err
	}
	ext := make([]EventID, 0, len(head.Extremities)+1)
	for _, id := range head.Extremities {
		if !slices.Contains(ev.PrevEvents(), id) {
			ext = append(ext, id)
		}
	}
	if !hasChildren {
		ext = append(ext, ev.ID())
	}
	slices.Sort(ext)
	per.KeepExtremities = false
	per.Extremities = ext
	nx := &RoomState{Version: v, Extremities: ext, Depth: max(head.Depth, ev.Depth()), ChainLen: afterChain}
	current, curSnap, curChain := after, per.StateAfter, afterChain
	if len(ext) != 1 || ext[0] != ev.ID() {
		// The room's present is forked: its state is the resolution of the
		// states at the extremities (the head's state for the one extremity
		// it was at, if it had one: it may not be durable yet).
		states := make([]StateMap, 0, len(ext))
		extEvs, err := rs.store.DAGEvents(ctx, ext)
		if err != nil {
			return nil, nil, err
		}
		for _, id := range ext {
			switch {
			case id == ev.ID():
				states = append(states, after)
			case len(head.Extremities) == 1 && head.Extremities[0] == id:
				states = append(states, head.State)
			case extEvs[id] != nil:
				st, err := rs.snapshotState(ctx, head, extEvs[id].StateAfter)
				if err != nil {
					return nil, nil, err
				}
				states = append(states, st)
			default:
				return nil, nil, fmt.Errorf("roomdag: forward extremity %s of room %s is not stored", id, ev.RoomID())
			}
		}
		if len(states) == 1 {
			current = states[0]
		} else if current, err = ResolveState(v, states, src); err != nil {
			return nil, nil, fmt.Errorf("resolving the current state of %s: %w", ev.RoomID(), err)
		}
		if curSnap, err = rs.store.NewSnapshotID(ctx); err != nil {
			return nil, nil, err
		}
		curChain = 0
		per.Snapshots = append(per.Snapshots, SnapshotWrite{ID: curSnap, Entries: current.IDs()})
	}
	per.CurrentChanges, per.CurrentRemoved = stateDiff(head.State, current)
	if rd := per.Redaction; rd != nil {
		// A redacted state event stays in the state, stripped, as for a
		// local redaction (the store redacts its stored copy).
		if old := current[redactedKey(current, rd.Target)]; old != nil && old.ID() == rd.Target {
			if rev, err := EventFromTrustedJSON(old.Version(), old.ID(), rd.JSON); err == nil {
				current = current.With(rev)
			}
		}
	}
	nx.State, nx.Snapshot, nx.ChainLen = current, curSnap, curChain
	per.CurrentSnapshot, per.CurrentChainLen = curSnap, curChain
	if v.EventFormat == EventFormatV1 {
		for _, id := range ext {
			if id == ev.ID() {
				nx.ExtremityEvents = append(nx.ExtremityEvents, ev)
			} else if d := extremityEvent(ctx, rs.store, id, head); d != nil {
				nx.ExtremityEvents = append(nx.ExtremityEvents, d)
			}
		}
	}
	pr.next = nx
	return pr, res, nil
}

// checkOwnAuth is the auth rules against ev's own auth events (and, from
// v12, the create event its room ID names, createID): the auth events
// (and entries of also) that are not stored, else why the rules reject
// it, else nothing. err is for failures other than the rules'.
func checkOwnAuth(ev *Event, known map[EventID]*DAGEvent, createID EventID, also []EventID) (missing []EventID, why error, err error) {
	authEvs := make([]*Event, 0, len(ev.AuthEvents()))
	var authRejected *Event
	for _, id := range ev.AuthEvents() {
		d := known[id]
		if d == nil {
			missing = append(missing, id)
			continue
		}
		if d.Status == StatusRejected && authRejected == nil {
			authRejected = d.Event
		}
		authEvs = append(authEvs, d.Event)
	}
	var create *Event
	if createID != "" {
		if d := known[createID]; d != nil {
			create = d.Event
		} else if !slices.Contains(missing, createID) {
			missing = append(missing, createID)
		}
	}
	for _, id := range also {
		if known[id] == nil && !slices.Contains(missing, id) {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		return missing, nil, nil
	}
	if !ev.IsCreate() {
		if err := CheckAuthEvents(ev, authEvs); err != nil {
			var ae *AuthError
			if !errors.As(err, &ae) {
				return nil, nil, err
			}
			return nil, err, nil
		}
		if authRejected != nil {
			return nil, reject2(ev.Version(), authRejected), nil
		}
	}
	authState := NewStateMap(authEvs...)
	if create != nil {
		authState = authState.With(create)
	}
	if err := Authorise(ev, authState); err != nil {
		return nil, err, nil
	}
	return nil, nil, nil
}

// extremityEvent finds the event of a forward extremity: the head's, or
// stored.
func extremityEvent(ctx context.Context, store Store, id EventID, head *RoomState) *Event {
	for _, e := range head.ExtremityEvents {
		if e.ID() == id {
			return e
		}
	}
	m, err := store.DAGEvents(ctx, []EventID{id})
	if err != nil || m[id] == nil {
		return nil
	}
	return m[id].Event
}

// reject2 is rule 2.3 (3.3 in v12): an auth event that was rejected.
func reject2(v *RoomVersion, ae *Event) error {
	return reject(v, ruleAuthRejected, "auth event %s was rejected", ae.ID())
}

// snapshotState loads a snapshot's state, taking the head's when it is
// that one.
func (rs *Rooms) snapshotState(ctx context.Context, head *RoomState, snap int64) (StateMap, error) {
	if snap == 0 {
		return StateMap{}, nil
	}
	if snap == head.Snapshot && head.State != nil {
		return head.State, nil
	}
	return rs.store.StateEvents(ctx, snap)
}

// sameState reports whether two state maps hold the same events.
func sameState(a, b StateMap) bool {
	if len(a) != len(b) {
		return false
	}
	for k, ev := range a {
		if o := b[k]; o == nil || o.ID() != ev.ID() {
			return false
		}
	}
	return true
}

// stateDiff lists what changes from old to cur: events now current, and
// keys no longer in the state.
func stateDiff(old, cur StateMap) ([]*Event, []StateKey) {
	changes := []*Event{}
	var removed []StateKey
	for k, ev := range cur {
		if o := old[k]; o == nil || o.ID() != ev.ID() {
			changes = append(changes, ev)
		}
	}
	for k := range old {
		if cur[k] == nil {
			removed = append(removed, k)
		}
	}
	return changes, removed
}

// receivedRedaction applies a received redaction as a local one is
// applied: to a timeline event of the room, if RedactionApplies in the
// state at the redaction.
func (rs *Rooms) receivedRedaction(ctx context.Context, per *Persist, state StateMap, ev *Event, head *RoomState) error {
	m, err := rs.store.DAGEvents(ctx, []EventID{ev.Redacts()})
	if err != nil {
		return err
	}
	d := m[ev.Redacts()]
	if d == nil || d.Status != StatusTimeline || !RedactionApplies(state, ev, d.Event) {
		return nil
	}
	t := d.Event
	redacted, err := Redact(t.Version(), t.JSON())
	if err != nil {
		return nil
	}
	because := (&StoredEvent{Event: ev}).ClientJSON(ClientView{NowMS: ev.OriginServerTS()})
	per.Redaction = &Redaction{Target: t.ID(), JSON: redacted, Because: because}
	return nil
}

// redactedKey is the state key under which state holds the event id, if
// it does.
func redactedKey(state StateMap, id EventID) StateKey {
	for k, ev := range state {
		if ev.ID() == id {
			return k
		}
	}
	return StateKey{}
}
