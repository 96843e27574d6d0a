package sync

import (
	"context"
	"log/slog"
	"slices"
	gosync "sync"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/roomdag"
)

// MaxTypingTimeout caps how long one typing notification lasts; clients
// renew it while the user keeps typing (spec: "Typing Notifications",
// client behaviour).
const MaxTypingTimeout = 120 * time.Second

// typing tracks who is typing in which room. On a database that one
// process has to itself it lives in memory only: typing notifications are
// ephemeral, and a restart forgets them (the typing position in tokens
// restarts at zero; Sync copes with tokens from before the restart).
//
// Where several processes share the database (store set), a sync token
// from one process must mean the same on every other, so a typing change
// is stored (TypingStore) and numbered by the database's writer, and every
// process applies the stored changes, its own and the others', in the
// order of their positions (typingshared.go): the table here is then a
// cache of the stored rows, and the typing position is the one up to
// which every change has been applied.
type typing struct {
	clock    clock.Clock
	notifier *Notifier
	store    TypingStore // nil: in memory only
	log      *slog.Logger

	mu    gosync.Mutex
	rooms map[roomdag.RoomID]*roomTyping
	// shared is the state of the stored stream (store set).
	shared sharedTyping
	// expiring is held while expiries are stored (expireShared); taken
	// before mu.
	expiring gosync.Mutex
	// sweeper wakes at the next expiry, so that a timeout reaches
	// long-polls without anyone asking; guarded by mu.
	sweeper
}

type roomTyping struct {
	users map[roomdag.UserID]time.Time // when each user's notification expires
	// pos is the typing position of the room's last change. A room whose
	// set became empty keeps its entry, so syncs from before the change
	// learn that nobody types any more.
	pos int64
}

func newTyping(clk clock.Clock, n *Notifier, store TypingStore, log *slog.Logger, closing <-chan struct{}) *typing {
	t := &typing{clock: clk, notifier: n, store: store, log: log, rooms: map[roomdag.RoomID]*roomTyping{}, sweeper: newSweeper(clk, closing)}
	if store != nil {
		t.load()
	}
	return t
}

// set marks user as typing in room for timeout (capped at
// MaxTypingTimeout), or as no longer typing. The caller has checked that
// the user may (is joined).
func (t *typing) set(ctx context.Context, room roomdag.RoomID, user roomdag.UserID, on bool, timeout time.Duration) error {
	if t.store != nil {
		return t.setShared(ctx, room, user, on, timeout)
	}
	t.setLocal(room, user, on, timeout)
	return nil
}

func (t *typing) setLocal(room roomdag.RoomID, user roomdag.UserID, on bool, timeout time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.clock.Now()
	t.expireLocked(now)
	rt := t.rooms[room]
	if !on {
		if rt == nil {
			return
		}
		if _, ok := rt.users[user]; ok {
			delete(rt.users, user)
			rt.pos = t.notifier.typingChanged(room)
		}
		return
	}
	timeout = min(max(timeout, 0), MaxTypingTimeout)
	if rt == nil {
		rt = &roomTyping{users: map[roomdag.UserID]time.Time{}}
		t.rooms[room] = rt
	}
	_, was := rt.users[user]
	until := now.Add(timeout)
	rt.users[user] = until
	if !was {
		rt.pos = t.notifier.typingChanged(room)
	}
	t.scheduleLocked(now, until, t.sweep)
}

// expire drops the notifications that have run out, now. With a store,
// it stores their expiries (expireShared).
func (t *typing) expire() {
	if t.store != nil {
		t.expireShared()
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expireLocked(t.clock.Now())
}

func (t *typing) expireLocked(now time.Time) {
	for room, rt := range t.rooms {
		changed := false
		for u, until := range rt.users {
			if !until.After(now) {
				delete(rt.users, u)
				changed = true
			}
		}
		if changed {
			rt.pos = t.notifier.typingChanged(room)
		}
	}
}

// sweep expires notifications as they run out, so that their end reaches
// long-polling clients; it exits once nobody is typing.
func (t *typing) sweep(timer <-chan time.Time) {
	if t.store != nil {
		t.sweepShared(timer)
		return
	}
	for {
		select {
		case <-timer:
		case timer = <-t.timers:
			continue
		case <-t.closing:
			t.mu.Lock()
			t.stopLocked()
			t.mu.Unlock()
			return
		}
		t.mu.Lock()
		now := t.clock.Now()
		t.expireLocked(now)
		var next time.Time
		for _, rt := range t.rooms {
			for _, until := range rt.users {
				if next.IsZero() || until.Before(next) {
					next = until
				}
			}
		}
		if timer = t.againLocked(now, next); timer == nil {
			t.mu.Unlock()
			return
		}
		t.mu.Unlock()
	}
}

// changedSince returns who is typing in room and whether a sync from
// typing position since to upto (the position its token gives) should
// hear of it: when the set changed after since, or, for a full sync (all),
// when anyone is typing. A set changed after upto is left to the sync
// from that token: told now, under a token from before the change, the
// set would reach the client again (and, on another process that has not
// applied the change yet, a stale set after the newer one).
func (t *typing) changedSince(room roomdag.RoomID, since, upto int64, all bool) ([]roomdag.UserID, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rt := t.rooms[room]
	if rt == nil || rt.pos > upto || (all && len(rt.users) == 0) || (!all && rt.pos <= since) {
		return nil, false
	}
	users := make([]roomdag.UserID, 0, len(rt.users))
	for u := range rt.users {
		users = append(users, u)
	}
	slices.Sort(users)
	return users, true
}
