package roomdag

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"slices"
	"testing"
)

// dagRoom is a small named DAG: a room made locally (by @owner:test.local)
// in which @bob:remote.test, whose server signs with its own key, sends
// events built by hand, each named so tests read as DAG drawings.
type dagRoom struct {
	t      *testing.T
	rooms  *Rooms
	store  *memStore
	id     RoomID
	v      *RoomVersion
	owner  UserID
	bob    UserID
	key    SigningKey // remote.test's
	keys   KeySet
	named  map[string]*Event
	states map[string]StateMap // the state after each named event
	ts     int64
}

func newDAGRoom(t *testing.T) *dagRoom {
	t.Helper()
	rooms, store := newTestRooms(t)
	key, err := GenerateSigningKey("remote.test", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	d := &dagRoom{t: t, rooms: rooms, store: store, id: "!dag:test.local", v: mustVersion(t, "11"),
		owner: "@owner:test.local", bob: "@bob:remote.test", key: key, keys: KeySet{},
		named: map[string]*Event{}, states: map[string]StateMap{}, ts: 1_700_000_000_000}
	d.keys.Add(key)
	ctx := context.Background()
	pl := `{"users":{"@owner:test.local":100,"@bob:remote.test":50},"state_default":50,"events_default":0,"redact":50,"ban":50}`
	if _, err := rooms.CreateRoom(ctx, d.v, d.id,
		ProtoEvent{Type: TypeCreate, StateKey: strp(""), Sender: d.owner, Content: json.RawMessage(`{"room_version":"11"}`)},
		[]ProtoEvent{
			{Type: TypeMember, StateKey: strp(string(d.owner)), Sender: d.owner, Content: json.RawMessage(`{"membership":"join"}`)},
			{Type: TypePowerLevels, StateKey: strp(""), Sender: d.owner, Content: json.RawMessage(pl)},
			{Type: TypeJoinRules, StateKey: strp(""), Sender: d.owner, Content: json.RawMessage(`{"join_rule":"public"}`)},
		}); err != nil {
		t.Fatal(err)
	}
	st := d.state()
	d.named["start"] = st.State.Get(TypeJoinRules, "")
	d.states["start"] = st.State
	return d
}

func (d *dagRoom) state() *RoomState {
	d.t.Helper()
	st, err := d.rooms.State(context.Background(), d.id)
	if err != nil {
		d.t.Fatal(err)
	}
	return st
}

// build makes bob's event name on top of the named prev events, citing
// the auth events the state after the first of them selects (authFrom
// overrides which named state that is).
func (d *dagRoom) build(name string, typ string, stateKey *string, content string, prev ...string) *Event {
	return d.buildFrom(name, prev[0], typ, stateKey, content, prev...)
}

func (d *dagRoom) buildFrom(name, authFrom, typ string, stateKey *string, content string, prev ...string) *Event {
	d.t.Helper()
	state := d.states[authFrom]
	if state == nil {
		d.t.Fatalf("no state after %q", authFrom)
	}
	var auth []EventID
	for _, k := range AuthEventTuples(d.v, typ, stateKey, d.bob, []byte(content)) {
		if ev := state[k]; ev != nil {
			auth = append(auth, ev.ID())
		}
	}
	var prevIDs []EventID
	depth := int64(0)
	for _, p := range prev {
		ev := d.named[p]
		if ev == nil {
			d.t.Fatalf("no event %q", p)
		}
		prevIDs = append(prevIDs, ev.ID())
		depth = max(depth, ev.Depth())
	}
	d.ts++
	ev, err := BuildEvent(d.v, d.key, EventTemplate{RoomID: d.id, Sender: d.bob, Type: typ, StateKey: stateKey,
		Content: json.RawMessage(content), PrevEvents: prevIDs, AuthEvents: auth, Depth: depth + 1, OriginServerTS: d.ts})
	if err != nil {
		d.t.Fatal(err)
	}
	d.named[name] = ev
	after := state
	if ev.IsState() {
		after = state.With(ev)
	}
	d.states[name] = after
	return ev
}

func (d *dagRoom) receive(ev *Event, kind EventKind) (*ReceiveResult, error) {
	return d.rooms.Receive(context.Background(), ev, ReceiveOptions{Kind: kind, Verifier: d.keys})
}

func (d *dagRoom) mustReceive(ev *Event, kind EventKind, want DAGStatus) *ReceiveResult {
	d.t.Helper()
	res, err := d.receive(ev, kind)
	if err != nil {
		d.t.Fatalf("Receive: %v", err)
	}
	if res.Status != want {
		d.t.Fatalf("event %s: status %s (%v), want %s", ev.ID(), res.Status, res.Rejection, want)
	}
	return res
}

// extremities names the room's forward extremities.
func (d *dagRoom) extremities() []string {
	var out []string
	for _, id := range d.state().Extremities {
		name := string(id)
		for n, ev := range d.named {
			if ev.ID() == id && n != "start" {
				name = n
			}
		}
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// join is bob's join on top of start.
func (d *dagRoom) join() {
	d.t.Helper()
	d.mustReceive(d.build("join", TypeMember, strp(string(d.bob)), `{"membership":"join"}`, "start"), KindLive, StatusTimeline)
}

func TestReceiveLinear(t *testing.T) {
	d := newDAGRoom(t)
	d.join()
	res := d.mustReceive(d.build("m1", TypeMessage, nil, `{"body":"hi"}`, "join"), KindLive, StatusTimeline)
	if res.Pos <= 0 {
		t.Errorf("live event at position %d", res.Pos)
	}
	if got := d.extremities(); !slices.Equal(got, []string{"m1"}) {
		t.Errorf("extremities %v, want [m1]", got)
	}
	if d.state().Membership(d.bob) != MembershipJoin {
		t.Error("bob is not joined in the current state")
	}
	// Receiving it again changes nothing and says what it was.
	again := d.mustReceive(d.named["m1"], KindLive, StatusTimeline)
	if again.Event.ID() != d.named["m1"].ID() {
		t.Error("a second Receive returned another event")
	}
	// A local event cites the remote one.
	ev, _, err := d.rooms.Append(context.Background(), d.id, message(d.owner, "reply"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ev.PrevEvents(), []EventID{d.named["m1"].ID()}) {
		t.Errorf("local event cites %v, want m1", ev.PrevEvents())
	}
}

// TestReceiveFork: two branches from join, each setting a different piece
// of state; the current state is their resolution, the next local event
// merges them.
//
//	join ─┬─ topic ─┐
//	      └─ name  ─┴─ (local)
func TestReceiveFork(t *testing.T) {
	d := newDAGRoom(t)
	d.join()
	d.mustReceive(d.build("topic", TypeTopic, strp(""), `{"topic":"branch one"}`, "join"), KindLive, StatusTimeline)
	d.mustReceive(d.build("name", TypeName, strp(""), `{"name":"branch two"}`, "join"), KindLive, StatusTimeline)
	if got := d.extremities(); !slices.Equal(got, []string{"name", "topic"}) {
		t.Fatalf("extremities %v, want [name topic]", got)
	}
	st := d.state()
	if topicOf(st) != "branch one" || st.State.Get(TypeName, "") == nil {
		t.Errorf("current state lacks one branch: topic %q, name %v", topicOf(st), st.State.Get(TypeName, ""))
	}
	ev, _, err := d.rooms.Append(context.Background(), d.id, message(d.owner, "merge"))
	if err != nil {
		t.Fatal(err)
	}
	want := []EventID{d.named["name"].ID(), d.named["topic"].ID()}
	slices.Sort(want)
	got := slices.Clone(ev.PrevEvents())
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("local event cites %v, want both branches %v", got, want)
	}
	if ext := d.state().Extremities; len(ext) != 1 || ext[0] != ev.ID() {
		t.Errorf("extremities after the merge %v", ext)
	}
	// The state before a remote event that merges the fork is resolved too.
	d.named["merge"] = ev
	d.states["merge"] = d.state().State
	m := d.mustReceive(d.buildFrom("after", "merge", TypeMessage, nil, `{"body":"both"}`, "topic", "name"), KindLive, StatusTimeline)
	if m.Pos <= 0 {
		t.Errorf("position %d", m.Pos)
	}
}

// TestReceiveLatePredecessor: m2 arrives before m1, its prev_event; the
// caller is told what is missing, and nothing is stored.
//
//	join ── m1 ── m2
func TestReceiveLatePredecessor(t *testing.T) {
	d := newDAGRoom(t)
	d.join()
	m1 := d.build("m1", TypeMessage, nil, `{"body":"one"}`, "join")
	m2 := d.build("m2", TypeMessage, nil, `{"body":"two"}`, "m1")
	_, err := d.receive(m2, KindLive)
	var missing *MissingEventsError
	if !errors.As(err, &missing) || !slices.Equal(missing.Prev, []EventID{m1.ID()}) {
		t.Fatalf("Receive(m2) = %v, want MissingEventsError for m1", err)
	}
	if known, _ := d.store.DAGEvents(context.Background(), []EventID{m2.ID()}); len(known) != 0 {
		t.Error("m2 was stored")
	}
	d.mustReceive(m1, KindLive, StatusTimeline)
	d.mustReceive(m2, KindLive, StatusTimeline)
	if got := d.extremities(); !slices.Equal(got, []string{"m2"}) {
		t.Errorf("extremities %v, want [m2]", got)
	}
	// Or with the state before it given, across a gap.
	m4 := d.build("m4", TypeMessage, nil, `{"body":"four"}`, "m2")
	m3 := d.build("m3", TypeMessage, nil, `{"body":"three"}`, "m4") // cites unknown m4
	var ids []EventID
	for _, ev := range d.states["join"] {
		ids = append(ids, ev.ID())
	}
	res, err := d.rooms.Receive(context.Background(), m3, ReceiveOptions{Verifier: d.keys, StateBefore: ids})
	if err != nil || res.Status != StatusTimeline {
		t.Fatalf("Receive with state before: %v, %v", res, err)
	}
	if got := d.extremities(); !slices.Equal(got, []string{"m2", "m3"}) {
		t.Errorf("extremities %v, want [m2 m3]", got)
	}
	// m4 arrives late: it has a child already, so it is no extremity.
	d.mustReceive(m4, KindLive, StatusTimeline)
	if got := d.extremities(); !slices.Equal(got, []string{"m3"}) {
		t.Errorf("extremities %v, want [m3]", got)
	}
}

// TestReceiveRejected: bob may not raise himself to 100; the event is
// kept as rejected, never state, never cited, and an event citing it as an
// auth event is rejected by rule 2.3.
func TestReceiveRejected(t *testing.T) {
	d := newDAGRoom(t)
	d.join()
	pl := `{"users":{"@owner:test.local":100,"@bob:remote.test":100},"state_default":50}`
	res := d.mustReceive(d.build("pl", TypePowerLevels, strp(""), pl, "join"), KindLive, StatusRejected)
	if ruleOf(res.Rejection) == "" {
		t.Errorf("rejection %v names no rule", res.Rejection)
	}
	known, _ := d.store.DAGEvents(context.Background(), []EventID{d.named["pl"].ID()})
	if k := known[d.named["pl"].ID()]; k == nil || k.Status != StatusRejected || k.Reason == "" {
		t.Errorf("stored as %+v", k)
	}
	if got := d.extremities(); !slices.Equal(got, []string{"join"}) {
		t.Errorf("extremities %v, want [join]", got)
	}
	if d.state().State.Get(TypePowerLevels, "").ID() == d.named["pl"].ID() {
		t.Error("the rejected event became state")
	}
	res = d.mustReceive(d.buildFrom("topic", "pl", TypeTopic, strp(""), `{"topic":"x"}`, "join"), KindLive, StatusRejected)
	if r := ruleOf(res.Rejection); r != "2.3" {
		t.Errorf("event citing a rejected auth event: rule %q (%v), want 2.3", r, res.Rejection)
	}
	ev, _, err := d.rooms.Append(context.Background(), d.id, message(d.owner, "after"))
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(ev.PrevEvents(), d.named["pl"].ID()) {
		t.Error("a local event cites the rejected event")
	}
	// A rejected child does not keep its late parent from being an
	// extremity.
	d.named["local"] = ev
	d.states["local"] = d.state().State
	late := d.buildFrom("late", "local", TypeMessage, nil, `{"body":"late"}`, "local")
	d.mustReceive(d.buildFrom("pl2", "local", TypePowerLevels, strp(""), pl, "late"), KindLive, StatusRejected)
	d.mustReceive(late, KindLive, StatusTimeline)
	if got := d.extremities(); !slices.Equal(got, []string{"late"}) {
		t.Errorf("extremities %v, want [late]", got)
	}
}

// TestReceiveSoftFail: the owner bans bob; bob's message built on the
// state before the ban passes its auth events and the state before it but
// not the current state; with NoSoftFail it would be accepted.
//
//	join ─┬─ (ban, local)
//	      └─ late
func TestReceiveSoftFail(t *testing.T) {
	d := newDAGRoom(t)
	d.join()
	if _, _, err := d.rooms.Append(context.Background(), d.id, ProtoEvent{Type: TypeMember, StateKey: strp(string(d.bob)),
		Sender: d.owner, Content: json.RawMessage(`{"membership":"ban"}`)}); err != nil {
		t.Fatal(err)
	}
	before := d.state()
	res := d.mustReceive(d.build("late", TypeMessage, nil, `{"body":"sneaky"}`, "join"), KindLive, StatusSoftFailed)
	if ruleOf(res.Rejection) == "" {
		t.Errorf("soft failure %v names no rule", res.Rejection)
	}
	after := d.state()
	if !slices.Equal(after.Extremities, before.Extremities) || after.LastPos != before.LastPos {
		t.Errorf("a soft-failed event moved the room: %v at %d, was %v at %d", after.Extremities, after.LastPos, before.Extremities, before.LastPos)
	}
	if after.Membership(d.bob) != MembershipBan {
		t.Error("bob is no longer banned")
	}
	// NoSoftFail (a send_join's join, whose server held a stale present)
	// judges it by its auth events and the state before it only.
	res, err := d.rooms.Receive(context.Background(), d.build("late2", TypeMessage, nil, `{"body":"judged by its past"}`, "join"),
		ReceiveOptions{Kind: KindLive, Verifier: d.keys, NoSoftFail: true})
	if err != nil || res.Status != StatusTimeline {
		t.Errorf("with NoSoftFail: %+v, %v; want it in the timeline", res, err)
	}
}

// TestReceiveOutlier: an event known without its history is checked
// against its auth events only and stored without state; a live event on
// top of it needs the state before it.
func TestReceiveOutlier(t *testing.T) {
	d := newDAGRoom(t)
	ghost := d.build("ghost", TypeMessage, nil, `{"body":"unseen"}`, "start")
	join := d.buildFrom("join", "start", TypeMember, strp(string(d.bob)), `{"membership":"join"}`, "ghost")
	d.mustReceive(join, KindOutlier, StatusOutlier)
	if d.state().Membership(d.bob) != "" {
		t.Error("an outlier changed the current state")
	}
	after := d.build("m", TypeMessage, nil, `{"body":"hi"}`, "join")
	_, err := d.receive(after, KindLive)
	var missing *MissingEventsError
	if !errors.As(err, &missing) || !slices.Equal(missing.Prev, []EventID{join.ID()}) {
		t.Fatalf("Receive on an outlier = %v, want its prev missing", err)
	}
	_ = ghost
	// An outlier whose auth events are unknown cannot be taken either.
	stranger := d.buildFrom("x", "join", TypeMessage, nil, `{"body":"?"}`, "join")
	d.store.mu.Lock()
	delete(d.store.dag, join.ID())
	d.store.mu.Unlock()
	if _, err := d.receive(stranger, KindOutlier); !errors.As(err, &missing) || !slices.Contains(missing.Auth, join.ID()) {
		t.Fatalf("outlier with unknown auth events: %v", err)
	}
}

// TestReceiveBackfill: history before join, fetched later, takes a
// negative position and changes nothing of the present.
func TestReceiveBackfill(t *testing.T) {
	d := newDAGRoom(t)
	d.join()
	d.mustReceive(d.build("m1", TypeMessage, nil, `{"body":"now"}`, "join"), KindLive, StatusTimeline)
	before := d.state()
	old := d.build("old", TypeMessage, nil, `{"body":"then"}`, "join")
	res := d.mustReceive(old, KindBackfill, StatusTimeline)
	if res.Pos >= 0 {
		t.Errorf("backfilled event at position %d, want negative", res.Pos)
	}
	if after := d.state(); !slices.Equal(after.Extremities, before.Extremities) || after.LastPos != before.LastPos {
		t.Error("backfill moved the room's present")
	}
}

// TestReceiveRefused: bad signatures are refused outright; a wrong
// content hash means the redacted form is taken.
func TestReceiveRefused(t *testing.T) {
	d := newDAGRoom(t)
	d.join()
	other, _ := GenerateSigningKey("remote.test", rand.Reader)
	forged, err := BuildEvent(d.v, other, EventTemplate{RoomID: d.id, Sender: d.bob, Type: TypeMessage,
		Content: json.RawMessage(`{"body":"forged"}`), PrevEvents: []EventID{d.named["join"].ID()},
		AuthEvents: d.named["join"].AuthEvents(), Depth: 10, OriginServerTS: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.receive(forged, KindLive); !errors.Is(err, ErrSignature) {
		t.Errorf("forged signature: %v", err)
	}
	if _, err := d.rooms.Receive(context.Background(), forged, ReceiveOptions{}); !errors.Is(err, ErrNoVerifier) {
		t.Errorf("no verifier: %v", err)
	}
	m := d.build("m", TypeMessage, nil, `{"body":"original"}`, "join")
	if _, err := d.rooms.Receive(context.Background(), m, ReceiveOptions{Verifier: d.keys, ExpectedID: "$other"}); !errors.Is(err, ErrEventFormat) {
		t.Errorf("wrong event ID: %v", err)
	}
	// Change the content after signing: the signature (over the redacted
	// form) holds, the hash does not.
	var obj map[string]any
	_ = json.Unmarshal(m.JSON(), &obj)
	obj["content"] = map[string]any{"body": "tampered"}
	raw, _ := json.Marshal(obj)
	tampered, err := NewEventFromJSON(d.v, raw)
	if err != nil {
		t.Fatal(err)
	}
	res, err := d.receive(tampered, KindLive)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Redacted || string(res.Event.Content()) != "{}" {
		t.Errorf("tampered event taken as %s (redacted %v)", res.Event.Content(), res.Redacted)
	}
}

// TestReceiveRedaction: bob's server redacts bob's message; the stored
// copy is redacted as for a local redaction.
func TestReceiveRedaction(t *testing.T) {
	d := newDAGRoom(t)
	d.join()
	m := d.build("m", TypeMessage, nil, `{"body":"oops"}`, "join")
	d.mustReceive(m, KindLive, StatusTimeline)
	d.ts++
	red, err := BuildEvent(d.v, d.key, EventTemplate{RoomID: d.id, Sender: d.bob, Type: TypeRedaction, Redacts: m.ID(),
		PrevEvents: []EventID{m.ID()}, AuthEvents: d.named["m"].AuthEvents(), Depth: m.Depth() + 1, OriginServerTS: d.ts})
	if err != nil {
		t.Fatal(err)
	}
	d.mustReceive(red, KindLive, StatusTimeline)
	known, _ := d.store.DAGEvents(context.Background(), []EventID{m.ID()})
	if c := string(known[m.ID()].Event.Content()); c != "{}" {
		t.Errorf("redacted message content %s", c)
	}
	// A redacted state event stays in the current state, stripped.
	d.named["red"] = red
	d.states["red"] = d.states["m"]
	topic := d.build("topic", TypeTopic, strp(""), `{"topic":"secret"}`, "red")
	d.mustReceive(topic, KindLive, StatusTimeline)
	d.ts++
	red2, err := BuildEvent(d.v, d.key, EventTemplate{RoomID: d.id, Sender: d.bob, Type: TypeRedaction, Redacts: topic.ID(),
		PrevEvents: []EventID{topic.ID()}, AuthEvents: d.named["m"].AuthEvents(), Depth: topic.Depth() + 1, OriginServerTS: d.ts})
	if err != nil {
		t.Fatal(err)
	}
	d.mustReceive(red2, KindLive, StatusTimeline)
	cur := d.state().State.Get(TypeTopic, "")
	if cur == nil || cur.ID() != topic.ID() || string(cur.Content()) != "{}" {
		t.Errorf("current topic after its redaction: %v", cur)
	}
}

// TestAppendCitesAtMostTenExtremities: twelve branches; a local event
// cites ten, and the two it leaves stay extremities beside it.
func TestAppendCitesAtMostTenExtremities(t *testing.T) {
	d := newDAGRoom(t)
	d.join()
	for i := range 12 {
		d.mustReceive(d.build("b"+string(rune('a'+i)), TypeMessage, nil, `{"body":"branch"}`, "join"), KindLive, StatusTimeline)
	}
	if n := len(d.state().Extremities); n != 12 {
		t.Fatalf("%d extremities, want 12", n)
	}
	ev, _, err := d.rooms.Append(context.Background(), d.id, message(d.owner, "merge"))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(ev.PrevEvents()); n != maxPrevEvents {
		t.Errorf("local event cites %d prev_events, want %d", n, maxPrevEvents)
	}
	ext := d.state().Extremities
	if len(ext) != 3 || !slices.Contains(ext, ev.ID()) {
		t.Errorf("extremities after the capped merge: %v", ext)
	}
	for _, id := range ext {
		if id != ev.ID() && slices.Contains(ev.PrevEvents(), id) {
			t.Errorf("cited event %s is still an extremity", id)
		}
	}
}
