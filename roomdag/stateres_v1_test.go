package roomdag

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// State resolution v1 fixtures: testdata/stateres_v1/*.json, each
//
//	{"base": [{"name": "create", "event": {...}}, ...],
//	 "scenarios": [{"name": "...", "events": [{"name": "a", "prev": ["create"], "event": {...}}, ...],
//	   "at": "merge", "expect": {"m.room.topic/": "a", "m.room.member/@x:y": null}}]}
//
// Base events chain in order; each scenario adds a DAG on top of them. Every
// event is built as a v1 PDU (event_id "$<name>:<sender's server>", prev
// and auth events as [event_id, hashes] pairs, depth one more than its
// deepest prev event) and must be allowed against the state before it,
// which is ResolveStateV1 of the states after its prev events. "expect"
// gives tuples ("type/state_key") of the state before the event "at" by the
// name of the event holding them, null for none.
type stateResFile struct {
	Comment   string             `json:"comment"`
	Base      []stateResEvent    `json:"base"`
	Scenarios []stateResScenario `json:"scenarios"`
}

type stateResEvent struct {
	Name  string          `json:"name"`
	Prev  []string        `json:"prev"`
	Event json.RawMessage `json:"event"`
}

type stateResScenario struct {
	Name    string             `json:"name"`
	Comment string             `json:"comment"`
	Events  []stateResEvent    `json:"events"`
	At      string             `json:"at"`
	Expect  map[string]*string `json:"expect"`
}

// stateResDAG builds fixture events and the states around them.
type stateResDAG struct {
	t      *testing.T
	v      *RoomVersion
	events map[string]*Event
	after  map[string]StateMap
	before map[string]StateMap
	names  map[EventID]string
}

func TestStateResV1Fixtures(t *testing.T) {
	files, err := filepath.Glob("testdata/stateres_v1/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var f stateResFile
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		for _, sc := range f.Scenarios {
			t.Run(strings.TrimSuffix(filepath.Base(file), ".json")+"/"+sc.Name, func(t *testing.T) {
				d := &stateResDAG{t: t, v: lookupVersionT(t, "1"), events: map[string]*Event{},
					after: map[string]StateMap{}, before: map[string]StateMap{}, names: map[EventID]string{}}
				last := ""
				for _, fe := range f.Base {
					if fe.Prev == nil && last != "" {
						fe.Prev = []string{last}
					}
					d.add(fe)
					last = fe.Name
				}
				for _, fe := range sc.Events {
					d.add(fe)
				}
				got := d.before[sc.At]
				if got == nil {
					t.Fatalf("no event %q", sc.At)
				}
				for key, want := range sc.Expect {
					typ, sk, ok := strings.Cut(key, "/")
					if !ok {
						t.Fatalf("bad tuple %q", key)
					}
					ev := got.Get(typ, sk)
					gotName := "<none>"
					if ev != nil {
						gotName = d.names[ev.ID()]
					}
					wantName := "<none>"
					if want != nil {
						wantName = *want
					}
					if gotName != wantName {
						t.Errorf("%s: got %s, want %s", key, gotName, wantName)
					}
				}
			})
		}
	}
}

// add builds one fixture event on the resolution of its prev events' states.
func (d *stateResDAG) add(fe stateResEvent) {
	t := d.t
	if d.events[fe.Name] != nil {
		t.Fatalf("event %q defined twice", fe.Name)
	}
	states := make([]StateMap, 0, len(fe.Prev))
	var prev []*Event
	depth := int64(0)
	for _, p := range fe.Prev {
		pe := d.events[p]
		if pe == nil {
			t.Fatalf("%s: unknown prev event %q", fe.Name, p)
		}
		prev = append(prev, pe)
		states = append(states, d.after[p])
		depth = max(depth, pe.Depth())
	}
	before := ResolveStateV1(states)
	var m map[string]any
	if err := json.Unmarshal(fe.Event, &m); err != nil {
		t.Fatalf("%s: %v", fe.Name, err)
	}
	sender, _ := m["sender"].(string)
	m["event_id"] = fmt.Sprintf("$%s:%s", fe.Name, UserID(sender).Server())
	m["room_id"] = "!room:a.test"
	m["depth"] = depth + 1
	m["origin_server_ts"] = 1700000000000 + depth
	refs := func(evs []*Event) []any {
		out := []any{}
		for _, ev := range evs {
			h, err := ev.referenceHashB64()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, []any{ev.ID(), map[string]string{"sha256": h}})
		}
		return out
	}
	m["prev_events"] = refs(prev)
	typ, _ := m["type"].(string)
	var sk *string
	if s, ok := m["state_key"].(string); ok {
		sk = &s
	}
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
		t.Fatalf("%s: %v", fe.Name, err)
	}
	if err := Authorise(ev, before); err != nil {
		t.Fatalf("%s is not allowed in the state before it: %v", fe.Name, err)
	}
	d.events[fe.Name], d.names[ev.ID()], d.before[fe.Name] = ev, fe.Name, before
	d.after[fe.Name] = before
	if ev.IsState() {
		d.after[fe.Name] = before.With(ev)
	}
}

func TestResolveStateV1Degenerate(t *testing.T) {
	v := lookupVersionT(t, "1")
	create := mustEvent(t, v, `{"type":"m.room.create","state_key":"","event_id":"$c:a.test","sender":"@a:a.test","room_id":"!r:a.test",
		"content":{"creator":"@a:a.test"},"prev_events":[],"auth_events":[],"depth":1,"origin_server_ts":1}`)
	if got := ResolveStateV1(nil); len(got) != 0 {
		t.Errorf("no states: %v", got)
	}
	one := NewStateMap(create)
	got := ResolveStateV1([]StateMap{one})
	if len(got) != 1 || got.Get(TypeCreate, "") != create {
		t.Errorf("one state: %v", got)
	}
	got[StateKey{Type: "x"}] = create
	if len(one) != 1 {
		t.Error("the result shares the input's map")
	}
}
