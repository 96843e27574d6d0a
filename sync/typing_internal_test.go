package sync

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// noTypingStore is a shared stream nobody wrote to yet: the test hands
// the typing table its changes as announcements (committed).
type noTypingStore struct{}

func (noTypingStore) PutTyping(context.Context, roomdag.RoomID, roomdag.UserID, int64) (int64, error) {
	panic("not used")
}
func (noTypingStore) ExpireTyping(context.Context, roomdag.RoomID, roomdag.UserID, int64) (bool, error) {
	panic("not used")
}
func (noTypingStore) TypingSince(context.Context, int64) ([]storage.TypingRow, int64, error) {
	return nil, 0, nil
}

// TestTypingNotNewerThanToken: a sync takes its token's typing position
// first and reads who types afterwards; a change in between is left to
// the sync from that token. Told under the older token, the set would come
// again from it, and on a process that has not applied the next change
// yet the client would hear the stale set after the newer one (a flake of
// cluster/TestTypingTokensAcrossProcesses on PostgreSQL: bob heard
// carol's stop where alice's start was due).
func TestTypingNotNewerThanToken(t *testing.T) {
	const room = roomdag.RoomID("!r:hs")
	carol, alice := roomdag.UserID("@carol:hs"), roomdag.UserID("@alice:hs")
	clk := clock.NewFake(time.Now())
	expires := clk.Now().Add(time.Minute).UnixMilli()
	for _, shared := range []bool{false, true} {
		closing := make(chan struct{})
		n := NewNotifier("hs", Token{}, nil)
		var store TypingStore
		if shared {
			store = noTypingStore{}
		}
		ty := newTyping(clk, n, store, slog.New(slog.NewTextHandler(io.Discard, nil)), closing)
		pos := int64(0)
		change := func(user roomdag.UserID, on bool) {
			if !shared {
				ty.setLocal(room, user, on, time.Minute)
				return
			}
			pos++
			r := storage.TypingRow{Room: room, User: user, Pos: pos}
			if on {
				r.ExpiresMS = expires
			}
			ty.committed([]storage.TypingRow{r})
		}
		read := func(since int64, all bool) ([]roomdag.UserID, bool) {
			return ty.changedSince(room, since, n.Current().Typing, all)
		}

		change(carol, true)
		upto := n.Current().Typing // the token's position, taken first
		change(carol, false)       // then the change, before the read
		for _, all := range []bool{true, false} {
			if got, ok := ty.changedSince(room, 0, upto, all); ok {
				t.Fatalf("shared %v, all %v: a sync to typing position %d told %v, a set from after it", shared, all, upto, got)
			}
		}
		// The sync from that token hears of it, once.
		if got, ok := read(upto, false); !ok || len(got) != 0 {
			t.Fatalf("shared %v: sync from %d: %v (present %v), want nobody", shared, upto, got, ok)
		}
		since := n.Current().Typing
		if got, ok := read(since, false); ok {
			t.Fatalf("shared %v: sync from %d repeats %v", shared, since, got)
		}
		change(alice, true)
		if got, ok := read(since, false); !ok || !slices.Equal(got, []roomdag.UserID{alice}) {
			t.Fatalf("shared %v: sync from %d: %v (present %v), want alice", shared, since, got, ok)
		}
		close(closing)
		ty.mu.Lock()
		ty.closed = true
		ty.mu.Unlock()
		ty.wait()
	}
}
