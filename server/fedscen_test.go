package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/federation"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/server"
	"github.com/persistentchat/homeserver/testserver"
)

// Scenarios of issue 11 across real federating servers: kicks and bans,
// a server down and catching up, concurrent state changes converging,
// and a late joiner's backchat and history.

// syncEvent is an event as /sync and /messages show it.
type syncEvent struct {
	EventID  string          `json:"event_id"`
	Type     string          `json:"type"`
	Sender   string          `json:"sender"`
	StateKey *string         `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

func (e syncEvent) membership() string {
	var c struct {
		Membership string `json:"membership"`
	}
	json.Unmarshal(e.Content, &c)
	return c.Membership
}

func (e syncEvent) body() string {
	var c struct {
		Body string `json:"body"`
	}
	json.Unmarshal(e.Content, &c)
	return c.Body
}

type syncRoom struct {
	Timeline struct {
		Events    []syncEvent `json:"events"`
		Limited   bool        `json:"limited"`
		PrevBatch string      `json:"prev_batch"`
	} `json:"timeline"`
	State struct {
		Events []syncEvent `json:"events"`
	} `json:"state"`
}

type syncResp struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join  map[string]syncRoom `json:"join"`
		Leave map[string]syncRoom `json:"leave"`
	} `json:"rooms"`
}

// syncUntil long-polls c's /sync from since until cond holds for one
// response, and returns that response.
func syncUntil(t *testing.T, c *testserver.Client, since string, what string, cond func(*syncResp) bool) *syncResp {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		var s syncResp
		q := "timeout=2000"
		if since != "" {
			q += "&since=" + url.QueryEscape(since)
		}
		c.MustDo("GET", "/_matrix/client/v3/sync?"+q, nil, &s)
		since = s.NextBatch
		if cond(&s) {
			return &s
		}
	}
	t.Fatalf("%s: no /sync of %s within the deadline", c.UserID, what)
	return nil
}

func nextBatch(t *testing.T, c *testserver.Client) string {
	t.Helper()
	return c.Sync("timeout=0")["next_batch"].(string)
}

// memberIn finds user's membership event in evs.
func memberIn(evs []syncEvent, user string) *syncEvent {
	for i := len(evs) - 1; i >= 0; i-- {
		if e := evs[i]; e.Type == roomdag.TypeMember && e.StateKey != nil && *e.StateKey == user {
			return &e
		}
	}
	return nil
}

func joinVia(t *testing.T, c *testserver.Client, room string, via *testserver.Server) {
	t.Helper()
	c.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?via="+url.QueryEscape(via.Name()), map[string]any{}, nil)
}

func roomPath(room, rest string) string {
	return "/_matrix/client/v3/rooms/" + url.PathEscape(room) + "/" + rest
}

// hasEvents reports whether s's database holds every one of ids.
func hasEvents(t *testing.T, s *testserver.Server, ids ...string) bool {
	t.Helper()
	var evIDs []roomdag.EventID
	for _, id := range ids {
		evIDs = append(evIDs, roomdag.EventID(id))
	}
	got, err := s.HS.DB().DAGEvents(context.Background(), evIDs)
	if err != nil {
		t.Fatal(err)
	}
	return len(got) == len(ids)
}

// TestFederatedKickBan: A's moderator kicks, then bans, B's user. B's
// user sees each in /sync (rooms.leave, with the reason); after the kick
// they may rejoin, after the ban they may not (403 M_FORBIDDEN, from A
// over make_join). Once B's last user is out, B's server is sent none of
// the room's events (a room B stays in carries a marker sent after, so
// the test knows B would have had it by then). After an unban the user
// rejoins and messages flow again.
func TestFederatedKickBan(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice, bob := a.Register("alice"), b.Register("bob")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	control := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	joinVia(t, bob, room, a)
	joinVia(t, bob, control, a)

	leftWith := func(since, membership, reason string) string {
		t.Helper()
		s := syncUntil(t, bob, since, "the "+membership, func(s *syncResp) bool {
			lr, ok := s.Rooms.Leave[room]
			if !ok {
				return false
			}
			m := memberIn(lr.Timeline.Events, bob.UserID)
			if m == nil || m.membership() != membership || m.Sender != alice.UserID {
				t.Errorf("bob's leave of the room in /sync: %+v", lr.Timeline.Events)
				return true
			}
			var c struct {
				Reason string `json:"reason"`
			}
			json.Unmarshal(m.Content, &c)
			if c.Reason != reason {
				t.Errorf("%s reason %q, want %q", membership, c.Reason, reason)
			}
			return true
		})
		if _, ok := s.Rooms.Join[room]; ok {
			t.Errorf("the room is still under rooms.join after the %s", membership)
		}
		return s.NextBatch
	}

	since := nextBatch(t, bob)
	alice.MustDo("POST", roomPath(room, "kick"), map[string]any{"user_id": bob.UserID, "reason": "cool off"}, nil)
	since = leftWith(since, roomdag.MembershipLeave, "cool off")
	joinVia(t, bob, room, a)
	waitMember(t, alice, room, bob.UserID, roomdag.MembershipJoin)

	alice.MustDo("POST", roomPath(room, "ban"), map[string]any{"user_id": bob.UserID, "reason": "spam"}, nil)
	leftWith(since, roomdag.MembershipBan, "spam")
	r := bob.Do("POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?via="+url.QueryEscape(a.Name()), map[string]any{})
	if r.Status != http.StatusForbidden || r.Errcode() != "M_FORBIDDEN" {
		t.Errorf("banned bob's join: %d %s, want 403 M_FORBIDDEN", r.Status, r.Body)
	}

	// No leak: B has no one in the room now.
	secret := alice.SendText(room, "after the ban")
	onB := watchTimeline(bob, control)
	onB.until(t, alice.SendText(control, "marker"))
	if hasEvents(t, b, secret) {
		t.Error("B's server was sent a message of the room after its last user was banned")
	}

	alice.MustDo("POST", roomPath(room, "unban"), map[string]any{"user_id": bob.UserID}, nil)
	// B, with no one in the room, takes none of its PDUs (as Synapse):
	// the unban reaches bob when he joins again, through A.
	joinVia(t, bob, room, a)
	onB = watchTimeline(bob, room)
	onB.until(t, alice.SendText(room, "welcome back"))
	onA := watchTimeline(alice, room)
	onA.until(t, bob.SendText(room, "thanks"))
}

// startAgain starts a stopped server of a federation again on its data
// directory, under its name and federation address; its client API gets
// a new port.
func startAgain(t *testing.T, s *testserver.Server) *testserver.Server {
	t.Helper()
	old := *s.Config
	return testserver.Start(t, testserver.Options{DataDir: s.DataDir, Configure: func(c *configs.Config) {
		c.ServerName, c.FederationListen = old.ServerName, old.FederationListen
		c.FederationVerifyCertificates = false
		c.IPRangeWhitelist = old.IPRangeWhitelist
		c.FederationDomainWhitelist = old.FederationDomainWhitelist
	}})
}

// on is c, a user of a server that restarted, as a client of s.
func on(s *testserver.Server, c *testserver.Client) *testserver.Client {
	n := s.Anonymous()
	n.UserID, n.DeviceID, n.Token = c.UserID, c.DeviceID, c.Token
	return n
}

// historyUntil pages c's /messages of room back to its start until the
// message bodies are want (oldest first), and fails the test with the
// last history otherwise.
func historyUntil(t *testing.T, c *testserver.Client, room string, want []string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var got []string
	for time.Now().Before(deadline) {
		if got = pageBack(t, c, room); slices.Equal(got, want) {
			return
		}
		if len(got) > len(want) {
			break // duplicates or strays: waiting will not mend it
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s's history of %s:\n got %q\nwant %q", c.UserID, room, got, want)
}

func typing(c *testserver.Client, room string) {
	c.MustDo("PUT", roomPath(room, "typing/"+url.PathEscape(c.UserID)), map[string]any{"typing": true, "timeout": 30000}, nil)
}

func topicOf(t *testing.T, c *testserver.Client, room string) string {
	t.Helper()
	var tp struct {
		Topic string `json:"topic"`
	}
	r := c.Do("GET", roomPath(room, "state/m.room.topic/"), nil)
	if r.Status == http.StatusOK {
		r.JSON(&tp)
	}
	return tp.Topic
}

// TestFederatedServerDown: while B is down, A's user sends messages and
// changes the topic; B restarts on its data and ends up with exactly
// those messages, in order, once each, in its user's /messages, and the
// new topic. The same the other way round with A down while B's user
// sends.
func TestFederatedServerDown(t *testing.T) {
	const n = 30
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice, bob := a.Register("alice"), b.Register("bob")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat",
		"power_level_content_override": map[string]any{"users": map[string]any{alice.UserID: 100, bob.UserID: 50}}})
	joinVia(t, bob, room, a)
	want := []string{"before"}
	onB := watchTimeline(bob, room)
	onB.until(t, alice.SendText(room, "before"))

	b.Stop()
	for i := range n {
		want = append(want, fmt.Sprintf("while B was down %d", i))
		alice.SendText(room, want[len(want)-1])
	}
	alice.MustDo("PUT", roomPath(room, "state/m.room.topic/"), map[string]any{"topic": "set while B was down"}, nil)
	b = startAgain(t, b)
	bob = on(b, bob)
	// Bob comes back typing: A hears from B and stops waiting out its
	// back-off (Sender.ServerUp).
	typing(bob, room)
	historyUntil(t, bob, room, want)
	if got := topicOf(t, bob, room); got != "set while B was down" {
		t.Errorf("topic on B: %q", got)
	}

	a.Stop()
	for i := range n {
		want = append(want, fmt.Sprintf("while A was down %d", i))
		bob.SendText(room, want[len(want)-1])
	}
	bob.MustDo("PUT", roomPath(room, "state/m.room.topic/"), map[string]any{"topic": "set while A was down"}, nil)
	a = startAgain(t, a)
	alice = on(a, alice)
	typing(alice, room)
	historyUntil(t, alice, room, want)
	if got := topicOf(t, alice, room); got != "set while A was down" {
		t.Errorf("topic on A: %q", got)
	}
}

// roomState is a room's current state as c's server serves it: (type,
// state key) → event ID.
func roomState(t *testing.T, c *testserver.Client, room string) map[string]string {
	t.Helper()
	var evs []syncEvent
	c.MustDo("GET", roomPath(room, "state"), nil, &evs)
	out := map[string]string{}
	for _, e := range evs {
		out[e.Type+"|"+*e.StateKey] = e.EventID
	}
	return out
}

// TestFederatedStateConverges: users on A and B change the topic, the
// power levels and the join rules at the same time: B's first change is
// made while A's are still queued for it (B was down, A's sender waits
// out its back-off until B's first transaction), so the room forks. Both servers then hold both branches and
// resolve them (state resolution v2) to the same current state, event
// for event.
func TestFederatedStateConverges(t *testing.T) {
	for _, version := range []string{"11", "12"} { // state resolution v2, v2.1
		t.Run("v"+version, func(t *testing.T) { stateConverges(t, version) })
	}
}

func stateConverges(t *testing.T, version string) {
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice, bob := a.Register("alice"), b.Register("bob")
	// From v12 the creator's power is not listed.
	users := func() map[string]any {
		u := map[string]any{bob.UserID: 100}
		if version != "12" {
			u[alice.UserID] = 100
		}
		return u
	}
	room := alice.CreateRoom(map[string]any{"preset": "public_chat", "room_version": version,
		"power_level_content_override": map[string]any{"users": users()}})
	joinVia(t, bob, room, a)
	onB := watchTimeline(bob, room)
	onB.until(t, alice.SendText(room, "before the fork"))

	// Each side's power levels change one field of the levels before the
	// fork (v12's tombstone level of 150 must stay).
	pl := func(k string, v int) map[string]any {
		var c map[string]any
		alice.MustDo("GET", roomPath(room, "state/m.room.power_levels/"), nil, &c)
		c[k] = v
		return c
	}
	plA, plB := pl("state_default", 60), pl("events_default", 10)
	b.Stop()
	var fromA []string
	put := func(c *testserver.Client, typ string, content map[string]any) string {
		var out struct {
			EventID string `json:"event_id"`
		}
		c.MustDo("PUT", roomPath(room, "state/"+typ+"/"), content, &out)
		return out.EventID
	}
	fromA = append(fromA,
		put(alice, "m.room.topic", map[string]any{"topic": "A's topic"}),
		put(alice, "m.room.join_rules", map[string]any{"join_rule": "invite"}),
		put(alice, "m.room.power_levels", plA))
	b = startAgain(t, b)
	bob = on(b, bob)
	fromB := []string{
		put(bob, "m.room.topic", map[string]any{"topic": "B's topic"}),
		put(bob, "m.room.join_rules", map[string]any{"join_rule": "knock"}),
		put(bob, "m.room.power_levels", plB),
	}
	all := append(slices.Clone(fromA), fromB...)
	deadline := time.Now().Add(60 * time.Second)
	for !hasEvents(t, a, all...) || !hasEvents(t, b, all...) {
		if time.Now().After(deadline) {
			t.Fatalf("the branches did not reach both servers: A %v, B %v", hasEvents(t, a, all...), hasEvents(t, b, all...))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The fork: each side's first change follows the same event.
	dag, err := a.HS.DB().DAGEvents(context.Background(), []roomdag.EventID{roomdag.EventID(fromA[0]), roomdag.EventID(fromB[0])})
	if err != nil {
		t.Fatal(err)
	}
	if pa, pb := dag[roomdag.EventID(fromA[0])].Event.PrevEvents(), dag[roomdag.EventID(fromB[0])].Event.PrevEvents(); !slices.Equal(pa, pb) {
		t.Errorf("no fork: A's first change follows %v, B's %v", pa, pb)
	}
	onA, stB := roomState(t, alice, room), roomState(t, bob, room)
	if !maps.Equal(onA, stB) {
		t.Errorf("current state differs:\nA %v\nB %v", onA, stB)
	}
	// The resolved state is one of the branches' for each key, and a
	// message on top (merging the fork) keeps both servers agreeing.
	for _, k := range []string{"m.room.topic|", "m.room.join_rules|", "m.room.power_levels|"} {
		if !slices.Contains(all, onA[k]) {
			t.Errorf("resolved %s is %s, of neither branch", k, onA[k])
		}
	}
	onBTimeline := watchTimeline(bob, room)
	onBTimeline.until(t, alice.SendText(room, "after the merge"))
	if a2, b2 := roomState(t, alice, room), roomState(t, bob, room); !maps.Equal(a2, b2) || !maps.Equal(a2, onA) {
		t.Errorf("state after the merge:\nA %v\nB %v", a2, b2)
	}
}

// messagesBack pages c's /messages of room backwards from from to the
// start and returns the events, oldest first.
func messagesBack(t *testing.T, c *testserver.Client, room, from string) []syncEvent {
	t.Helper()
	var out []syncEvent
	for range 200 {
		var page struct {
			Chunk []syncEvent `json:"chunk"`
			End   string      `json:"end"`
		}
		c.MustDo("GET", roomPath(room, "messages?dir=b&limit=20&from="+url.QueryEscape(from)), nil, &page)
		out = append(out, page.Chunk...)
		if page.End == "" || len(page.Chunk) == 0 {
			slices.Reverse(out)
			return out
		}
		from = page.End
	}
	t.Fatal("/messages did not reach the start of the room")
	return nil
}

// TestFederatedBackchatLateJoiner: a room on A with the backchat setting
// (org.persistentchat.backchat, limit 7) and many messages; a user of B
// joins late. Their first /sync after the join holds the room's last 7
// events, limited, ending with the join, and its prev_batch pages back
// through /messages to the room's create event, every message once and
// in order, though B held none of it (backfilled from A). In a "joined"
// room the same user sees nothing from before the join.
func TestFederatedBackchatLateJoiner(t *testing.T) {
	const n = 45
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice := a.Register("alice")
	for _, vis := range []string{"shared", "joined"} {
		t.Run(vis, func(t *testing.T) {
			room := alice.CreateRoom(map[string]any{"preset": "public_chat", "initial_state": []any{
				map[string]any{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": vis}},
				map[string]any{"type": roomdag.TypeBackchat, "state_key": "", "content": map[string]any{"limit": 7}},
			}})
			var want []string
			for i := range n {
				want = append(want, fmt.Sprintf("message %d", i))
				alice.SendText(room, want[i])
			}
			bob := b.Register("bob")
			since := nextBatch(t, bob)
			joinVia(t, bob, room, a)
			s := syncUntil(t, bob, since, "the join", func(s *syncResp) bool { _, ok := s.Rooms.Join[room]; return ok })
			tl := s.Rooms.Join[room].Timeline
			var bodies []string
			for _, e := range tl.Events {
				if e.Type == "m.room.message" {
					bodies = append(bodies, e.body())
				}
			}
			last := tl.Events[len(tl.Events)-1]
			if last.Type != roomdag.TypeMember || last.StateKey == nil || *last.StateKey != bob.UserID {
				t.Errorf("the first sync's timeline ends with %+v, not bob's join", last)
			}
			wantTail := want[n-6:]
			if vis == "joined" {
				wantTail = nil
			} else if len(tl.Events) != 7 || !tl.Limited {
				t.Errorf("backchat: %d events, limited %v; want 7, limited", len(tl.Events), tl.Limited)
			}
			if !slices.Equal(bodies, wantTail) {
				t.Errorf("backchat messages %q, want %q", bodies, wantTail)
			}

			hist := messagesBack(t, bob, room, tl.PrevBatch)
			hist = append(hist, tl.Events...)
			var got []string
			seen := map[string]bool{}
			for _, e := range hist {
				if seen[e.EventID] {
					t.Errorf("event %s twice in the history", e.EventID)
				}
				seen[e.EventID] = true
				if e.Type == "m.room.message" {
					got = append(got, e.body())
				}
			}
			if vis == "joined" {
				want = nil
			}
			if !slices.Equal(got, want) {
				t.Errorf("history messages:\n got %q\nwant %q", got, want)
			}
			// The create event comes before any history visibility is set:
			// it is visible ("shared", the default) in both rooms.
			if first := hist[0]; first.Type != roomdag.TypeCreate {
				t.Errorf("history starts with %s %s, not the create event", first.Type, first.EventID)
			}
		})
	}
}

// typingIn reports whether c's /sync shows user typing in room, waiting
// for it when want is true; for want false it reads one sync.
func typingIn(t *testing.T, c *testserver.Client, room, user string, want bool) bool {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var s struct {
			Rooms struct {
				Join map[string]struct {
					Ephemeral struct {
						Events []struct {
							Type    string `json:"type"`
							Content struct {
								UserIDs []string `json:"user_ids"`
							} `json:"content"`
						} `json:"events"`
					} `json:"ephemeral"`
				} `json:"join"`
			} `json:"rooms"`
		}
		c.MustDo("GET", "/_matrix/client/v3/sync?timeout=0", nil, &s)
		for _, e := range s.Rooms.Join[room].Ephemeral.Events {
			if e.Type == "m.typing" && slices.Contains(e.Content.UserIDs, user) {
				return true
			}
		}
		if !want || time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestFederatedServerACL: once A's room denies B's host
// (m.room.server_acl), A takes none of B's EDUs about the room (typing,
// receipts), answers B's queries about it 403 M_FORBIDDEN, and sends B
// none of the room's events; before the ACL, B's typing reached A.
// (Forged requests are TestFederatedForgedRequests'; forged PDU
// signatures, wrong origins and bad JSON in transactions are
// TestFederatedPDUsRefused's, TestInboundTransaction's and
// TestInboundEDUs'.)
func TestFederatedServerACL(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice, bob := a.Register("alice"), b.Register("bob")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	control := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	joinVia(t, bob, room, a)
	joinVia(t, bob, control, a)
	bob.MustDo("PUT", roomPath(room, "typing/"+url.PathEscape(bob.UserID)), map[string]any{"typing": true, "timeout": 30000}, nil)
	if !typingIn(t, alice, room, bob.UserID, true) {
		t.Fatal("before the ACL, B's typing did not reach A")
	}
	bob.MustDo("PUT", roomPath(room, "typing/"+url.PathEscape(bob.UserID)), map[string]any{"typing": false}, nil)
	deadline := time.Now().Add(30 * time.Second)
	for typingIn(t, alice, room, bob.UserID, false) {
		if time.Now().After(deadline) {
			t.Fatal("B's typing did not stop on A")
		}
		time.Sleep(50 * time.Millisecond)
	}
	msg := alice.SendText(room, "read me")

	// ACLs match hosts, not ports: both servers are 127.0.0.1, and a
	// server's ACL never applies to itself.
	alice.MustDo("PUT", roomPath(room, "state/m.room.server_acl/"), map[string]any{"allow": []string{"*"}, "deny": []string{"127.0.0.1"}}, nil)

	before := a.HS.FedTxns.Stats()
	status, body := fedPut(t, b, a.Name(), fmt.Sprintf("/_matrix/federation/v1/send/acltest%d", fedTxnCounter.Add(1)), map[string]any{
		"origin": b.Name(), "origin_server_ts": time.Now().UnixMilli(), "pdus": []any{}, "edus": []any{
			map[string]any{"edu_type": "m.typing", "content": map[string]any{"room_id": room, "user_id": bob.UserID, "typing": true}},
			map[string]any{"edu_type": "m.receipt", "content": map[string]any{room: map[string]any{"m.read": map[string]any{
				bob.UserID: map[string]any{"event_ids": []string{msg}, "data": map[string]any{"ts": 1}}}}}},
		}})
	if status != http.StatusOK {
		t.Fatalf("/send: %d %s", status, body)
	}
	if st := a.HS.FedTxns.Stats(); st.Processed != before.Processed+1 || st.EDUs != before.EDUs {
		t.Errorf("EDUs of a denied server applied: %+v, then %+v", before, st)
	}
	if typingIn(t, alice, room, bob.UserID, false) {
		t.Error("a denied server's typing shows in A's /sync")
	}
	var receipts struct {
		Rooms struct {
			Join map[string]struct {
				Ephemeral struct {
					Events []struct {
						Type    string                    `json:"type"`
						Content map[string]map[string]any `json:"content"`
					} `json:"events"`
				} `json:"ephemeral"`
			} `json:"join"`
		} `json:"rooms"`
	}
	alice.MustDo("GET", "/_matrix/client/v3/sync?timeout=0", nil, &receipts)
	for _, e := range receipts.Rooms.Join[room].Ephemeral.Events {
		if e.Type == "m.receipt" && e.Content[msg] != nil {
			t.Errorf("a denied server's receipt shows in A's /sync: %v", e.Content)
		}
	}

	esc := url.PathEscape
	for _, path := range []string{
		"/_matrix/federation/v1/state_ids/" + esc(room) + "?event_id=" + url.QueryEscape(msg),
		"/_matrix/federation/v1/state/" + esc(room) + "?event_id=" + url.QueryEscape(msg),
		"/_matrix/federation/v1/event/" + esc(msg),
		"/_matrix/federation/v1/backfill/" + esc(room) + "?limit=10&v=" + url.QueryEscape(msg),
		"/_matrix/federation/v1/make_join/" + esc(room) + "/" + esc("@carol:"+b.Name()) + "?ver=10&ver=11",
	} {
		if status, body := fedDo(t, b, a, http.MethodGet, path, nil); status != http.StatusForbidden || errcode(body) != "M_FORBIDDEN" {
			t.Errorf("GET %s of a denied server: %d %s, want 403 M_FORBIDDEN", path, status, body)
		}
	}

	// A no longer sends B the room's events. (B would refuse them anyway,
	// A's host being denied too, so A's queue tells: with B down, what A
	// queued for B stays queued.)
	b.Stop()
	ctx := context.Background()
	secret := alice.SendText(room, "not for B")
	marker := alice.SendText(control, "marker")
	if err := a.HS.FedSender.Loop().Wait(ctx, a.HS.Syncer.Notifier().Current().Events); err != nil {
		t.Fatal(err)
	}
	queued, err := a.HS.DB().FederationQueue(ctx, roomdag.ServerName(b.Name()), 100)
	if err != nil {
		t.Fatal(err)
	}
	var events []string
	for _, it := range queued {
		events = append(events, string(it.Event))
	}
	if slices.Contains(events, secret) || !slices.Contains(events, marker) {
		t.Errorf("A's queue for B %v: want the control room's %s, not the denied room's %s", events, marker, secret)
	}
}

// TestFederatedForgedRequests: requests to A's federation API claiming
// to come from B are refused unless B's key signed them for A: a body
// other than the signed one, an origin B's key does not belong to, a
// destination other than A are 401 M_UNAUTHORIZED on /send (PDUs and
// EDUs alike: the transaction is refused whole), queries and room reads;
// a signed body that is not JSON is 400 M_NOT_JSON. The same requests
// signed properly are served.
func TestFederatedForgedRequests(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice, bob := a.Register("alice"), b.Register("bob")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	joinVia(t, bob, room, a)
	key, err := server.LoadOrCreateKey(b.Config.SigningKeyPath(), roomdag.ServerName(b.Name()))
	if err != nil {
		t.Fatal(err)
	}
	dest := roomdag.ServerName(a.Name())
	do := func(method, uri string, signed, sent []byte, edit func(*federation.XMatrix)) (int, string) {
		t.Helper()
		x, err := federation.SignRequest(key, dest, method, uri, signed)
		if err != nil {
			t.Fatal(err)
		}
		if edit != nil {
			edit(&x)
		}
		var body io.Reader
		if sent != nil {
			body = bytes.NewReader(sent)
		}
		req, err := http.NewRequest(method, a.URL+uri, body)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", x.String())
		if sent != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		rb, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, errcode(rb)
	}
	txn := func(n int) (string, []byte) {
		body, _ := json.Marshal(map[string]any{"origin": b.Name(), "origin_server_ts": time.Now().UnixMilli(), "pdus": []any{},
			"edus": []any{map[string]any{"edu_type": "m.typing", "content": map[string]any{"room_id": room, "user_id": bob.UserID, "typing": true}}}})
		return fmt.Sprintf("/_matrix/federation/v1/send/forged%d-%d", fedTxnCounter.Add(1), n), body
	}
	gets := []string{
		"/_matrix/federation/v1/query/profile?user_id=" + url.QueryEscape(alice.UserID),
		"/_matrix/federation/v1/state_ids/" + url.PathEscape(room) + "?event_id=" + url.QueryEscape(alice.SendText(room, "hi")),
	}
	other := roomdag.ServerName("127.0.0.1:1")
	for _, c := range []struct {
		name string
		body func([]byte) []byte
		edit func(*federation.XMatrix)
	}{
		{"body other than signed", func(b []byte) []byte {
			if b == nil {
				return nil
			}
			return bytes.Replace(b, []byte(`"typing":true`), []byte(`"typing":false`), 1)
		}, nil},
		{"signature of another request", nil, func(x *federation.XMatrix) {
			y, _ := federation.SignRequest(key, dest, "GET", "/_matrix/federation/v1/version", nil)
			x.Sig = y.Sig
		}},
		{"origin A (B's key)", nil, func(x *federation.XMatrix) { x.Origin = dest }},
		{"destination elsewhere", nil, func(x *federation.XMatrix) { x.Destination = other }},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := a.HS.FedTxns.Stats()
			uri, body := txn(0)
			sent := body
			if c.body != nil {
				sent = c.body(body)
			}
			if status, code := do("PUT", uri, body, sent, c.edit); status != http.StatusUnauthorized || code != "M_UNAUTHORIZED" {
				t.Errorf("/send: %d %s, want 401 M_UNAUTHORIZED", status, code)
			}
			if st := a.HS.FedTxns.Stats(); st != before {
				t.Errorf("a forged transaction was processed: %+v, then %+v", before, st)
			}
			if c.body != nil {
				return // GETs have no body to change
			}
			for _, g := range gets {
				if status, code := do("GET", g, nil, nil, c.edit); status != http.StatusUnauthorized || code != "M_UNAUTHORIZED" {
					t.Errorf("GET %s: %d %s, want 401 M_UNAUTHORIZED", g, status, code)
				}
			}
		})
	}
	uri, _ := txn(1)
	if status, code := do("PUT", uri, nil, []byte(`{"origin": `), nil); status != http.StatusBadRequest || code != "M_NOT_JSON" {
		t.Errorf("/send of a body that is not JSON: %d %s, want 400 M_NOT_JSON", status, code)
	}
	// Signed properly, the same requests are served.
	uri, body := txn(2)
	if status, code := do("PUT", uri, body, body, nil); status != http.StatusOK {
		t.Errorf("a signed /send: %d %s", status, code)
	}
	for _, g := range gets {
		if status, code := do("GET", g, nil, nil, nil); status != http.StatusOK {
			t.Errorf("a signed GET %s: %d %s", g, status, code)
		}
	}
}
