package storagetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"testing"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"github.com/persistentchat/homeserver/storage/sqlstore"
)

// remoteServer builds events of @bob:remote.test, signed with its own
// key, on top of states the test names.
type remoteServer struct {
	t      *testing.T
	room   roomdag.RoomID
	v      *roomdag.RoomVersion
	key    roomdag.SigningKey
	keys   roomdag.KeySet
	bob    roomdag.UserID
	events map[string]*roomdag.Event
	states map[string]roomdag.StateMap
	ts     int64
}

func newRemoteServer(t *testing.T, room roomdag.RoomID, start *roomdag.RoomState) *remoteServer {
	key, err := roomdag.GenerateSigningKey("remote.test", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	r := &remoteServer{t: t, room: room, v: start.Version, key: key, keys: roomdag.KeySet{}, bob: "@bob:remote.test",
		events: map[string]*roomdag.Event{}, states: map[string]roomdag.StateMap{}, ts: 1_700_000_000_000}
	r.keys.Add(key)
	r.states["start"] = start.State
	for _, id := range start.Extremities {
		for _, ev := range start.State {
			if ev.ID() == id {
				r.events["start"] = ev
			}
		}
	}
	if r.events["start"] == nil {
		t.Fatal("the room's extremity is not a state event")
	}
	return r
}

// build makes bob's event name citing prev, with the auth events the
// state after authFrom selects.
func (r *remoteServer) build(name, authFrom, typ string, stateKey *string, content string, prev ...string) *roomdag.Event {
	r.t.Helper()
	state := r.states[authFrom]
	var auth []roomdag.EventID
	for _, k := range roomdag.AuthEventTuples(r.v, typ, stateKey, r.bob, []byte(content)) {
		if ev := state[k]; ev != nil {
			auth = append(auth, ev.ID())
		}
	}
	var prevIDs []roomdag.EventID
	depth := int64(0)
	for _, p := range prev {
		prevIDs = append(prevIDs, r.events[p].ID())
		depth = max(depth, r.events[p].Depth())
	}
	r.ts++
	ev, err := roomdag.BuildEvent(r.v, r.key, roomdag.EventTemplate{RoomID: r.room, Sender: r.bob, Type: typ, StateKey: stateKey,
		Content: json.RawMessage(content), PrevEvents: prevIDs, AuthEvents: auth, Depth: depth + 1, OriginServerTS: r.ts})
	if err != nil {
		r.t.Fatal(err)
	}
	r.events[name] = ev
	r.states[name] = state
	if ev.IsState() {
		r.states[name] = state.With(ev)
	}
	return ev
}

func receive(t *testing.T, rooms *roomdag.Rooms, r *remoteServer, ev *roomdag.Event, kind roomdag.EventKind, want roomdag.DAGStatus) *roomdag.ReceiveResult {
	t.Helper()
	res, err := rooms.Receive(context.Background(), ev, roomdag.ReceiveOptions{Kind: kind, Verifier: r.keys})
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	if res.Status != want {
		t.Fatalf("status %s (%v), want %s", res.Status, res.Rejection, want)
	}
	return res
}

func sortedIDs(evs ...*roomdag.Event) []roomdag.EventID {
	out := make([]roomdag.EventID, len(evs))
	for i, ev := range evs {
		out[i] = ev.ID()
	}
	slices.Sort(out)
	return out
}

// testDAG: the DAG as stored: edges, forward extremities as a set through
// a fork and its merge, current state resolved over the fork (as another
// process loads it), rejected and outlier events kept out of the
// timeline, backfill under negative positions in its topological place.
func testDAG(t *testing.T, open Opener) {
	ctx := context.Background()
	db := open(t)
	rooms := NewRooms(t, db)
	room := roomdag.RoomID("!dag:test.local")
	owner := roomdag.UserID("@owner:test.local")
	v, _ := roomdag.LookupRoomVersion("11")
	if _, err := rooms.CreateRoom(ctx, v, room,
		roomdag.ProtoEvent{Type: roomdag.TypeCreate, StateKey: sk(""), Sender: owner, Content: json.RawMessage(`{"room_version":"11"}`)},
		[]roomdag.ProtoEvent{
			{Type: roomdag.TypeMember, StateKey: sk(string(owner)), Sender: owner, Content: json.RawMessage(`{"membership":"join"}`)},
			{Type: roomdag.TypePowerLevels, StateKey: sk(""), Sender: owner,
				Content: json.RawMessage(`{"users":{"@owner:test.local":100,"@bob:remote.test":50},"state_default":50}`)},
			{Type: roomdag.TypeJoinRules, StateKey: sk(""), Sender: owner, Content: json.RawMessage(`{"join_rule":"public"}`)},
		}); err != nil {
		t.Fatal(err)
	}
	start, err := rooms.State(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	r := newRemoteServer(t, room, start)

	join := r.build("join", "start", roomdag.TypeMember, sk(string(r.bob)), `{"membership":"join"}`, "start")
	res := receive(t, rooms, r, join, roomdag.KindLive, roomdag.StatusTimeline)
	if res.Pos <= 0 {
		t.Errorf("live event at %d", res.Pos)
	}
	if prev, err := db.PrevEvents(ctx, join.ID()); err != nil || !slices.Equal(prev, join.PrevEvents()) {
		t.Errorf("prev edges %v, %v; want %v", prev, err, join.PrevEvents())
	}
	wantAuth := slices.Clone(join.AuthEvents())
	slices.Sort(wantAuth)
	if auth, err := db.AuthEventIDs(ctx, join.ID()); err != nil || !slices.Equal(auth, wantAuth) {
		t.Errorf("auth edges %v, %v; want %v", auth, err, wantAuth)
	}

	// A fork: two branches on join.
	topic := r.build("topic", "join", roomdag.TypeTopic, sk(""), `{"topic":"one"}`, "join")
	name := r.build("name", "join", roomdag.TypeName, sk(""), `{"name":"two"}`, "join")
	receive(t, rooms, r, topic, roomdag.KindLive, roomdag.StatusTimeline)
	nameRes := receive(t, rooms, r, name, roomdag.KindLive, roomdag.StatusTimeline)
	// Clients are shown the resolved state after it; the DAG keeps the
	// state after it on its branch.
	shown, err := db.StateAtStream(ctx, room, nameRes.Pos)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := db.StateEvents(ctx, shown); err != nil || m.Get(roomdag.TypeTopic, "") == nil || m.Get(roomdag.TypeName, "") == nil {
		t.Errorf("state shown after the fork's second branch lacks a branch: %v, %v", m.IDs(), err)
	}
	dagName, err := db.DAGEvents(ctx, []roomdag.EventID{name.ID()})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := db.StateEvents(ctx, dagName[name.ID()].StateAfter); err != nil || m.Get(roomdag.TypeTopic, "") != nil || m.Get(roomdag.TypeName, "") == nil {
		t.Errorf("the DAG's state after the name branch: %v, %v", m.IDs(), err)
	}
	if ext, err := db.Extremities(ctx, room); err != nil || !slices.Equal(ext, sortedIDs(topic, name)) {
		t.Errorf("extremities %v, %v; want both branches", ext, err)
	}
	// Another process loads the resolved current state.
	loaded, err := db.LoadRoom(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.State.Get(roomdag.TypeTopic, "") == nil || loaded.State.Get(roomdag.TypeName, "") == nil ||
		loaded.Membership(r.bob) != roomdag.MembershipJoin {
		t.Errorf("stored current state lacks a branch: %v", loaded.State.IDs())
	}
	snap, err := db.StateEvents(ctx, loaded.Snapshot)
	if err != nil || len(snap) != len(loaded.State) {
		t.Errorf("current snapshot %d holds %d events, %v; current state %d", loaded.Snapshot, len(snap), err, len(loaded.State))
	}
	merge, _, err := NewRooms(t, db).Append(ctx, room, roomdag.ProtoEvent{Type: roomdag.TypeMessage, Sender: owner, Content: json.RawMessage(`{"body":"merge"}`)})
	if err != nil {
		t.Fatal(err)
	}
	got := slices.Clone(merge.PrevEvents())
	slices.Sort(got)
	if !slices.Equal(got, sortedIDs(topic, name)) {
		t.Errorf("merging event cites %v", got)
	}
	if ext, _ := db.Extremities(ctx, room); !slices.Equal(ext, []roomdag.EventID{merge.ID()}) {
		t.Errorf("extremities after the merge %v", ext)
	}
	rooms.Invalidate(room) // the other process wrote

	// Rejected: bob may not give himself a level above his own.
	pl := r.build("pl", "join", roomdag.TypePowerLevels, sk(""), `{"users":{"@bob:remote.test":100}}`, "join")
	res = receive(t, rooms, r, pl, roomdag.KindLive, roomdag.StatusRejected)
	dag, err := db.DAGEvents(ctx, []roomdag.EventID{pl.ID(), join.ID()})
	if err != nil || dag[pl.ID()] == nil || dag[pl.ID()].Status != roomdag.StatusRejected || dag[pl.ID()].Reason != res.Rejection.Error() {
		t.Errorf("rejected event stored as %+v, %v", dag[pl.ID()], err)
	}
	if dag[join.ID()] == nil || dag[join.ID()].Status != roomdag.StatusTimeline || dag[join.ID()].StateAfter == 0 {
		t.Errorf("join stored as %+v", dag[join.ID()])
	}
	if _, err := db.Event(ctx, pl.ID()); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("rejected event is in the timeline: %v", err)
	}
	// A rejected child (rejected by its own auth events, before its
	// unknown parent is looked for) leaves its parent free to be an
	// extremity when it arrives.
	if has, err := db.HasChildren(ctx, join.ID()); err != nil || !has {
		t.Errorf("HasChildren(join) = %v, %v", has, err)
	}
	lateParent := r.build("lateparent", "join", roomdag.TypeMessage, nil, `{"body":"late"}`, "join")
	receive(t, rooms, r, r.build("rejchild", "join", roomdag.TypePowerLevels, sk(""), `{"users":{"@bob:remote.test":100}}`, "lateparent"),
		roomdag.KindLive, roomdag.StatusRejected)
	if has, err := db.HasChildren(ctx, lateParent.ID()); err != nil || has {
		t.Errorf("HasChildren counts a rejected child: %v, %v", has, err)
	}

	// An outlier: known, not in the timeline, no state.
	ghost := r.build("ghost", "join", roomdag.TypeMessage, nil, `{"body":"outlier"}`, "join")
	receive(t, rooms, r, ghost, roomdag.KindOutlier, roomdag.StatusOutlier)
	if _, err := db.Event(ctx, ghost.ID()); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("outlier is in the timeline: %v", err)
	}
	// Received again live, with its history known, it joins the timeline.
	receive(t, rooms, r, ghost, roomdag.KindLive, roomdag.StatusTimeline)
	if _, err := db.Event(ctx, ghost.ID()); err != nil {
		t.Errorf("outlier received live: %v", err)
	}

	// Backfill: an old event under a negative position, in /messages'
	// order by depth and not in the stream.
	old := r.build("old", "join", roomdag.TypeMessage, nil, `{"body":"history"}`, "join")
	res = receive(t, rooms, r, old, roomdag.KindBackfill, roomdag.StatusTimeline)
	if res.Pos >= 0 {
		t.Errorf("backfilled event at %d", res.Pos)
	}
	stream, err := db.StreamEvents(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range stream {
		if ev.ID() == old.ID() {
			t.Error("the backfilled event is in the stream")
		}
	}
	page, _, err := db.RoomEventsTopo(ctx, room, storage.TopoPos{Depth: math.MaxInt64, Pos: math.MaxInt64}, true, 100)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for i, ev := range page {
		if ev.ID() == old.ID() {
			found = true
			if i+1 < len(page) && page[i+1].Depth() > old.Depth() {
				t.Errorf("backfilled event out of topological order")
			}
		}
	}
	if !found {
		t.Error("the backfilled event is not in /messages' order")
	}
	// A second backfilled event goes lower still, also after a reopen
	// of the counters (a fresh write path on the same database).
	older := r.build("older", "join", roomdag.TypeMessage, nil, `{"body":"more history"}`, "join")
	res2 := receive(t, NewRooms(t, db), r, older, roomdag.KindBackfill, roomdag.StatusTimeline)
	if res2.Pos >= res.Pos {
		t.Errorf("second backfilled event at %d, first at %d", res2.Pos, res.Pos)
	}

	// The compliance archiver reads backfilled events below its backfill
	// position, going down, and stores that position with its append,
	// refusing a batch built on another.
	backfilled := func(below roomdag.StreamPos) []roomdag.EventID {
		t.Helper()
		evs, err := db.ComplianceBackfill(ctx, below, 10)
		if err != nil {
			t.Fatal(err)
		}
		var ids []roomdag.EventID
		for _, e := range evs {
			ids = append(ids, e.ID)
		}
		return ids
	}
	if got := backfilled(0); !slices.Equal(got, []roomdag.EventID{old.ID(), older.ID()}) {
		t.Errorf("ComplianceBackfill(0) = %v, want %v then %v", got, old.ID(), older.ID())
	}
	if got := backfilled(res.Pos); !slices.Equal(got, []roomdag.EventID{older.ID()}) {
		t.Errorf("ComplianceBackfill(%d) = %v, want %v", res.Pos, got, older.ID())
	}
	pos, err := db.CompliancePos(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.AppendCompliance(ctx, storage.ComplianceBatch{From: pos, To: pos, BackfillFrom: -1, BackfillTo: res.Pos}); !errors.Is(err, sqlstore.ErrComplianceMoved) {
		t.Errorf("an append built on another backfill position: %v, want ErrComplianceMoved", err)
	}
	if err := db.AppendCompliance(ctx, storage.ComplianceBatch{From: pos, To: pos, BackfillTo: res.Pos}); err != nil {
		t.Fatal(err)
	}
	if bf, err := db.ComplianceBackfillPos(ctx); err != nil || bf != res.Pos {
		t.Errorf("ComplianceBackfillPos = %d, %v; want %d", bf, err, res.Pos)
	}

	// Received events outside the timeline wait for the archiver, the
	// rejected ones with their reason; the outlier that has joined the
	// timeline since is archived from there. An append marks those it
	// names.
	recv, err := db.ComplianceReceived(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[roomdag.EventID]storage.ComplianceReceived{}
	var ids []roomdag.EventID
	for _, e := range recv {
		seen[e.ID] = e
		ids = append(ids, e.ID)
	}
	if e := seen[pl.ID()]; len(seen) != 2 || e.Status != "rejected" || e.Reason == "" || e.Room != room || !bytes.Equal(e.JSON, pl.JSON()) ||
		seen[ghost.ID()].ID != "" {
		t.Errorf("ComplianceReceived = %+v, want the two rejected events", recv)
	}
	if err := db.AppendCompliance(ctx, storage.ComplianceBatch{From: pos, To: pos, BackfillFrom: res.Pos, BackfillTo: res.Pos, Received: ids}); err != nil {
		t.Fatal(err)
	}
	if recv, err := db.ComplianceReceived(ctx, 10); err != nil || len(recv) != 0 {
		t.Errorf("ComplianceReceived after the append = %+v, %v", recv, err)
	}
}

// testDAGJoinedLate: a room this server first hears of from another one,
// as a send_join gives it: the room's state as outliers, then an event
// accepted with that state before it (a gap behind). The room is made by
// the first write; its current state, of outliers, loads from storage.
func testDAGJoinedLate(t *testing.T, open Opener) {
	ctx := context.Background()
	db := open(t)
	rooms := NewRooms(t, db)
	key, err := roomdag.GenerateSigningKey("remote.test", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keys := roomdag.KeySet{}
	keys.Add(key)
	v, _ := roomdag.LookupRoomVersion("12")
	bob := roomdag.UserID("@bob:remote.test")
	ts := int64(1_700_000_000_000)
	build := func(room roomdag.RoomID, typ string, stateKey *string, content string, prev []roomdag.EventID, auth []roomdag.EventID, depth int64) *roomdag.Event {
		t.Helper()
		ts++
		ev, err := roomdag.BuildEvent(v, key, roomdag.EventTemplate{RoomID: room, Sender: bob, Type: typ, StateKey: stateKey,
			Content: json.RawMessage(content), PrevEvents: prev, AuthEvents: auth, Depth: depth, OriginServerTS: ts})
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	create := build("", roomdag.TypeCreate, sk(""), `{"room_version":"12"}`, nil, nil, 1)
	room := create.RoomID()
	join := build(room, roomdag.TypeMember, sk(string(bob)), `{"membership":"join"}`, []roomdag.EventID{create.ID()}, nil, 2)
	rules := build(room, roomdag.TypeJoinRules, sk(""), `{"join_rule":"public"}`, []roomdag.EventID{join.ID()}, []roomdag.EventID{join.ID()}, 3)
	msg := build(room, roomdag.TypeMessage, nil, `{"body":"after the gap"}`, []roomdag.EventID{"$unknownpredecessor"}, []roomdag.EventID{join.ID()}, 10)
	state := []*roomdag.Event{create, join, rules}
	for _, ev := range state {
		res, err := rooms.Receive(ctx, ev, roomdag.ReceiveOptions{Kind: roomdag.KindOutlier, Verifier: keys})
		if err != nil || res.Status != roomdag.StatusOutlier {
			t.Fatalf("outlier %s: %+v, %v", ev.Type(), res, err)
		}
	}
	_, err = rooms.Receive(ctx, msg, roomdag.ReceiveOptions{Verifier: keys})
	var missing *roomdag.MissingEventsError
	if !errors.As(err, &missing) || !slices.Equal(missing.Prev, []roomdag.EventID{"$unknownpredecessor"}) {
		t.Fatalf("Receive across a gap without the state: %v", err)
	}
	res, err := rooms.Receive(ctx, msg, roomdag.ReceiveOptions{Verifier: keys, StateBefore: sortedIDs(state...)})
	if err != nil || res.Status != roomdag.StatusTimeline || res.Pos <= 0 {
		t.Fatalf("Receive with the state before: %+v, %v", res, err)
	}
	loaded, err := db.LoadRoom(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	if len(loaded.State) != 3 || loaded.Membership(bob) != roomdag.MembershipJoin || !slices.Equal(loaded.Extremities, []roomdag.EventID{msg.ID()}) {
		t.Errorf("room as loaded: state %v, extremities %v", loaded.State.IDs(), loaded.Extremities)
	}
	if ev, err := db.Event(ctx, msg.ID()); err != nil || ev.StateBefore == 0 {
		t.Errorf("the event after the gap: %v, %v", ev, err)
	}
	// The state events stay outliers, out of the timeline.
	if _, err := db.Event(ctx, rules.ID()); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("an outlier is in the timeline: %v", err)
	}
	// /sync's state section finds them with the timeline's events.
	evs, err := db.EventsWithOutliers(ctx, []roomdag.EventID{rules.ID(), msg.ID(), "$unknown"})
	if err != nil || len(evs) != 2 {
		t.Fatalf("EventsWithOutliers: %d events, %v", len(evs), err)
	}
	for _, ev := range evs {
		if ev.ID() == rules.ID() && ev.Pos != 0 || ev.ID() == msg.ID() && ev.Pos != res.Pos {
			t.Errorf("EventsWithOutliers: %s at %d", ev.ID(), ev.Pos)
		}
	}
}
