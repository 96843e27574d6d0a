package sync

import (
	"context"
	"time"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// TypingStore stores typing changes where several processes share the
// database (storage/sqlstore/typing.go). Each stored change is announced
// to every process, this one included, which hands it to
// Syncer.TypingCommitted.
type TypingStore interface {
	// PutTyping stores that user types in room until expiresMS, or with
	// expiresMS 0 stopped, and returns its typing stream position once
	// durable.
	PutTyping(ctx context.Context, room roomdag.RoomID, user roomdag.UserID, expiresMS int64) (int64, error)
	// ExpireTyping stores that user stopped if their stored notification
	// has run out at nowMS, reporting whether it did.
	ExpireTyping(ctx context.Context, room roomdag.RoomID, user roomdag.UserID, nowMS int64) (bool, error)
	// TypingSince returns the rows changed above after, oldest first, and
	// the stream's head, from one snapshot.
	TypingSince(ctx context.Context, after int64) ([]storage.TypingRow, int64, error)
}

// sharedTyping is the stored stream's state in this process; guarded by
// typing.mu.
type sharedTyping struct {
	// applied: every change at or below it is in the table.
	applied int64
	// pending holds changes heard of above applied+1, until the ones
	// before them arrive (another process's change may be announced after
	// a later one of this process's, which its commit hook applies at
	// once).
	pending map[int64]storage.TypingRow
}

type typingKey struct {
	room roomdag.RoomID
	user roomdag.UserID
}

// load reads the stored rows at start-up: the notifications still
// running, and the position of every room's last change, so that tokens
// from other processes (or from before a restart) read alike here.
func (t *typing) load() {
	rows, head, err := t.store.TypingSince(context.Background(), 0)
	if err != nil {
		t.log.Error("reading typing notifications", "err", err)
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.applyRowsLocked(rows, head)
}

// setShared stores the change; it is applied here when its announcement
// comes back (TypingCommitted), which the commit hook does before the
// write returns unless an earlier change of another process is still on
// its way, in which case the stream is read back so that the caller's next
// sync sees its own change.
func (t *typing) setShared(ctx context.Context, room roomdag.RoomID, user roomdag.UserID, on bool, timeout time.Duration) error {
	var expires int64
	if on {
		expires = t.clock.Now().Add(min(max(timeout, 0), MaxTypingTimeout)).UnixMilli()
	}
	pos, err := t.store.PutTyping(context.WithoutCancel(ctx), room, user, expires)
	if err != nil {
		return err
	}
	t.mu.Lock()
	behind := t.shared.applied < pos
	t.mu.Unlock()
	if behind {
		return t.catchUp(ctx)
	}
	return nil
}

// committed applies stored changes heard of (from this process's commit
// hook or another process's announcement), each once, in position order.
func (t *typing) committed(rows []storage.TypingRow) {
	t.mu.Lock()
	defer t.mu.Unlock()
	sh := &t.shared
	for _, r := range rows {
		if r.Pos > sh.applied {
			if sh.pending == nil {
				sh.pending = map[int64]storage.TypingRow{}
			}
			sh.pending[r.Pos] = r
		}
	}
	for {
		r, ok := sh.pending[sh.applied+1]
		if !ok {
			return
		}
		delete(sh.pending, r.Pos)
		t.applyLocked(r)
		sh.applied = r.Pos
		t.notifier.typingAt(r.Room, r.Pos)
	}
}

// catchUp reads the stored stream above what has been applied, after
// announcements may have been lost (a dropped connection) or to fill a
// gap at once.
func (t *typing) catchUp(ctx context.Context) error {
	t.mu.Lock()
	after := t.shared.applied
	t.mu.Unlock()
	rows, head, err := t.store.TypingSince(ctx, after)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.applyRowsLocked(rows, head)
	return nil
}

// applyRowsLocked applies rows read back with the stream's head: each row
// is the last change of its room and user, so every change up to head is
// then applied.
func (t *typing) applyRowsLocked(rows []storage.TypingRow, head int64) {
	sh := &t.shared
	var changed []roomdag.RoomID
	for _, r := range rows {
		if r.Pos > sh.applied {
			t.applyLocked(r)
			changed = append(changed, r.Room)
		}
	}
	if head > sh.applied {
		sh.applied = head
	}
	// The position rises once, to head, with every row in the table: a
	// token between two rows would hear of the later one twice.
	t.notifier.typingAt("", sh.applied)
	for _, room := range changed {
		t.notifier.typingAt(room, sh.applied)
	}
	for pos := range sh.pending {
		if pos <= sh.applied {
			delete(sh.pending, pos)
		}
	}
	// What was pending above head may now follow on.
	for {
		r, ok := sh.pending[sh.applied+1]
		if !ok {
			break
		}
		delete(sh.pending, r.Pos)
		t.applyLocked(r)
		sh.applied = r.Pos
		t.notifier.typingAt(r.Room, r.Pos)
	}
}

// applyLocked puts one stored change in the table at its position; the
// caller raises the notifier's position and wakes the room.
func (t *typing) applyLocked(r storage.TypingRow) {
	rt := t.rooms[r.Room]
	if rt == nil {
		rt = &roomTyping{users: map[roomdag.UserID]time.Time{}}
		t.rooms[r.Room] = rt
	}
	now := t.clock.Now()
	until := time.UnixMilli(r.ExpiresMS)
	if r.ExpiresMS == 0 || !until.After(now) {
		delete(rt.users, r.User)
	} else {
		rt.users[r.User] = until
		t.scheduleLocked(now, until, t.sweep)
	}
	if r.Pos > rt.pos {
		rt.pos = r.Pos
	}
}

// expireShared drops the notifications that have run out, now, and stores
// their expiry before it returns, so that a sync that follows hears of it.
// expiring serialises it between the sweeper and syncs: a sync that finds
// nothing left to expire still waits for the sweeper's writes in flight.
func (t *typing) expireShared() {
	t.expiring.Lock()
	defer t.expiring.Unlock()
	t.mu.Lock()
	now := t.clock.Now()
	var due []typingKey
	for room, rt := range t.rooms {
		for u, until := range rt.users {
			if !until.After(now) {
				// Gone from what this process serves at once; the stored
				// change moves the room's position.
				delete(rt.users, u)
				due = append(due, typingKey{room, u})
			}
		}
	}
	t.mu.Unlock()
	for _, k := range due {
		if _, err := t.store.ExpireTyping(context.Background(), k.room, k.user, now.UnixMilli()); err != nil {
			t.log.Error("storing the end of a typing notification", "room", k.room, "user", k.user, "err", err)
		}
	}
}

// sweepShared drops the notifications that run out, as they do, and
// stores their expiry: the change that moves the room's position, which
// every process (this one too) then applies. Every process sweeps; the
// first to store an expiry makes it (ExpireTyping), so no process owns the
// timeouts and none left behind by a process that died stays on.
func (t *typing) sweepShared(timer <-chan time.Time) {
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
		t.expireShared()
		t.mu.Lock()
		var next time.Time
		for _, rt := range t.rooms {
			for _, until := range rt.users {
				if next.IsZero() || until.Before(next) {
					next = until
				}
			}
		}
		if timer = t.againLocked(t.clock.Now(), next); timer == nil {
			t.mu.Unlock()
			return
		}
		t.mu.Unlock()
	}
}

// TypingCommitted applies stored typing changes: the commit hook's (this
// process's) and the announcements of the others'.
func (s *Syncer) TypingCommitted(rows []storage.TypingRow) {
	if s.typing.store != nil && len(rows) > 0 {
		s.typing.committed(rows)
	}
}

// TypingCatchUp reads back the typing changes this process may not have
// heard of, after announcements were lost.
func (s *Syncer) TypingCatchUp(ctx context.Context) error {
	if s.typing.store == nil {
		return nil
	}
	return s.typing.catchUp(ctx)
}
