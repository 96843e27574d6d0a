package roomdag

import (
	"cmp"
	"container/heap"
	"errors"
	"fmt"
	"maps"
	"slices"
)

// EventSource gives state resolution the events it does not find in the
// states themselves: the auth chains of the state events (and, in v2.1, the
// auth events between conflicted events, which lie in those chains). It is
// the caller's: a map of events in memory, or a lookup backed by storage.
// Resolution asks for each event at most once per call, so a source need
// not cache. It is called from the resolving goroutine only.
type EventSource interface {
	// Event returns the event with this ID, or an error if the source has
	// none (wrapping ErrUnknownEvent where it can tell).
	Event(id EventID) (*Event, error)
	// Rejected reports whether this server rejected the event. Rejected
	// events never serve as auth events in the iterative auth checks
	// (rooms/v2 "Rejected events"); in a consistent store none is in the
	// auth chain of an accepted event, so a source that does not track
	// rejection may answer false.
	Rejected(id EventID) bool
}

// ErrUnknownEvent is the error an EventSource wraps for an event it lacks.
var ErrUnknownEvent = errors.New("roomdag: unknown event")

// EventMap is an EventSource over events in memory, none of them rejected.
type EventMap map[EventID]*Event

// Event implements EventSource.
func (m EventMap) Event(id EventID) (*Event, error) {
	if ev := m[id]; ev != nil {
		return ev, nil
	}
	return nil, fmt.Errorf("%w %s", ErrUnknownEvent, id)
}

// Rejected implements EventSource: an EventMap holds no rejected events.
func (m EventMap) Rejected(EventID) bool { return false }

// ResolveState resolves states, the states after each prev_event of an
// event, into the state before it, with the algorithm of room version v
// (RoomVersion.StateRes): ResolveStateV1, ResolveStateV2 or ResolveStateV21.
// Every event in states must be of a room of version v, and src must hold
// their auth chains (v1 needs none; a nil src holds nothing). The result is a new map; neither states
// nor their maps are modified. It is a pure function of its inputs.
func ResolveState(v *RoomVersion, states []StateMap, src EventSource) (StateMap, error) {
	switch v.StateRes {
	case StateResV1:
		return ResolveStateV1(states), nil
	case StateResV2:
		return ResolveStateV2(states, src)
	case StateResV21:
		return ResolveStateV21(states, src)
	}
	return nil, fmt.Errorf("roomdag: room version %s has no state resolution algorithm", v.ID)
}

// ResolveStateV2 is the state resolution algorithm of room versions 2 to 11
// (content/rooms/fragments/v2-state-res.md, "Algorithm"):
//
//  1. the power events of the full conflicted set (the conflicted events
//     plus the auth difference), with the events of their auth chains that
//     are in that set, are sorted by the reverse topological power
//     ordering;
//  2. they are applied to the unconflicted state map by the iterative auth
//     checks;
//  3. the other events of the full conflicted set are sorted by the
//     mainline ordering based on the power levels of that partial state;
//  4. they are applied to it by the iterative auth checks;
//  5. the unconflicted state map is laid over the result.
//
// Where the text leaves room, we do as Synapse (synapse/state/v2.py) does,
// so that rooms shared with it resolve alike:
//
//   - a tuple is conflicted when some state lacks it, as the definition
//     says ("present in every S_i with the same value");
//   - the auth chain of a state set includes the set's own events, so an
//     unconflicted event is never part of the auth difference;
//   - the auth chains of power events are followed through events of the
//     full conflicted set only, and m.room.create counts as a power event;
//   - the power level of a sender (for the reverse topological power
//     ordering) is read from the power levels among the event's auth
//     events: the users entry, else users_default; with none, 100 for the
//     room's creator and 0 for others; infinite for v12 creators;
//   - in the iterative auth checks, the tuples the auth events selection
//     names for the event come from the partially resolved state when it
//     has them, and everything else from the event's auth events that were
//     not rejected.
//
// One place we follow the spec rather than Synapse: an event in the full
// conflicted set that this server rejected against the state before it is
// checked again like any other ("Rejected events"); Synapse skips it.
//
// Errors come from src (an auth event it lacks) or from events of another
// room than the others.
func ResolveStateV2(states []StateMap, src EventSource) (StateMap, error) {
	return resolveV2(states, src, false)
}

// ResolveStateV21 is state resolution v2.1 (room version 12, MSC4297;
// content/rooms/v12.md "State resolution"): ResolveStateV2 with two
// changes. The full conflicted set also holds the conflicted state subgraph,
// every event on an auth_events path between two conflicted events; and the
// first iterative auth checks start from an empty state map, so conflicted
// events are replayed over their own auth chains rather than over an
// unconflicted state that may disagree with them. The unconflicted state is
// still laid over the result (step 5).
func ResolveStateV21(states []StateMap, src EventSource) (StateMap, error) {
	return resolveV2(states, src, true)
}

// node is an event taking part in one resolution; resolvers refer to events
// by their index in resolver.nodes.
type node struct {
	ev   *Event
	auth []int32 // the auth events, loaded on first use (authLoaded)
	// authLoaded says auth has been filled in from ev.AuthEvents().
	authLoaded bool
	inFull     bool // in the full conflicted set
	// rejected caches EventSource.Rejected once rejectedKnown.
	rejected, rejectedKnown bool
}

// resolver holds what one resolution caches: every event it has read, by
// ID, with its auth edges.
type resolver struct {
	src   EventSource
	v21   bool
	room  RoomID
	nodes []node
	index map[EventID]int32
	// create is the room's create event (v12 reads it for every event: it is
	// never among auth events there).
	create *Event
}

func resolveV2(states []StateMap, src EventSource, v21 bool) (StateMap, error) {
	unconflicted, conflicted := splitStates(states)
	if len(conflicted) == 0 {
		return unconflicted, nil
	}
	if src == nil {
		src = EventMap(nil) // every lookup fails with ErrUnknownEvent
	}
	r := &resolver{src: src, v21: v21, index: map[EventID]int32{}}
	for _, ev := range conflicted {
		if _, err := r.add(ev); err != nil {
			return nil, err
		}
	}
	for _, ev := range unconflicted {
		if _, err := r.add(ev); err != nil {
			return nil, err
		}
	}
	if err := r.findCreate(unconflicted, conflicted); err != nil {
		return nil, err
	}
	full, err := r.fullConflictedSet(states, conflicted)
	if err != nil {
		return nil, err
	}

	// Step 1: the power events and the part of their auth chains in the full
	// conflicted set.
	var power []int32
	for _, n := range full {
		if isPowerEvent(r.nodes[n].ev) {
			power = append(power, n)
		}
	}
	sortedPower, err := r.reverseTopologicalPowerSort(power)
	if err != nil {
		return nil, err
	}

	// Step 2.
	resolved := StateMap{}
	if !v21 {
		resolved = maps.Clone(unconflicted)
	}
	if err := r.iterativeAuthChecks(sortedPower, resolved); err != nil {
		return nil, err
	}

	// Step 3: the rest, by the mainline of the resolved power levels.
	picked := make(map[int32]bool, len(sortedPower))
	for _, n := range sortedPower {
		picked[n] = true
	}
	var rest []int32
	for _, n := range full {
		if !picked[n] {
			rest = append(rest, n)
		}
	}
	if err := r.mainlineSort(rest, resolved[StateKey{Type: TypePowerLevels}]); err != nil {
		return nil, err
	}

	// Step 4.
	if err := r.iterativeAuthChecks(rest, resolved); err != nil {
		return nil, err
	}

	// Step 5.
	maps.Copy(resolved, unconflicted)
	return resolved, nil
}

// splitStates divides the states into the unconflicted state map and the
// conflicted state set (rooms/v2 "Unconflicted state map and conflicted
// state set"): a tuple is unconflicted when every state holds the same
// event for it. Nil entries count as absent. The conflicted events are
// returned without duplicates, in no particular order.
func splitStates(states []StateMap) (StateMap, []*Event) {
	unconflicted := StateMap{}
	var conflicted []*Event
	seen := map[StateKey]bool{}
	for _, st := range states {
		for k, ev := range st {
			if ev == nil || seen[k] {
				continue
			}
			seen[k] = true
			same := true
			for _, other := range states {
				if o := other[k]; o == nil || o.ID() != ev.ID() {
					same = false
					break
				}
			}
			if same {
				unconflicted[k] = ev
				continue
			}
			ids := map[EventID]bool{}
			for _, other := range states {
				if o := other[k]; o != nil && !ids[o.ID()] {
					ids[o.ID()] = true
					conflicted = append(conflicted, o)
				}
			}
		}
	}
	return unconflicted, conflicted
}

// add makes ev a node, unless an event of its ID already is one.
func (r *resolver) add(ev *Event) (int32, error) {
	if n, ok := r.index[ev.ID()]; ok {
		return n, nil
	}
	if r.room == "" {
		r.room = ev.RoomID()
	} else if ev.RoomID() != r.room {
		return 0, fmt.Errorf("roomdag: state resolution for room %s met event %s of room %s", r.room, ev.ID(), ev.RoomID())
	}
	n := int32(len(r.nodes))
	r.nodes = append(r.nodes, node{ev: ev})
	r.index[ev.ID()] = n
	return n, nil
}

// lookup returns the node of id, reading the event from the source if it is
// not one yet.
func (r *resolver) lookup(id EventID) (int32, error) {
	if n, ok := r.index[id]; ok {
		return n, nil
	}
	ev, err := r.src.Event(id)
	if err != nil {
		return 0, fmt.Errorf("roomdag: state resolution needs event %s: %w", id, err)
	}
	if ev == nil || ev.ID() != id {
		return 0, fmt.Errorf("roomdag: state resolution asked for event %s and got another", id)
	}
	return r.add(ev)
}

// authOf returns n's auth events as nodes, each once.
func (r *resolver) authOf(n int32) ([]int32, error) {
	if r.nodes[n].authLoaded {
		return r.nodes[n].auth, nil
	}
	ids := r.nodes[n].ev.AuthEvents()
	auth := make([]int32, 0, len(ids))
	for _, id := range ids {
		a, err := r.lookup(id)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(auth, a) {
			auth = append(auth, a)
		}
	}
	r.nodes[n].auth, r.nodes[n].authLoaded = auth, true
	return auth, nil
}

// isRejected asks the source about n once.
func (r *resolver) isRejected(n int32) bool {
	nd := &r.nodes[n]
	if !nd.rejectedKnown {
		nd.rejected, nd.rejectedKnown = r.src.Rejected(nd.ev.ID()), true
	}
	return nd.rejected
}

// findCreate sets r.create from the states: the create event is the same in
// every state of a room (it is never conflicted unless the states are of
// different rooms, which add refuses).
func (r *resolver) findCreate(unconflicted StateMap, conflicted []*Event) error {
	if ev := unconflicted[StateKey{Type: TypeCreate}]; ev != nil {
		r.create = ev
		return nil
	}
	for _, ev := range conflicted {
		if ev.IsCreate() {
			r.create = ev
			return nil
		}
	}
	if r.nodes[0].ev.Version().DomainlessRoomIDs {
		// v12: the create event's ID is the room ID's (MSC4291).
		n, err := r.lookup(EventID("$" + string(r.room[1:])))
		if err != nil {
			return err
		}
		r.create = r.nodes[n].ev
	}
	return nil
}

// fullConflictedSet returns the full conflicted set: the conflicted events,
// the auth difference and, in v2.1, the conflicted state subgraph. It reads
// the auth chains of every state event from the source.
func (r *resolver) fullConflictedSet(states []StateMap, conflicted []*Event) ([]int32, error) {
	// in[i] marks the nodes in the full auth chain of states[i], the state
	// events included (see ResolveStateV2).
	in := make([][]bool, len(states))
	for i, st := range states {
		var stack []int32
		for _, ev := range st {
			if ev == nil {
				continue
			}
			n, err := r.add(ev)
			if err != nil {
				return nil, err
			}
			stack = append(stack, n)
		}
		mark := in[i]
		for len(stack) > 0 {
			n := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if int(n) < len(mark) && mark[n] {
				continue
			}
			for int(n) >= len(mark) {
				mark = append(mark, false)
			}
			mark[n] = true
			auth, err := r.authOf(n)
			if err != nil {
				return nil, err
			}
			for _, a := range auth {
				if int(a) >= len(mark) || !mark[a] {
					stack = append(stack, a)
				}
			}
		}
		in[i] = mark
	}
	var full []int32
	include := func(n int32) {
		if !r.nodes[n].inFull {
			r.nodes[n].inFull = true
			full = append(full, n)
		}
	}
	for _, ev := range conflicted {
		include(r.index[ev.ID()])
	}
	for n := range r.nodes {
		count := 0
		for _, mark := range in {
			if n < len(mark) && mark[n] {
				count++
			}
		}
		if count > 0 && count < len(states) {
			include(int32(n))
		}
	}
	if r.v21 {
		sub, err := r.conflictedSubgraph(conflicted)
		if err != nil {
			return nil, err
		}
		for _, n := range sub {
			include(n)
		}
	}
	return full, nil
}

// conflictedSubgraph is v2.1's conflicted state subgraph: the events on
// auth_events paths from one conflicted event to another. An event below a
// conflicted event is on such a path exactly when some conflicted event is
// below it, which one walk in post-order (auth events first) tells.
func (r *resolver) conflictedSubgraph(conflicted []*Event) ([]int32, error) {
	isConflicted := map[int32]bool{}
	for _, ev := range conflicted {
		isConflicted[r.index[ev.ID()]] = true
	}
	// reaches[n]: some conflicted event is strictly below n.
	reaches := map[int32]bool{}
	done := map[int32]bool{}
	type frame struct {
		n    int32
		next int
	}
	var out []int32
	for _, ev := range conflicted {
		start := r.index[ev.ID()]
		if done[start] {
			continue
		}
		stack := []frame{{n: start}}
		done[start] = true
		for len(stack) > 0 {
			top := &stack[len(stack)-1]
			auth, err := r.authOf(top.n)
			if err != nil {
				return nil, err
			}
			if top.next < len(auth) {
				a := auth[top.next]
				top.next++
				if !done[a] {
					done[a] = true
					stack = append(stack, frame{n: a})
				}
				continue
			}
			n := top.n
			stack = stack[:len(stack)-1]
			for _, a := range auth {
				if isConflicted[a] || reaches[a] {
					reaches[n] = true
					break
				}
			}
			if isConflicted[n] || reaches[n] {
				out = append(out, n)
			}
		}
	}
	return out, nil
}

// isPowerEvent: rooms/v2 "Power events", plus m.room.create as in Synapse.
func isPowerEvent(ev *Event) bool {
	switch {
	case ev.StateKeyIs("") && (ev.Type() == TypePowerLevels || ev.Type() == TypeJoinRules || ev.Type() == TypeCreate):
		return true
	case ev.Type() == TypeMember && ev.StateKey() != nil:
		m := ev.Membership()
		return (m == MembershipLeave || m == MembershipBan) && *ev.StateKey() != string(ev.Sender())
	}
	return false
}

// reverseTopologicalPowerSort sorts the power events and the events of the
// full conflicted set in their auth chains (reached through that set) by
// the reverse topological power ordering: Kahn's algorithm on the auth
// graph, taking among the events whose auth events are all out the one of
// highest sender power, then earliest origin_server_ts, then lowest event
// ID.
func (r *resolver) reverseTopologicalPowerSort(power []int32) ([]int32, error) {
	inGraph := map[int32]bool{}
	var graph []int32
	stack := slices.Clone(power)
	for _, n := range power {
		inGraph[n] = true
	}
	graph = append(graph, power...)
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		auth, err := r.authOf(n)
		if err != nil {
			return nil, err
		}
		for _, a := range auth {
			if r.nodes[a].inFull && !inGraph[a] {
				inGraph[a] = true
				graph = append(graph, a)
				stack = append(stack, a)
			}
		}
	}
	pending := make(map[int32]int, len(graph))     // auth events not yet emitted
	parents := make(map[int32][]int32, len(graph)) // events citing the key
	keyOf := make(map[int32]powerKey, len(graph))
	ready := &powerQueue{}
	for _, n := range graph {
		auth, _ := r.authOf(n) // loaded above
		for _, a := range auth {
			if inGraph[a] {
				pending[n]++
				parents[a] = append(parents[a], n)
			}
		}
		pl, err := r.senderPower(n)
		if err != nil {
			return nil, err
		}
		ev := r.nodes[n].ev
		keyOf[n] = powerKey{n: n, power: pl, ts: ev.OriginServerTS(), id: ev.ID()}
	}
	for _, n := range graph {
		if pending[n] == 0 {
			ready.keys = append(ready.keys, keyOf[n])
		}
	}
	heap.Init(ready)
	out := make([]int32, 0, len(graph))
	for ready.Len() > 0 {
		k := heap.Pop(ready).(powerKey)
		out = append(out, k.n)
		for _, p := range parents[k.n] {
			if pending[p]--; pending[p] == 0 {
				heap.Push(ready, keyOf[p])
			}
		}
	}
	return out, nil
}

type powerKey struct {
	n     int32
	power int64
	ts    int64
	id    EventID
}

// powerQueue is a heap of events, least first by the comparison of the
// reverse topological power ordering.
type powerQueue struct{ keys []powerKey }

func (q *powerQueue) Len() int { return len(q.keys) }
func (q *powerQueue) Less(i, j int) bool {
	a, b := q.keys[i], q.keys[j]
	if a.power != b.power {
		return a.power > b.power
	}
	if a.ts != b.ts {
		return a.ts < b.ts
	}
	return a.id < b.id
}
func (q *powerQueue) Swap(i, j int) { q.keys[i], q.keys[j] = q.keys[j], q.keys[i] }
func (q *powerQueue) Push(x any)    { q.keys = append(q.keys, x.(powerKey)) }
func (q *powerQueue) Pop() any {
	k := q.keys[len(q.keys)-1]
	q.keys = q.keys[:len(q.keys)-1]
	return k
}

// senderPower is the power level of n's sender "when looking at their
// respective auth_events" (see ResolveStateV2).
func (r *resolver) senderPower(n int32) (int64, error) {
	ev := r.nodes[n].ev
	auth, err := r.authOf(n)
	if err != nil {
		return 0, err
	}
	var pl, create *Event
	for _, a := range auth {
		switch ae := r.nodes[a].ev; {
		case ae.Type() == TypePowerLevels && ae.StateKeyIs(""):
			pl = ae
		case ae.IsCreate():
			create = ae
		}
	}
	if ev.Version().DomainlessRoomIDs {
		create = r.create
	}
	if create == nil {
		if pl == nil {
			return 0, nil
		}
		levels, err := parsePowerLevels(ev.Version(), pl.Content(), &plFilter{users: []UserID{ev.Sender()}})
		if err != nil {
			return 0, nil
		}
		return levels.UserLevel(ev.Sender()), nil
	}
	levels, err := roomPowerLevels(create, pl, &plFilter{users: []UserID{ev.Sender()}})
	if err != nil {
		// No accepted event cites malformed power levels; an unreadable
		// level ranks lowest, deterministically.
		return 0, nil
	}
	return levels.UserLevel(ev.Sender()), nil
}

// plAuthEvent returns the m.room.power_levels event among n's auth events,
// or -1.
func (r *resolver) plAuthEvent(n int32) (int32, error) {
	auth, err := r.authOf(n)
	if err != nil {
		return -1, err
	}
	for _, a := range auth {
		if ae := r.nodes[a].ev; ae.Type() == TypePowerLevels && ae.StateKeyIs("") {
			return a, nil
		}
	}
	return -1, nil
}

// mainlineSort sorts events by the mainline ordering based on pl (nil when
// the partial state has no power levels): the events whose power levels
// chain meets the mainline of pl at an older event come first, those that
// never meet it before all; then by origin_server_ts, then by event ID.
func (r *resolver) mainlineSort(events []int32, pl *Event) error {
	if len(events) == 0 {
		return nil
	}
	// depth counts from the bottom of the mainline: its oldest event is 1,
	// pl itself the highest. 0 stands for "never meets it" (the spec's
	// position ∞, which sorts first).
	depth := map[int32]int{}
	if pl != nil {
		var mainline []int32
		n, ok := r.index[pl.ID()]
		if !ok {
			return fmt.Errorf("roomdag: resolved power levels %s is not a known event", pl.ID())
		}
		for n >= 0 {
			mainline = append(mainline, n)
			var err error
			if n, err = r.plAuthEvent(n); err != nil {
				return err
			}
		}
		for i, m := range mainline {
			depth[m] = len(mainline) - i
		}
	}
	// position memoises each event's mainline depth, for events and for the
	// power levels events on their chains.
	position := map[int32]int{}
	positionOf := func(n int32) (int, error) {
		// Walk up the chain of power levels until the mainline, then fill
		// in every event passed on the way.
		var path []int32
		d := 0
		cur := n
		for {
			if cur != n {
				if md, ok := depth[cur]; ok {
					d = md
					break
				}
			}
			if p, ok := position[cur]; ok {
				d = p
				break
			}
			path = append(path, cur)
			next, err := r.plAuthEvent(cur)
			if err != nil {
				return 0, err
			}
			if next < 0 {
				break
			}
			cur = next
		}
		for _, p := range path {
			position[p] = d
		}
		return d, nil
	}
	type key struct {
		depth int
		ts    int64
		id    EventID
	}
	keys := make(map[int32]key, len(events))
	for _, n := range events {
		d, err := positionOf(n)
		if err != nil {
			return err
		}
		keys[n] = key{d, r.nodes[n].ev.OriginServerTS(), r.nodes[n].ev.ID()}
	}
	slices.SortFunc(events, func(a, b int32) int {
		ka, kb := keys[a], keys[b]
		if c := cmp.Compare(ka.depth, kb.depth); c != 0 {
			return c
		}
		if c := cmp.Compare(ka.ts, kb.ts); c != 0 {
			return c
		}
		return cmp.Compare(ka.id, kb.id)
	})
	return nil
}

// iterativeAuthChecks applies each event, in order, to resolved if the auth
// rules allow it there (rooms/v2 "Iterative auth checks").
func (r *resolver) iterativeAuthChecks(events []int32, resolved StateMap) error {
	for _, n := range events {
		ev := r.nodes[n].ev
		auth, err := r.authOf(n)
		if err != nil {
			return err
		}
		view := resolutionAuthState{
			resolved: resolved,
			keys:     AuthEventTuples(ev.Version(), ev.Type(), ev.StateKey(), ev.Sender(), ev.Content()),
		}
		for _, a := range auth {
			if !r.isRejected(a) {
				view.auth = append(view.auth, r.nodes[a].ev)
			}
		}
		if ev.Version().DomainlessRoomIDs {
			view.create = r.create
		}
		if Authorise(ev, view) == nil {
			resolved[ev.Tuple()] = ev
		}
	}
	return nil
}

// resolutionAuthState is the state an event is checked against in the
// iterative auth checks: for the tuples of its auth events selection, the
// partially resolved state's event if it has one; otherwise the event's
// own (unrejected) auth events. In v12 the create event, never an auth
// event, is the room's.
type resolutionAuthState struct {
	resolved StateMap
	keys     []StateKey
	auth     []*Event
	create   *Event
}

func (s resolutionAuthState) Get(evType, stateKey string) *Event {
	if s.create != nil && evType == TypeCreate && stateKey == "" {
		return s.create
	}
	k := StateKey{Type: evType, StateKey: stateKey}
	if slices.Contains(s.keys, k) {
		if ev := s.resolved[k]; ev != nil {
			return ev
		}
	}
	for _, a := range s.auth {
		if a.Type() == evType && a.StateKeyIs(stateKey) {
			return a
		}
	}
	return nil
}
