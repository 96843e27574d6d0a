package compliance_test

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/compliance"
	"github.com/persistentchat/homeserver/roomdag"
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
	after := alice.SendText(room, "after the join")
	waitFor(t, "alice's message reaches B", func() bool {
		return bob.Do("GET", roomPath(room, "event", after), nil).Status == http.StatusOK
	})
	settle(t, b)
	rs, _ := records(t, export(t, admin, "room="+url.QueryEscape(room)))
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
	wantEventRecords(t, b)
	if rep, err := b.HS.ComplianceService().Verify(t.Context(), roomdag.UserID(admin.UserID), "test", 0); err != nil || !rep.OK() {
		t.Fatalf("verify on B: %+v, %v", rep, err)
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
