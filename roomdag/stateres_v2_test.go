package roomdag

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// State resolution v2 and v2.1 fixtures: testdata/stateres_v2/*.json, each
//
//	{"versions": ["2", "11", "12"],
//	 "base": [{"name": "CREATE", "event": {...}}, ...],
//	 "scenarios": [{"name": "...",
//	   "events": [{"name": "PA", "prev": ["START"], "ts": 7, "event": {...}}, ...],
//	   "at": "END",
//	   "resolve": [{"after": "LA", "with": ["JR1"]}, ...],
//	   "expect": {"m.room.topic/": "T1", "m.room.member/@x:y": null},
//	   "expect_v21": {...}}]}
//
// Base events chain in order; each scenario adds a DAG on top of them, and
// runs in every version the file lists. Each event is built like this:
// room_id, depth (one more than its deepest prev event), origin_server_ts
// (the event's position in the file unless "ts" gives one), prev_events and
// auth_events (the auth events selection over the state before it) are
// filled in; in v1 and v2 the event_id is "$<name>:<sender's server>", in
// later versions the event ID is the hash and the name only the fixture's.
// The state before an event is ResolveState of the states after its prev
// events, and the event must be allowed in it. In versions with
// PrivilegedCreators (v12) the creator's entry in the users of power levels
// content is dropped: the creator may not be listed there and has infinite
// power anyway, so one fixture serves both.
//
// Without "resolve", "expect" gives tuples ("type/state_key") of the state
// before "at"; with it, the tuples of the resolution of the states it lists:
// the state after event "after", with the events of "with" in place of
// whatever held their tuples (a state from a partial synchronisation that
// disagrees with the auth chains, as in MSC4297's examples). "expect_v21"
// overrides entries of "expect" in versions that resolve with v2.1. Values
// are event names, null for none. "versions" on a scenario limits it to
// those of the file's versions (ties between event IDs need names as IDs).
type stateResV2File struct {
	Comment   string               `json:"comment"`
	Versions  []string             `json:"versions"`
	Base      []stateResV2Event    `json:"base"`
	Scenarios []stateResV2Scenario `json:"scenarios"`
}

type stateResV2Event struct {
	Name  string          `json:"name"`
	Prev  []string        `json:"prev"`
	TS    *int64          `json:"ts"`
	Event json.RawMessage `json:"event"`
}

type stateResV2Scenario struct {
	Name      string             `json:"name"`
	Comment   string             `json:"comment"`
	Versions  []string           `json:"versions"`
	Events    []stateResV2Event  `json:"events"`
	At        string             `json:"at"`
	Resolve   []stateResV2State  `json:"resolve"`
	Expect    map[string]*string `json:"expect"`
	ExpectV21 map[string]*string `json:"expect_v21"`
}

type stateResV2State struct {
	After string   `json:"after"`
	With  []string `json:"with"`
}

// srDAG builds a room's DAG event by event, keeping the state before and
// after each one, for fixtures and benchmarks.
type srDAG struct {
	tb     testing.TB
	v      *RoomVersion
	room   RoomID
	events map[string]*Event
	after  map[string]StateMap
	before map[string]StateMap
	names  map[EventID]string
	all    EventMap
	// resolutions records every call of ResolveState with several states,
	// for the order-independence check.
	resolutions [][]StateMap
	n           int64
}

func newSRDAG(tb testing.TB, v *RoomVersion) *srDAG {
	return &srDAG{tb: tb, v: v, room: "!room:example.com", events: map[string]*Event{},
		after: map[string]StateMap{}, before: map[string]StateMap{}, names: map[EventID]string{}, all: EventMap{}}
}

func (d *srDAG) resolve(states []StateMap) StateMap {
	d.tb.Helper()
	if len(states) > 1 {
		d.resolutions = append(d.resolutions, states)
	}
	got, err := ResolveState(d.v, states, d.all)
	if err != nil {
		d.tb.Fatalf("ResolveState: %v", err)
	}
	return got
}

// add builds one event on the resolution of its prev events' states.
func (d *srDAG) add(name string, prevNames []string, ts *int64, m map[string]any) *Event {
	tb := d.tb
	tb.Helper()
	if d.events[name] != nil {
		tb.Fatalf("event %q defined twice", name)
	}
	states := make([]StateMap, 0, len(prevNames))
	var prev []*Event
	depth := int64(0)
	for _, p := range prevNames {
		pe := d.events[p]
		if pe == nil {
			tb.Fatalf("%s: unknown prev event %q", name, p)
		}
		prev = append(prev, pe)
		states = append(states, d.after[p])
		depth = max(depth, pe.Depth())
	}
	var before StateMap
	if len(states) == 1 {
		before = states[0]
	} else {
		before = d.resolve(states)
	}
	sender, _ := m["sender"].(string)
	typ, _ := m["type"].(string)
	var sk *string
	if s, ok := m["state_key"].(string); ok {
		sk = &s
	}
	d.n++
	m["depth"] = depth + 1
	m["origin_server_ts"] = d.n
	if ts != nil {
		m["origin_server_ts"] = *ts
	}
	isCreate := typ == TypeCreate && sk != nil && *sk == ""
	if d.v.EventFormat == EventFormatV1 {
		m["event_id"] = fmt.Sprintf("$%s:%s", name, UserID(sender).Server())
	}
	if !(isCreate && d.v.DomainlessRoomIDs) {
		m["room_id"] = string(d.room)
	}
	if typ == TypePowerLevels && d.v.PrivilegedCreators {
		if c := before.Get(TypeCreate, ""); c != nil {
			content, _ := m["content"].(map[string]any)
			users, _ := content["users"].(map[string]any)
			for _, u := range Creators(c) {
				delete(users, string(u))
			}
		}
	}
	refs := func(evs []*Event) []any {
		out := []any{}
		for _, ev := range evs {
			if d.v.EventFormat != EventFormatV1 {
				out = append(out, ev.ID())
				continue
			}
			h, err := ev.referenceHashB64()
			if err != nil {
				tb.Fatal(err)
			}
			out = append(out, []any{ev.ID(), map[string]string{"sha256": h}})
		}
		return out
	}
	m["prev_events"] = refs(prev)
	content, _ := json.Marshal(m["content"])
	var auth []*Event
	for _, k := range AuthEventTuples(d.v, typ, sk, UserID(sender), content) {
		if ev := before[k]; ev != nil {
			auth = append(auth, ev)
		}
	}
	m["auth_events"] = refs(auth)
	raw, _ := json.Marshal(m)
	ev, err := NewEventFromJSON(d.v, raw)
	if err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
	if isCreate {
		d.room = ev.RoomID()
	}
	if err := Authorise(ev, before); err != nil {
		tb.Fatalf("%s is not allowed in the state before it: %v", name, err)
	}
	d.events[name], d.names[ev.ID()], d.before[name], d.all[ev.ID()] = ev, name, before, ev
	d.after[name] = before
	if ev.IsState() {
		d.after[name] = before.With(ev)
	}
	return ev
}

func (d *srDAG) addJSON(fe stateResV2Event) {
	d.tb.Helper()
	var m map[string]any
	if err := json.Unmarshal(fe.Event, &m); err != nil {
		d.tb.Fatalf("%s: %v", fe.Name, err)
	}
	d.add(fe.Name, fe.Prev, fe.TS, m)
}

// nameOf is the fixture name of ev, "<none>" for nil.
func (d *srDAG) nameOf(ev *Event) string {
	if ev == nil {
		return "<none>"
	}
	if n, ok := d.names[ev.ID()]; ok {
		return n
	}
	return string(ev.ID())
}

func TestStateResV2Fixtures(t *testing.T) {
	files, err := filepath.Glob("testdata/stateres_v2/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var f stateResV2File
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if len(f.Versions) == 0 {
			t.Fatalf("%s: no versions", file)
		}
		for _, ver := range f.Versions {
			for _, sc := range f.Scenarios {
				if sc.Versions != nil && !slices.Contains(sc.Versions, ver) {
					continue
				}
				name := strings.TrimSuffix(filepath.Base(file), ".json") + "/v" + ver + "/" + sc.Name
				t.Run(name, func(t *testing.T) {
					runStateResV2Scenario(t, lookupVersionT(t, ver), f.Base, sc)
				})
			}
		}
	}
}

func runStateResV2Scenario(t *testing.T, v *RoomVersion, base []stateResV2Event, sc stateResV2Scenario) {
	d := newSRDAG(t, v)
	last := ""
	for _, fe := range base {
		if fe.Prev == nil && last != "" {
			fe.Prev = []string{last}
		}
		d.addJSON(fe)
		last = fe.Name
	}
	for _, fe := range sc.Events {
		d.addJSON(fe)
	}
	var got StateMap
	if len(sc.Resolve) > 0 {
		var states []StateMap
		for _, s := range sc.Resolve {
			st := d.after[s.After]
			if st == nil {
				t.Fatalf("no event %q", s.After)
			}
			for _, w := range s.With {
				ev := d.events[w]
				if ev == nil || !ev.IsState() {
					t.Fatalf("no state event %q", w)
				}
				st = st.With(ev)
			}
			states = append(states, st)
		}
		got = d.resolve(states)
	} else if got = d.before[sc.At]; got == nil {
		t.Fatalf("no event %q", sc.At)
	}
	expect := maps.Clone(sc.Expect)
	if v.StateRes == StateResV21 {
		maps.Copy(expect, sc.ExpectV21)
	}
	if len(expect) == 0 {
		t.Fatal("scenario expects nothing")
	}
	for _, key := range slices.Sorted(maps.Keys(expect)) {
		want := expect[key]
		typ, sk, ok := strings.Cut(key, "/")
		if !ok {
			t.Fatalf("bad tuple %q", key)
		}
		wantName := "<none>"
		if want != nil {
			wantName = *want
		}
		if gotName := d.nameOf(got.Get(typ, sk)); gotName != wantName {
			t.Errorf("%s: got %s, want %s", key, gotName, wantName)
		}
	}
	checkOrderIndependent(t, d)
}

// checkOrderIndependent resolves every multi-state resolution of the DAG
// again with its states in other orders: the result must not change.
func checkOrderIndependent(t *testing.T, d *srDAG) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	for _, states := range d.resolutions {
		want, err := ResolveState(d.v, states, d.all)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 4; i++ {
			perm := slices.Clone(states)
			if i == 0 {
				slices.Reverse(perm)
			} else {
				rng.Shuffle(len(perm), func(a, b int) { perm[a], perm[b] = perm[b], perm[a] })
			}
			got, err := ResolveState(d.v, perm, d.all)
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got.IDs(), want.IDs()) {
				t.Errorf("resolution depends on the order of the states: %v vs %v", got.IDs(), want.IDs())
			}
		}
	}
}
