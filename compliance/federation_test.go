package compliance_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/compliance"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/server"
	"github.com/persistentchat/homeserver/testserver"
)

// TestFederatedEventsArchived: events a server receives over federation
// are archived like its own. Bob of B joins alice's room on A; alice's
// message after the join reaches B live (/send), the history before it
// when bob pages back (/backfill). B's archive holds both, every event B
// stores exactly once, its chain verifies, and bob's export holds
// alice's message sent while he was in the room.
func TestFederatedEventsArchived(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{Configure: archiving})
	a, b := fed[0], fed[1]
	alice := a.Register("alice")
	bob := b.Register("bob")
	admin := registerAdmin(t, b, "auditor")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	const before = 15
	for i := range before {
		alice.SendText(room, fmt.Sprint("before the join ", i))
	}
	bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?via="+url.QueryEscape(a.Name()), map[string]any{}, nil)
	// B takes the room's state from the join's answer as outliers, then
	// backfills: each state event is archived as received state while
	// still outside B's timeline, or as an event once in it.
	settle(t, b)
	rs, _ := records(t, export(t, admin, "room="+url.QueryEscape(room)))
	st, err := b.HS.Rooms.State(t.Context(), roomdag.RoomID(room))
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range st.State {
		id := `"event_id":"` + string(ev.ID()) + `"`
		if !archivedIn(rs, compliance.KindReceived, `"status":"outlier"`, id) && !archivedIn(rs, compliance.KindEvent, id) {
			t.Errorf("B's archive lacks the room's %s %s received with the join", ev.Type(), ev.ID())
		}
	}
	after := alice.SendText(room, "after the join")
	waitFor(t, "alice's message reaches B", func() bool {
		return bob.Do("GET", roomPath(room, "event", after), nil).Status == http.StatusOK
	})
	settle(t, b)
	rs, _ = records(t, export(t, admin, "room="+url.QueryEscape(room)))
	if !archivedIn(rs, compliance.KindEvent, `"event_id":"`+after, "after the join") {
		t.Error("B's archive lacks alice's message received over /send")
	}
	rs, _ = records(t, export(t, admin, "user="+url.QueryEscape(bob.UserID)))
	if !archivedIn(rs, compliance.KindEvent, "after the join", `"sender":"`+alice.UserID) {
		t.Error("bob's export on B lacks alice's message sent while he was in the room")
	}

	// Paging back fetches the history from A: B stores it, and archives it.
	for from := ""; ; {
		var page struct {
			Chunk []any  `json:"chunk"`
			End   string `json:"end"`
		}
		bob.MustDo("GET", roomPath(room, "messages")+"?dir=b&limit=10&from="+url.QueryEscape(from), nil, &page)
		if page.End == "" || len(page.Chunk) == 0 {
			break
		}
		from = page.End
	}
	settle(t, b)
	rs, _ = records(t, export(t, admin, "room="+url.QueryEscape(room)))
	for i := range before {
		if !archivedIn(rs, compliance.KindEvent, fmt.Sprint("before the join ", i)) {
			t.Errorf("B's archive lacks the backfilled message %d", i)
		}
	}
	// A message A sends for a user of A's who never joined: B rejects
	// it, and archives it with its status, as received.
	stateOnB := func() *roomdag.RoomState {
		t.Helper()
		st, err := b.HS.Rooms.State(t.Context(), roomdag.RoomID(room))
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	statusOnB := func(ev *roomdag.Event) roomdag.DAGStatus {
		t.Helper()
		dag, err := b.HS.DB().DAGEvents(t.Context(), []roomdag.EventID{ev.ID()})
		if err != nil || dag[ev.ID()] == nil {
			t.Fatalf("%s on B: %v", ev.ID(), err)
		}
		return dag[ev.ID()].Status
	}
	mallory := roomdag.UserID("@mallory:" + a.Name())
	bad := buildAs(t, a, roomdag.RoomID(room), stateOnB(), mallory, "m.room.message", `{"msgtype":"m.text","body":"not a member"}`)
	sendPDU(t, a, b, bad)
	if s := statusOnB(bad); s != roomdag.StatusRejected {
		t.Fatalf("mallory's message on B: %v, want rejected", s)
	}
	// Carol of A joins, then alice bans her; a message of carol's built
	// on the room before the ban passes its own auth but not the room's
	// current state: B soft-fails it, and archives it so.
	carol := a.Register("carol")
	carol.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
	waitFor(t, "carol's join reaches B", func() bool { return stateOnB().Membership(roomdag.UserID(carol.UserID)) == roomdag.MembershipJoin })
	beforeBan := stateOnB()
	alice.MustDo("POST", roomPath(room, "ban"), map[string]any{"user_id": carol.UserID}, nil)
	waitFor(t, "carol's ban reaches B", func() bool { return stateOnB().Membership(roomdag.UserID(carol.UserID)) == roomdag.MembershipBan })
	late := buildAs(t, a, roomdag.RoomID(room), beforeBan, roomdag.UserID(carol.UserID), "m.room.message", `{"msgtype":"m.text","body":"sent past the ban"}`)
	sendPDU(t, a, b, late)
	if s := statusOnB(late); s != roomdag.StatusSoftFailed {
		t.Fatalf("carol's message past the ban on B: %v, want soft-failed", s)
	}
	settle(t, b)
	rs, _ = records(t, export(t, admin, "room="+url.QueryEscape(room)))
	if !archivedIn(rs, compliance.KindReceived, `"event_id":"`+string(bad.ID()), `"status":"rejected"`, `"reason":"`, "not a member") {
		t.Error("B's archive lacks the rejected message with its status")
	}
	if !archivedIn(rs, compliance.KindReceived, `"event_id":"`+string(late.ID()), `"status":"soft_failed"`, "sent past the ban") {
		t.Error("B's archive lacks the soft-failed message with its status")
	}
	wantEventRecords(t, b)
	var received, unarchived int64
	if err := b.SQL().QueryRow(`SELECT COUNT(*), COALESCE(SUM(CASE WHEN archived = 0 THEN 1 ELSE 0 END), 0) FROM dag_events`).Scan(&received, &unarchived); err != nil {
		t.Fatal(err)
	}
	var recs int64
	if err := b.SQL().QueryRow(`SELECT COUNT(*) FROM compliance_records WHERE kind = 'received_event'`).Scan(&recs); err != nil {
		t.Fatal(err)
	}
	if unarchived != 0 || recs < received {
		t.Errorf("%d received records for %d events outside B's timeline, %d not archived", recs, received, unarchived)
	}
	if rep, err := b.HS.ComplianceService().Verify(t.Context(), roomdag.UserID(admin.UserID), "test", 0); err != nil || !rep.OK() {
		t.Fatalf("verify on B: %+v, %v", rep, err)
	}
}

// buildAs builds an event of A's server (signed with its key) on top of
// st, a state of room on B.
func buildAs(t *testing.T, a *testserver.Server, room roomdag.RoomID, st *roomdag.RoomState, sender roomdag.UserID, typ, content string) *roomdag.Event {
	t.Helper()
	key, err := server.LoadOrCreateKey(a.Config.SigningKeyPath(), roomdag.ServerName(a.Name()))
	if err != nil {
		t.Fatal(err)
	}
	var auth []roomdag.EventID
	for _, k := range roomdag.AuthEventTuples(st.Version, typ, nil, sender, []byte(content)) {
		if ev := st.State[k]; ev != nil {
			auth = append(auth, ev.ID())
		}
	}
	ev, err := roomdag.BuildEvent(st.Version, key, roomdag.EventTemplate{RoomID: room, Sender: sender, Type: typ,
		Content: json.RawMessage(content), PrevEvents: st.Extremities, AuthEvents: auth, Depth: st.Depth + 1, OriginServerTS: time.Now().UnixMilli()})
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// sendPDU sends ev from one server to another in a /send transaction.
func sendPDU(t *testing.T, from, to *testserver.Server, ev *roomdag.Event) {
	t.Helper()
	txn, err := json.Marshal(map[string]any{"origin": from.Name(), "origin_server_ts": time.Now().UnixMilli(), "pdus": []json.RawMessage{ev.JSON()}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "/_matrix/federation/v1/send/compliance-"+string(ev.ID()), bytes.NewReader(txn))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := from.HS.Federation.Do(ctx, roomdag.ServerName(to.Name()), req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/send: %d %s", resp.StatusCode, body)
	}
}

// waitFor polls cond until it holds, failing the test after 30 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not yet: %s", what)
		}
		time.Sleep(20 * time.Millisecond) // the poll's interval, not a wait for an event
	}
}
