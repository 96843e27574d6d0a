package federation_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	gosync "sync"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/federation"
	"github.com/persistentchat/homeserver/netguard"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage/postgres"
	"github.com/persistentchat/homeserver/storage/sqlite"
	"github.com/persistentchat/homeserver/storage/sqlstore"
	"github.com/persistentchat/homeserver/storage/storagetest"
	"github.com/persistentchat/homeserver/streamworker"
	"github.com/persistentchat/homeserver/testserver"
)

// engines runs fn on SQLite, and on PostgreSQL when the test cluster is
// configured.
func engines(t *testing.T, fn func(t *testing.T, open func(t *testing.T) *sqlstore.DB)) {
	t.Run("sqlite", func(t *testing.T) {
		dir := t.TempDir()
		fn(t, func(t *testing.T) *sqlstore.DB {
			db, err := sqlite.Open(filepath.Join(dir, "hs.db"), discard())
			if err != nil {
				t.Fatal(err)
			}
			return db
		})
	})
	t.Run("postgres", func(t *testing.T) {
		if os.Getenv(testserver.PostgresEnv) == "" {
			t.Skip(testserver.PostgresEnv + " not set")
		}
		dsn := testserver.PostgresDatabase(t)
		fn(t, func(t *testing.T) *sqlstore.DB {
			db, err := postgres.Open(postgres.Options{DSN: dsn}, discard())
			if err != nil {
				t.Fatal(err)
			}
			return db
		})
	})
}

// receiver is a destination server: a TLS listener on a fixed address
// that can be down (closed) and up again, recording every transaction
// it accepts.
type receiver struct {
	addr string
	srv  *httptest.Server

	mu     gosync.Mutex
	txns   map[string]int // txn ID → PDUs
	events []roomdag.EventID
	origin []string
	edus   []json.RawMessage
	// maxEDUs is the most EDUs one transaction carried.
	maxEDUs int
}

func newReceiver(t *testing.T) *receiver {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{addr: l.Addr().String(), txns: map[string]int{}}
	l.Close() // down until up
	t.Cleanup(r.down)
	return r
}

var v11, _ = roomdag.LookupRoomVersion("11")

func (r *receiver) up(t *testing.T) {
	l, err := net.Listen("tcp", r.addr)
	if err != nil {
		t.Fatalf("bringing %s up: %v", r.addr, err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var txnID string
		if _, err := fmt.Sscanf(req.URL.Path, "/_matrix/federation/v1/send/%s", &txnID); err != nil || req.Method != http.MethodPut {
			http.Error(w, `{"errcode":"M_UNRECOGNIZED"}`, http.StatusNotFound)
			return
		}
		x, err := federation.ParseXMatrix(req.Header.Get("Authorization"))
		if err != nil {
			http.Error(w, `{"errcode":"M_UNAUTHORIZED"}`, http.StatusUnauthorized)
			return
		}
		b, _ := io.ReadAll(req.Body)
		var body struct {
			PDUs []json.RawMessage `json:"pdus"`
			EDUs []json.RawMessage `json:"edus"`
		}
		if err := json.Unmarshal(b, &body); err != nil {
			http.Error(w, `{"errcode":"M_BAD_JSON"}`, http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		r.origin = append(r.origin, string(x.Origin))
		if _, seen := r.txns[txnID]; !seen { // as a server deduplicates
			r.txns[txnID] = len(body.PDUs)
			r.edus = append(r.edus, body.EDUs...)
			r.maxEDUs = max(r.maxEDUs, len(body.EDUs))
			for _, p := range body.PDUs {
				id, err := roomdag.EventIDFromJSON(v11, p)
				if err != nil {
					t.Errorf("PDU: %v", err)
				}
				r.events = append(r.events, id)
			}
		}
		w.Write([]byte(`{"pdus":{}}`))
	}))
	srv.Listener = l
	srv.StartTLS()
	r.mu.Lock()
	r.srv = srv
	r.mu.Unlock()
}

func (r *receiver) down() {
	r.mu.Lock()
	srv := r.srv
	r.srv = nil
	r.mu.Unlock()
	if srv != nil {
		srv.CloseClientConnections()
		srv.Close()
	}
}

func (r *receiver) received() ([]roomdag.EventID, map[string]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	txns := map[string]int{}
	for k, v := range r.txns {
		txns[k] = v
	}
	return append([]roomdag.EventID(nil), r.events...), txns
}

// withDest is the production rule (JoinedServers) plus one destination:
// no remote server can be joined to a room until joins over federation
// exist, so the test adds the destination a remote member would bring.
type withDest struct {
	federation.JoinedServers
	dest roomdag.ServerName
}

func (w withDest) Servers(ctx context.Context, ev *roomdag.StoredEvent) ([]roomdag.ServerName, error) {
	out, err := w.JoinedServers.Servers(ctx, ev)
	return append(out, w.dest), err
}

func (w withDest) RoomServers(ctx context.Context, room roomdag.RoomID) ([]roomdag.ServerName, error) {
	out, err := w.JoinedServers.RoomServers(ctx, room)
	return append(out, w.dest), err
}

// TestSenderQueue: events for a destination that is down are queued and
// retried with growing back-off, cut short when it is heard from; when
// it comes up everything arrives, once, in order, in transactions of at most 50 PDUs under IDs never
// reused; the queue and its back-off survive a restart of the sender;
// after an outage longer than CatchUpAfter only the room's latest event
// is sent.
func TestSenderQueue(t *testing.T) {
	engines(t, func(t *testing.T, open func(t *testing.T) *sqlstore.DB) {
		db := open(t)
		defer db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		clk := clock.NewFake(time.Unix(1_700_000_000, 0))
		const us = roomdag.ServerName("test.local")
		key, err := roomdag.GenerateSigningKey(us, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		var sender *federation.Sender
		rooms := roomdag.NewRooms(db, key, clk, rand.Reader, 0, listenerFunc(func(ev *roomdag.Event, pos roomdag.StreamPos) {
			if sender != nil {
				sender.EventCommitted(ev, pos)
			}
		}))
		roomID := roomdag.RoomID("!q:test.local")
		owner := storagetest.CreateRoom(t, rooms, roomID)
		rcv := newReceiver(t)
		dest := roomdag.ServerName(rcv.addr)
		client := federation.NewClient(federation.ClientOptions{Key: key, Clock: clk,
			Guard: netguard.Guard{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}})
		defer client.CloseIdleConnections()
		states := federation.StateSourceFunc(rooms.State)
		newSender := func() *federation.Sender {
			s := federation.NewSender(federation.SenderOptions{Server: us, Store: db, Client: client,
				Destinations: withDest{federation.JoinedServers{Server: us, Rooms: states}, dest}, Rooms: states,
				Backoff: streamworkerBackoff(), CatchUpAfter: time.Hour, Clock: clk, Log: discard()})
			if err := s.Start(ctx); err != nil {
				t.Fatal(err)
			}
			return s
		}
		sender = newSender()
		var sent []roomdag.EventID
		send := func(n int) {
			for i := 0; i < n; i++ {
				ev, _, err := rooms.Append(ctx, roomID, roomdag.ProtoEvent{Type: "m.room.message", Sender: owner,
					Content: json.RawMessage(fmt.Sprintf(`{"msgtype":"m.text","body":"m%d"}`, len(sent)))})
				if err != nil {
					t.Fatal(err)
				}
				sent = append(sent, ev.ID())
			}
		}
		wait := func(what string, cond func(federation.SenderStats) bool) {
			t.Helper()
			if err := sender.WaitStats(ctx, cond); err != nil {
				t.Fatalf("waiting for %s: %v", what, err)
			}
		}
		// drain waits until the receiver has n events.
		drain := func(n int) {
			t.Helper()
			for {
				sentTxns := sender.Stats().Sent
				if got, _ := rcv.received(); len(got) >= n {
					return
				}
				wait(fmt.Sprint(n, " events received"), func(s federation.SenderStats) bool { return s.Sent > sentTxns })
			}
		}

		// Down: 60 events wait, the first attempt fails, then the retry
		// after 1 s fails too and the wait doubles.
		send(60)
		wait("a failure", func(s federation.SenderStats) bool { return s.Failed == 1 && s.Waiting == 1 })
		clk.Advance(time.Second)
		wait("a second failure", func(s federation.SenderStats) bool { return s.Failed == 2 && s.Waiting == 1 })
		d, err := db.FederationDestination(ctx, dest)
		if err != nil || d.Failures != 2 || d.RetryAtMS != clk.Now().Add(2*time.Second).UnixMilli() {
			t.Fatalf("back-off after two failures: %+v %v", d, err)
		}
		// Before the back-off ends, nothing is tried.
		rcv.up(t)
		clk.Advance(time.Second)
		if got, _ := rcv.received(); len(got) != 0 {
			t.Fatalf("sent during the back-off: %d", len(got))
		}
		clk.Advance(time.Second)
		drain(len(sent))
		got, txns := rcv.received()
		checkReceived(t, got, sent)
		for id, n := range txns {
			if n > federation.MaxTxnPDUs {
				t.Errorf("transaction %s had %d PDUs", id, n)
			}
		}

		// Down again: the back-off ends when the destination is heard
		// from (ServerUp), the clock standing still.
		rcv.down()
		send(2)
		wait("a failure", func(s federation.SenderStats) bool { return s.Failed == 3 && s.Waiting == 1 })
		rcv.up(t)
		sender.ServerUp(dest)
		drain(len(sent))
		got, _ = rcv.received()
		checkReceived(t, got, sent)

		// Down again; the queue and back-off survive a restart.
		rcv.down()
		send(5)
		wait("a failure", func(s federation.SenderStats) bool { return s.Failed == 4 && s.Waiting == 1 })
		sender.Stop()
		send(3)              // while no sender runs
		sender = newSender() // its counts start again at 0
		wait("the restarted sender waiting", func(s federation.SenderStats) bool { return s.Waiting == 1 })
		rcv.up(t)
		clk.Advance(time.Second) // the back-off stored before the restart
		// The transaction that failed, then the three sent while stopped.
		drain(len(sent))
		got, _ = rcv.received()
		checkReceived(t, got, sent)

		// A long outage: only the room's latest event goes.
		rcv.down()
		before := len(sent)
		send(1)
		wait("a failure", func(s federation.SenderStats) bool { return s.Failed == 1 && s.Waiting == 1 })
		send(19)
		if err := sender.Loop().Wait(ctx, sentPos(t, db, sent[len(sent)-1])); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 8; i++ { // back-off capped at 4 s: one retry per 10 minutes, past the hour
			clk.Advance(10 * time.Minute)
			wait("another failure", func(s federation.SenderStats) bool { return s.Failed == 2+i && s.Waiting == 1 })
		}
		rcv.up(t)
		clk.Advance(10 * time.Minute)
		// The transaction in progress when the server went down still
		// goes, under its ID; of the rest, only the latest.
		// Catch-up ran while the server was still down (the outage passed
		// the hour before it came back): the transaction in progress still
		// goes, under its ID, and of the 19 after it only the latest.
		drain(before + 2)
		got, _ = rcv.received()
		if dropped := sender.Stats().Dropped; dropped != 18 || len(got) != before+2 || got[before] != sent[before] || got[before+1] != sent[len(sent)-1] {
			t.Fatalf("after catch-up: %d of 20 received, %d dropped", len(got)-before, dropped)
		}
		sender.Stop()
		if q, err := db.FederationQueue(ctx, dest, 100); err != nil || len(q) != 0 {
			t.Fatalf("queue left: %v %v", q, err)
		}
	})
}

type listenerFunc func(ev *roomdag.Event, pos roomdag.StreamPos)

func (f listenerFunc) EventCommitted(ev *roomdag.Event, pos roomdag.StreamPos) { f(ev, pos) }

func streamworkerBackoff() streamworker.Backoff {
	return streamworker.Backoff{Initial: time.Second, Max: 4 * time.Second}
}

// sentPos is the stream position of a stored event.
func sentPos(t *testing.T, db *sqlstore.DB, id roomdag.EventID) roomdag.StreamPos {
	t.Helper()
	ev, err := db.Event(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return ev.Pos
}

// checkReceived fails unless got is want, in order, each once.
func checkReceived(t *testing.T, got, want []roomdag.EventID) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("received %d events, sent %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("event %d: received %s, sent %s", i, got[i], want[i])
		}
	}
}

// TestSenderEDUs: typing, receipts and (with Presence on) presence of
// local users go to the room's servers as EDUs, at most 100 a
// transaction; remote users' changes are not relayed.
func TestSenderEDUs(t *testing.T) {
	dir := t.TempDir()
	db, err := sqlite.Open(filepath.Join(dir, "hs.db"), discard())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	const us = roomdag.ServerName("test.local")
	key, err := roomdag.GenerateSigningKey(us, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rooms := roomdag.NewRooms(db, key, clk, rand.Reader, 0)
	roomID := roomdag.RoomID("!e:test.local")
	owner := storagetest.CreateRoom(t, rooms, roomID)
	rcv := newReceiver(t)
	rcv.up(t)
	dest := roomdag.ServerName(rcv.addr)
	client := federation.NewClient(federation.ClientOptions{Key: key, Clock: clk,
		Guard: netguard.Guard{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}})
	defer client.CloseIdleConnections()
	states := federation.StateSourceFunc(rooms.State)
	sender := federation.NewSender(federation.SenderOptions{Server: us, Store: db, Client: client,
		Destinations: withDest{federation.JoinedServers{Server: us, Rooms: states}, dest}, Rooms: states,
		Backoff: streamworkerBackoff(), Presence: true, Clock: clk, Log: discard()})
	if err := sender.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer sender.Stop()

	for i := 0; i < 149; i++ {
		sender.Typing(roomID, owner, i%2 == 0, 0)
	}
	sender.Typing(roomID, "@remote:other.test", true, 0) // not ours: not relayed
	sender.Receipt(roomID, owner, "m.read", "", "$ev", 77)
	sender.Receipt(roomID, owner, "m.read.private", "", "$ev", 78) // never leaves
	sender.PresenceChanged(owner, json.RawMessage(`{"presence":"online","last_active_ago":5}`))
	sender.PresenceChanged("@remote:other.test", json.RawMessage(`{"presence":"online"}`))

	deadline := time.Now().Add(30 * time.Second)
	for {
		n := sender.Stats().Sent
		rcv.mu.Lock()
		got := len(rcv.edus)
		rcv.mu.Unlock()
		if got >= 151 || time.Now().After(deadline) {
			break
		}
		if err := sender.WaitStats(ctx, func(s federation.SenderStats) bool { return s.Sent > n }); err != nil {
			t.Fatal(err)
		}
	}
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	counts := map[string]int{}
	for _, raw := range rcv.edus {
		var e struct {
			Type    string `json:"edu_type"`
			Content struct {
				UserID string `json:"user_id"`
				Push   []struct {
					UserID string `json:"user_id"`
				} `json:"push"`
			} `json:"content"`
		}
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatal(err)
		}
		counts[e.Type]++
		if e.Type == "m.typing" && e.Content.UserID != string(owner) || e.Type == "m.presence" && e.Content.Push[0].UserID != string(owner) {
			t.Errorf("relayed %s", raw)
		}
	}
	if counts["m.typing"] != 149 || counts["m.receipt"] != 1 || counts["m.presence"] != 1 || len(rcv.edus) != 151 {
		t.Errorf("EDUs received: %v (%d)", counts, len(rcv.edus))
	}
	if rcv.maxEDUs > federation.MaxTxnEDUs {
		t.Errorf("a transaction carried %d EDUs", rcv.maxEDUs)
	}
}

// TestJoinedServersMembershipTarget: a membership event goes to the
// room's joined servers, and for a kick, ban or rescinded invite to its
// target's server too, which may have no user left in the room; an
// invite does not go to the invitee's server, which had it over
// /invite (sent again over /send, Dendrite took it for a live event of
// a room it did not hold and broke its join through the invite).
func TestJoinedServersMembershipTarget(t *testing.T) {
	const us = roomdag.ServerName("test.local")
	const alice = roomdag.UserID("@alice:test.local")
	room := roomdag.RoomID("!r:test.local")
	key, err := roomdag.GenerateSigningKey(us, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	member := func(sender, target roomdag.UserID, membership string) *roomdag.StoredEvent {
		sk := string(target)
		ev, err := roomdag.BuildEvent(v11, key, roomdag.EventTemplate{RoomID: room, Sender: sender, Type: roomdag.TypeMember, StateKey: &sk,
			Content: json.RawMessage(fmt.Sprintf(`{"membership":%q}`, membership)), Depth: 1, OriginServerTS: 1})
		if err != nil {
			t.Fatal(err)
		}
		return &roomdag.StoredEvent{Event: ev}
	}
	st := roomdag.StateMap{}
	for _, u := range []roomdag.UserID{alice, "@bob:b.test"} {
		st[roomdag.StateKey{Type: roomdag.TypeMember, StateKey: string(u)}] = member(u, u, "join").Event
	}
	dests := federation.JoinedServers{Server: us, Rooms: federation.StateSourceFunc(func(context.Context, roomdag.RoomID) (*roomdag.RoomState, error) {
		return &roomdag.RoomState{Version: v11, State: st}, nil
	})}
	for _, tc := range []struct {
		name string
		ev   *roomdag.StoredEvent
		want []roomdag.ServerName
	}{
		{"invite", member(alice, "@dave:d.test", "invite"), []roomdag.ServerName{"b.test"}},
		{"rescinded invite or kick", member(alice, "@dave:d.test", "leave"), []roomdag.ServerName{"b.test", "d.test"}},
		{"ban", member(alice, "@erin:e.test", "ban"), []roomdag.ServerName{"b.test", "e.test"}},
		{"kick of a joined server's user", member(alice, "@bob:b.test", "leave"), []roomdag.ServerName{"b.test"}},
		{"own join", member(alice, alice, "join"), []roomdag.ServerName{"b.test"}},
	} {
		got, err := dests.Servers(context.Background(), tc.ev)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%s: destinations %v %v, want %v", tc.name, got, err, tc.want)
		}
	}
}
