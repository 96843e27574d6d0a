package roomdag

import (
	"bytes"
	"encoding/json"
	"errors"
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
	// lenient: add drops an event the state before it does not allow,
	// returning nil, instead of failing the test.
	lenient bool
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
		if d.lenient {
			return nil
		}
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

func TestResolveStateDispatch(t *testing.T) {
	for _, v := range RoomVersions() {
		d := newSRDAG(t, v)
		buildForkedRoom(d, 3, 4)
		states := []StateMap{d.after["a-end"], d.after["b-end"]}
		got, err := ResolveState(v, states, d.all)
		if err != nil {
			t.Fatalf("v%s: %v", v.ID, err)
		}
		var want StateMap
		switch v.StateRes {
		case StateResV1:
			want = ResolveStateV1(states)
		case StateResV2:
			want, err = ResolveStateV2(states, d.all)
		case StateResV21:
			want, err = ResolveStateV21(states, d.all)
		}
		if err != nil || !maps.Equal(got.IDs(), want.IDs()) {
			t.Errorf("v%s: ResolveState does not use the version's algorithm (%v)", v.ID, err)
		}
	}
	if _, err := ResolveState(&RoomVersion{ID: "x"}, nil, EventMap{}); err == nil {
		t.Error("a version without an algorithm resolved")
	}
}

func TestResolveStateV2Degenerate(t *testing.T) {
	for _, id := range []string{"2", "12"} {
		v := lookupVersionT(t, id)
		d := newSRDAG(t, v)
		buildForkedRoom(d, 2, 2)
		if got, err := ResolveState(v, nil, d.all); err != nil || len(got) != 0 {
			t.Errorf("v%s no states: %v %v", id, got, err)
		}
		one := d.after["a-end"]
		got, err := ResolveState(v, []StateMap{one}, EventMap{})
		if err != nil || !maps.Equal(got.IDs(), one.IDs()) {
			t.Errorf("v%s one state: %v", id, err)
		}
		got[StateKey{Type: "x"}] = one.Get(TypeCreate, "")
		if one.Get("x", "") != nil {
			t.Errorf("v%s: the result shares the input's map", id)
		}
		// The same state twice is no conflict, and needs no auth chains.
		if got, err := ResolveState(v, []StateMap{one, one}, EventMap{}); err != nil || !maps.Equal(got.IDs(), one.IDs()) {
			t.Errorf("v%s same state twice: %v", id, err)
		}
	}
}

func TestResolveStateV2Errors(t *testing.T) {
	v := lookupVersionT(t, "11")
	d := newSRDAG(t, v)
	buildForkedRoom(d, 2, 2)
	states := []StateMap{d.after["a-end"], d.after["b-end"]}

	// An auth chain the source cannot give.
	partial := maps.Clone(d.all)
	delete(partial, d.events["pl0"].ID())
	if _, err := ResolveState(v, states, partial); !errors.Is(err, ErrUnknownEvent) {
		t.Errorf("missing auth event: got %v, want ErrUnknownEvent", err)
	}
	if _, err := ResolveState(v, states, nil); !errors.Is(err, ErrUnknownEvent) {
		t.Errorf("nil source: got %v, want ErrUnknownEvent", err)
	}

	// An event of another room.
	other := newSRDAG(t, v)
	other.room = "!other:example.com"
	other.add("x", nil, nil, map[string]any{"type": TypeCreate, "state_key": "", "sender": "@alice:example.com", "content": map[string]any{}})
	mixed := states[0].With(other.events["x"])
	if _, err := ResolveState(v, []StateMap{mixed, states[1]}, d.all); err == nil || !strings.Contains(err.Error(), "room") {
		t.Errorf("event of another room: got %v", err)
	}
}

// rejectingSource is an EventMap that marks some events rejected.
type rejectingSource struct {
	EventMap
	rejected map[EventID]bool
}

func (s rejectingSource) Rejected(id EventID) bool { return s.rejected[id] }

func TestResolveStateV2RejectedAuthEvents(t *testing.T) {
	// Bob's topic conflicts with Alice's; both are replayed. If Bob's join,
	// his topic's auth event, was rejected, the topic has no membership to
	// lean on in v2.1 (which replays from an empty state) and fails.
	v := lookupVersionT(t, "12")
	d := newSRDAG(t, v)
	buildForkedRoom(d, 0, 0)
	d.add("tb", []string{"base-end"}, nil, map[string]any{"type": TypeTopic, "state_key": "", "sender": "@bob:example.com", "content": map[string]any{"topic": "b"}})
	d.add("ta", []string{"base-end"}, nil, map[string]any{"type": TypeTopic, "state_key": "", "sender": "@alice:example.com", "content": map[string]any{"topic": "a"}})
	// Bob's topic is later, so it is applied last and wins.
	ts := int64(1 << 40)
	d.add("tb2", []string{"tb"}, &ts, map[string]any{"type": TypeTopic, "state_key": "", "sender": "@bob:example.com", "content": map[string]any{"topic": "b2"}})
	states := []StateMap{d.after["tb2"], d.after["ta"]}
	got, err := ResolveState(v, states, d.all)
	if err != nil || d.nameOf(got.Get(TypeTopic, "")) != "tb2" {
		t.Fatalf("got %s, %v; want tb2", d.nameOf(got.Get(TypeTopic, "")), err)
	}
	src := rejectingSource{d.all, map[EventID]bool{d.events["bob-join"].ID(): true}}
	got, err = ResolveState(v, states, src)
	if err != nil || d.nameOf(got.Get(TypeTopic, "")) != "ta" {
		t.Errorf("with Bob's join rejected: got %s, %v; want ta", d.nameOf(got.Get(TypeTopic, "")), err)
	}
}

// buildForkedRoom builds a room (create, Alice's join and power levels,
// public join rules, then Bob, Carol and members m0..m9 joining, ending at
// "base-end") and two forks from it, "a-…" and "b-…" ending at "a-end" and
// "b-end". Fork a has n custom state events and fork b n others, on the same
// n state keys, so the two states conflict on 2n events; every powerEvery
// events each fork also changes the power levels (0: never). Alice sends
// fork a; Bob and Carol, moderators, alternate on fork b.
func buildForkedRoom(d *srDAG, n, powerEvery int) {
	alice, bob, carol := "@alice:example.com", "@bob:example.com", "@carol:example.com"
	state := func(typ, sk, sender string, content map[string]any) map[string]any {
		return map[string]any{"type": typ, "state_key": sk, "sender": sender, "content": content}
	}
	users := func(extra int) map[string]any {
		return map[string]any{"users": map[string]any{alice: 100, bob: 50, carol: 50}, "events": map[string]any{"org.example.level": extra % 100}}
	}
	last := ""
	chain := func(name string, m map[string]any) {
		var prev []string
		if last != "" {
			prev = []string{last}
		}
		if d.add(name, prev, nil, m) != nil {
			last = name
		}
	}
	chain("create", state(TypeCreate, "", alice, map[string]any{"creator": alice}))
	chain("alice-join", state(TypeMember, alice, alice, map[string]any{"membership": "join"}))
	chain("pl0", state(TypePowerLevels, "", alice, users(0)))
	chain("jr", state(TypeJoinRules, "", alice, map[string]any{"join_rule": "public"}))
	chain("bob-join", state(TypeMember, bob, bob, map[string]any{"membership": "join"}))
	chain("carol-join", state(TypeMember, carol, carol, map[string]any{"membership": "join"}))
	for i := 0; i < 10; i++ {
		u := fmt.Sprintf("@m%d:example.com", i)
		chain(fmt.Sprintf("m%d-join", i), state(TypeMember, u, u, map[string]any{"membership": "join"}))
	}
	chain("base-end", map[string]any{"type": TypeMessage, "sender": alice, "content": map[string]any{}})
	base := last
	for _, fork := range []string{"a", "b"} {
		last = base
		for i := 0; i < n; i++ {
			sender := alice
			if fork == "b" {
				sender = []string{bob, carol}[i%2]
			}
			if powerEvery > 0 && i%powerEvery == powerEvery-1 {
				chain(fmt.Sprintf("%s-pl%d", fork, i), state(TypePowerLevels, "", alice, users(i)))
			}
			chain(fmt.Sprintf("%s-%d", fork, i), state("org.example.state", fmt.Sprintf("k%d", i), sender, map[string]any{"fork": fork}))
		}
		chain(fork+"-end", map[string]any{"type": TypeMessage, "sender": alice, "content": map[string]any{}})
	}
}

// TestResolveStateRandomDAGs builds random forked DAGs, with events that the
// state before them does not allow dropped, and checks that every
// resolution is independent of the order of its states and leaves them
// unmodified.
func TestResolveStateRandomDAGs(t *testing.T) {
	senders := []string{"@alice:example.com", "@bob:example.com", "@carol:example.com", "@m0:example.com", "@m1:example.com"}
	for _, id := range []string{"2", "10", "12"} {
		v := lookupVersionT(t, id)
		conflicts, powerConflicts := 0, 0
		for seed := uint64(0); seed < 8; seed++ {
			rng := rand.New(rand.NewPCG(seed, 7))
			d := newSRDAG(t, v)
			buildForkedRoom(d, 0, 0)
			d.lenient = true
			tips := []string{"base-end"}
			for i := 0; i < 60; i++ {
				sender := senders[rng.IntN(len(senders))]
				var m map[string]any
				switch rng.IntN(6) {
				case 0:
					m = map[string]any{"type": TypeTopic, "state_key": "", "content": map[string]any{"topic": fmt.Sprint(i)}}
				case 1:
					lvl := rng.IntN(3) * 25
					m = map[string]any{"type": TypePowerLevels, "state_key": "", "content": map[string]any{"users": map[string]any{
						"@alice:example.com": 100, "@bob:example.com": 50, "@carol:example.com": lvl}}}
				case 2:
					target := senders[rng.IntN(len(senders))]
					mem := []string{"ban", "leave", "join", "invite"}[rng.IntN(4)]
					if mem == "join" {
						target = sender
					}
					m = map[string]any{"type": TypeMember, "state_key": target, "content": map[string]any{"membership": mem}}
				case 3:
					m = map[string]any{"type": TypeJoinRules, "state_key": "", "content": map[string]any{"join_rule": []string{"public", "invite"}[rng.IntN(2)]}}
				default:
					m = map[string]any{"type": "org.example.state", "state_key": fmt.Sprint(rng.IntN(4)), "content": map[string]any{"i": i}}
				}
				m["sender"] = sender
				prev := []string{tips[rng.IntN(len(tips))]}
				if len(tips) > 1 && rng.IntN(3) == 0 {
					if other := tips[rng.IntN(len(tips))]; other != prev[0] {
						prev = append(prev, other)
					}
				}
				name := fmt.Sprintf("e%d", i)
				if d.add(name, prev, nil, m) == nil {
					continue
				}
				if rng.IntN(2) == 0 || len(prev) > 1 {
					tips = slices.DeleteFunc(tips, func(s string) bool { return slices.Contains(prev, s) })
				}
				tips = append(tips, name)
			}
			if len(tips) > 1 {
				states := make([]StateMap, len(tips))
				for i, tip := range tips {
					states[i] = d.after[tip]
				}
				d.resolve(states)
			}
			snapshot := make([][]map[StateKey]EventID, len(d.resolutions))
			for i, states := range d.resolutions {
				for _, st := range states {
					snapshot[i] = append(snapshot[i], st.IDs())
				}
			}
			for _, states := range d.resolutions {
				_, conflicted := splitStates(states)
				conflicts += len(conflicted)
				for _, ev := range conflicted {
					if isPowerEvent(ev) {
						powerConflicts++
					}
				}
			}
			checkOrderIndependent(t, d)
			for i, states := range d.resolutions {
				for j, st := range states {
					if !maps.Equal(st.IDs(), snapshot[i][j]) {
						t.Fatalf("v%s seed %d: resolution modified its input", id, seed)
					}
				}
			}
			if len(d.resolutions) == 0 {
				t.Errorf("v%s seed %d: no resolution happened", id, seed)
			}
		}
		// The DAGs must exercise the algorithm, not only agree on state.
		t.Logf("v%s: %d conflicted events, %d of them power events", id, conflicts, powerConflicts)
		if conflicts < 50 || powerConflicts < 10 {
			t.Errorf("v%s: only %d conflicted events, %d power events", id, conflicts, powerConflicts)
		}
	}
}

// BenchmarkResolveStateV2Conflicted1000 resolves two forks that conflict
// on 1,000 state events (500 state keys set on each fork), with a power
// levels change every 50 events on each, over a room of 13 members.
func BenchmarkResolveStateV2Conflicted1000(b *testing.B) {
	for _, id := range []string{"11", "12"} {
		b.Run("v"+id, func(b *testing.B) {
			v := lookupVersionT(b, id)
			d := newSRDAG(b, v)
			buildForkedRoom(d, 500, 50)
			states := []StateMap{d.after["a-end"], d.after["b-end"]}
			unconflicted, conflicted := splitStates(states)
			if len(conflicted) < 1000 {
				b.Fatalf("%d conflicted events (%d unconflicted)", len(conflicted), len(unconflicted))
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := ResolveState(v, states, d.all); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
