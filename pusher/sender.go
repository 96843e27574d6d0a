// Package pusher delivers notifications to push gateways (spec:
// client-server API, "Push Notifications"; push gateway API). The
// notification worker (push.Worker) decides who is notified of what and
// stores it; this package reads each user's new notifications back and
// sends them to the user's http pushers.
package pusher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	gosync "sync"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/netguard"
	"github.com/persistentchat/homeserver/push"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"github.com/persistentchat/homeserver/streamworker"
)

// Each pusher has a goroutine of its own (a streamworker.Loop, whose
// position is the pusher's), so a slow or dead gateway holds up only its
// own pushers: never the notification worker, /sync or anyone else's
// pushes. A loop sends the pusher's undelivered
// notifications oldest first, one request each, and stores the pusher's
// position after each one the gateway accepts; a restart resumes there,
// so a notification is sent twice only when a request is retried. While
// the gateway fails, the loop retries the same notification with
// exponential back-off, and gives up on it once the gateway has been
// failing for GiveUpAfter (as Synapse does), so a gateway that comes back
// is not flooded with stale alerts. At most Backlog notifications wait
// per pusher: past that the oldest are skipped. The loops run while the
// process holds the "pushers" lease.
//
// Clients choose their gateways' URLs, so every connection goes through
// the server's IP deny-list (config ip_range_blacklist, package netguard)
// on the address actually dialled: a gateway that resolves into a denied
// range is never contacted, and the attempt fails like any other.
// Proxies from the environment are not used, as they would hide the real
// destination.

// Store is what the sender reads and writes.
type Store interface {
	// AllPushers lists every pusher, Pushers a user's, Pusher one by ID
	// (storage.ErrNotFound when it is gone).
	AllPushers(ctx context.Context) ([]storage.Pusher, error)
	Pushers(ctx context.Context, user roomdag.UserID) ([]storage.Pusher, error)
	Pusher(ctx context.Context, id int64) (storage.Pusher, error)
	// PusherProgress moves a pusher's position forward and sets when it
	// started failing (0: it is not); storage.ErrNotFound when it is gone.
	PusherProgress(ctx context.Context, id int64, pos roomdag.StreamPos, failingSince int64) error
	DeletePusher(ctx context.Context, user roomdag.UserID, appID, pushKey string) error
	// PushNotifications returns the newest limit of the user's
	// notifications after position after, oldest first, with EventID and
	// Read filled.
	PushNotifications(ctx context.Context, user roomdag.UserID, after roomdag.StreamPos, limit int) ([]storage.Notification, error)
	Event(ctx context.Context, id roomdag.EventID) (*roomdag.StoredEvent, error)
	JoinedRooms(ctx context.Context, user roomdag.UserID) ([]roomdag.RoomID, error)
	UnreadCounts(ctx context.Context, user roomdag.UserID, rooms []roomdag.RoomID) (map[roomdag.RoomID]storage.UnreadCount, error)
	// NotifyPos is the notification worker's stored position: every
	// notification up to it is stored (push.Store has it too).
	NotifyPos(ctx context.Context) (roomdag.StreamPos, error)
}

// RoomStates gives a room's current state; *roomdag.Rooms is one.
type RoomStates interface {
	State(ctx context.Context, id roomdag.RoomID) (*roomdag.RoomState, error)
}

// RoomStatesFunc adapts a function to RoomStates.
type RoomStatesFunc func(ctx context.Context, id roomdag.RoomID) (*roomdag.RoomState, error)

// State implements RoomStates.
func (f RoomStatesFunc) State(ctx context.Context, id roomdag.RoomID) (*roomdag.RoomState, error) {
	return f(ctx, id)
}

// Delivery limits and timing.
const (
	// InitialBackoff is the first wait after a failed request; it doubles
	// with each failure in a row up to MaxBackoff.
	InitialBackoff = time.Second
	MaxBackoff     = 10 * time.Minute
	// GiveUpAfter: a notification the gateway has been failing for this
	// long is dropped, and the next one gets a fresh period.
	GiveUpAfter = 24 * time.Hour
	// Backlog bounds the notifications waiting per pusher.
	Backlog = 100
	// requestTimeout bounds one request to a gateway.
	requestTimeout = 30 * time.Second
	// storeRetryDelay is the wait after a storage error.
	storeRetryDelay = time.Second
)

// Stats counts what the sender did since it started, for tests and
// operators.
type Stats struct {
	Running   int // pusher loops running
	Delivered int // notifications the gateway accepted
	Failed    int // requests that failed
	Backoffs  int // back-off waits started, their timers armed
	Rejected  int // pushers removed because the gateway rejected their pushkey
	GivenUp   int // notifications dropped after failing for GiveUpAfter
	Skipped   int // times the backlog was full and older notifications were skipped
}

// Sender runs one loop per http pusher. Start it once; the methods may be
// called at any time, also before Start and after Stop.
type Sender struct {
	store  Store
	rooms  RoomStates
	clock  clock.Clock
	log    *slog.Logger
	client *http.Client

	holder *streamworker.Holder // the "pushers" lease; nil: always held

	reload gosync.Mutex // serialises PushersChanged

	quit      context.Context // ends with Stop
	endQuit   context.CancelFunc
	relisting gosync.WaitGroup

	mu      gosync.Mutex
	loops   map[roomdag.UserID]map[int64]*loop
	stopped bool
	stats   Stats
	changed chan struct{} // closed and replaced when stats or Pos change
	// heard is the notification worker's newest position, from Start
	// and NotificationsAdded: every notification up to it is stored.
	heard roomdag.StreamPos
}

// NewSender makes a sender. clk times the back-off and the give-up
// period; guard is the IP deny-list gateways are reached through. The
// loops run while holder holds its lease ("pushers"); nil: always.
func NewSender(store Store, rooms RoomStates, clk clock.Clock, log *slog.Logger, guard netguard.Guard, holder *streamworker.Holder) *Sender {
	transport := &http.Transport{
		Proxy:                 nil,
		DialContext:           guard.Dialer(requestTimeout).DialContext,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   requestTimeout,
		ResponseHeaderTimeout: requestTimeout,
		MaxIdleConns:          100,
		IdleConnTimeout:       90 * time.Second,
	}
	quit, endQuit := context.WithCancel(context.Background())
	return &Sender{store: store, rooms: rooms, clock: clk, log: log, holder: holder, quit: quit, endQuit: endQuit,
		client: &http.Client{
			Transport: transport,
			Timeout:   requestTimeout,
			// A redirect is an answer other than 2xx: a failure.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		loops: map[roomdag.UserID]map[int64]*loop{}, changed: make(chan struct{})}
}

// Start starts a loop for every stored http pusher; each first sends what
// it has not delivered yet. Under a lease, the pushers are listed again
// each time the lease is taken anew: pushers set through another process
// while this one did not hold it get their loops then.
func (s *Sender) Start(ctx context.Context) error {
	heard, err := s.store.NotifyPos(ctx)
	if err != nil {
		return err
	}
	var gen uint64
	if s.holder != nil {
		gen = s.holder.Generation()
	}
	if err := s.startAll(ctx, heard); err != nil {
		return err
	}
	if s.holder != nil {
		s.relisting.Add(1)
		go s.relist(gen)
	}
	return nil
}

// startAll starts loops for the stored http pushers that have none. It
// raises the position heard to heard (the notification worker's stored
// position, read before the pushers are listed; 0: none) under the lock
// it starts the loops under, so Pos never counts their notifications as
// delivered before they have stepped.
func (s *Sender) startAll(ctx context.Context, heard roomdag.StreamPos) error {
	ps, err := s.store.AllPushers(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.heard = max(s.heard, heard)
	for _, p := range ps {
		if _, ok := s.loops[p.User][p.ID]; !ok {
			s.startLocked(p)
		}
	}
	return nil
}

// relist lists the pushers again at each new hold of the lease after
// hold gen, until Stop.
func (s *Sender) relist(gen uint64) {
	defer s.relisting.Done()
	for {
		held, g, err := s.holder.Held(s.quit)
		if err != nil {
			return
		}
		for g != gen {
			err := s.startAll(held, 0)
			if err == nil {
				gen = g
				break
			}
			s.log.Error("listing the pushers", "err", err)
			select {
			case <-s.quit.Done():
				return
			case <-held.Done():
			case <-s.clock.After(storeRetryDelay):
			}
			if held.Err() != nil {
				break
			}
		}
		select {
		case <-s.quit.Done():
			return
		case <-held.Done():
		}
	}
}

// Stop stops every loop, cutting requests in flight, and waits for them.
// Undelivered notifications are sent after the next start.
func (s *Sender) Stop() {
	s.endQuit()
	s.relisting.Wait()
	s.mu.Lock()
	s.stopped = true
	var all []*loop
	for _, ls := range s.loops {
		for _, l := range ls {
			all = append(all, l)
		}
	}
	s.mu.Unlock()
	for _, l := range all {
		l.stop()
	}
}

// NotificationsAdded implements push.Waker: it wakes the loops of the
// users who got notifications. It never blocks.
func (s *Sender) NotificationsAdded(pos roomdag.StreamPos, users []roomdag.UserID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, u := range users {
		for _, l := range s.loops[u] {
			if !l.pending {
				// It had caught up with every notification announced so
				// far: its user's up to the position heard before these
				// are delivered.
				l.donePos = max(l.donePos, s.heard)
			}
			l.pending, l.woken = true, true
			l.w.Notify()
		}
	}
	if pos > s.heard {
		s.heard = pos
		s.changedLocked()
	}
}

// Pos is the event stream position up to which every stored notification
// has been delivered to every http pusher, or skipped or given up on: the
// notification worker's newest position, held back by each pusher that
// still has notifications to send (one whose gateway is failing holds it
// at its oldest undelivered notification). The metrics report it as the
// pushers' position.
func (s *Sender) Pos() roomdag.StreamPos {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.posLocked()
}

// WaitPos returns once Pos is at least pos, or with an error when ctx
// ends first. Tests use it instead of sleeping.
func (s *Sender) WaitPos(ctx context.Context, pos roomdag.StreamPos) error {
	for {
		s.mu.Lock()
		ok, ch := s.posLocked() >= pos, s.changed
		s.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// posLocked is Pos: the position heard, held back by each pending loop
// at its stored position (or the position it had caught up to, when
// that is further).
func (s *Sender) posLocked() roomdag.StreamPos {
	pos := s.heard
	for _, ls := range s.loops {
		for _, l := range ls {
			if l.pending {
				pos = min(pos, max(l.donePos, l.w.Pos()))
			}
		}
	}
	return pos
}

// PushersChanged is called after the user's pushers were set or deleted:
// it starts loops for new pushers and has the others read their pusher
// again now, so that a changed URL is used and a deleted pusher's loop
// ends (even in the middle of a back-off).
func (s *Sender) PushersChanged(ctx context.Context, user roomdag.UserID) error {
	s.reload.Lock()
	defer s.reload.Unlock()
	ps, err := s.store.Pushers(ctx, user)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.loops[user] {
		l.w.Kick()
	}
	for _, p := range ps {
		if _, ok := s.loops[user][p.ID]; !ok {
			s.startLocked(p)
		}
	}
	return nil
}

// Stats returns the counters.
func (s *Sender) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// WaitStats returns once cond holds for the counters, or with an error
// when ctx ends first. Tests use it instead of sleeping.
func (s *Sender) WaitStats(ctx context.Context, cond func(Stats) bool) error {
	for {
		s.mu.Lock()
		ok, ch := cond(s.stats), s.changed
		s.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// count changes the counters.
func (s *Sender) count(f func(*Stats)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.countLocked(f)
}

func (s *Sender) countLocked(f func(*Stats)) {
	f(&s.stats)
	s.changedLocked()
}

// changedLocked wakes WaitStats and WaitPos; the caller holds s.mu.
func (s *Sender) changedLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// startLocked starts a loop for an http pusher; the caller holds s.mu.
func (s *Sender) startLocked(p storage.Pusher) {
	if s.stopped || p.Kind != "http" {
		return
	}
	// A loop starts pending: it may have notifications from before.
	l := &loop{s: s, id: p.ID, user: p.User, pending: true, donePos: p.LastPos,
		log:  s.log.With("user", p.User, "pusher", p.ID, "app_id", p.AppID),
		done: make(chan struct{})}
	l.w = streamworker.New(l, streamworker.Options{Name: "pusher", Clock: s.clock, Log: l.log,
		Retry: storeRetryDelay, Backoff: streamworker.Backoff{Initial: InitialBackoff, Max: MaxBackoff},
		Holder: s.holder, Failed: l.failedStep})
	if s.loops[p.User] == nil {
		s.loops[p.User] = map[int64]*loop{}
	}
	s.loops[p.User][p.ID] = l
	s.countLocked(func(st *Stats) { st.Running++ })
	go func() {
		// It resumes from the pusher's stored position first.
		l.w.Run()
		l.exit()
	}()
}

// loop delivers one pusher's notifications: the pusher's
// streamworker.Loop steps through the user's notifications after the
// pusher's stored position. Its back-off is the gateway's; Kick (the
// pusher changed) ends it; the loop ends when the pusher is deleted.
type loop struct {
	s    *Sender
	id   int64
	user roomdag.UserID
	log  *slog.Logger
	w    *streamworker.Loop
	done chan struct{} // closed once the loop has left the sender

	// Guarded by s.mu, for Sender.Pos.
	pending bool              // may have notifications it has not delivered
	woken   bool              // NotificationsAdded woke it since its step began
	donePos roomdag.StreamPos // every notification of its user up to here is delivered
}

func (l *loop) stop() {
	l.w.Stop()
	<-l.done
}

// Outcomes of a step besides storage errors.
var (
	errGone    = fmt.Errorf("pusher: the pusher was deleted: %w", streamworker.ErrDone)
	errGateway = errors.New("pusher: the gateway failed")
)

// failedStep hears of a failed step, once the retry's timer is set.
func (l *loop) failedStep(err error, retryIn time.Duration) {
	if !errors.Is(err, errGateway) {
		l.log.Error("push delivery", "err", err, "retry_in", retryIn)
		return
	}
	level := slog.LevelInfo
	if errors.Is(err, netguard.ErrBlocked) {
		// Not the gateway's fault: it is the operator's to allow.
		level = slog.LevelWarn
	}
	l.log.Log(context.Background(), level, "push failed: retrying", "err", err, "retry_in", retryIn)
	l.s.count(func(st *Stats) { st.Backoffs++ })
}

// exit takes the loop out of the sender.
func (l *loop) exit() {
	s := l.s
	s.mu.Lock()
	if s.loops[l.user][l.id] == l {
		delete(s.loops[l.user], l.id)
		if len(s.loops[l.user]) == 0 {
			delete(s.loops, l.user)
		}
	}
	s.countLocked(func(st *Stats) { st.Running-- })
	s.mu.Unlock()
	close(l.done)
}

// Resume implements streamworker.Stepper: the pusher's stored position;
// errGone when it was deleted.
func (l *loop) Resume(ctx context.Context) (roomdag.StreamPos, error) {
	p, err := l.pusher(ctx)
	return p.LastPos, err
}

// Step implements streamworker.Stepper. It sends the pusher's
// undelivered notifications after from, oldest first, one request each,
// storing the position after each the gateway accepts (or that is given
// up on), and returns the stored position reached: also when the gateway
// fails (errGateway, Remote: the loop backs off, then the next step
// sends the same notification), the pusher is gone (errGone) or storage
// fails.
func (l *loop) Step(ctx context.Context, from roomdag.StreamPos) (roomdag.StreamPos, bool, error) {
	l.s.stepStarts(l)
	st := &step{l: l, ctx: ctx, pos: from, stored: from}
	more, err := st.run()
	l.s.stepEnded(l, st.stored, !more && err == nil)
	return st.stored, more, err
}

// stepStarts is called by l's goroutine before each step reads its
// notifications: every one announced until now is stored, so a step that
// finds none left has delivered them all.
func (s *Sender) stepStarts(l *loop) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l.woken = false
}

// stepEnded is called by l's goroutine after each step, with the stored
// position it reached; caughtUp says it found nothing left to send. The
// loop is no longer pending unless NotificationsAdded woke it meanwhile.
func (s *Sender) stepEnded(l *loop, stored roomdag.StreamPos, caughtUp bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	done, pending := max(l.donePos, stored), l.pending && (!caughtUp || l.woken)
	if done != l.donePos || pending != l.pending {
		l.donePos, l.pending = done, pending
		s.changedLocked()
	}
}

// step is one step of a loop: one batch of notifications.
type step struct {
	l      *loop
	ctx    context.Context
	pos    roomdag.StreamPos // delivered (or skipped) up to here
	stored roomdag.StreamPos // the position stored
}

func (st *step) run() (more bool, err error) {
	l := st.l
	p, err := st.pusher()
	if err != nil {
		return false, err
	}
	ns, err := l.s.store.PushNotifications(st.ctx, l.user, st.pos, Backlog+1)
	if err != nil || len(ns) == 0 {
		return false, err
	}
	if len(ns) > Backlog {
		// Older notifications than these wait too: skip them, so a
		// gateway that was down gets only the newest.
		ns = ns[1:]
		l.log.Warn("push backlog full: skipping older notifications", "before_pos", ns[0].EventPos)
		l.s.count(func(st *Stats) { st.Skipped++ })
	}
	for i, n := range ns {
		if n.Read || n.EventID == "" {
			// Read before it could be pushed (Synapse pushes only
			// unread notifications), or its event is gone.
			st.pos = n.EventPos
			continue
		}
		if i > 0 {
			// Logging out deletes the device's pushers: look again
			// before each request.
			if p, err = st.pusher(); err != nil {
				return false, err
			}
		}
		if err := st.deliverOne(&p, n); err != nil {
			return false, err
		}
	}
	if st.pos > p.LastPos {
		// Positions skipped over without a request.
		if err := st.progress(0); err != nil {
			return false, err
		}
	}
	return true, nil // read again: more may have come meanwhile
}

// pusher reads the loop's pusher: errGone when it was deleted.
func (l *loop) pusher(ctx context.Context) (storage.Pusher, error) {
	p, err := l.s.store.Pusher(ctx, l.id)
	if errors.Is(err, storage.ErrNotFound) {
		return p, errGone
	}
	return p, err
}

// pusher reads the pusher again; its stored position may be ahead of the
// step's (PusherProgress only moves it forward).
func (st *step) pusher() (storage.Pusher, error) {
	p, err := st.l.pusher(st.ctx)
	if err != nil {
		return p, err
	}
	st.pos, st.stored = max(st.pos, p.LastPos), max(st.stored, p.LastPos)
	return p, nil
}

// progress stores the step's position and failing_since. The position
// only moves forward (streamworker's contract allows that for output that
// may repeat): a step that went on after its process lost the lease can
// repeat a push, never move the position back.
func (st *step) progress(failingSince int64) error {
	err := st.l.s.store.PusherProgress(st.ctx, st.l.id, st.pos, failingSince)
	if errors.Is(err, storage.ErrNotFound) {
		return errGone
	}
	if err == nil {
		st.stored = max(st.stored, st.pos)
	}
	return err
}

// deliverOne sends one notification and records the outcome.
func (st *step) deliverOne(p *storage.Pusher, n storage.Notification) error {
	ctx, l := st.ctx, st.l
	d, err := ParseHTTPData(p.Data)
	if err != nil {
		// The API checks data before storing it: this pusher cannot have
		// been set through it. Stop rather than retry for ever.
		l.log.Error("pusher with invalid data: not delivering", "err", err)
		return errGone
	}
	ev, err := l.s.store.Event(ctx, n.EventID)
	if errors.Is(err, storage.ErrNotFound) {
		st.pos = n.EventPos
		return nil
	}
	if err != nil {
		return err
	}
	unread, err := st.unread()
	if err != nil {
		return err
	}
	var rs *roomdag.RoomState
	if d.Format != FormatEventIDOnly {
		if rs, err = l.s.rooms.State(ctx, n.Room); err != nil {
			// The notification goes out without the room's name.
			l.log.Warn("room state for a push", "room", n.Room, "err", err)
			rs = nil
		}
	}
	rejected, err := post(ctx, l.s.client, d.URL, body(*p, d, n, ev, unread, rs))
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		return st.failed(p, n, err)
	}
	for _, k := range rejected {
		if k != p.PushKey {
			// Only the pushkey sent may be removed (as Synapse does).
			l.log.Warn("push gateway rejected a pushkey it was not sent: ignored")
			continue
		}
		if err := l.s.store.DeletePusher(ctx, l.user, p.AppID, p.PushKey); err != nil {
			return err
		}
		l.log.Info("push gateway rejected the pushkey: pusher removed")
		l.s.count(func(st *Stats) { st.Rejected++ })
		return errGone
	}
	st.pos = n.EventPos
	if err := st.progress(0); err != nil {
		return err
	}
	p.LastPos, p.FailingSince = st.pos, 0
	l.s.count(func(st *Stats) { st.Delivered++ })
	return nil
}

// failed records a failed request: errGateway, marked Remote, to back
// off and retry, or nil after giving up on the notification.
func (st *step) failed(p *storage.Pusher, n storage.Notification, cause error) error {
	l := st.l
	l.s.count(func(st *Stats) { st.Failed++ })
	now := l.s.clock.Now().UnixMilli()
	if p.FailingSince == 0 {
		p.FailingSince = now
		if err := st.progress(now); err != nil {
			return err
		}
	}
	if now-p.FailingSince < GiveUpAfter.Milliseconds() {
		return streamworker.Remote(fmt.Errorf("%w: %w", errGateway, cause))
	}
	l.log.Warn("push gateway failing for too long: giving up on a notification",
		"err", cause, "event", n.EventID, "failing_since_ms", p.FailingSince)
	st.pos = n.EventPos
	if err := st.progress(0); err != nil {
		return err
	}
	p.LastPos, p.FailingSince = st.pos, 0
	l.s.count(func(st *Stats) { st.GivenUp++ })
	return nil
}

// unread is the user's unread notifications across their joined rooms
// (spec: counts.unread).
func (st *step) unread() (int64, error) {
	l := st.l
	rooms, err := l.s.store.JoinedRooms(st.ctx, l.user)
	if err != nil || len(rooms) == 0 {
		return 0, err
	}
	counts, err := l.s.store.UnreadCounts(st.ctx, l.user, rooms)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, c := range counts {
		total, _ := c.Total()
		n += total
	}
	return n, nil
}

// Interface guards.
var (
	_ push.Waker           = (*Sender)(nil)
	_ streamworker.Stepper = (*loop)(nil)
)
