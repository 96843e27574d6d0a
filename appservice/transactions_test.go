package appservice_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/appservice/astest"
	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/testserver"
)

const csAPI = "/_matrix/client/v3"

func reg(id, url string) astest.Registration {
	return astest.Registration{
		ID: id, URL: url, ASToken: "as-" + id, HSToken: "hs-" + id, SenderLocalpart: id + "bot",
		Users:   []astest.Namespace{{Regex: "@_" + id + "_.*", Exclusive: true}},
		Aliases: []astest.Namespace{{Regex: "#" + id + "_.*", Exclusive: false}},
	}
}

func asClient(srv *testserver.Server, r astest.Registration) *testserver.Client {
	c := srv.Anonymous()
	c.Token = r.ASToken
	return c
}

// ghost registers a user of the service and returns its user_id query.
func ghost(t *testing.T, srv *testserver.Server, r astest.Registration, local string) (roomdag.UserID, string) {
	t.Helper()
	var out struct {
		UserID roomdag.UserID `json:"user_id"`
	}
	asClient(srv, r).MustDo("POST", csAPI+"/register", map[string]any{"type": "m.login.application_service", "username": local, "inhibit_login": true}, &out)
	return out.UserID, "?user_id=" + url.QueryEscape(string(out.UserID))
}

// delivered waits until the service has acknowledged everything committed
// so far.
func delivered(t *testing.T, srv *testserver.Server, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.HS.AppServices.Delivered(ctx, id, srv.HS.Syncer.Notifier().Current().Events); err != nil {
		t.Fatalf("waiting for delivery to %s: %v", id, err)
	}
}

func bodies(evs []astest.Event) []string {
	var out []string
	for _, e := range evs {
		if e.Type == "m.room.message" {
			out = append(out, e.Body())
		}
	}
	return out
}

func TestTransactionsCarryInterestingEventsInOrder(t *testing.T) {
	fake := astest.NewAS(t, "hs-tx")
	r := reg("tx", fake.URL)
	// A logger claims every room ID (and no users).
	logger := astest.NewAS(t, "hs-lg")
	lg := astest.Registration{ID: "lg", URL: logger.URL, ASToken: "as-lg", HSToken: "hs-lg", SenderLocalpart: "lgbot",
		Rooms: []astest.Namespace{{Regex: "!.*", Exclusive: false}}}
	srv := testserver.Start(t, astest.Options(t, nil, r, lg))
	alice := srv.Register("alice")
	as := asClient(srv, r)

	// Room A: a ghost is a member.
	roomA := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	_, q := ghost(t, srv, r, "_tx_g")
	as.MustDo("POST", csAPI+"/join/"+url.PathEscape(roomA)+q, map[string]any{}, nil)
	// Room B: nothing of the service's.
	roomB := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	// Room C: an alias in the service's (non-exclusive) alias namespace.
	roomC := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	alice.MustDo("PUT", csAPI+"/directory/room/"+url.PathEscape("#tx_c:"+srv.Config.ServerName), map[string]any{"room_id": roomC}, nil)

	var want []string
	for i := range 3 {
		alice.SendText(roomA, fmt.Sprintf("a%d", i))
		alice.SendText(roomB, fmt.Sprintf("secret%d", i))
		alice.SendText(roomC, fmt.Sprintf("c%d", i))
		want = append(want, fmt.Sprintf("a%d", i), fmt.Sprintf("c%d", i))
	}
	// The service's own user (its sender) is interested in its rooms.
	roomD := as.CreateRoom(map[string]any{"preset": "public_chat"})
	alice.Join(roomD)
	alice.SendText(roomD, "d0")
	want = append(want, "d0")
	delivered(t, srv, "tx")

	if got := bodies(fake.Events()); !slices.Equal(got, want) {
		t.Fatalf("messages delivered %v, want %v\n%s", got, want, fake)
	}
	// Every event once, in stream order, room B's never.
	seen := map[string]bool{}
	for _, e := range fake.Events() {
		if seen[e.EventID] {
			t.Errorf("event %s delivered twice", e.EventID)
		}
		seen[e.EventID] = true
		if e.RoomID == roomB {
			t.Errorf("event of an uninteresting room delivered: %s %s", e.Type, e.Body())
		}
	}
	// Transaction IDs are never reused and every attempt succeeded.
	ids := map[string]bool{}
	for _, txn := range fake.Requests() {
		if ids[txn.ID] {
			t.Errorf("transaction %s sent twice though it was accepted", txn.ID)
		}
		ids[txn.ID] = true
	}
	// The room namespace takes in every room, room B included.
	delivered(t, srv, "lg")
	if st, now := srv.HS.AppServices.SenderStats()["lg"], srv.HS.Syncer.Notifier().Current().Events; st.Pos < now || !st.Running || st.Failures != 0 {
		t.Errorf("lg's sender at %+v, the stream at %d", st, now)
	}
	var all []string
	for i := range 3 {
		all = append(all, fmt.Sprintf("a%d", i), fmt.Sprintf("secret%d", i), fmt.Sprintf("c%d", i))
	}
	if got := bodies(logger.Events()); !slices.Equal(got, append(all, "d0")) {
		t.Errorf("room namespace: delivered %v", got)
	}
	// The ghost's join (its own membership) is among them.
	fake.WaitEvent("the ghost's join", func(e astest.Event) bool {
		return e.Type == "m.room.member" && e.StateKey != nil && *e.StateKey == "@_tx_g:"+srv.Config.ServerName
	})
}

// A service that fails is retried with the same transaction, after waits
// that double; tests move a fake clock instead of sleeping.
func TestTransactionRetriedWithBackoff(t *testing.T) {
	fake := astest.NewAS(t, "hs-bo")
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	r := reg("bo", fake.URL)
	opts := astest.Options(t, nil, r)
	opts.Clock = clk
	srv := testserver.Start(t, opts)
	alice := srv.Register("alice")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	_, q := ghost(t, srv, r, "_bo_g")
	asClient(srv, r).MustDo("POST", csAPI+"/join/"+url.PathEscape(room)+q, map[string]any{}, nil)
	delivered(t, srv, "bo") // the ghost's join

	var attempts atomic.Int32
	fake.OnTransaction(func(id string) int {
		if attempts.Add(1) <= 3 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	first := len(fake.Requests())
	alice.SendText(room, "hello")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for n, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		d, err := srv.HS.AppServices.Backoff(ctx, "bo", n+1)
		if err != nil {
			t.Fatal(err)
		}
		if d != want {
			t.Errorf("back-off %d: %v, want %v", n+1, d, want)
		}
		if got := len(fake.Requests()) - first; got != n+1 {
			t.Errorf("before back-off %d ended: %d attempts", n+1, got)
		}
		clk.Advance(d)
	}
	delivered(t, srv, "bo")
	reqs := fake.Requests()[first:]
	if len(reqs) != 4 {
		t.Fatalf("%d attempts, want 4", len(reqs))
	}
	for _, req := range reqs[1:] {
		if req.ID != reqs[0].ID || !bytes.Equal(req.Raw, reqs[0].Raw) {
			t.Errorf("a retry changed the transaction: %s %s vs %s %s", req.ID, req.Raw, reqs[0].ID, reqs[0].Raw)
		}
	}
	if got := bodies(reqs[3].Events); !slices.Equal(got, []string{"hello"}) {
		t.Errorf("delivered %v", got)
	}
	// The next event goes out at once, under the next ID.
	alice.SendText(room, "again")
	delivered(t, srv, "bo")
	all := fake.Requests()
	last := all[len(all)-1]
	if last.ID == reqs[0].ID || bodies(last.Events)[0] != "again" {
		t.Errorf("next transaction %s: %v", last.ID, bodies(last.Events))
	}
}

// switchable is a fake service on a fixed loopback address that can be
// taken down (connections refused) and brought back.
type switchable struct {
	t    *testing.T
	addr string
	srv  *httptest.Server
	fake *astest.AS
}

func (s *switchable) up() {
	l, err := net.Listen("tcp", s.addr)
	if err != nil {
		s.t.Fatalf("re-listening on %s: %v", s.addr, err)
	}
	s.srv = httptest.NewUnstartedServer(s.fake.Handler())
	s.srv.Listener.Close()
	s.srv.Listener = l
	s.srv.Start()
}

func (s *switchable) down() {
	s.srv.CloseClientConnections()
	s.srv.Close()
}

// The homeserver stops while the service is down with events queued, and
// starts again on the same data: every event arrives exactly once, in
// order; only a retried transaction is seen twice, under one ID, with the
// same body.
func TestTransactionsSurviveRestart(t *testing.T) {
	fake := astest.NewAS(t, "hs-rs")
	sw := &switchable{t: t, addr: fake.Addr(), fake: fake}
	fake.Close() // served from sw from now on
	sw.up()
	t.Cleanup(func() { sw.down() })
	r := reg("rs", "http://"+sw.addr)
	opts := astest.Options(t, nil, r)
	srv := testserver.Start(t, opts)
	alice := srv.Register("alice")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	_, q := ghost(t, srv, r, "_rs_g")
	asClient(srv, r).MustDo("POST", csAPI+"/join/"+url.PathEscape(room)+q, map[string]any{}, nil)

	var want []string
	send := func(from, to int) {
		for i := from; i < to; i++ {
			b := fmt.Sprintf("m%02d", i)
			alice.SendText(room, b)
			want = append(want, b)
		}
	}
	send(0, 10)
	delivered(t, srv, "rs")

	// The service fails; events pile up behind a transaction in retry.
	var failing atomic.Bool
	failing.Store(true)
	fake.OnTransaction(func(string) int {
		if failing.Load() {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	before := len(fake.Requests())
	send(10, 15)
	fake.Wait("a failed attempt with the new events", func() bool { return len(fake.Requests()) > before })
	send(15, 20)
	// Now unreachable altogether, and the homeserver stops.
	sw.down()
	srv.Stop()
	failing.Store(false)
	sw.up()

	srv2 := testserver.Start(t, testserver.Options{DataDir: srv.DataDir, Configure: opts.Configure})
	alice2 := srv2.Anonymous()
	alice2.Token, alice2.UserID = alice.Token, alice.UserID
	send2 := func(b string) { alice2.SendText(room, b); want = append(want, b) }
	send2("after")
	delivered(t, srv2, "rs")

	if got := bodies(fake.Events()); !slices.Equal(got, want) {
		t.Fatalf("messages delivered %v, want %v\n%s", got, want, fake)
	}
	// A transaction refused before the restart was sent again after it.
	retried := false
	failed := map[string]bool{}
	for _, req := range fake.Requests() {
		if req.Status != http.StatusOK {
			failed[req.ID] = true
		} else if failed[req.ID] {
			retried = true
		}
	}
	if !retried {
		t.Errorf("no transaction was retried across the restart:\n%s", fake)
	}
	// Attempts of one transaction ID carry the same bytes; IDs increase.
	byID := map[string][]byte{}
	var order []string
	for _, req := range fake.Requests() {
		if prev, ok := byID[req.ID]; ok {
			if !bytes.Equal(prev, req.Raw) {
				t.Errorf("transaction %s was sent with different bodies", req.ID)
			}
			continue
		}
		byID[req.ID] = req.Raw
		order = append(order, req.ID)
	}
	for i := 1; i < len(order); i++ {
		var a, b int
		fmt.Sscan(order[i-1], &a)
		fmt.Sscan(order[i], &b)
		if b != a+1 {
			t.Errorf("transaction IDs %v are not consecutive", order)
			break
		}
	}
}
