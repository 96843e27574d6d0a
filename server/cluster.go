package server

import (
	"context"
	"log/slog"
	"net/http"
	gosync "sync"

	"github.com/persistentchat/homeserver/cluster"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"github.com/persistentchat/homeserver/storage/postgres"
	"github.com/persistentchat/homeserver/sync"
)

// follow wires the announcement of committed changes. On SQLite, the only
// process, the store's commit hook announces them to the notifier (and
// follow returns nil). On a database other processes share, it returns the
// follower: it announces this process's commits the same way and applies
// the others', which it hears on a LISTEN connection of its own.
func (hs *Homeserver) follow(evPos roomdag.StreamPos, n *sync.Notifier, wakers cluster.Waker) *cluster.Follower {
	if !hs.db.Shared() {
		hs.db.SetCommitHook(func(c *storage.Change) {
			n.Apply(c)
			hs.deviceListsChanged(c)
		})
		return nil
	}
	f := cluster.New(cluster.Parts{Origin: hs.db.Origin(), Store: hs.db, Rooms: hs.Rooms, Notifier: n, Syncer: hs.Syncer,
		// Not the metrics: each process counts the events it persisted.
		Listeners: hs.followListeners(n),
		Wakers:    wakers, Log: hs.log}, evPos)
	hs.db.SetCommitHook(func(c *storage.Change) {
		f.Local(c)
		hs.deviceListsChanged(c)
	})
	ctx, cancel := context.WithCancel(context.Background())
	hs.stopListen, hs.listening = cancel, make(chan struct{})
	dsn := hs.cfg.Database.Postgres().DSN.Reveal()
	go func() {
		defer close(hs.listening)
		postgres.Listen(ctx, dsn, hs.db.Origin(), hs.log, hs.listenHold.wait, f.Connected, f.Deliver)
	}()
	return f
}

// deviceListsChanged wakes the device-list sender after a commit that
// changed device lists.
func (hs *Homeserver) deviceListsChanged(c *storage.Change) {
	if len(c.DeviceLists) > 0 {
		hs.DeviceLists.Notify()
	}
}

// listenHold holds back the listening connection's reconnection while a
// test has it held (HoldListening).
type listenHold struct {
	mu   gosync.Mutex
	held chan struct{} // nil: not held; closed at release
}

func (h *listenHold) wait(ctx context.Context) {
	h.mu.Lock()
	ch := h.held
	h.mu.Unlock()
	if ch == nil {
		return
	}
	select {
	case <-ch:
	case <-ctx.Done():
	}
}

// HoldListening makes the listening connection, once it has dropped, wait
// to reconnect until release is called, so that a test can commit in
// another process while nobody listens here and check the catch-up.
// Called once at a time; release is idempotent. Without a shared database
// it does nothing.
func (hs *Homeserver) HoldListening() (release func()) {
	h := &hs.listenHold
	ch := make(chan struct{})
	h.mu.Lock()
	h.held = ch
	h.mu.Unlock()
	var once gosync.Once
	return func() {
		once.Do(func() {
			h.mu.Lock()
			h.held = nil
			h.mu.Unlock()
			close(ch)
		})
	}
}

// activityFunc is a sync.ActivityAnnouncer made of a function: the
// follower it calls is made after the syncer that calls it.
type activityFunc func(user roomdag.UserID, connected bool)

func (a activityFunc) PresenceActivity(user roomdag.UserID, connected bool) { a(user, connected) }

// stopFollowing closes the listening connection. Idempotent.
func (hs *Homeserver) stopFollowing() {
	if hs.stopListen != nil {
		hs.stopListen()
		<-hs.listening
	}
}

// barrier runs the follower's Barrier before each client request, so that
// a request sees every write that returned before it, in any process.
func barrier(f *cluster.Follower, log *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := f.Barrier(r.Context()); err != nil && r.Context().Err() == nil {
				// Served anyway, as of what this process knows.
				log.Warn("cluster: catching up before a request", "err", err)
			}
			next.ServeHTTP(w, r)
		})
	}
}

// followListeners are the listeners that hear of the other processes'
// commits: the notifier and every after-commit worker, whichever process
// holds its lease.
func (hs *Homeserver) followListeners(n *sync.Notifier) []roomdag.Listener {
	ls := []roomdag.Listener{n, hs.Notifications, hs.AppServices, hs.FedSender}
	if hs.Compliance != nil {
		ls = append(ls, hs.Compliance)
	}
	return ls
}
