// Package cluster makes the processes that share one PostgreSQL database
// behave as one homeserver: each hears of the others' commits (the
// payloads that storage.EncodeChange makes, sent with NOTIFY in the
// committing transaction) and applies them as if they were its own: it
// wakes the long-polls the change concerns, feeds the write path's
// listeners the events read back from storage, and drops what its caches
// hold of what changed. SQLite has one process and uses none of this.
package cluster

import (
	"context"
	"log/slog"
	gosync "sync"
	"time"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"github.com/persistentchat/homeserver/sync"
)

// Store is what the follower reads back and invalidates
// (storage/sqlstore).
type Store interface {
	StreamEvents(ctx context.Context, after roomdag.StreamPos, limit int) ([]storage.StreamEvent, error)
	StreamHeads(ctx context.Context) (storage.StreamHeads, error)
	// ReloadErased re-reads the erased users; ForgetEvent drops an event
	// from the event cache.
	ReloadErased(ctx context.Context) error
	ForgetEvent(id roomdag.EventID)
	// AnnounceNow sends a payload to the other processes at once.
	AnnounceNow(ctx context.Context, payload string) error
}

// Rooms is the write path's room cache.
type Rooms interface {
	Invalidate(id roomdag.RoomID)
}

// Waker hears of the notification worker's steps (push.Waker).
type Waker interface {
	NotificationsAdded(pos roomdag.StreamPos, users []roomdag.UserID)
}

// Parts are what a follower drives.
type Parts struct {
	Origin   string // this process, as its store announces it
	Store    Store
	Rooms    Rooms
	Notifier *sync.Notifier
	Syncer   *sync.Syncer
	// Listeners hear of every event another process commits, as the
	// write path's listeners hear of local ones.
	Listeners []roomdag.Listener
	// Wakers hear of the notification worker's steps in other processes.
	Wakers Waker
	Log    *slog.Logger
}

// Follower applies the changes of the other processes. Deliver and
// Connected are called from one goroutine (the listening connection's);
// Local from the store's writer.
type Follower struct {
	p Parts

	// reading is held while events are read back and fed, by Deliver
	// and Barrier alike, so each event is fed once, in order.
	reading gosync.Mutex

	mu gosync.Mutex
	// applied: every event at or below it is known to the listeners here,
	// fed either by the local write path or by this follower.
	applied roomdag.StreamPos
	// local are the event ranges this process committed above applied,
	// which a catch-up read must not feed again.
	local [][2]roomdag.StreamPos
}

// New makes a follower that knows every event up to applied (the event
// stream position the server started from).
func New(p Parts, applied roomdag.StreamPos) *Follower {
	return &Follower{p: p, applied: applied}
}

// readPage bounds each read of events back from storage.
const readPage = 200

// Local is the store's commit hook (sqlstore.SetCommitHook) in a process
// that shares its database: it announces the change here, as on SQLite,
// and remembers the event range as this process's own.
func (f *Follower) Local(c *storage.Change) {
	f.p.Notifier.Apply(c)
	f.p.Syncer.TypingCommitted(c.Typing)
	if c.LastEvent == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if c.LastEvent > f.applied {
		f.local = append(f.local, [2]roomdag.StreamPos{max(c.FirstEvent, f.applied+1), c.LastEvent})
	}
}

// Deliver applies one payload from the channel.
func (f *Follower) Deliver(payload string) {
	a, err := storage.DecodeChange(payload)
	if err != nil {
		f.p.Log.Error("cluster: a change payload that does not parse", "err", err)
		return
	}
	if a.Origin == f.p.Origin {
		// Announced and fed here at the commit; everything before it
		// has been delivered (payloads come in commit order).
		if c := &a.Change; c.LastEvent != 0 {
			f.mu.Lock()
			f.advanceLocked(c.LastEvent)
			f.mu.Unlock()
		}
		return
	}
	for _, act := range a.Activity {
		f.p.Syncer.PresenceActivityElsewhere(a.Origin, act.User, act.Connected)
	}
	if a.Reload {
		f.catchUp()
		return
	}
	c := &a.Change
	ctx := context.Background()
	// The sessions and erasures first: the events that follow them (a
	// deactivated user's leaves) must find them in effect.
	if len(c.Erased) > 0 {
		if err := f.p.Store.ReloadErased(ctx); err != nil {
			f.p.Log.Error("cluster: reloading erased users", "err", err)
		}
	}
	if len(c.SessionsEnded) > 0 {
		f.p.Notifier.SessionsEndedElsewhere(c.SessionsEnded)
	}
	if c.LastEvent != 0 {
		if err := f.readEvents(ctx, c.LastEvent); err != nil {
			f.p.Log.Error("cluster: reading other processes' events", "err", err)
			f.catchUp()
			return
		}
	}
	f.p.Notifier.Apply(c)
	f.p.Syncer.TypingCommitted(c.Typing)
	for _, p := range c.Presence {
		f.p.Syncer.PresenceElsewhere(p.User, p.Pos)
	}
	if n := c.Notifications; n != nil && f.p.Wakers != nil {
		f.p.Wakers.NotificationsAdded(n.Pos, n.Users)
	}
}

// Connected runs after the listening connection (re)connects: what was
// announced while none listened is lost, so it reads every stream from
// the positions known here and wakes everybody.
func (f *Follower) Connected() {
	f.catchUp()
}

func (f *Follower) catchUp() {
	ctx := context.Background()
	log := f.p.Log
	h, err := f.p.Store.StreamHeads(ctx)
	if err == nil {
		err = f.readEvents(ctx, h.Events)
	}
	if err != nil {
		log.Error("cluster: catching up with the streams", "err", err)
		return // the next payload or reconnection tries again
	}
	cur := tokenOf(h)
	if err := f.p.Store.ReloadErased(ctx); err != nil {
		log.Error("cluster: catching up", "err", err)
	}
	f.p.Syncer.ReloadPresence()
	if err := f.p.Syncer.TypingCatchUp(ctx); err != nil {
		log.Error("cluster: catching up with typing", "err", err)
	}
	if f.p.Wakers != nil {
		f.p.Wakers.NotificationsAdded(cur.Notifications, nil)
	}
	f.p.Notifier.CaughtUp(cur)
}

// readEvents feeds the listeners the events in (applied, upTo] that this
// process did not commit, dropping first what the caches hold of what
// they change. Caller: the delivering goroutine.
func (f *Follower) readEvents(ctx context.Context, upTo roomdag.StreamPos) error {
	f.reading.Lock()
	defer f.reading.Unlock()
	f.mu.Lock()
	from := f.applied
	f.mu.Unlock()
	for from < upTo {
		evs, err := f.p.Store.StreamEvents(ctx, from, min(readPage, int(upTo-from)))
		if err != nil {
			return err
		}
		if len(evs) == 0 {
			break // not visible yet: the next payload or catch-up reads it
		}
		for _, e := range evs {
			if e.Pos > upTo {
				break
			}
			from = e.Pos
			if f.isLocal(e.Pos) {
				continue
			}
			f.invalidate(e.StoredEvent)
			for _, l := range f.p.Listeners {
				l.EventCommitted(e.Event, e.Pos)
			}
		}
		f.mu.Lock()
		f.advanceLocked(from)
		f.mu.Unlock()
	}
	return nil
}

// invalidate drops what this process caches of what ev changed: the
// room's state for a state event, a merge of forks or a redaction (a redacted state event
// stays in the state, stripped), the redacted event.
func (f *Follower) invalidate(ev *roomdag.StoredEvent) {
	if ev.Type() == roomdag.TypeRedaction && ev.Redacts() != "" {
		f.p.Store.ForgetEvent(ev.Redacts())
		f.p.Rooms.Invalidate(ev.RoomID())
		return
	}
	// An event that merges forks of the DAG (several prev_events) may
	// change the resolved current state without being a state event.
	if ev.IsState() || len(ev.PrevEvents()) > 1 {
		f.p.Rooms.Invalidate(ev.RoomID())
	}
}

func (f *Follower) isLocal(pos roomdag.StreamPos) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.local {
		if pos >= s[0] && pos <= s[1] {
			return true
		}
	}
	return false
}

func (f *Follower) advanceLocked(pos roomdag.StreamPos) {
	if pos <= f.applied {
		return
	}
	f.applied = pos
	kept := f.local[:0]
	for _, s := range f.local {
		if s[1] > pos {
			kept = append(kept, s)
		}
	}
	f.local = kept
}

// PresenceActivity implements sync.ActivityAnnouncer: it tells the other
// processes that a user's clients connected here or left.
func (f *Follower) PresenceActivity(user roomdag.UserID, connected bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	payload := storage.EncodeActivity(f.p.Origin, []storage.PresenceActivity{{User: user, Connected: connected}})
	if err := f.p.Store.AnnounceNow(ctx, payload); err != nil {
		f.p.Log.Warn("cluster: announcing presence activity", "user", user, "err", err)
	}
}

func tokenOf(h storage.StreamHeads) sync.Token {
	return sync.Token{Events: h.Events, AccountData: h.AccountData, Receipts: h.Receipts, Presence: h.Presence,
		Notifications: h.Notifications, ToDevice: h.ToDevice, DeviceLists: h.DeviceLists}
}

// Barrier brings this process up to what every process has committed
// before it was called: it reads the streams' heads (one query), feeds the
// events this process has not heard of yet and raises the notifier's
// positions. A request that follows it sees every write that returned
// before it began, whichever process took the write, as a client behind a
// load balancer expects (send on one, read on another). The wake-ups those
// changes cause arrive with their payloads.
func (f *Follower) Barrier(ctx context.Context) error {
	h, err := f.p.Store.StreamHeads(ctx)
	if err != nil {
		return err
	}
	f.mu.Lock()
	behind := h.Events > f.applied
	f.mu.Unlock()
	if behind {
		if err := f.readEvents(ctx, h.Events); err != nil {
			return err
		}
	}
	f.p.Notifier.Raise(tokenOf(h))
	return nil
}
