package retention_test

import (
	"context"
	"log/slog"
	gosync "sync"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/retention"
	"github.com/persistentchat/homeserver/roomdag"
)

// archive and recorder stand in for the compliance archive, which
// implements both hooks: they remember what they were told.
type archive struct {
	mu     gosync.Mutex
	purges map[roomdag.RoomID]time.Time
}

func (a *archive) PurgeBefore(ctx context.Context, room roomdag.RoomID, before time.Time) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.purges[room] = before
	return 0, nil
}

type recorder struct {
	mu      gosync.Mutex
	actions []retention.AdminAction
}

func (r *recorder) RecordAdminAction(ctx context.Context, a retention.AdminAction) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.actions = append(r.actions, a)
	return nil
}

// TestHooks: the archive is asked to purge a room purged here, a room
// where a held user's events remain too (the archive keeps those records
// itself), never a held room; every hold, release and purge is told to
// the recorder.
func TestHooks(t *testing.T) {
	e := startWith(t, false) // this test runs its own purger
	db := e.srv.HS.DB()
	rec := &recorder{}
	arch := &archive{purges: map[roomdag.RoomID]time.Time{}}
	holds := retention.NewHolds(db, e.clk, slog.Default(), rec)
	p := retention.NewPurger(retention.PurgerConfig{Server: "localhost", Archive: arch,
		Policy: retention.Policy{AllowedMin: time.Hour}}, db, holds, e.clk, slog.Default())

	alice := e.srv.Register("alice")
	bob := e.srv.Register("bob")
	free := e.room(alice, time.Hour.Milliseconds())
	heldRoom := e.room(alice, time.Hour.Milliseconds())
	withBob := e.room(alice, time.Hour.Milliseconds())
	bob.Join(withBob)
	for _, r := range []string{free, heldRoom, withBob} {
		alice.SendText(r, "old")
	}
	bob.SendText(withBob, "old from bob")
	for _, r := range []string{free, heldRoom, withBob} {
		alice.SendText(r, "newest")
	}
	ctx := context.Background()
	rh, err := holds.Create(ctx, "@admin:localhost", "", roomdag.RoomID(heldRoom), "matter")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := holds.Create(ctx, "@admin:localhost", roomdag.UserID(bob.UserID), "", "matter"); err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(2 * time.Hour)
	if err := p.RunJob(ctx, retention.Job{Interval: time.Hour}); err != nil {
		t.Fatal(err)
	}
	want := e.clk.Now().Add(-time.Hour)
	for _, r := range []string{free, withBob} {
		if got, ok := arch.purges[roomdag.RoomID(r)]; !ok || !got.Equal(want) || len(arch.purges) != 2 {
			t.Errorf("archive purges %v, want %s and %s before %v", arch.purges, free, withBob, want)
		}
	}
	if _, err := holds.Release(ctx, "@admin:localhost", rh.ID); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range rec.actions {
		got = append(got, a.Action+" "+string(a.Room)+string(a.User))
	}
	wantActions := []string{"hold.create " + heldRoom, "hold.create " + bob.UserID, "retention.purge " + free, "retention.purge " + withBob, "hold.release " + heldRoom}
	if len(got) != len(wantActions) {
		t.Fatalf("recorded %q, want %q", got, wantActions)
	}
	for i := range got {
		if got[i] != wantActions[i] {
			t.Errorf("recorded %q, want %q", got, wantActions)
			break
		}
	}
	if a := rec.actions[2]; a.Events == 0 || !a.Before.Equal(want) || a.Actor != "" {
		t.Errorf("purge record %+v", a)
	}
	if a := rec.actions[0]; a.Actor != "@admin:localhost" || a.Reason != "matter" || a.HoldID != rh.ID {
		t.Errorf("hold record %+v", a)
	}
}
