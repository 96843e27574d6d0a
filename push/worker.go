package push

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	gosync "sync"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// The notification worker evaluates push rules for every committed event,
// once per event and local member, after the event commits and off the
// request's path (spec: "Push Notifications"; DESIGN.md, the write path's
// listeners). It reads events back from storage after its stored
// position, and stores the notifications together with its new position
// in one transaction: a restart resumes exactly where it stopped, with no
// notification lost or written twice.

// Store is what the worker reads and writes.
type Store interface {
	// NotifyPos is the worker's stored position in the event stream.
	NotifyPos(ctx context.Context) (roomdag.StreamPos, error)
	// NotifyEvents returns up to limit committed events after pos, in order.
	NotifyEvents(ctx context.Context, after roomdag.StreamPos, limit int) ([]storage.NotifyEvent, error)
	StateEvents(ctx context.Context, snapshot int64) (roomdag.StateMap, error)
	// PushRules returns the user's UserRules document, nil if none.
	PushRules(ctx context.Context, user roomdag.UserID) (json.RawMessage, error)
	// PushRulesChangedSince lists users whose rules changed after account
	// data position after, and the newest such position.
	PushRulesChangedSince(ctx context.Context, after int64) ([]roomdag.UserID, int64, error)
	// PutNotifications stores ns and moves the position from from to to
	// in one transaction; it fails if the position is not from.
	PutNotifications(ctx context.Context, from, to roomdag.StreamPos, ns []storage.Notification) error
}

// Waker hears of new notifications after they commit, in order: pos is
// the worker's new position, users those who got notifications.
// sync.Notifier implements it.
type Waker interface {
	NotificationsAdded(pos roomdag.StreamPos, users []roomdag.UserID)
}

// batchSize bounds the events one step reads and commits together.
const batchSize = 256

// retryDelay is how long the worker waits after a storage error.
const retryDelay = time.Second

// maxCachedRules bounds the rulesets kept in memory; past it the cache
// starts over (rules are cheap to load again).
const maxCachedRules = 100000

// Worker is the notification worker. Start it once; EventCommitted may be
// called at any time, also before Start and after Stop.
type Worker struct {
	store  Store
	waker  Waker
	server roomdag.ServerName
	clock  clock.Clock
	log    *slog.Logger

	signal chan struct{} // capacity 1: "there may be new events"
	quit   chan struct{}
	done   chan struct{}
	start  gosync.Once
	stop   gosync.Once

	// Owned by the goroutine running Step.
	rooms    map[roomdag.RoomID]*roomCache
	rules    map[roomdag.UserID]*Ruleset
	rulesPos int64 // account data position the rules cache reflects

	mu       gosync.Mutex
	pos      roomdag.StreamPos
	advanced chan struct{} // closed and replaced when pos moves
}

// NewWorker makes a worker for the local users of server. waker may be
// nil.
func NewWorker(store Store, waker Waker, server roomdag.ServerName, clk clock.Clock, log *slog.Logger) *Worker {
	w := &Worker{store: store, waker: waker, server: server, clock: clk, log: log,
		signal: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{}),
		rooms: map[roomdag.RoomID]*roomCache{}, rules: map[roomdag.UserID]*Ruleset{}, rulesPos: -1,
		advanced: make(chan struct{})}
	w.signal <- struct{}{} // catch up on whatever committed while it was down
	return w
}

// EventCommitted implements roomdag.Listener. It runs on the storage
// writer's goroutine, so it only signals the worker, never blocks.
func (w *Worker) EventCommitted(*roomdag.Event, roomdag.StreamPos) {
	select {
	case w.signal <- struct{}{}:
	default: // a signal is pending already; the worker reads every new event
	}
}

// Start reads the stored position and starts the worker's goroutine.
func (w *Worker) Start(ctx context.Context) error {
	pos, err := w.store.NotifyPos(ctx)
	if err != nil {
		return err
	}
	w.setPos(pos)
	w.start.Do(func() { go w.run() })
	return nil
}

// Stop stops the worker after the step in progress, if any, has
// committed. Idempotent; it returns at once if the worker never started.
func (w *Worker) Stop() {
	w.stop.Do(func() { close(w.quit) })
	started := true
	w.start.Do(func() { started = false })
	if started {
		<-w.done
	}
}

// Pos is the newest event stream position processed and committed.
func (w *Worker) Pos() roomdag.StreamPos {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pos
}

// Wait returns once every event up to pos has been processed, or with an
// error when ctx ends or the worker stops first.
func (w *Worker) Wait(ctx context.Context, pos roomdag.StreamPos) error {
	for {
		w.mu.Lock()
		cur, ch := w.pos, w.advanced
		w.mu.Unlock()
		if cur >= pos {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-w.quit:
			return errors.New("push: notification worker stopped")
		}
	}
}

func (w *Worker) setPos(pos roomdag.StreamPos) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if pos > w.pos {
		w.pos = pos
		close(w.advanced)
		w.advanced = make(chan struct{})
	}
}

// coalesceDelay is how long the worker lets commits gather after a
// signal. Counts appear this much later; under load, steps batch events.
const coalesceDelay = 50 * time.Millisecond

func (w *Worker) run() {
	defer close(w.done)
	ctx := context.Background()
	for {
		select {
		case <-w.quit:
			return
		case <-w.signal:
		}
		// Let a burst of commits gather before stepping: one step (and one
		// fsync) then covers many events, and the work stays out of the few
		// milliseconds in which senders and long-polls are being answered.
		// A scheduling delay, not protocol time, so it uses the real clock.
		coalesce := time.NewTimer(coalesceDelay)
		select {
		case <-w.quit:
			coalesce.Stop()
			return
		case <-coalesce.C:
		}
		for {
			n, err := w.Step(ctx)
			if err != nil {
				w.log.Error("notification worker", "err", err, "pos", w.Pos())
				select {
				case <-w.quit:
					return
				case <-w.clock.After(retryDelay):
				}
				continue
			}
			if n < batchSize {
				break
			}
			select {
			case <-w.quit:
				return
			default:
			}
		}
	}
}

// Step processes the next batch of committed events and returns how many
// it processed. Only one goroutine may call it: the worker's own, or,
// for a worker never started, a test or benchmark.
func (w *Worker) Step(ctx context.Context) (int, error) {
	from := w.Pos()
	if from == 0 {
		// Not started: read the stored position (a benchmark's worker).
		p, err := w.store.NotifyPos(ctx)
		if err != nil {
			return 0, err
		}
		from = p
	}
	evs, err := w.store.NotifyEvents(ctx, from, batchSize)
	if err != nil || len(evs) == 0 {
		return 0, err
	}
	// Rules changes are read after the events: every change committed
	// before one of these events is seen.
	if err := w.refreshRules(ctx); err != nil {
		return 0, err
	}
	var ns []storage.Notification
	for _, ev := range evs {
		if ns, err = w.evaluate(ctx, ev, ns); err != nil {
			return 0, err
		}
	}
	to := evs[len(evs)-1].Pos
	if err := w.store.PutNotifications(ctx, from, to, ns); err != nil {
		w.rooms = map[roomdag.RoomID]*roomCache{} // the caches may be ahead of storage
		return 0, err
	}
	if w.waker != nil {
		seen := map[roomdag.UserID]bool{}
		var users []roomdag.UserID
		for _, n := range ns {
			if !seen[n.User] {
				seen[n.User] = true
				users = append(users, n.User)
			}
		}
		w.waker.NotificationsAdded(to, users)
	}
	// Publish to sync before moving the position Wait watches: once Wait
	// returns, a sync sees the new counts.
	w.setPos(to)
	return len(evs), nil
}

func (w *Worker) refreshRules(ctx context.Context) error {
	users, upTo, err := w.store.PushRulesChangedSince(ctx, w.rulesPos)
	if err != nil {
		return err
	}
	for _, u := range users {
		delete(w.rules, u)
	}
	w.rulesPos = upTo
	return nil
}

// ruleset returns the user's merged rules, cached.
func (w *Worker) ruleset(ctx context.Context, user roomdag.UserID) (*Ruleset, error) {
	if rs, ok := w.rules[user]; ok {
		return rs, nil
	}
	doc, err := w.store.PushRules(ctx, user)
	if err != nil {
		return nil, err
	}
	var u UserRules
	if doc != nil {
		if err := json.Unmarshal(doc, &u); err != nil {
			// A broken document must not stop everyone's notifications:
			// this user gets the defaults.
			w.log.Error("stored push rules", "user", user, "err", err)
			u = UserRules{}
		}
	}
	rs := u.Ruleset(user)
	if len(w.rules) >= maxCachedRules {
		w.rules = map[roomdag.UserID]*Ruleset{}
	}
	w.rules[user] = &rs
	return &rs, nil
}

// roomCache is what evaluation needs of a room's state at one snapshot:
// the state after the last event the worker processed in the room.
type roomCache struct {
	snapshot int64
	members  map[roomdag.UserID]string // local joined members -> display name
	joined   int                       // all joined members, local or not
	pl       *roomdag.PowerLevels
}

// room returns the room's cache at snapshot, the state before an event.
func (w *Worker) room(ctx context.Context, room roomdag.RoomID, snapshot int64) (*roomCache, error) {
	if rc, ok := w.rooms[room]; ok && rc.snapshot == snapshot {
		return rc, nil
	}
	state, err := w.store.StateEvents(ctx, snapshot)
	if err != nil {
		return nil, err
	}
	rc := &roomCache{snapshot: snapshot, members: map[roomdag.UserID]string{}}
	for k, ev := range state {
		if k.Type == roomdag.TypeMember {
			rc.applyMember(w.server, ev)
		}
	}
	if create := state.Get(roomdag.TypeCreate, ""); create != nil {
		if rc.pl, err = roomdag.RoomPowerLevels(create, state.Get(roomdag.TypePowerLevels, "")); err != nil {
			rc.pl = nil // accepted events have valid levels; be lenient anyway
		}
	}
	w.rooms[room] = rc
	return rc, nil
}

// applyMember counts a member event into the cache. Counting assumes the
// event replaces a member that is not in the cache: callers remove the
// old membership first (see advance).
func (rc *roomCache) applyMember(server roomdag.ServerName, ev *roomdag.Event) {
	if ev.Membership() != roomdag.MembershipJoin || ev.StateKey() == nil {
		return
	}
	rc.joined++
	u := roomdag.UserID(*ev.StateKey())
	if u.Server() == server {
		var c struct {
			DisplayName string `json:"displayname"`
		}
		_ = json.Unmarshal(ev.Content(), &c)
		rc.members[u] = c.DisplayName
	}
}

// advance moves the cache past a state event to the state after it. Local
// rooms are linear (each event's prev_events are all the extremities), so
// the state after is the state before with the event applied.
func (w *Worker) advance(rc *roomCache, ev storage.NotifyEvent) {
	switch ev.Type() {
	case roomdag.TypeMember:
		u := roomdag.UserID(*ev.StateKey())
		if _, ok := rc.members[u]; ok {
			delete(rc.members, u)
			rc.joined--
		} else if u.Server() != w.server {
			// A remote member's old membership is not kept: rebuild from
			// storage next time rather than guess the count.
			delete(w.rooms, ev.RoomID())
			return
		}
		rc.applyMember(w.server, ev.Event)
	case roomdag.TypePowerLevels, roomdag.TypeCreate:
		delete(w.rooms, ev.RoomID()) // rare: rebuild from storage
		return
	}
	rc.snapshot = ev.StateAfter
}

// evaluate appends the notifications for one event.
func (w *Worker) evaluate(ctx context.Context, ev storage.NotifyEvent, ns []storage.Notification) ([]storage.Notification, error) {
	rc, err := w.room(ctx, ev.RoomID(), ev.StateBefore)
	if err != nil {
		return nil, err
	}
	if ev.StateAfter != ev.StateBefore {
		defer w.advance(rc, ev)
	}
	view, err := NewEventView(ev.JSON())
	if err != nil {
		return ns, nil // stored events are valid JSON; nothing to match otherwise
	}
	sender := ev.Sender()
	ectx := EvalContext{MemberCount: rc.joined}
	if rc.pl != nil {
		ectx.SenderLevel = rc.pl.UserLevel(sender)
		ectx.NotificationLevel = rc.pl.NotificationLevel
	}
	add := func(user roomdag.UserID, name string) error {
		rs, err := w.ruleset(ctx, user)
		if err != nil {
			return err
		}
		ectx.DisplayName = name
		actions, ok := Evaluate(rs, view, &ectx)
		if !ok || !Notify(actions) {
			return nil
		}
		b, err := json.Marshal(actions)
		if err != nil {
			return err
		}
		ns = append(ns, storage.Notification{User: user, Room: ev.RoomID(), EventPos: ev.Pos, Actions: b,
			Highlight: Highlight(actions), TS: ev.OriginServerTS()})
		return nil
	}
	for user, name := range rc.members {
		if user == sender {
			continue // spec: never notify a user of their own events
		}
		if err := add(user, name); err != nil {
			return nil, err
		}
	}
	// The invitee of an invite is not a member yet, but is who
	// .m.rule.invite_for_me is for.
	if ev.Type() == roomdag.TypeMember && ev.Membership() == roomdag.MembershipInvite {
		if u := roomdag.UserID(*ev.StateKey()); u != sender && u.Server() == w.server {
			if _, joined := rc.members[u]; !joined {
				if err := add(u, ""); err != nil {
					return nil, err
				}
			}
		}
	}
	return ns, nil
}

// Interface guard.
var _ roomdag.Listener = (*Worker)(nil)
