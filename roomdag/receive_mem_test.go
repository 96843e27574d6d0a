package roomdag

import (
	"context"
	"slices"
)

// The memStore's DAG: what Receive needs of a store.

// recordLocal records a local event in the DAG. Caller holds m.mu.
func (m *memStore) recordLocal(p *Persist) {
	ev := p.Event
	if ev.IsState() && p.Snapshot != nil {
		m.writeSnap(SnapshotWrite{ID: p.StateAfter, Parent: p.SnapshotParent, ChainLen: p.ChainLen, Entries: p.Snapshot})
	}
	m.dag[ev.ID()] = &DAGEvent{Event: ev, Status: StatusTimeline, StateAfter: p.StateAfter, ChainLen: p.ChainLen}
	for _, id := range ev.PrevEvents() {
		m.children[id] = true
	}
}

func (m *memStore) writeSnap(w SnapshotWrite) {
	ids := map[StateKey]EventID{}
	if w.Parent != 0 {
		for k, v := range m.snapshots[w.Parent] {
			ids[k] = v
		}
	}
	for k, v := range w.Entries {
		ids[k] = v
	}
	m.snapshots[w.ID] = ids
}

// applyReceived applies a write of Receive's and returns its position.
// Caller holds m.mu.
func (m *memStore) applyReceived(p *Persist, st *RoomState) StreamPos {
	ev := p.Event
	for _, w := range p.Snapshots {
		m.writeSnap(w)
	}
	if p.Status == StatusTimeline {
		for _, id := range ev.PrevEvents() {
			m.children[id] = true
		}
	}
	id := ev.RoomID()
	if st == nil {
		st = &RoomState{Version: ev.Version(), State: StateMap{}}
		m.rooms[id] = st
	}
	d := &DAGEvent{Event: ev, Status: p.Status, StateAfter: p.StateAfter, Reason: p.Reason}
	for _, w := range p.Snapshots {
		if w.ID == p.StateAfter {
			d.ChainLen = w.ChainLen
		}
	}
	m.dag[ev.ID()] = d
	if p.Status != StatusTimeline {
		return 0
	}
	if p.Redaction != nil {
		if t := m.dag[p.Redaction.Target]; t != nil {
			if rev, err := EventFromTrustedJSON(t.Event.Version(), t.Event.ID(), p.Redaction.JSON); err == nil {
				t.Event = rev
			}
		}
	}
	if p.Kind == KindBackfill {
		m.backfill--
		m.pos[ev.ID()] = m.backfill
		return m.backfill
	}
	m.events = append(m.events, p)
	pos := StreamPos(len(m.events))
	m.pos[ev.ID()] = pos
	state := StateMap{}
	for k, v := range st.State {
		if !slices.Contains(p.CurrentRemoved, k) {
			state[k] = v
		}
	}
	for _, c := range p.CurrentChanges {
		state[c.Tuple()] = c
	}
	next := &RoomState{Version: st.Version, State: state, Extremities: p.Extremities, Depth: max(st.Depth, ev.Depth()),
		Snapshot: p.CurrentSnapshot, ChainLen: p.CurrentChainLen, LastPos: pos}
	if st.Version.EventFormat == EventFormatV1 {
		for _, x := range p.Extremities {
			next.ExtremityEvents = append(next.ExtremityEvents, m.dag[x].Event)
		}
	}
	m.rooms[id] = next
	return pos
}

func (m *memStore) DAGEvents(_ context.Context, ids []EventID) (map[EventID]*DAGEvent, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[EventID]*DAGEvent{}
	for _, id := range ids {
		if d := m.dag[id]; d != nil {
			c := *d
			out[id] = &c
		}
	}
	return out, nil
}

func (m *memStore) StateEvents(_ context.Context, snap int64) (StateMap, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := StateMap{}
	for k, id := range m.snapshots[snap] {
		if d := m.dag[id]; d != nil {
			out[k] = d.Event
		}
	}
	return out, nil
}

func (m *memStore) HasChildren(_ context.Context, id EventID) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.children[id], nil
}
