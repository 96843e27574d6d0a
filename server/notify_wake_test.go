package server_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/push"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/testserver"
)

// recordingWaker keeps what the worker announced.
type recordingWaker struct{ users [][]roomdag.UserID }

func (r *recordingWaker) NotificationsAdded(_ roomdag.StreamPos, users []roomdag.UserID) {
	u := slices.Clone(users)
	slices.Sort(u)
	r.users = append(r.users, u)
}

// TestNotifyWakesEveryNotifiedMember: when one step of the worker takes
// several events of a room, every member notified by any of them is
// woken (the pusher sender relies on it): a member whose own message came
// first, and a member who joined between two messages.
func TestNotifyWakesEveryNotifiedMember(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	alice, bob, carol := srv.Register("wakealice"), srv.Register("wakebob"), srv.Register("wakecarol")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	bob.Join(room)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := srv.HS.Notifications.Wait(ctx, srv.HS.Syncer.Notifier().Current().Events); err != nil {
		t.Fatal(err)
	}
	srv.HS.Notifications.Stop()
	rec := &recordingWaker{}
	w := push.NewWorker(srv.HS.DB(), rec, srv.HS.Rooms.ServerName(), clock.Real{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	content := json.RawMessage(`{"msgtype":"m.text","body":"hi"}`)
	appendEv := func(p roomdag.ProtoEvent) {
		t.Helper()
		if _, _, err := srv.HS.Rooms.Append(ctx, roomdag.RoomID(room), p); err != nil {
			t.Fatal(err)
		}
	}
	step := func(want int) []roomdag.UserID {
		t.Helper()
		rec.users = nil
		if n, err := w.Step(ctx); err != nil || n != want {
			t.Fatalf("step processed %d events, want %d: %v", n, want, err)
		}
		if len(rec.users) != 1 {
			t.Fatalf("step announced %d times, want once", len(rec.users))
		}
		return rec.users[0]
	}
	a, b, c := roomdag.UserID(alice.UserID), roomdag.UserID(bob.UserID), roomdag.UserID(carol.UserID)
	appendEv(roomdag.ProtoEvent{Type: "m.room.message", Sender: a, Content: content})
	appendEv(roomdag.ProtoEvent{Type: "m.room.message", Sender: b, Content: content})
	if got, want := step(2), []roomdag.UserID{a, b}; !slices.Equal(got, want) {
		t.Errorf("woken after alice's then bob's message = %v, want %v", got, want)
	}

	appendEv(roomdag.ProtoEvent{Type: "m.room.message", Sender: a, Content: content})
	stateKey := string(c)
	appendEv(roomdag.ProtoEvent{Type: roomdag.TypeMember, StateKey: &stateKey, Sender: c, Content: json.RawMessage(`{"membership":"join"}`)})
	appendEv(roomdag.ProtoEvent{Type: "m.room.message", Sender: a, Content: content})
	got := step(3)
	if want := []roomdag.UserID{b, c}; !slices.Equal(got, want) {
		t.Errorf("woken around carol's join = %v, want %v", got, want)
	}
}
