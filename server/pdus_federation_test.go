package server_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	gosync "sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/appservice/astest"
	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/federation"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/server"
	"github.com/persistentchat/homeserver/storage"
	"github.com/persistentchat/homeserver/testserver"
)

// playedServer is a test playing a federating server: it builds events
// signed with that server's own key, as that server would.
type playedServer struct {
	t   testing.TB
	s   *testserver.Server
	key roomdag.SigningKey
	ts  int64
}

func playServer(t testing.TB, s *testserver.Server) *playedServer {
	key, err := server.LoadOrCreateKey(s.Config.SigningKeyPath(), roomdag.ServerName(s.Name()))
	if err != nil {
		t.Fatal(err)
	}
	return &playedServer{t: t, s: s, key: key, ts: time.Now().UnixMilli()}
}

// build makes an event of sender on top of prev, authorised by state.
func (p *playedServer) build(v *roomdag.RoomVersion, room roomdag.RoomID, state roomdag.StateMap, sender roomdag.UserID,
	typ string, stateKey *string, content string, depth int64, prev ...roomdag.EventID) *roomdag.Event {
	p.t.Helper()
	var auth []roomdag.EventID
	for _, k := range roomdag.AuthEventTuples(v, typ, stateKey, sender, []byte(content)) {
		if ev := state[k]; ev != nil {
			auth = append(auth, ev.ID())
		}
	}
	p.ts++
	ev, err := roomdag.BuildEvent(v, p.key, roomdag.EventTemplate{RoomID: room, Sender: sender, Type: typ, StateKey: stateKey,
		Content: json.RawMessage(content), PrevEvents: prev, AuthEvents: auth, Depth: depth, OriginServerTS: p.ts})
	if err != nil {
		p.t.Fatal(err)
	}
	return ev
}

var fedTxnCounter atomic.Int64

// sendPDUs sends a transaction of pdus from one server to another and
// returns its per-PDU results (event ID → error, "" for none).
func sendPDUs(t testing.TB, from, to *testserver.Server, pdus ...json.RawMessage) map[string]string {
	t.Helper()
	txn, err := json.Marshal(map[string]any{"origin": from.Name(), "origin_server_ts": time.Now().UnixMilli(), "pdus": pdus})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, fmt.Sprintf("/_matrix/federation/v1/send/pdutest%d", fedTxnCounter.Add(1)), bytes.NewReader(txn))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := from.HS.Federation.Do(ctx, roomdag.ServerName(to.Name()), req)
	if err != nil {
		t.Fatalf("/send: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/send: %d %s", resp.StatusCode, body)
	}
	var out struct {
		PDUs map[string]struct {
			Error *string `json:"error"`
		} `json:"pdus"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("/send answer %s: %v", body, err)
	}
	res := map[string]string{}
	for id, r := range out.PDUs {
		res[id] = ""
		if r.Error != nil {
			res[id] = *r.Error
		}
	}
	return res
}

// fedGet sends a signed federation GET and decodes its 200 answer.
func fedGet(t testing.TB, from, to *testserver.Server, path string, out any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := from.HS.Federation.Do(ctx, roomdag.ServerName(to.Name()), req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
}

// timelineWatcher follows one room's timeline through a user's /sync.
type timelineWatcher struct {
	c     *testserver.Client
	room  string
	since string
	seen  []string
}

func watchTimeline(c *testserver.Client, room string) *timelineWatcher {
	out := c.Sync("timeout=0")
	return &timelineWatcher{c: c, room: room, since: out["next_batch"].(string)}
}

// until syncs until the event has arrived and returns the event IDs
// seen in the room meanwhile, in order.
func (w *timelineWatcher) until(t *testing.T, id string) []string {
	t.Helper()
	from := len(w.seen)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var out struct {
			NextBatch string `json:"next_batch"`
			Rooms     struct {
				Join map[string]struct {
					Timeline struct {
						Events []struct {
							EventID string `json:"event_id"`
						} `json:"events"`
					} `json:"timeline"`
				} `json:"join"`
			} `json:"rooms"`
		}
		w.c.MustDo("GET", "/_matrix/client/v3/sync?timeout=5000&since="+w.since, nil, &out)
		w.since = out.NextBatch
		for _, ev := range out.Rooms.Join[w.room].Timeline.Events {
			w.seen = append(w.seen, ev.EventID)
		}
		if slices.Contains(w.seen[from:], id) {
			return w.seen[from:]
		}
	}
	t.Fatalf("%s: event %s not in /sync within the deadline; saw %v", w.c.UserID, id, w.seen[from:])
	return nil
}

func ids(evs ...*roomdag.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = string(e.ID())
	}
	return out
}

func sk(s string) *string { return &s }

// joinFromB has B's user join A's room with a join B's test code builds
// and sends (/send), then gives B the room's history from A (/backfill,
// which B may ask once joined), as a send_join answer would.
func joinFromB(t testing.TB, a, b *testserver.Server, pb *playedServer, bob roomdag.UserID, room roomdag.RoomID) (*roomdag.RoomVersion, *roomdag.Event) {
	t.Helper()
	ctx := context.Background()
	// A's sender has seen A's events while B had no one in the room.
	if err := a.HS.FedSender.Loop().Wait(ctx, a.HS.Syncer.Notifier().Current().Events); err != nil {
		t.Fatal(err)
	}
	// The join, citing A's forward extremities, as make_join would.
	st, err := a.HS.Rooms.State(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	v := st.Version
	join := pb.build(v, room, st.State, bob, roomdag.TypeMember, sk(string(bob)), `{"membership":"join"}`, st.Depth+1, st.Extremities...)
	if res := sendPDUs(t, b, a, join.JSON()); res[string(join.ID())] != "" || len(res) != 1 {
		t.Fatalf("join: %v", res)
	}
	if st, err := a.HS.Rooms.State(ctx, room); err != nil || st.Membership(bob) != roomdag.MembershipJoin {
		t.Fatalf("bob on A: %v", err)
	}
	var hist struct {
		PDUs []json.RawMessage `json:"pdus"`
	}
	fedGet(t, b, a, "/_matrix/federation/v1/backfill/"+url.PathEscape(string(room))+"?limit=100&v="+url.QueryEscape(string(join.ID())), &hist)
	var evs []*roomdag.Event
	for _, raw := range hist.PDUs {
		e, err := roomdag.NewEventFromJSON(v, raw)
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, e)
	}
	slices.SortFunc(evs, func(x, y *roomdag.Event) int { return cmp.Compare(x.Depth(), y.Depth()) })
	for _, e := range evs {
		if res, err := b.HS.Rooms.Receive(ctx, e, roomdag.ReceiveOptions{Verifier: b.HS.Keyring}); err != nil || res.Status != roomdag.StatusTimeline {
			t.Fatalf("B receiving %s: %+v, %v", e.ID(), res, err)
		}
	}
	return v, join
}

// TestFederatedPDUs: PDUs a remote server sends with /send land in a room
// of this server. Server B is played by the test (its events built and
// signed with B's key) and also runs: it holds the room too, and its real
// federation endpoints answer A's /get_missing_events, /state_ids and
// /event. B's user joins A's public room with a join sent over /send; B's
// messages reach A's user's /sync and notifications, a gap is filled with
// /get_missing_events, a fork is merged, a gap too long for that is
// bridged with the state before it from /state_ids; an event the auth
// rules reject counts as processed; A's user's reply reaches B, and none
// of B's events comes back to B as if A's; paging back through the gap,
// A's user's /messages backfills it from B.
func TestFederatedPDUs(t *testing.T) {
	ctx := context.Background()
	// A (the first configured) archives, and has an application service
	// interested in every room.
	as := astest.NewAS(t, "hs-watcher")
	reg := astest.Registration{ID: "watcher", URL: as.URL, ASToken: "as-watcher", HSToken: "hs-watcher", SenderLocalpart: "watcher",
		Rooms: []astest.Namespace{{Regex: ".*"}}}.Write(t, t.TempDir())
	first := true
	fed := testserver.Federation(t, 2, testserver.Options{Configure: func(c *configs.Config) {
		if first {
			first = false
			c.Compliance.Enabled = true
			c.AppServiceConfigFiles = append(c.AppServiceConfigFiles, reg)
		}
	}})
	a, b := fed[0], fed[1]
	pb := playServer(t, b)
	// The test decides what B sends.
	b.HS.FedSender.Stop()
	alice := a.Register("alice")
	bob := roomdag.UserID(b.Register("bob").UserID)
	room := roomdag.RoomID(alice.CreateRoom(map[string]any{"preset": "public_chat"}))
	watch := watchTimeline(alice, string(room))
	v, join := joinFromB(t, a, b, pb, bob, room)
	watch.until(t, string(join.ID()))
	appendB := func(body string) *roomdag.Event {
		t.Helper()
		ev, _, err := b.HS.Rooms.Append(ctx, room, roomdag.ProtoEvent{Type: "m.room.message", Sender: bob,
			Content: json.RawMessage(fmt.Sprintf(`{"msgtype":"m.text","body":%q}`, body))})
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	send := func(evs ...*roomdag.Event) {
		t.Helper()
		raws := make([]json.RawMessage, len(evs))
		for i, e := range evs {
			raws[i] = e.JSON()
		}
		res := sendPDUs(t, b, a, raws...)
		for _, e := range evs {
			if r, ok := res[string(e.ID())]; !ok || r != "" {
				t.Fatalf("PDU %s: %q (present %v)", e.ID(), r, ok)
			}
		}
	}

	// A message: alice sees it and is notified of it.
	m1 := appendB("hello from B")
	send(m1)
	if got := watch.until(t, string(m1.ID())); !slices.Equal(got, ids(m1)) {
		t.Errorf("alice saw %v, want %v", got, ids(m1))
	}
	a.Settle()
	var counts struct {
		Rooms struct {
			Join map[string]struct {
				Unread struct {
					Notifications int `json:"notification_count"`
				} `json:"unread_notifications"`
			} `json:"join"`
		} `json:"rooms"`
	}
	alice.MustDo("GET", "/_matrix/client/v3/sync?timeout=0", nil, &counts)
	if n := counts.Rooms.Join[string(room)].Unread.Notifications; n < 1 {
		t.Errorf("alice's notification count for B's message: %d", n)
	}
	// A's application service is sent it.
	as.WaitEvent("B's message", func(e astest.Event) bool { return e.EventID == string(m1.ID()) })
	// And A's compliance archive holds it.
	if err := a.HS.Compliance.Wait(ctx, a.HS.Syncer.Notifier().Current().Events); err != nil {
		t.Fatal(err)
	}
	if actors, err := a.HS.DB().ComplianceDistinct(ctx, "actor", storage.ComplianceFilter{Room: string(room)}); err != nil || !slices.Contains(actors, string(bob)) {
		t.Errorf("archived actors of the room %v, %v; want bob among them", actors, err)
	}

	// A gap: only the last of three is sent; A fetches the others.
	m2, m3, m4 := appendB("two"), appendB("three"), appendB("four")
	send(m4)
	if got := watch.until(t, string(m4.ID())); !slices.Equal(got, ids(m2, m3, m4)) {
		t.Errorf("after the gap alice saw %v, want %v", got, ids(m2, m3, m4))
	}

	// A fork on B, merged: only the merge is sent.
	bst, err := b.HS.Rooms.State(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	x1 := pb.build(v, room, bst.State, bob, "m.room.message", nil, `{"msgtype":"m.text","body":"x1"}`, m4.Depth()+1, m4.ID())
	x2 := pb.build(v, room, bst.State, bob, "m.room.message", nil, `{"msgtype":"m.text","body":"x2"}`, m4.Depth()+1, m4.ID())
	for _, x := range []*roomdag.Event{x1, x2} {
		if _, err := b.HS.Rooms.Receive(ctx, x, roomdag.ReceiveOptions{Verifier: b.HS.Keyring}); err != nil {
			t.Fatal(err)
		}
	}
	merge := appendB("merge")
	if len(merge.PrevEvents()) != 2 {
		t.Fatalf("the merge cites %v", merge.PrevEvents())
	}
	send(merge)
	got := watch.until(t, string(merge.ID()))
	if len(got) != 3 || got[2] != string(merge.ID()) || !slices.Contains(got, string(x1.ID())) || !slices.Contains(got, string(x2.ID())) {
		t.Errorf("after the fork alice saw %v, want x1, x2 (either order), merge", got)
	}
	if st, err := a.HS.Rooms.State(ctx, room); err != nil || !slices.Equal(st.Extremities, []roomdag.EventID{merge.ID()}) {
		t.Errorf("A's extremities %v, %v; want the merge", st.Extremities, err)
	}

	// An event the auth rules reject (bob may not set the topic) still
	// counts as processed.
	bst, _ = b.HS.Rooms.State(ctx, room)
	topic := pb.build(v, room, bst.State, bob, roomdag.TypeTopic, sk(""), `{"topic":"bob's"}`, merge.Depth()+1, merge.ID())
	send(topic)
	dag, err := a.HS.DB().DAGEvents(ctx, []roomdag.EventID{topic.ID()})
	if err != nil || dag[topic.ID()] == nil || dag[topic.ID()].Status != roomdag.StatusRejected {
		t.Errorf("the topic on A: %+v, %v; want rejected", dag[topic.ID()], err)
	}

	// A gap longer than /get_missing_events bridges: a state change of
	// bob's, then more messages than one request returns. A takes the
	// state before the events it got from /state_ids.
	rename, _, err := b.HS.Rooms.Append(ctx, room, roomdag.ProtoEvent{Type: roomdag.TypeMember, StateKey: sk(string(bob)), Sender: bob,
		Content: json.RawMessage(`{"membership":"join","displayname":"Bob Far"}`)})
	if err != nil {
		t.Fatal(err)
	}
	var last *roomdag.Event
	for i := range 30 {
		last = appendB(fmt.Sprintf("far %d", i))
	}
	send(last)
	watch.until(t, string(last.ID()))
	st, err := a.HS.Rooms.State(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	if m := st.State.Get(roomdag.TypeMember, string(bob)); m == nil || m.ID() != rename.ID() {
		t.Errorf("bob's member event on A: %v, want the rename %s", m, rename.ID())
	}
	// Nothing A holds cites the merge, so it stays an extremity beside
	// the gap's end until a local event merges the two.
	wantExt := []roomdag.EventID{merge.ID(), last.ID()}
	slices.Sort(wantExt)
	if !slices.Equal(st.Extremities, wantExt) {
		t.Errorf("A's extremities after the long gap %v, want %v", st.Extremities, wantExt)
	}
	if dag, err := a.HS.DB().DAGEvents(ctx, []roomdag.EventID{rename.ID()}); err != nil || dag[rename.ID()] == nil || dag[rename.ID()].Status != roomdag.StatusOutlier {
		t.Errorf("the rename on A: %+v, %v; want an outlier (from /state_ids)", dag[rename.ID()], err)
	}

	// Alice's reply goes to B; none of B's events came back.
	reply := alice.SendText(string(room), "hello B")
	deadline := time.Now().Add(30 * time.Second)
	for {
		// B counts a PDU after storing it: wait for both, or the count
		// may be read in between. PDUs A wrongly sent back would come
		// before the reply (stream order), so they are counted by then.
		if _, err := b.HS.DB().Event(ctx, roomdag.EventID(reply)); err == nil && b.HS.FedTxns.Stats().PDUs >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice's reply did not reach B; B's inbound: %+v", b.HS.FedTxns.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := b.HS.FedTxns.Stats().PDUs; n != 1 {
		t.Errorf("B was sent %d PDUs, want 1 (alice's reply only)", n)
	}

	// Paging back through the long gap, alice's /messages asks B for the
	// history A lacks (/backfill) and shows it in its place.
	var paged []string
	from := ""
	for range 50 {
		var page struct {
			Chunk []struct {
				EventID string `json:"event_id"`
			} `json:"chunk"`
			End string `json:"end"`
		}
		alice.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(string(room))+"/messages?dir=b&limit=7&from="+url.QueryEscape(from), nil, &page)
		for _, e := range page.Chunk {
			paged = append(paged, e.EventID)
		}
		if page.End == "" || len(page.Chunk) == 0 {
			break
		}
		from = page.End
	}
	slices.Reverse(paged)
	at := slices.Index(paged, string(rename.ID()))
	if at < 0 || len(paged) < at+32 || paged[at+30] != string(last.ID()) || paged[at+31] != reply {
		var desc []string
		for _, id := range paged {
			d := id
			if ev, err := a.HS.DB().Event(ctx, roomdag.EventID(id)); err == nil {
				d = fmt.Sprintf("%s(%d,%d)", ev.Content(), ev.Depth(), ev.Pos)
			}
			desc = append(desc, d)
		}
		t.Fatalf("alice's history around the gap (rename at %d):\n%s", at, strings.Join(desc, "\n"))
	}
	// Backfilled history is not news: alice's /sync brings the reply alone.
	if got := watch.until(t, reply); !slices.Equal(got, []string{reply}) {
		t.Errorf("alice's /sync after the backfill: %v, want only her reply", got)
	}
	for i, id := range paged[at+1 : at+31] {
		if ev, err := b.HS.DB().Event(ctx, roomdag.EventID(id)); err != nil || !strings.Contains(string(ev.Content()), fmt.Sprintf(`"far %d"`, i)) {
			t.Errorf("event %d after the rename in alice's history: %s, %v", i, id, err)
		}
	}
}

// TestFederatedPDUsRefused: PDUs that must not land get an error of their
// own in the /send answer, which is 200 (never 500), and change nothing;
// the other PDUs of the transaction land.
func TestFederatedPDUsRefused(t *testing.T) {
	ctx := context.Background()
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	pb := playServer(t, b)
	b.HS.FedSender.Stop()
	alice := a.Register("alice")
	bob := roomdag.UserID("@bob:" + b.Name())
	room := roomdag.RoomID(alice.CreateRoom(map[string]any{"preset": "public_chat"}))
	denied := roomdag.RoomID(alice.CreateRoom(map[string]any{"preset": "public_chat"}))
	alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(string(denied))+"/state/m.room.server_acl/",
		map[string]any{"allow": []string{"*"}, "deny": []string{"127.0.0.1"}}, nil) // ACLs match hosts, not ports
	st, err := a.HS.Rooms.State(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	v := st.Version
	on := func(r roomdag.RoomID) *roomdag.RoomState {
		st, err := a.HS.Rooms.State(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	joinOf := func(r roomdag.RoomID, user roomdag.UserID) *roomdag.Event {
		st := on(r)
		return pb.build(v, r, st.State, user, roomdag.TypeMember, sk(string(user)), `{"membership":"join"}`, st.Depth+1, st.Extremities...)
	}
	forged := joinOf(room, bob).JSON()
	{
		var m map[string]any
		if err := json.Unmarshal(forged, &m); err != nil {
			t.Fatal(err)
		}
		sigs := m["signatures"].(map[string]any)[b.Name()].(map[string]any)
		for k, s := range sigs {
			s := s.(string)
			c := "A"
			if s[0] == 'A' {
				c = "B"
			}
			sigs[k] = c + s[1:]
		}
		forged, _ = json.Marshal(m)
	}
	message := pb.build(v, room, st.State, bob, "m.room.message", nil, `{"body":"not joined"}`, st.Depth+1, st.Extremities...)
	other := joinOf(room, "@mallory:127.0.0.1:1")
	badJSON := json.RawMessage(fmt.Sprintf(`{"room_id":%q,"type":7,"sender":"@bob:%s","depth":"deep"}`, room, b.Name()))
	unknownRoom := roomdag.RoomID("!nosuchroom:" + a.Name())
	unknown := pb.build(v, unknownRoom, st.State, bob, roomdag.TypeMember, sk(string(bob)), `{"membership":"join"}`, 5, st.Extremities...)
	aclJoin := joinOf(denied, bob)
	good := joinOf(room, bob)

	cases := []struct {
		name string
		pdu  json.RawMessage
		want string // in the PDU's error
	}{
		{"forged signature", forged, "signature"},
		{"message of a server not in the room", message.JSON(), "not in room"},
		{"join of another server's user", other.JSON(), "not in room"},
		{"malformed", badJSON, "invalid event"},
		{"unknown room", unknown.JSON(), "unknown room"},
		{"origin denied by the ACL", aclJoin.JSON(), "server ACL"},
	}
	// The good join last: before it, B has no one in the room.
	var pdus []json.RawMessage
	for _, c := range cases {
		pdus = append(pdus, c.pdu)
	}
	pdus = append(pdus, good.JSON())
	res := sendPDUs(t, b, a, pdus...)
	if r, ok := res[string(good.ID())]; !ok || r != "" {
		t.Errorf("the good join: %q (present %v)", r, ok)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id, err := roomdag.EventIDFromJSON(v, c.pdu)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := res[string(id)]
			if !ok || !strings.Contains(got, c.want) {
				t.Errorf("error %q (present %v), want one about %q; answer %v", got, ok, c.want, res)
			}
			if dag, err := a.HS.DB().DAGEvents(ctx, []roomdag.EventID{id}); err != nil || len(dag) != 0 {
				t.Errorf("stored: %v, %v", dag, err)
			}
		})
	}
	if on(room).Membership(bob) != roomdag.MembershipJoin {
		t.Error("the good join did not land")
	}
	// Bob leaves: B's own user's leave lands; then B has no one in the
	// room and its messages are refused again.
	st = on(room)
	leave := pb.build(v, room, st.State, bob, roomdag.TypeMember, sk(string(bob)), `{"membership":"leave"}`, st.Depth+1, st.Extremities...)
	if res := sendPDUs(t, b, a, leave.JSON()); res[string(leave.ID())] != "" {
		t.Fatalf("leave: %v", res)
	}
	st = on(room)
	if st.Membership(bob) != roomdag.MembershipLeave {
		t.Errorf("bob's membership after the leave: %q", st.Membership(bob))
	}
	after := pb.build(v, room, st.State, bob, "m.room.message", nil, `{"body":"gone"}`, st.Depth+1, st.Extremities...)
	if res := sendPDUs(t, b, a, after.JSON()); !strings.Contains(res[string(after.ID())], "not in room") {
		t.Errorf("a message after the leave: %v", res)
	}
	if on(denied).Membership(bob) != "" && on(denied).Membership(bob) != roomdag.MembershipLeave {
		t.Error("the denied join landed")
	}
}

// hostileOrigin is a Client that sends every request to one test
// server, whatever its destination, and counts them.
type hostileOrigin struct {
	url   string
	calls atomic.Int64
}

func (h *hostileOrigin) Do(ctx context.Context, _ roomdag.ServerName, req *http.Request) (*http.Response, error) {
	h.calls.Add(1)
	out := req.Clone(ctx)
	u, err := url.Parse(h.url + req.URL.RequestURI())
	if err != nil {
		return nil, err
	}
	out.URL, out.RequestURI, out.Host = u, "", u.Host
	return http.DefaultClient.Do(out)
}

// TestFederatedPDUsHostileOrigin: an origin that answers with an auth
// chain it feeds one event at a time, deeper than any bound, makes this
// server give up on the PDU after at most federation.MaxPDURequests
// requests, with an error for it; the room goes on taking PDUs.
func TestFederatedPDUsHostileOrigin(t *testing.T) {
	ctx := context.Background()
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	pb := playServer(t, b)
	b.HS.FedSender.Stop()
	alice := a.Register("alice")
	bob := roomdag.UserID("@bob:" + b.Name())
	room := roomdag.RoomID(alice.CreateRoom(map[string]any{"preset": "public_chat"}))
	st, err := a.HS.Rooms.State(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	v := st.Version
	join := pb.build(v, room, st.State, bob, roomdag.TypeMember, sk(string(bob)), `{"membership":"join"}`, st.Depth+1, st.Extremities...)
	if res := sendPDUs(t, b, a, join.JSON()); res[string(join.ID())] != "" {
		t.Fatalf("join: %v", res)
	}
	st, _ = a.HS.Rooms.State(ctx, room)

	// A chain of events each citing the one before as its auth event.
	chain := map[string]json.RawMessage{}
	var prev []roomdag.EventID
	for i := range federation.MaxPDURequests + 50 {
		pb.ts++
		e, err := roomdag.BuildEvent(v, pb.key, roomdag.EventTemplate{RoomID: room, Sender: bob, Type: "m.room.message",
			Content: json.RawMessage(fmt.Sprintf(`{"body":"chain %d"}`, i)), PrevEvents: prev, AuthEvents: prev, Depth: int64(i + 1), OriginServerTS: pb.ts})
		if err != nil {
			t.Fatal(err)
		}
		chain[string(e.ID())] = e.JSON()
		prev = []roomdag.EventID{e.ID()}
	}
	top := prev[0]
	mux := http.NewServeMux()
	mux.HandleFunc("POST /_matrix/federation/v1/get_missing_events/{room}", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"events":[{},{"type":1},"x"]}`))
	})
	mux.HandleFunc("GET /_matrix/federation/v1/state_ids/{room}", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"pdu_ids": []roomdag.EventID{top}, "auth_chain_ids": []string{}})
	})
	mux.HandleFunc("GET /_matrix/federation/v1/event/{id}", func(w http.ResponseWriter, r *http.Request) {
		raw, ok := chain[r.PathValue("id")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"origin": b.Name(), "origin_server_ts": 1, "pdus": []json.RawMessage{raw}})
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	origin := &hostileOrigin{url: srv.URL}
	pdus := &federation.RoomPDUs{Server: roomdag.ServerName(a.Name()), Rooms: a.HS.Rooms, Store: a.HS.DB(), Client: origin,
		Verifier: a.HS.Keyring, Log: slog.New(slog.DiscardHandler)}
	msg := pb.build(v, room, st.State, bob, "m.room.message", nil, `{"body":"after the chain"}`, int64(len(chain)+1), top)
	err = pdus.HandlePDU(ctx, roomdag.ServerName(b.Name()), room, v, msg.ID(), msg.JSON())
	if err == nil {
		t.Fatal("a PDU behind an endless auth chain was accepted")
	}
	t.Logf("refused after %d requests: %v", origin.calls.Load(), err)
	if n := origin.calls.Load(); n > federation.MaxPDURequests {
		t.Errorf("%d requests to the origin for one PDU, bound %d", n, federation.MaxPDURequests)
	}
	if dag, err := a.HS.DB().DAGEvents(ctx, []roomdag.EventID{msg.ID(), top}); err != nil || len(dag) != 0 {
		t.Errorf("stored: %v, %v", dag, err)
	}
	// The room still takes B's PDUs.
	next := pb.build(v, room, st.State, bob, "m.room.message", nil, `{"body":"fine"}`, st.Depth+1, st.Extremities...)
	if res := sendPDUs(t, b, a, next.JSON()); res[string(next.ID())] != "" {
		t.Fatalf("next: %v", res)
	}
}

// lazyOrigin is a Client that forwards requests over the real transport
// but answers /get_missing_events with 404 (a server that does not
// serve it), and counts requests by kind.
type lazyOrigin struct {
	next  federation.Client
	mu    gosync.Mutex
	calls map[string]int
}

func (l *lazyOrigin) Do(ctx context.Context, dest roomdag.ServerName, req *http.Request) (*http.Response, error) {
	kind := strings.Split(strings.TrimPrefix(req.URL.Path, "/_matrix/federation/v1/"), "/")[0]
	l.mu.Lock()
	l.calls[kind]++
	l.mu.Unlock()
	if kind == "get_missing_events" {
		return &http.Response{StatusCode: http.StatusNotFound, Body: io.NopCloser(strings.NewReader(`{"errcode":"M_UNRECOGNIZED"}`))}, nil
	}
	return l.next.Do(ctx, dest, req)
}

// TestFederatedPDUsForkedGap: a merge of two branches this server lacks,
// from an origin that does not serve /get_missing_events, is placed with
// the state after each branch's tip (/state_ids at each, the tips and
// their state fetched as outliers) resolved together: both branches'
// state changes are in the room's state.
func TestFederatedPDUsForkedGap(t *testing.T) {
	ctx := context.Background()
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	pb := playServer(t, b)
	b.HS.FedSender.Stop()
	alice := a.Register("alice")
	bob := roomdag.UserID(b.Register("bob").UserID)
	room := roomdag.RoomID(alice.CreateRoom(map[string]any{"preset": "public_chat",
		"power_level_content_override": map[string]any{"users": map[string]any{alice.UserID: 100, string(bob): 50}}}))
	v, _ := joinFromB(t, a, b, pb, bob, room)

	bst, err := b.HS.Rooms.State(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	topic := pb.build(v, room, bst.State, bob, roomdag.TypeTopic, sk(""), `{"topic":"branch one"}`, bst.Depth+1, bst.Extremities...)
	name := pb.build(v, room, bst.State, bob, roomdag.TypeName, sk(""), `{"name":"branch two"}`, bst.Depth+1, bst.Extremities...)
	for _, e := range []*roomdag.Event{topic, name} {
		if res, err := b.HS.Rooms.Receive(ctx, e, roomdag.ReceiveOptions{Verifier: b.HS.Keyring}); err != nil || res.Status != roomdag.StatusTimeline {
			t.Fatalf("B receiving %s: %+v, %v", e.ID(), res, err)
		}
	}
	merge, _, err := b.HS.Rooms.Append(ctx, room, roomdag.ProtoEvent{Type: "m.room.message", Sender: bob, Content: json.RawMessage(`{"body":"merge"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if len(merge.PrevEvents()) != 2 {
		t.Fatalf("the merge cites %v", merge.PrevEvents())
	}

	origin := &lazyOrigin{next: a.HS.Federation, calls: map[string]int{}}
	pdus := &federation.RoomPDUs{Server: roomdag.ServerName(a.Name()), Rooms: a.HS.Rooms, Store: a.HS.DB(), Client: origin,
		Verifier: a.HS.Keyring, Log: slog.New(slog.DiscardHandler)}
	if err := pdus.HandlePDU(ctx, roomdag.ServerName(b.Name()), room, v, merge.ID(), merge.JSON()); err != nil {
		t.Fatal(err)
	}
	if origin.calls["get_missing_events"] != 1 || origin.calls["state_ids"] != 2 {
		t.Errorf("requests to the origin: %v; want one /get_missing_events, then /state_ids at each branch", origin.calls)
	}
	st, err := a.HS.Rooms.State(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	if e := st.State.Get(roomdag.TypeTopic, ""); e == nil || e.ID() != topic.ID() {
		t.Errorf("topic on A: %v, want branch one's", e)
	}
	if e := st.State.Get(roomdag.TypeName, ""); e == nil || e.ID() != name.ID() {
		t.Errorf("name on A: %v, want branch two's", e)
	}
	dag, err := a.HS.DB().DAGEvents(ctx, []roomdag.EventID{topic.ID(), name.ID(), merge.ID()})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []*roomdag.Event{topic, name} {
		if d := dag[e.ID()]; d == nil || d.Status != roomdag.StatusOutlier {
			t.Errorf("branch tip %s on A: %+v, want an outlier", e.ID(), d)
		}
	}
	if d := dag[merge.ID()]; d == nil || d.Status != roomdag.StatusTimeline {
		t.Errorf("the merge on A: %+v", d)
	}
}

// BenchmarkFederatedPDUs: transactions of 50 chained messages from B, each
// PDU received into A's room (signatures, auth, state, commit, /sync
// wake-up), no gaps. Reports PDUs per second.
func BenchmarkFederatedPDUs(bm *testing.B) {
	ctx := context.Background()
	fed := testserver.Federation(bm, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	pb := playServer(bm, b)
	b.HS.FedSender.Stop()
	alice := a.Register("alice")
	bob := roomdag.UserID("@bob:" + b.Name())
	room := roomdag.RoomID(alice.CreateRoom(map[string]any{"preset": "public_chat"}))
	st, err := a.HS.Rooms.State(ctx, room)
	if err != nil {
		bm.Fatal(err)
	}
	v := st.Version
	join := pb.build(v, room, st.State, bob, roomdag.TypeMember, sk(string(bob)), `{"membership":"join"}`, st.Depth+1, st.Extremities...)
	sendPDUs(bm, b, a, join.JSON())
	st, _ = a.HS.Rooms.State(ctx, room)
	prev, depth := join.ID(), join.Depth()
	bm.ResetTimer()
	for i := 0; i < bm.N; i++ {
		bm.StopTimer()
		pdus := make([]json.RawMessage, federation.MaxTxnPDUs)
		for j := range pdus {
			depth++
			e := pb.build(v, room, st.State, bob, "m.room.message", nil, fmt.Sprintf(`{"body":"%d.%d"}`, i, j), depth, prev)
			pdus[j], prev = e.JSON(), e.ID()
		}
		bm.StartTimer()
		res := sendPDUs(bm, b, a, pdus...)
		for id, r := range res {
			if r != "" {
				bm.Fatalf("PDU %s: %s", id, r)
			}
		}
	}
	bm.ReportMetric(float64(bm.N*federation.MaxTxnPDUs)/bm.Elapsed().Seconds(), "PDUs/s")
}
