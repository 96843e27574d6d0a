package federation_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/federation"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/server"
	"github.com/persistentchat/homeserver/testserver"
)

// txnAnswer is an answer to a federation request.
type txnAnswer struct {
	status int
	body   []byte
}

func (r txnAnswer) errcode() string {
	var e struct {
		Errcode string `json:"errcode"`
	}
	json.Unmarshal(r.body, &e)
	return e.Errcode
}

// txnPut sends PUT path with body, signed by from's own transport, to
// server to.
func txnPut(t *testing.T, from *testserver.Server, to, path string, body []byte) txnAnswer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := from.HS.Federation.Do(ctx, roomdag.ServerName(to), req)
	if err != nil {
		t.Fatalf("PUT %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return txnAnswer{resp.StatusCode, b}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fakePDU is a PDU of room as B would build it; A cannot accept it (it
// takes no remote events yet), so it needs no valid signature.
func fakePDU(room, sender string, n int) map[string]any {
	return map[string]any{
		"room_id": room, "sender": sender, "type": "m.room.message", "origin_server_ts": 1000 + n,
		"content": map[string]any{"body": fmt.Sprint("pdu ", n)}, "depth": 10 + n,
		"prev_events": []string{}, "auth_events": []string{}, "hashes": map[string]string{"sha256": "x"},
		"signatures": map[string]any{},
	}
}

// TestInboundTransaction: B's transactions to A over the real transport.
// Unsigned ones are refused; malformed bodies and oversized ones get 400
// with an errcode; every PDU gets a result (an error, since A takes no
// remote PDUs yet, for a room A knows as for one it does not); EDUs for
// a room where B has no member, or claiming a user of another server,
// are ignored; a replay returns the stored answer and does nothing again.
func TestInboundTransaction(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice := a.Register("alice")
	room := alice.CreateRoom(map[string]any{})
	bob := "@bob:" + b.Name()

	// Unsigned: 401, through A's client listener as through any.
	if resp := a.Anonymous().Do("PUT", "/_matrix/federation/v1/send/t0", map[string]any{"pdus": []any{}}); resp.Status != http.StatusUnauthorized || resp.Errcode() != "M_UNAUTHORIZED" {
		t.Fatalf("unsigned: %d %s", resp.Status, resp.Body)
	}

	base := func() map[string]any {
		return map[string]any{"origin": b.Name(), "origin_server_ts": 1, "pdus": []any{}}
	}
	many := func(n int) []any {
		out := make([]any, n)
		for i := range out {
			out[i] = fakePDU(room, bob, i)
		}
		return out
	}
	manyEDUs := make([]any, 101)
	for i := range manyEDUs {
		manyEDUs[i] = map[string]any{"edu_type": "m.typing", "content": map[string]any{}}
	}
	for _, tc := range []struct {
		name string
		body func() map[string]any
		code string
	}{
		{"no pdus", func() map[string]any { m := base(); delete(m, "pdus"); return m }, "M_BAD_JSON"},
		{"pdus not a list", func() map[string]any { m := base(); m["pdus"] = "x"; return m }, "M_BAD_JSON"},
		{"pdu not an object", func() map[string]any { m := base(); m["pdus"] = []any{1}; return m }, "M_BAD_JSON"},
		{"no origin", func() map[string]any { m := base(); delete(m, "origin"); return m }, "M_BAD_JSON"},
		{"no origin_server_ts", func() map[string]any { m := base(); delete(m, "origin_server_ts"); return m }, "M_BAD_JSON"},
		{"edu without type", func() map[string]any { m := base(); m["edus"] = []any{map[string]any{}}; return m }, "M_BAD_JSON"},
		{"51 pdus", func() map[string]any { m := base(); m["pdus"] = many(51); return m }, "M_BAD_JSON"},
		{"101 edus", func() map[string]any { m := base(); m["edus"] = manyEDUs; return m }, "M_BAD_JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := txnPut(t, b, a.Name(), "/_matrix/federation/v1/send/bad-"+strings.ReplaceAll(tc.name, " ", "-"), mustJSON(t, tc.body()))
			if resp.status != http.StatusBadRequest || resp.errcode() != tc.code {
				t.Fatalf("got %d %s, want 400 %s", resp.status, resp.body, tc.code)
			}
		})
	}
	if st := a.HS.FedTxns.Stats(); st.Processed != 0 || st.PDUs != 0 {
		t.Fatalf("refused transactions were processed: %+v", st)
	}

	// 50 PDUs is the limit, not over it.
	txn := base()
	pdus := many(50)
	pdus = append(pdus[:49], fakePDU("!nowhere:"+b.Name(), bob, 99))
	txn["pdus"] = pdus
	txn["edus"] = []any{
		// B has no member in the room: ignored.
		map[string]any{"edu_type": "m.typing", "content": map[string]any{"room_id": room, "user_id": bob, "typing": true}},
		// A user of A's, claimed by B: ignored.
		map[string]any{"edu_type": "m.typing", "content": map[string]any{"room_id": room, "user_id": alice.UserID, "typing": true}},
		map[string]any{"edu_type": "m.receipt", "content": map[string]any{room: map[string]any{"m.read": map[string]any{
			bob: map[string]any{"event_ids": []string{"$x"}, "data": map[string]any{"ts": 1}}}}}},
		// An EDU type nobody handles yet: ignored.
		map[string]any{"edu_type": "m.device_list_update", "content": map[string]any{}},
	}
	body := mustJSON(t, txn)
	first := txnPut(t, b, a.Name(), "/_matrix/federation/v1/send/txn1", body)
	if first.status != http.StatusOK {
		t.Fatalf("transaction: %d %s", first.status, first.body)
	}
	var out struct {
		PDUs map[string]struct {
			Error *string `json:"error"`
		} `json:"pdus"`
	}
	if err := json.Unmarshal(first.body, &out); err != nil {
		t.Fatal(err)
	}
	if len(out.PDUs) != 50 {
		t.Fatalf("%d PDU results, want 50: %s", len(out.PDUs), first.body)
	}
	for id, r := range out.PDUs {
		if r.Error == nil || *r.Error == "" {
			t.Errorf("PDU %s of a server with no member in the room accepted", id)
		}
	}
	st := a.HS.FedTxns.Stats()
	// 49 PDUs of a known room reach the handler; the unknown room's does
	// not. No EDU applies.
	if st.Processed != 1 || st.PDUs != 49 || st.EDUs != 0 {
		t.Fatalf("stats after the transaction: %+v", st)
	}

	// The replay: same answer, nothing done again.
	again := txnPut(t, b, a.Name(), "/_matrix/federation/v1/send/txn1", body)
	if again.status != http.StatusOK || !bytes.Equal(again.body, first.body) {
		t.Fatalf("replay answered %d %s, first %s", again.status, again.body, first.body)
	}
	if st2 := a.HS.FedTxns.Stats(); st2.Processed != 1 || st2.PDUs != 49 || st2.Replayed != 1 {
		t.Fatalf("stats after the replay: %+v", st2)
	}
	// The same ID from another origin would be another transaction; the
	// same ID with another body from B is still the replay.
	other := txnPut(t, b, a.Name(), "/_matrix/federation/v1/send/txn1", mustJSON(t, base()))
	if other.status != http.StatusOK || !bytes.Equal(other.body, first.body) {
		t.Fatalf("replay with another body answered %d %s", other.status, other.body)
	}

	// Alice's sync shows no typing from B.
	s := alice.Sync("")
	rooms, _ := s["rooms"].(map[string]any)
	join, _ := rooms["join"].(map[string]any)
	r, _ := join[room].(map[string]any)
	eph, _ := r["ephemeral"].(map[string]any)
	if evs, _ := eph["events"].([]any); len(evs) != 0 {
		t.Fatalf("ephemeral events from a server with no member: %v", evs)
	}
}

// txnRouter serves A's transactions with o (on A's keyring, clock
// and log) in the test, and returns a function that sends one of B's,
// signed with bKey, with edus (and pdus, when the first "edu" is a
// []any of PDUs), failing the test unless it is answered 200, and
// returns the answer.
func txnRouter(t *testing.T, ctx context.Context, a, b *testserver.Server, bKey roomdag.SigningKey, o federation.TxnOptions) (*federation.Transactions, func(string, ...any) []byte) {
	o.Server = roomdag.ServerName(a.Name())
	o.Auth = federation.NewAuthenticator(o.Server, a.HS.Keyring, 1<<20, nil)
	o.Clock, o.Log = clock.Real{}, discard()
	txns := federation.NewTransactions(o)
	router := chi.NewRouter()
	adapter := httpapi.NewAdapter(discard(), nil)
	for _, e := range txns.Routes() {
		router.Method(e.Method, e.Path, adapter.Handler(e.Path, e.Handler))
	}
	return txns, func(id string, edus ...any) []byte {
		t.Helper()
		pdus := []any{}
		if len(edus) > 0 {
			if p, ok := edus[0].([]any); ok {
				pdus, edus = p, edus[1:]
			}
		}
		body := mustJSON(t, map[string]any{"origin": b.Name(), "origin_server_ts": 1, "pdus": pdus, "edus": edus})
		uri := "/_matrix/federation/v1/send/" + id
		x, err := federation.SignRequest(bKey, o.Server, http.MethodPut, uri, body)
		if err != nil {
			t.Error(err)
			return nil
		}
		req := httptest.NewRequestWithContext(ctx, http.MethodPut, uri, bytes.NewReader(body))
		req.Header.Set("Authorization", x.String())
		rec := httptest.NewRecorder()
		router.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Errorf("transaction %s: %d %s", id, rec.Code, rec.Body)
		}
		return rec.Body.Bytes()
	}
}

// withMember is A's real room state with one more joined member: the
// join of a remote user, which only joins over federation (not built
// yet) can put in a room.
type withMember struct {
	rooms  federation.StateSource
	room   roomdag.RoomID
	member *roomdag.Event
}

func (w withMember) State(ctx context.Context, id roomdag.RoomID) (*roomdag.RoomState, error) {
	st, err := w.rooms.State(ctx, id)
	if err != nil || id != w.room {
		return st, err
	}
	cp := *st
	cp.State = st.State.With(w.member)
	return &cp, nil
}

// TestInboundEDUs: typing, receipts and presence from B land in A's
// sync, storage and presence, for a room in which B has a joined
// member. No join over federation exists yet, so B's member is added to
// the room state A's transactions read (withMember, a real join event
// signed by B); everything else is A's: its keyring authenticates B, its
// syncer and database take the EDUs, and alice reads them through A's
// /sync. EDUs claiming users of another server, and any for a room where
// B has no member, are ignored.
func TestInboundEDUs(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice := a.Register("alice")
	bob := roomdag.UserID("@bob:" + b.Name())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	room := roomdag.RoomID(alice.CreateRoom(map[string]any{"preset": "public_chat"}))
	other := alice.CreateRoom(map[string]any{})
	msg := alice.SendText(string(room), "read me")

	bKey, err := server.LoadOrCreateKey(b.Config.SigningKeyPath(), roomdag.ServerName(b.Name()))
	if err != nil {
		t.Fatal(err)
	}
	st, err := a.HS.Rooms.State(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	create := st.State.Get(roomdag.TypeCreate, "")
	jr := st.State.Get(roomdag.TypeJoinRules, "")
	join := mustJSON(t, map[string]any{"room_id": room, "sender": bob, "type": roomdag.TypeMember, "state_key": bob,
		"content": map[string]any{"membership": "join"}, "origin_server_ts": 1, "depth": st.Depth + 1,
		"prev_events": st.Extremities, "auth_events": []roomdag.EventID{create.ID(), jr.ID()}})
	join, err = roomdag.AddContentHash(st.Version, join)
	if err != nil {
		t.Fatal(err)
	}
	if join, err = roomdag.SignEvent(st.Version, bKey, join); err != nil {
		t.Fatal(err)
	}
	member, err := roomdag.NewEventFromJSON(st.Version, join)
	if err != nil {
		t.Fatal(err)
	}

	txns, put := txnRouter(t, ctx, a, b, bKey, federation.TxnOptions{Store: a.HS.DB(),
		Rooms: withMember{a.HS.Rooms, room, member}, Ephemeral: a.HS.Syncer})
	typingEDU := func(room any, user any) any {
		return map[string]any{"edu_type": "m.typing", "content": map[string]any{"room_id": room, "user_id": user, "typing": true}}
	}
	put("ignored",
		typingEDU(room, "@carol:"+a.Name()), // not B's user
		typingEDU(other, bob),               // B has no member there
		map[string]any{"edu_type": "m.presence", "content": map[string]any{"push": []any{
			map[string]any{"user_id": "@mallory:" + a.Name(), "presence": "online", "last_active_ago": 0}}}},
	)
	if st := txns.Stats(); st.Processed != 1 || st.EDUs != 0 {
		t.Fatalf("EDUs applied that should not be: %+v", st)
	}
	put("applied",
		typingEDU(room, bob),
		map[string]any{"edu_type": "m.receipt", "content": map[string]any{string(room): map[string]any{"m.read": map[string]any{
			string(bob): map[string]any{"event_ids": []string{msg}, "data": map[string]any{"ts": 1234}}}}}},
		map[string]any{"edu_type": "m.presence", "content": map[string]any{"push": []any{
			map[string]any{"user_id": bob, "presence": "online", "status_msg": "from B", "last_active_ago": 1000, "currently_active": true}}}},
	)
	if st := txns.Stats(); st.Processed != 2 || st.EDUs != 3 {
		t.Fatalf("EDUs applied: %+v, want 3", st)
	}

	var s struct {
		Rooms struct {
			Join map[string]struct {
				Ephemeral struct {
					Events []struct {
						Type    string         `json:"type"`
						Content map[string]any `json:"content"`
					} `json:"events"`
				} `json:"ephemeral"`
			} `json:"join"`
		} `json:"rooms"`
	}
	alice.MustDo("GET", "/_matrix/client/v3/sync", nil, &s)
	var typing []any
	var readBy map[string]any
	for _, e := range s.Rooms.Join[string(room)].Ephemeral.Events {
		switch e.Type {
		case "m.typing":
			typing, _ = e.Content["user_ids"].([]any)
		case "m.receipt":
			if m, _ := e.Content[msg].(map[string]any); m != nil {
				readBy, _ = m["m.read"].(map[string]any)
			}
		}
	}
	if len(typing) != 1 || typing[0] != string(bob) {
		t.Errorf("typing in A's sync: %v, want only %s", typing, bob)
	}
	if readBy[string(bob)] == nil {
		t.Errorf("no receipt of %s's on %s in A's sync: %v", bob, msg, readBy)
	}
	for _, e := range s.Rooms.Join[other].Ephemeral.Events {
		if e.Type == "m.typing" && len(e.Content["user_ids"].([]any)) > 0 {
			t.Errorf("typing in the room B has no member in: %v", e.Content)
		}
	}
	p, err := a.HS.DB().Presence(ctx, bob)
	if err != nil || p.State != "online" || p.StatusMsg != "from B" {
		t.Errorf("B's user's presence on A: %+v %v", p, err)
	}
	if _, err := a.HS.DB().Presence(ctx, roomdag.UserID("@mallory:"+a.Name())); err == nil {
		t.Error("presence stored for a user of A's, claimed by B")
	}
}

// slowRoom handles PDUs, holding those of one room until released, and
// records the order each room's PDUs came in.
type slowRoom struct {
	slow    roomdag.RoomID
	entered chan struct{}
	release chan struct{}

	mu    gosync.Mutex
	order map[roomdag.RoomID][]roomdag.EventID
}

func (s *slowRoom) HandlePDU(_ context.Context, _ roomdag.ServerName, room roomdag.RoomID, _ *roomdag.RoomVersion, id roomdag.EventID, _ json.RawMessage) error {
	if room == s.slow {
		select {
		case s.entered <- struct{}{}:
		default:
		}
		<-s.release
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.order[room] = append(s.order[room], id)
	return nil
}

// TestInboundRoomQueues: while one room's PDUs are slow, a transaction
// for another room is answered; a later transaction for the slow room
// waits behind the first, and each room's PDUs are handled in order.
func TestInboundRoomQueues(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice := a.Register("alice")
	bob := "@bob:" + b.Name()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	slow, fast := alice.CreateRoom(map[string]any{}), alice.CreateRoom(map[string]any{})
	bKey, err := server.LoadOrCreateKey(b.Config.SigningKeyPath(), roomdag.ServerName(b.Name()))
	if err != nil {
		t.Fatal(err)
	}
	h := &slowRoom{slow: roomdag.RoomID(slow), entered: make(chan struct{}, 1), release: make(chan struct{}),
		order: map[roomdag.RoomID][]roomdag.EventID{}}
	_, put := txnRouter(t, ctx, a, b, bKey, federation.TxnOptions{Store: a.HS.DB(), Rooms: a.HS.Rooms, PDUs: h, Ephemeral: a.HS.Syncer})
	id := func(p map[string]any) roomdag.EventID {
		id, err := roomdag.EventIDFromJSON(v11, mustJSON(t, p))
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	s1, s2, s3 := fakePDU(slow, bob, 1), fakePDU(slow, bob, 2), fakePDU(slow, bob, 3)
	f1, f2 := fakePDU(fast, bob, 4), fakePDU(fast, bob, 5)

	first := make(chan []byte, 1)
	go func() { first <- put("slow1", []any{s1, f1, s2}) }()
	select {
	case <-h.entered:
	case <-ctx.Done():
		t.Fatal("the slow room's PDU never reached the handler")
	}
	// Another transaction, of the fast room only, is answered meanwhile.
	var out struct {
		PDUs map[roomdag.EventID]map[string]any `json:"pdus"`
	}
	if err := json.Unmarshal(put("fast", []any{f2}), &out); err != nil || len(out.PDUs) != 1 || out.PDUs[id(f2)] == nil {
		t.Fatalf("fast transaction: %v %v", out, err)
	}
	third := make(chan []byte, 1)
	go func() { third <- put("slow2", []any{s3}) }()
	close(h.release)
	out.PDUs = nil
	if err := json.Unmarshal(<-first, &out); err != nil || len(out.PDUs) != 3 {
		t.Fatalf("first transaction: %v %v", out, err)
	}
	for pid, r := range out.PDUs {
		if len(r) != 0 {
			t.Errorf("PDU %s: %v", pid, r)
		}
	}
	<-third
	h.mu.Lock()
	defer h.mu.Unlock()
	if got, want := h.order[roomdag.RoomID(slow)], []roomdag.EventID{id(s1), id(s2), id(s3)}; !slices.Equal(got, want) {
		t.Errorf("slow room's PDUs handled as %v, want %v", got, want)
	}
	if got := h.order[roomdag.RoomID(fast)]; len(got) != 2 || !slices.Contains(got, id(f1)) || !slices.Contains(got, id(f2)) {
		t.Errorf("fast room's PDUs: %v", got)
	}
}
