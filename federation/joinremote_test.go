package federation_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/federation"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
)

// recordingRooms is a RoomReceiver that takes every event and records
// what it was given.
type recordingRooms struct {
	mu       sync.Mutex
	outliers []roomdag.EventID
	join     *roomdag.Event
	before   []roomdag.EventID
}

func (r *recordingRooms) Receive(_ context.Context, ev *roomdag.Event, opts roomdag.ReceiveOptions) (*roomdag.ReceiveResult, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.join, r.before = ev, opts.StateBefore
	return &roomdag.ReceiveResult{Event: ev, Status: roomdag.StatusTimeline}, nil
}

func (r *recordingRooms) ReceiveOutliers(ctx context.Context, evs []*roomdag.Event, v roomdag.SignatureVerifier) ([]roomdag.OutlierResult, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]roomdag.OutlierResult, len(evs))
	for i, ev := range evs {
		if err := v.VerifyEventSignatures(ctx, ev, ev.OriginServerTS()); err != nil {
			out[i].Err = err
			continue
		}
		r.outliers = append(r.outliers, ev.ID())
		out[i].Result = &roomdag.ReceiveResult{Event: ev, Status: roomdag.StatusOutlier}
	}
	return out, nil
}

// resident plays a server in a room: make_join, and send_join v1 only
// (its v2 is unrecognised, as on servers from before it).
func resident(t *testing.T, n *network, name roomdag.ServerName, state []*roomdag.Event, calls *[]string, mu *sync.Mutex) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		*calls = append(*calls, string(name)+" "+r.Method+" "+strings.SplitN(r.URL.Path, "/", 6)[4])
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.Contains(r.URL.Path, "/v1/make_join/"):
			tmpl := map[string]any{"room_version": "11", "event": map[string]any{
				"room_id": state[0].RoomID(), "sender": "@joe:joiner.test", "type": "m.room.member", "state_key": "@joe:joiner.test",
				"content": map[string]any{"membership": "join"}, "prev_events": []roomdag.EventID{state[len(state)-1].ID()},
				"auth_events": []roomdag.EventID{state[0].ID(), state[2].ID(), state[3].ID()}, "depth": 5}}
			json.NewEncoder(w).Encode(tmpl)
		case strings.Contains(r.URL.Path, "/v2/send_join/"):
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}`))
		case strings.Contains(r.URL.Path, "/v1/send_join/"):
			var pdus []json.RawMessage
			for _, ev := range state {
				pdus = append(pdus, ev.JSON())
			}
			json.NewEncoder(w).Encode([]any{200, map[string]any{"origin": name, "state": pdus, "auth_chain": pdus}})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	n.mu.Lock()
	n.urls[name] = srv.URL
	n.mu.Unlock()
}

// TestRemoteJoinFallbacks: a server that fails is skipped for the next;
// a server that answers only v1 send_join is joined through it; a server
// that refuses the join ends the attempt with its refusal.
func TestRemoteJoinFallbacks(t *testing.T) {
	n := newNetwork()
	key, err := roomdag.GenerateSigningKey("resident.test", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	joinerKey, err := roomdag.GenerateSigningKey("joiner.test", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keys := roomdag.KeySet{}
	keys.Add(key)
	keys.Add(joinerKey)
	v, _ := roomdag.LookupRoomVersion("11")
	alice := roomdag.UserID("@alice:resident.test")
	room := roomdag.RoomID("!room:resident.test")
	var state []*roomdag.Event
	build := func(typ, sk, content string, auth ...int) {
		t.Helper()
		var prev, authIDs []roomdag.EventID
		if len(state) > 0 {
			prev = []roomdag.EventID{state[len(state)-1].ID()}
		}
		for _, i := range auth {
			authIDs = append(authIDs, state[i].ID())
		}
		ev, err := roomdag.BuildEvent(v, key, roomdag.EventTemplate{RoomID: room, Sender: alice, Type: typ, StateKey: &sk,
			Content: json.RawMessage(content), PrevEvents: prev, AuthEvents: authIDs, Depth: int64(len(state) + 1), OriginServerTS: 1_700_000_000_000})
		if err != nil {
			t.Fatal(err)
		}
		state = append(state, ev)
	}
	build(roomdag.TypeCreate, "", `{"room_version":"11"}`)
	build(roomdag.TypeMember, string(alice), `{"membership":"join"}`, 0)
	build(roomdag.TypePowerLevels, "", `{"users":{"@alice:resident.test":100}}`, 0, 1)
	build(roomdag.TypeJoinRules, "", `{"join_rule":"public"}`, 0, 1, 2)

	var mu sync.Mutex
	var calls []string
	resident(t, n, "old.test", state, &calls, &mu)
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls = append(calls, "refusing.test "+r.Method)
		mu.Unlock()
		w.WriteHeader(http.StatusForbidden)
		w.Write([]byte(`{"errcode":"M_FORBIDDEN","error":"you are banned"}`))
	}))
	t.Cleanup(refusing.Close)
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	}))
	t.Cleanup(broken.Close)
	n.mu.Lock()
	n.urls["refusing.test"], n.urls["broken.test"] = refusing.URL, broken.URL
	n.mu.Unlock()
	n.setDown("down.test", true)

	rooms := &recordingRooms{}
	j := &federation.RemoteJoiner{Server: "joiner.test", Key: joinerKey, Client: n, Verifier: keys, Rooms: rooms,
		Clock: clock.Real{}, Log: discard()}
	ctx := context.Background()
	joe := roomdag.UserID("@joe:joiner.test")
	ev, err := j.Join(ctx, room, joe, []roomdag.ServerName{"down.test", "broken.test", "old.test", "refusing.test"},
		map[string]json.RawMessage{"displayname": json.RawMessage(`"Joe"`)})
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	if ev.Sender() != joe || ev.Membership() != roomdag.MembershipJoin || !strings.Contains(string(ev.Content()), `"displayname":"Joe"`) {
		t.Errorf("the join: %s", ev.JSON())
	}
	if len(rooms.outliers) != len(state) || len(rooms.before) != len(state) || rooms.join.ID() != ev.ID() {
		t.Errorf("taken in: %d outliers, %d state before, join %v", len(rooms.outliers), len(rooms.before), rooms.join)
	}
	want := []string{"old.test GET make_join", "old.test PUT send_join", "old.test PUT send_join"}
	mu.Lock()
	got := append([]string(nil), calls...)
	calls = nil
	mu.Unlock()
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("requests: %v, want %v", got, want)
	}

	// A refusal is final: the client sees it, and old.test is not asked.
	_, err = j.Join(ctx, room, joe, []roomdag.ServerName{"refusing.test", "old.test"}, nil)
	var me *httpapi.Error
	if !errors.As(err, &me) || me.Status != http.StatusForbidden || me.Code != httpapi.CodeForbidden {
		t.Errorf("refused join: %v", err)
	}
	mu.Lock()
	got = calls
	mu.Unlock()
	if len(got) != 1 {
		t.Errorf("requests after a refusal: %v", got)
	}
	// Nothing reachable: a gateway error.
	_, err = j.Join(ctx, room, joe, []roomdag.ServerName{"down.test", "broken.test"}, nil)
	if !errors.As(err, &me) || me.Status != http.StatusBadGateway {
		t.Errorf("join with no server reachable: %v", err)
	}
}
