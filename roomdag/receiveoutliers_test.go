package roomdag

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"testing"
)

// TestReceiveOutliers: a batch of outliers of a room this server does not
// know yet, as a send_join answer brings them: each is checked against
// its own auth events (earlier ones in the batch count), and one bad
// event does not stop the others.
func TestReceiveOutliers(t *testing.T) {
	ctx := context.Background()
	rooms, _ := newTestRooms(t)
	key, err := GenerateSigningKey("remote.test", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, err := GenerateSigningKey("remote.test", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keys := KeySet{}
	keys.Add(key)
	v := mustVersion(t, "12")
	bob, eve := UserID("@bob:remote.test"), UserID("@eve:remote.test")
	ts := int64(1_700_000_000_000)
	var prev []EventID // the create event, once built: the creator's join must follow it
	build := func(k SigningKey, room RoomID, sender UserID, typ string, stateKey *string, content string, auth ...EventID) *Event {
		t.Helper()
		ts++
		ev, err := BuildEvent(v, k, EventTemplate{RoomID: room, Sender: sender, Type: typ, StateKey: stateKey,
			Content: json.RawMessage(content), PrevEvents: prev, AuthEvents: auth, Depth: 1, OriginServerTS: ts})
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	create := build(key, "", bob, TypeCreate, strp(""), `{"room_version":"12"}`)
	room := create.RoomID()
	prev = []EventID{create.ID()}
	join := build(key, room, bob, TypeMember, strp(string(bob)), `{"membership":"join"}`)
	rules := build(key, room, bob, TypeJoinRules, strp(""), `{"join_rule":"public"}`, join.ID())
	// eve is not in the room: rejected.
	name := build(key, room, eve, TypeName, strp(""), `{"name":"no"}`)
	// Cites an event nobody has.
	orphan := build(key, room, bob, TypeTopic, strp(""), `{"topic":"?"}`, join.ID(), "$nowhere")
	forged := build(other, room, bob, TypeTopic, strp(""), `{"topic":"forged"}`, join.ID())
	batch := []*Event{create, join, rules, name, orphan, forged, rules}
	res, err := rooms.ReceiveOutliers(ctx, batch, keys)
	if err != nil {
		t.Fatal(err)
	}
	status := func(i int) DAGStatus {
		t.Helper()
		if res[i].Err != nil {
			t.Fatalf("event %d: %v", i, res[i].Err)
		}
		return res[i].Result.Status
	}
	for _, i := range []int{0, 1, 2, 6} {
		if s := status(i); s != StatusOutlier {
			t.Errorf("event %d: %v, want outlier (%v)", i, s, res[i].Result.Rejection)
		}
	}
	if s := status(3); s != StatusRejected {
		t.Errorf("a non-member's state event: %v, want rejected", s)
	}
	var missing *MissingEventsError
	if !errors.As(res[4].Err, &missing) || len(missing.Auth) != 1 || missing.Auth[0] != "$nowhere" {
		t.Errorf("an event with an unknown auth event: %+v", res[4])
	}
	if !errors.Is(res[5].Err, ErrSignature) {
		t.Errorf("an event signed with another key: %+v", res[5])
	}
	// Stored as Receive stores outliers: received again, the same.
	again, err := rooms.Receive(ctx, name, ReceiveOptions{Kind: KindOutlier, Verifier: keys})
	if err != nil || again.Status != StatusRejected {
		t.Errorf("the rejected event received again: %+v, %v", again, err)
	}
	res, err = rooms.ReceiveOutliers(ctx, []*Event{join, forged}, keys)
	if err != nil || res[0].Err != nil || res[0].Result.Status != StatusOutlier || !errors.Is(res[1].Err, ErrSignature) {
		t.Errorf("a second batch: %+v, %v", res, err)
	}
}
