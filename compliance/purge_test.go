package compliance_test

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/compliance"
	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/retention"
	"github.com/persistentchat/homeserver/testserver"
)

// bodies is the m.room.message bodies of room's timeline, from
// /messages.
func bodies(t *testing.T, c *testserver.Client, room string) []string {
	t.Helper()
	var out struct {
		Chunk []struct {
			Type    string         `json:"type"`
			Content map[string]any `json:"content"`
		} `json:"chunk"`
	}
	c.MustDo("GET", roomPath(room, "messages")+"?dir=b&limit=100", nil, &out)
	var bs []string
	for _, ev := range out.Chunk {
		if b, ok := ev.Content["body"].(string); ok && ev.Type == "m.room.message" {
			bs = append(bs, b)
		}
	}
	return bs
}

// payloads counts room's records of kind in the archive that still have
// their payload and those purged, at or before ts.
func payloads(t *testing.T, db *sql.DB, q func(string) string, room, kind string, beforeMS int64) (kept, purged int) {
	t.Helper()
	if err := db.QueryRow(q(`SELECT COUNT(payload), COUNT(*) - COUNT(payload) FROM compliance_records WHERE room = ? AND kind = ? AND ts < ?`),
		room, kind, beforeMS).Scan(&kept, &purged); err != nil {
		t.Fatal(err)
	}
	return kept, purged
}

// TestRetentionPurgesArchive: a purge job purges the room's history and
// the payloads of the archive's records of it, and nothing of another
// room or a held room; the chain still verifies; the purge is archived
// as an admin action.
func TestRetentionPurgesArchive(t *testing.T) {
	const jobInterval = time.Hour
	clk := clock.NewFake(time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC))
	srv := startArchiving(t, testserver.Options{Clock: clk, Configure: func(c *configs.Config) {
		c.Retention.Enabled = true
		c.Retention.AllowedLifetimeMin = configs.Duration(time.Hour)
		c.Retention.AllowedLifetimeMax = configs.Duration(30 * 24 * time.Hour)
		c.Retention.PurgeJobs = []configs.PurgeJob{{Interval: configs.Duration(jobInterval)}}
		c.Compliance.CheckpointInterval = configs.Duration(24 * time.Hour)
	}})
	admin := registerAdmin(t, srv, "purgeadmin")
	alice := srv.Register("alice")
	room := func(maxLifetime time.Duration) string {
		return alice.CreateRoom(map[string]any{"preset": "public_chat", "initial_state": []any{map[string]any{
			"type": "m.room.retention", "state_key": "", "content": map[string]any{"max_lifetime": maxLifetime.Milliseconds()}}}})
	}
	purged, held, long := room(time.Hour), room(time.Hour), room(30*24*time.Hour)
	for _, r := range []string{purged, held, long} {
		for _, m := range []string{"old one", "old two", "old three"} {
			alice.SendText(r, m)
		}
	}
	admin.MustDo("POST", retention.AdminPrefix+"/holds", map[string]any{"room_id": held, "reason": "litigation"}, nil)
	settle(t, srv)

	// Two job runs: the second's cut-off (now less an hour) is past the
	// messages.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	p := srv.HS.Retention
	for i := 1; i <= 2; i++ {
		if err := p.WaitStats(ctx, func(s retention.Stats) bool { return s.Waits >= i }); err != nil {
			t.Fatal(err)
		}
		clk.Advance(jobInterval)
		if err := p.WaitStats(ctx, func(s retention.Stats) bool { return s.Runs >= i }); err != nil {
			t.Fatal(err)
		}
	}
	if s := p.Stats(); s.Failures > 0 || s.Events == 0 {
		t.Fatalf("purge stats %+v", s)
	}
	settle(t, srv)
	cutoff := clk.Now().Add(-time.Hour).UnixMilli()

	if got := bodies(t, alice, purged); len(got) > 1 { // the newest event stays
		t.Errorf("purged room still shows %q", got)
	}
	for _, r := range []string{held, long} {
		if got := bodies(t, alice, r); len(got) != 3 {
			t.Errorf("room %s shows %q, want its 3 messages", r, got)
		}
	}

	db, q := rw(t, srv)
	if kept, gone := payloads(t, db, q, purged, compliance.KindEvent, cutoff); kept != 0 || gone == 0 {
		t.Errorf("purged room's old event records: %d kept, %d purged; want 0 kept", kept, gone)
	}
	for name, r := range map[string]string{"held": held, "long-lived": long} {
		if kept, gone := payloads(t, db, q, r, compliance.KindEvent, cutoff); gone != 0 || kept == 0 {
			t.Errorf("%s room's event records: %d kept, %d purged; want none purged", name, kept, gone)
		}
	}
	var payload string
	if err := db.QueryRow(q(`SELECT payload FROM compliance_records WHERE kind = ? AND room = ? AND payload LIKE ?`),
		compliance.KindAdminAction, purged, "%retention.archive_purge%").Scan(&payload); err != nil {
		t.Fatalf("the archive purge is not archived as an admin action: %v", err)
	}
	if !strings.Contains(payload, `"records":`) || !strings.Contains(payload, `"before_ms":`) {
		t.Errorf("archive purge record %s", payload)
	}

	rep, err := srv.HS.ComplianceService().Verify(ctx, "@purgeadmin:localhost", "test", 0)
	if err != nil || !rep.OK() || rep.Records == 0 {
		t.Fatalf("verify after the purge: %+v, %v", rep, err)
	}

	// The held room's payloads stay on later runs too; once released,
	// the next run purges them.
	var hold struct {
		Holds []struct {
			ID int64 `json:"hold_id"`
		} `json:"holds"`
	}
	admin.MustDo("GET", retention.AdminPrefix+"/holds", nil, &hold)
	if len(hold.Holds) != 1 {
		t.Fatalf("holds %+v", hold)
	}
	admin.MustDo("DELETE", retention.AdminPrefix+"/holds/"+strconv.FormatInt(hold.Holds[0].ID, 10), nil, nil)
	if err := p.WaitStats(ctx, func(s retention.Stats) bool { return s.Waits >= 3 }); err != nil {
		t.Fatal(err)
	}
	clk.Advance(jobInterval)
	if err := p.WaitStats(ctx, func(s retention.Stats) bool { return s.Runs >= 3 }); err != nil {
		t.Fatal(err)
	}
	settle(t, srv)
	if kept, _ := payloads(t, db, q, held, compliance.KindEvent, cutoff); kept != 0 {
		t.Errorf("released room's old event records: %d kept", kept)
	}
	if rep, err := srv.HS.ComplianceService().Verify(ctx, "@purgeadmin:localhost", "test", 0); err != nil || !rep.OK() {
		t.Fatalf("verify after the second purge: %+v, %v", rep, err)
	}
}

// TestCheckpointTimer: on a quiet server the checkpoint timer seals the
// records appended since the last checkpoint, with no further record.
func TestCheckpointTimer(t *testing.T) {
	const every = time.Hour
	clk := clock.NewFake(time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC))
	srv := testserver.Start(t, testserver.Options{Clock: clk, Configure: func(c *configs.Config) {
		archiving(c)
		c.Compliance.CheckpointRecords = 1 << 20
		c.Compliance.CheckpointInterval = configs.Duration(every)
	}})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	svc := srv.HS.ComplianceService()
	status := func() *compliance.Status {
		t.Helper()
		pos, err := srv.HS.DB().EventPos(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.HS.Compliance.Wait(ctx, pos); err != nil {
			t.Fatal(err)
		}
		st, err := svc.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	alice := srv.Register("alice")
	room := alice.CreateRoom(map[string]any{"preset": "private_chat"})
	st := status()
	sealed := st.SealedSeq
	alice.SendText(room, "unsealed")
	st = status()
	if st.SealedSeq != sealed || st.HeadSeq <= st.SealedSeq {
		t.Fatalf("before the timer: %+v (sealed %d before the message); want the message unsealed", st, sealed)
	}
	// The first timer was set at start; once it fires the next is set.
	if err := srv.HS.Compliance.WaitTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(every)
	if err := srv.HS.Compliance.WaitTimers(ctx, 2); err != nil {
		t.Fatal(err)
	}
	// The seal follows the wake-up on the loop: poll with a deadline.
	for st = status(); st.SealedSeq != st.HeadSeq && ctx.Err() == nil; st = status() {
		wctx, wcancel := context.WithTimeout(ctx, 20*time.Millisecond)
		<-wctx.Done()
		wcancel()
	}
	if st.SealedSeq != st.HeadSeq {
		t.Fatalf("after the timer: %+v; want the head sealed", st)
	}
	rep, err := svc.Verify(ctx, "@alice:localhost", "test", 0)
	if err != nil || !rep.OK() || rep.Head != st.HeadSeq {
		t.Fatalf("verify: %+v, %v", rep, err)
	}
}

// TestHeldUserRecordsSurvivePurge: in a room whose history expires, a
// legal hold on one user keeps that user's messages, in the room and in
// the archive, record by record, while the others' are purged from both;
// the chain still verifies, and the held user's export still holds the
// messages. Once the hold is released the next purge takes them too.
func TestHeldUserRecordsSurvivePurge(t *testing.T) {
	const jobInterval = time.Hour
	clk := clock.NewFake(time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC))
	srv := startArchiving(t, testserver.Options{Clock: clk, Configure: func(c *configs.Config) {
		c.Retention.Enabled = true
		c.Retention.AllowedLifetimeMin = configs.Duration(time.Hour)
		c.Retention.PurgeJobs = []configs.PurgeJob{{Interval: configs.Duration(jobInterval)}}
		c.Compliance.CheckpointInterval = configs.Duration(24 * time.Hour)
	}})
	admin := registerAdmin(t, srv, "holdadmin")
	alice, bob := srv.Register("alice"), srv.Register("bob")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat", "initial_state": []any{map[string]any{
		"type": "m.room.retention", "state_key": "", "content": map[string]any{"max_lifetime": time.Hour.Milliseconds()}}}})
	bob.Join(room)
	for i := range 3 {
		alice.SendText(room, fmt.Sprint("alice old ", i))
		bob.SendText(room, fmt.Sprint("bob held ", i))
	}
	var hold struct {
		ID int64 `json:"hold_id"`
	}
	admin.MustDo("POST", retention.AdminPrefix+"/holds", map[string]any{"user_id": bob.UserID, "reason": "matter 9"}, &hold)
	settle(t, srv)

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	p := srv.HS.Retention
	runs := 0
	run := func() {
		t.Helper()
		runs++
		if err := p.WaitStats(ctx, func(s retention.Stats) bool { return s.Waits >= runs }); err != nil {
			t.Fatal(err)
		}
		clk.Advance(jobInterval)
		if err := p.WaitStats(ctx, func(s retention.Stats) bool { return s.Runs >= runs }); err != nil {
			t.Fatal(err)
		}
		if s := p.Stats(); s.Failures > 0 {
			t.Fatalf("purge stats %+v", s)
		}
		settle(t, srv)
	}
	run()
	run() // now less an hour is past every message
	cutoff := clk.Now().Add(-time.Hour).UnixMilli()

	got := strings.Join(bodies(t, alice, room), "|")
	for i := range 3 {
		if !strings.Contains(got, fmt.Sprint("bob held ", i)) {
			t.Errorf("the held user's message %d is gone from the room: %q", i, got)
		}
	}
	if strings.Contains(got, "alice old 0") {
		t.Errorf("the unheld user's messages stay in the room: %q", got)
	}

	db, q := rw(t, srv)
	byActor := func(actor string) (kept, purged int) {
		t.Helper()
		if err := db.QueryRow(q(`SELECT COUNT(payload), COUNT(*) - COUNT(payload) FROM compliance_records
			WHERE room = ? AND kind = ? AND actor = ? AND ts < ?`), room, compliance.KindEvent, actor, cutoff).Scan(&kept, &purged); err != nil {
			t.Fatal(err)
		}
		return kept, purged
	}
	if kept, purged := byActor(bob.UserID); kept < 4 || purged != 0 { // his join and three messages
		t.Errorf("the held user's records: %d kept, %d purged; want all kept", kept, purged)
	}
	if kept, purged := byActor(alice.UserID); kept != 0 || purged < 3 {
		t.Errorf("the unheld user's records: %d kept, %d purged; want all purged", kept, purged)
	}
	rep, err := srv.HS.ComplianceService().Verify(ctx, "@holdadmin:localhost", "test", 0)
	if err != nil || !rep.OK() {
		t.Fatalf("verify after the purge: %+v, %v", rep, err)
	}
	rs, _ := records(t, export(t, admin, "user="+url.QueryEscape(bob.UserID)))
	for i := range 3 {
		if !archivedIn(rs, compliance.KindEvent, fmt.Sprint("bob held ", i)) {
			t.Errorf("the held user's export lacks message %d", i)
		}
	}

	admin.MustDo("DELETE", retention.AdminPrefix+"/holds/"+strconv.FormatInt(hold.ID, 10), nil, nil)
	alice.SendText(room, "newest") // so that bob's last message is not the room's newest
	run()
	if kept, _ := byActor(bob.UserID); kept != 0 {
		t.Errorf("after the release: %d of the user's old records kept", kept)
	}
	if rep, err := srv.HS.ComplianceService().Verify(ctx, "@holdadmin:localhost", "test", 0); err != nil || !rep.OK() {
		t.Fatalf("verify after the second purge: %+v, %v", rep, err)
	}
}
