package roomdag

import (
	"bytes"
	"cmp"
	"crypto/sha1"
	"slices"
)

// ResolveStateV1 is the state resolution algorithm of room version 1
// (content/rooms/v1.md, "State resolution"). The state before an event is
// the resolution of the states after each of its prev_events; states are
// those states. The result is a new map; states are not modified.
//
// A tuple is conflicted when the states that hold it hold different events
// for it; a tuple that some states lack is not conflicted (as in Synapse:
// the spec defines conflicts only between different event IDs). The
// unconflicted tuples start the result R, then:
//
//  1. conflicting m.room.power_levels, then m.room.join_rules, then each
//     user's m.room.member events are ordered by ascending depth and
//     descending sha1(event_id); the first is taken, and each next one
//     replaces it while the authorisation rules allow it in R with the one
//     before (the first refusal stops). Member tuples are each resolved
//     against R as it is after the join rules, and added together;
//  2. for every other conflicted tuple, the event of highest depth and
//     lowest sha1(event_id) that the rules allow in R is taken. The spec
//     does not say what happens when none is allowed; like Synapse we then
//     take the last in that order (lowest depth, highest sha1).
//
// It is pure: it reads only the events, and authorises them with Authorise
// under their own room version. Nothing on the write path calls it yet;
// receiving events from other servers in v1 rooms will.
func ResolveStateV1(states []StateMap) StateMap {
	resolved := StateMap{}
	conflicted := map[StateKey][]*Event{}
	for _, st := range states {
		for k, ev := range st {
			if ev == nil {
				continue
			}
			if _, done := resolved[k]; done {
				if resolved[k].ID() != ev.ID() {
					conflicted[k] = []*Event{resolved[k], ev}
					delete(resolved, k)
				}
				continue
			}
			if evs, ok := conflicted[k]; ok {
				if !slices.ContainsFunc(evs, func(e *Event) bool { return e.ID() == ev.ID() }) {
					conflicted[k] = append(evs, ev)
				}
				continue
			}
			resolved[k] = ev
		}
	}
	if len(conflicted) == 0 {
		return resolved
	}
	for _, typ := range []string{TypePowerLevels, TypeJoinRules} {
		k := StateKey{Type: typ}
		if evs, ok := conflicted[k]; ok {
			resolved[k] = resolveAuthEventsV1(evs, resolved)
			delete(conflicted, k)
		}
	}
	members := map[StateKey]*Event{}
	for k, evs := range conflicted {
		if k.Type == TypeMember {
			members[k] = resolveAuthEventsV1(evs, resolved)
			delete(conflicted, k)
		}
	}
	for k, ev := range members {
		resolved[k] = ev
	}
	others := map[StateKey]*Event{}
	for k, evs := range conflicted {
		others[k] = resolveNormalEventsV1(evs, resolved)
	}
	for k, ev := range others {
		resolved[k] = ev
	}
	return resolved
}

// resolveAuthEventsV1 is step 1 for one tuple's conflicting events.
func resolveAuthEventsV1(evs []*Event, r StateMap) *Event {
	order := slices.Clone(evs)
	slices.SortFunc(order, func(a, b *Event) int {
		if a.Depth() != b.Depth() {
			return cmp.Compare(a.Depth(), b.Depth())
		}
		return -compareSHA1(a.ID(), b.ID())
	})
	chosen := order[0]
	for _, ev := range order[1:] {
		if Authorise(ev, withEvent(r, chosen)) != nil {
			break
		}
		chosen = ev
	}
	return chosen
}

// resolveNormalEventsV1 is step 2 for one tuple's conflicting events.
func resolveNormalEventsV1(evs []*Event, r StateMap) *Event {
	order := slices.Clone(evs)
	slices.SortFunc(order, func(a, b *Event) int {
		if a.Depth() != b.Depth() {
			return cmp.Compare(b.Depth(), a.Depth())
		}
		return compareSHA1(a.ID(), b.ID())
	})
	for _, ev := range order {
		if Authorise(ev, r) == nil {
			return ev
		}
	}
	return order[len(order)-1]
}

// withEvent is r with ev in place of its tuple's entry, as an AuthState
// that copies nothing.
func withEvent(r StateMap, ev *Event) AuthState { return overlay{r, ev} }

type overlay struct {
	base StateMap
	ev   *Event
}

func (o overlay) Get(evType, stateKey string) *Event {
	if o.ev.Type() == evType && o.ev.StateKeyIs(stateKey) {
		return o.ev
	}
	return o.base.Get(evType, stateKey)
}

// compareSHA1 orders event IDs by the SHA-1 of their bytes (the spec's
// sha1(event_id); Synapse compares the hex digests, which order alike).
func compareSHA1(a, b EventID) int {
	ha, hb := sha1.Sum([]byte(a)), sha1.Sum([]byte(b))
	return bytes.Compare(ha[:], hb[:])
}
