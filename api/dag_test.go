package api_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"net/url"
	"slices"
	"testing"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/testserver"
)

// remoteEvent builds an event of a user of another server (signed with
// key) on top of the room's current state, citing prev.
func remoteEvent(t *testing.T, st *roomdag.RoomState, room roomdag.RoomID, key roomdag.SigningKey, sender roomdag.UserID,
	typ string, stateKey *string, content string, prev []*roomdag.Event, ts int64) *roomdag.Event {
	t.Helper()
	var auth []roomdag.EventID
	for _, k := range roomdag.AuthEventTuples(st.Version, typ, stateKey, sender, []byte(content)) {
		if ev := st.State[k]; ev != nil {
			auth = append(auth, ev.ID())
		}
	}
	var prevIDs []roomdag.EventID
	depth := int64(0)
	for _, p := range prev {
		prevIDs = append(prevIDs, p.ID())
		depth = max(depth, p.Depth())
	}
	ev, err := roomdag.BuildEvent(st.Version, key, roomdag.EventTemplate{RoomID: room, Sender: sender, Type: typ, StateKey: stateKey,
		Content: json.RawMessage(content), PrevEvents: prevIDs, AuthEvents: auth, Depth: depth + 1, OriginServerTS: ts})
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// TestBackfilledEventInMessagesNotSync: an event received as backfill
// takes its place in /messages and never reaches /sync as new; a live
// received event does.
func TestBackfilledEventInMessagesNotSync(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	rid := roomdag.RoomID(room)
	ctx := context.Background()
	key, err := roomdag.GenerateSigningKey("remote.test", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keys := roomdag.KeySet{}
	keys.Add(key)
	bob := roomdag.UserID("@bob:remote.test")
	receive := func(ev *roomdag.Event, kind roomdag.EventKind) *roomdag.ReceiveResult {
		t.Helper()
		res, err := srv.HS.Rooms.Receive(ctx, ev, roomdag.ReceiveOptions{Kind: kind, Verifier: keys})
		if err != nil || res.Status != roomdag.StatusTimeline {
			t.Fatalf("Receive(%s): %+v, %v", kind, res, err)
		}
		return res
	}
	state := func() *roomdag.RoomState {
		st, err := srv.HS.Rooms.State(ctx, rid)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	head := func(st *roomdag.RoomState) []*roomdag.Event {
		var out []*roomdag.Event
		for _, id := range st.Extremities {
			for _, ev := range st.State {
				if ev.ID() == id {
					out = append(out, ev)
				}
			}
		}
		if len(out) == 0 {
			t.Fatal("the room's extremity is not a state event")
		}
		return out
	}
	st := state()
	join := remoteEvent(t, st, rid, key, bob, roomdag.TypeMember, remoteStateKey(string(bob)), `{"membership":"join"}`, head(st), 1_700_000_000_000)
	receive(join, roomdag.KindLive)

	_, next := syncRoom(t, alice, room, 10)
	st = state()
	old := remoteEvent(t, st, rid, key, bob, roomdag.TypeMessage, nil, `{"msgtype":"m.text","body":"from the past"}`, []*roomdag.Event{join}, 1_700_000_000_001)
	if res := receive(old, roomdag.KindBackfill); res.Pos >= 0 {
		t.Errorf("backfilled event at stream position %d", res.Pos)
	}
	live := remoteEvent(t, st, rid, key, bob, roomdag.TypeMessage, nil, `{"msgtype":"m.text","body":"live"}`, []*roomdag.Event{join}, 1_700_000_000_002)
	receive(live, roomdag.KindLive)

	var out struct {
		Rooms struct {
			Join map[string]struct {
				Timeline syncTimeline `json:"timeline"`
			} `json:"join"`
		} `json:"rooms"`
	}
	wantOK(t, alice.Do("GET", csAPI+"/sync?timeout=0&since="+url.QueryEscape(next), nil), &out)
	got := eventIDs(out.Rooms.Join[room].Timeline.Events)
	if !slices.Contains(got, string(live.ID())) {
		t.Errorf("/sync since the join lacks the live remote event: %v", got)
	}
	if slices.Contains(got, string(old.ID())) {
		t.Errorf("/sync reports the backfilled event as new: %v", got)
	}
	page := messages(t, alice, room, query("dir", "b", "limit", "50"))
	ids := eventIDs(page.Chunk)
	if !slices.Contains(ids, string(old.ID())) || !slices.Contains(ids, string(live.ID())) {
		t.Fatalf("/messages lacks a remote event: %v", ids)
	}
	// In topological place: after bob's join, paging backwards.
	if slices.Index(ids, string(old.ID())) > slices.Index(ids, string(join.ID())) {
		t.Errorf("/messages puts the backfilled event before the join it follows: %v", ids)
	}
}

// remoteStateKey is a state key for remoteEvent.
func remoteStateKey(s string) *string { return &s }
