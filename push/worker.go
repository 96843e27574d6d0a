package push

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	gosync "sync"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"github.com/persistentchat/homeserver/streamworker"
)

// The notification worker evaluates push rules for every committed event,
// once per event and local member, after the event commits and off the
// request's path (spec: "Push Notifications"; DESIGN.md, the write path's
// listeners). It reads events back from storage after its stored
// position, and stores the notifications together with its new position
// in one transaction: a restart resumes exactly where it stopped, with no
// notification lost or written twice.
//
// What it stores is compact (storage.NotifyBatch): an event's outcome
// under the default rules, for a member neither mentioned nor invited,
// is stored once for all members; only members whose outcome differs
// get a row. Members without rules of their own are not evaluated at
// all unless the event names them: in m.mentions, or, for an event
// without m.mentions, by display name or localpart in its body (the
// legacy mention rules; names.go finds those members).
//
// Its loop (streamworker) wakes on EventCommitted, lets a burst gather,
// retries after storage errors, and runs only while the process holds
// the "notifications" lease.

// Store is what the worker reads and writes.
type Store interface {
	// NotifyPos is the worker's stored position in the event stream.
	NotifyPos(ctx context.Context) (roomdag.StreamPos, error)
	// StreamEvents returns up to limit committed events after pos, in order.
	StreamEvents(ctx context.Context, after roomdag.StreamPos, limit int) ([]storage.StreamEvent, error)
	StateEvents(ctx context.Context, snapshot int64) (roomdag.StateMap, error)
	// PushRules returns the user's UserRules document, nil if none.
	PushRules(ctx context.Context, user roomdag.UserID) (json.RawMessage, error)
	// AccountData returns one account data entry ("" room: global), or
	// storage.ErrNotFound; the worker reads m.ignored_user_list.
	AccountData(ctx context.Context, user roomdag.UserID, room roomdag.RoomID, typ string) (json.RawMessage, error)
	// PushRulesChangedSince lists users whose rules or ignore list
	// changed after account data position after, and the newest such
	// position.
	PushRulesChangedSince(ctx context.Context, after int64) ([]roomdag.UserID, int64, error)
	// NotifyTotals returns the running totals of the room's newest
	// default notification row and of the thread's newest ("" for the
	// main timeline), zeros where there is none.
	NotifyTotals(ctx context.Context, room roomdag.RoomID, thread roomdag.EventID) (roomTotals, threadTotals [2]int64, err error)
	// PutNotifications stores a step and moves the position from b.From
	// to b.To in one transaction; it fails if the position is not b.From.
	PutNotifications(ctx context.Context, b storage.NotifyBatch) error
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

// coalesceDelay is how long the worker lets commits gather after a
// signal. Counts appear this much later; under load, steps batch events,
// and the work stays out of the few milliseconds in which senders and
// long-polls are being answered.
const coalesceDelay = 50 * time.Millisecond

// maxCachedRules bounds the rulesets kept in memory; past it the cache
// starts over (rules are cheap to load again).
const maxCachedRules = 100000

// Worker is the notification worker, on a streamworker.Loop. Start it
// once; EventCommitted may be called at any time, also before Start and
// after Stop.
type Worker struct {
	store  Store
	waker  Waker
	server roomdag.ServerName
	log    *slog.Logger
	loop   *streamworker.Loop

	// Owned by the goroutine running steps.
	rooms    map[roomdag.RoomID]*roomCache
	rules    map[roomdag.UserID]*userRules
	rulesPos int64                   // account data position the rules cache reflects
	totals   map[threadKey]*[2]int64 // running default totals: notify, highlight; thread "*" is the room's
	defaults Ruleset                 // the defaults, for a member the event does not name
	lastStep int                     // events the last step processed

	mu    gosync.Mutex
	stats Stats
}

// Stats counts what the worker did since it started, for tests and
// operators.
type Stats struct {
	// OverBudget counts evaluations in which a member's own rules ran out
	// of MaxEvalSteps (the rules cut short did not match).
	OverBudget int
	// Loop is the worker's loop: its position, steps and failures.
	Loop streamworker.Stats
}

// Stats returns the counters.
func (w *Worker) Stats() Stats {
	w.mu.Lock()
	st := w.stats
	w.mu.Unlock()
	st.Loop = w.loop.Stats()
	return st
}

// NewWorker makes a worker for the local users of server. waker may be
// nil. The worker runs while holder holds its lease ("notifications");
// nil: always.
func NewWorker(store Store, waker Waker, server roomdag.ServerName, clk clock.Clock, log *slog.Logger, holder *streamworker.Holder) *Worker {
	w := &Worker{store: store, waker: waker, server: server, log: log, defaults: unnamedDefaults()}
	w.reset()
	w.loop = streamworker.New((*steps)(w), streamworker.Options{Name: "notification worker", Clock: clk, Log: log,
		Coalesce: coalesceDelay, Retry: retryDelay, Holder: holder})
	return w
}

// reset drops what the worker caches of storage.
func (w *Worker) reset() {
	w.rooms, w.rules, w.rulesPos = map[roomdag.RoomID]*roomCache{}, map[roomdag.UserID]*userRules{}, -1
	w.totals = map[threadKey]*[2]int64{}
}

// EventCommitted implements roomdag.Listener. It runs on the storage
// writer's goroutine, so it only signals the worker, never blocks.
func (w *Worker) EventCommitted(*roomdag.Event, roomdag.StreamPos) { w.loop.Notify() }

// Start reads the stored position and starts the worker's goroutine.
func (w *Worker) Start(ctx context.Context) error { return w.loop.Start(ctx) }

// Stop stops the worker after the step in progress, if any, has
// committed. Idempotent; it returns at once if the worker never started.
func (w *Worker) Stop() { w.loop.Stop() }

// Pos is the newest event stream position processed and committed.
func (w *Worker) Pos() roomdag.StreamPos { return w.loop.Pos() }

// Wait returns once every event up to pos has been processed, or with an
// error when ctx ends or the worker stops first.
func (w *Worker) Wait(ctx context.Context, pos roomdag.StreamPos) error { return w.loop.Wait(ctx, pos) }

// Step processes the next batch of committed events and returns how many
// it processed. It is for a worker never started, which a test or
// benchmark drives by hand.
func (w *Worker) Step(ctx context.Context) (int, error) {
	w.lastStep = 0
	_, err := w.loop.StepOnce(ctx)
	return w.lastStep, err
}

// steps is the worker as its loop sees it.
type steps Worker

// Resume implements streamworker.Stepper: the stored position. The
// caches start over, as another process may have stepped since.
func (s *steps) Resume(ctx context.Context) (roomdag.StreamPos, error) {
	w := (*Worker)(s)
	w.reset()
	return w.store.NotifyPos(ctx)
}

// Step implements streamworker.Stepper: it evaluates the next batch of
// committed events and stores the notifications with the new position.
func (s *steps) Step(ctx context.Context, from roomdag.StreamPos) (roomdag.StreamPos, bool, error) {
	w := (*Worker)(s)
	// The work is local and short: once begun, it commits, and Stop
	// waits for it. A process that lost its lease meanwhile fails to
	// commit (the position moved) and changes nothing.
	ctx = context.WithoutCancel(ctx)
	evs, err := w.store.StreamEvents(ctx, from, batchSize)
	if err != nil || len(evs) == 0 {
		return from, false, err
	}
	// Rules changes are read after the events: every change committed
	// before one of these events is seen.
	if err := w.refreshRules(ctx); err != nil {
		return from, false, err
	}
	b := storage.NotifyBatch{From: from, To: evs[len(evs)-1].Pos}
	wake := map[roomdag.UserID]struct{}{}
	woken := map[roomdag.RoomID]wokenRoom{}
	for _, ev := range evs {
		if err := w.evaluate(ctx, ev, &b, wake, woken); err != nil {
			return from, false, err
		}
	}
	b.Wake = make([]roomdag.UserID, 0, len(wake))
	for u := range wake {
		b.Wake = append(b.Wake, u)
	}
	if err := w.store.PutNotifications(ctx, b); err != nil {
		// The caches may be ahead of storage.
		w.rooms, w.totals = map[roomdag.RoomID]*roomCache{}, map[threadKey]*[2]int64{}
		return from, false, err
	}
	// Publish to sync before the loop moves the position Wait watches:
	// once Wait returns, a sync sees the new counts.
	if w.waker != nil {
		w.waker.NotificationsAdded(b.To, b.Wake)
	}
	w.lastStep = len(evs)
	return b.To, len(evs) == batchSize, nil
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

// nobody is a user ID no member has.
const nobody = roomdag.UserID("@\x00:\x00")

// unnamedDefaults is the default rule set as it applies to any member an
// event does not name: the rules that match the member's own user ID,
// localpart or display name are off (they cannot match such a member, and
// nobody's "localpart" could appear in a body).
func unnamedDefaults() Ruleset {
	rs := Defaults(nobody)
	for _, list := range [][]Rule{rs.Override, rs.Content} {
		for i := range list {
			switch list[i].RuleID {
			case ".m.rule.invite_for_me", ".m.rule.is_user_mention", RuleContainsDisplayName, RuleContainsUserName:
				list[i].Enabled = false
			}
		}
	}
	rs.compile()
	return rs
}

// userRules is a user's merged rules, compiled; custom says the user has
// rules or changes of their own, so the defaults' outcome may not be
// theirs. ignores is the user's m.ignored_user_list: their messages never
// notify the user (spec: "Ignoring Users"). overBudget says their rules
// ran out of budget since they were loaded (it is logged once).
type userRules struct {
	rs         Ruleset
	custom     bool
	ignores    map[roomdag.UserID]bool
	overBudget bool
}

// ruleset returns the user's merged rules, cached.
func (w *Worker) ruleset(ctx context.Context, user roomdag.UserID) (*userRules, error) {
	if ur, ok := w.rules[user]; ok {
		return ur, nil
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
	ur := &userRules{rs: u.Ruleset(user), custom: u.count() > 0 || len(u.Changed) > 0}
	ur.rs.compile()
	if ur.ignores, err = w.ignoredBy(ctx, user); err != nil {
		return nil, err
	}
	if len(w.rules) >= maxCachedRules {
		w.rules = map[roomdag.UserID]*userRules{}
	}
	w.rules[user] = ur
	return ur, nil
}

// overBudget notes that a member's rules ran out of budget on an event:
// counted every time, logged once per loaded rule set, so a user whose
// rules are built to be slow does not flood the log either.
func (w *Worker) overBudget(user roomdag.UserID, ur *userRules, ev storage.StreamEvent, rule string) {
	w.mu.Lock()
	w.stats.OverBudget++
	w.mu.Unlock()
	if !ur.overBudget {
		ur.overBudget = true
		w.log.Warn("push rules ran out of their evaluation budget; the rest of them did not match",
			"user", user, "rule", rule, "room", ev.RoomID(), "event", ev.ID(), "budget", MaxEvalSteps)
	}
}

// ignoredBy reads the users user ignores; unreadable content ignores
// nobody, as in sync.
func (w *Worker) ignoredBy(ctx context.Context, user roomdag.UserID) (map[roomdag.UserID]bool, error) {
	raw, err := w.store.AccountData(ctx, user, "", "m.ignored_user_list")
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var c struct {
		IgnoredUsers map[roomdag.UserID]json.RawMessage `json:"ignored_users"`
	}
	if json.Unmarshal(raw, &c) != nil || len(c.IgnoredUsers) == 0 {
		return nil, nil
	}
	out := make(map[roomdag.UserID]bool, len(c.IgnoredUsers))
	for u := range c.IgnoredUsers {
		out[u] = true
	}
	return out, nil
}

// threadKey names a thread of a room; thread "" is the main timeline
// and allThreads the room as a whole.
type threadKey struct {
	room   roomdag.RoomID
	thread roomdag.EventID
}

const allThreads = roomdag.EventID("*")

// runningTotals returns the running default totals of the room and of the
// thread, cached.
func (w *Worker) runningTotals(ctx context.Context, room roomdag.RoomID, thread roomdag.EventID) (inRoom, inThread *[2]int64, err error) {
	rk, tk := threadKey{room, allThreads}, threadKey{room, thread}
	inRoom, inThread = w.totals[rk], w.totals[tk]
	if inRoom != nil && inThread != nil {
		return inRoom, inThread, nil
	}
	r, t, err := w.store.NotifyTotals(ctx, room, thread)
	if err != nil {
		return nil, nil, err
	}
	if inRoom == nil {
		inRoom = &r
		w.totals[rk] = inRoom
	}
	if inThread == nil {
		inThread = &t
		w.totals[tk] = inThread
	}
	return inRoom, inThread, nil
}

// roomCache is what evaluation needs of a room's state at one snapshot:
// the state after the last event the worker processed in the room.
type roomCache struct {
	snapshot int64
	members  map[roomdag.UserID]string // local joined members -> display name
	joined   int                       // all joined members, local or not
	pl       *roomdag.PowerLevels
	names    *nameIndex // of members; nil until needed and after they change
}

// named returns the members an event body may name, by display name or
// localpart; nil for none.
func (rc *roomCache) named(lower string) map[roomdag.UserID]bool {
	if rc.names == nil {
		rc.names = newNameIndex(rc.members)
	}
	var out map[roomdag.UserID]bool
	rc.names.candidates(lower, func(u roomdag.UserID) {
		if out == nil {
			out = map[roomdag.UserID]bool{}
		}
		out[u] = true
	})
	return out
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
func (w *Worker) advance(rc *roomCache, ev storage.StreamEvent) {
	switch ev.Type() {
	case roomdag.TypeMember:
		rc.names = nil
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

// outcome is one member's result for an event.
type outcome struct {
	notify, highlight bool
	actions           []byte // JSON, when notify
}

func newOutcome(actions []any, matched bool) (outcome, error) {
	if !matched || !Notify(actions) {
		return outcome{}, nil
	}
	b, err := json.Marshal(actions)
	return outcome{notify: true, highlight: Highlight(actions), actions: b}, err
}

func (o outcome) equal(p outcome) bool {
	return o.notify == p.notify && o.highlight == p.highlight && bytes.Equal(o.actions, p.actions)
}

func delta(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// evaluate adds one event's default row, exceptions and join changes to
// b, and the users to wake to wake.
func (w *Worker) evaluate(ctx context.Context, ev storage.StreamEvent, b *storage.NotifyBatch, wake map[roomdag.UserID]struct{}, woken map[roomdag.RoomID]wokenRoom) error {
	room := ev.RoomID()
	rc, err := w.room(ctx, room, ev.StateBefore)
	if err != nil {
		return err
	}
	if ev.StateAfter != ev.StateBefore {
		defer w.advance(rc, ev)
	}
	sender := ev.Sender()
	if ev.Type() == roomdag.TypeMember && ev.StateKey() != nil {
		// rc is the state before the event: a local user's join span opens
		// or closes here.
		if u := roomdag.UserID(*ev.StateKey()); u.Server() == w.server {
			_, was := rc.members[u]
			if now := ev.Membership() == roomdag.MembershipJoin; now != was {
				b.Joins = append(b.Joins, storage.JoinChange{User: u, Room: room, Pos: ev.Pos, Joined: now})
			}
		}
	}
	view, err := NewEventView(ev.JSON())
	if err != nil {
		return nil // stored events are valid JSON; nothing to match otherwise
	}
	ectx := EvalContext{MemberCount: rc.joined}
	if rc.pl != nil {
		ectx.SenderLevel = rc.pl.UserLevel(sender)
		ectx.NotificationLevel = rc.pl.NotificationLevel
	}
	// The thread the event is in, for thread-aware counts: a thread root
	// itself is in the main timeline.
	var thread roomdag.EventID
	if rel, ok := ev.Relation(); ok && rel.RelType == roomdag.RelThread {
		thread = rel.Parent
	}
	def, err := newOutcome(Evaluate(&w.defaults, view, &ectx))
	if err != nil {
		return err
	}
	except := func(user roomdag.UserID, o outcome, against outcome) {
		b.Exceptions = append(b.Exceptions, storage.Notification{User: user, Room: room, EventPos: ev.Pos, Thread: thread,
			Actions: o.actions, Highlight: o.highlight, TS: ev.OriginServerTS(),
			NotifyDelta: delta(o.notify, against.notify), HighlightDelta: delta(o.highlight, against.highlight)})
		if o.notify {
			wake[user] = struct{}{}
		}
	}
	// evalFor is a member's own outcome, where it may differ from def.
	evalFor := func(user roomdag.UserID, name string) (outcome, error) {
		ur, err := w.ruleset(ctx, user)
		if err != nil {
			return outcome{}, err
		}
		ectx.DisplayName = name
		ectx.OverBudget = func(rule string) { w.overBudget(user, ur, ev, rule) }
		return newOutcome(Evaluate(&ur.rs, view, &ectx))
	}
	mentioned := view.mentionedUsers()
	// Without m.mentions, the legacy mention rules look for members'
	// names in the body.
	var named map[roomdag.UserID]bool
	if !view.hasMentions && view.body != "" {
		named = rc.named(view.lower)
	}
	for user, name := range rc.members {
		if user == sender {
			// Spec: never notify a user of their own events.
			if def.notify {
				except(user, outcome{}, def)
			}
			continue
		}
		ur, err := w.ruleset(ctx, user)
		if err != nil {
			return err
		}
		if ur.ignores[sender] && !ev.IsState() {
			if def.notify {
				except(user, outcome{}, def)
			}
			continue
		}
		if !ur.custom && !mentioned[string(user)] && !named[user] {
			continue // the defaults, and the event does not name them: def
		}
		o, err := evalFor(user, name)
		if err != nil {
			return err
		}
		if !o.equal(def) {
			except(user, o, def)
		}
	}
	// The invitee of an invite is not a member yet, but is who
	// .m.rule.invite_for_me is for.
	if ev.Type() == roomdag.TypeMember && ev.Membership() == roomdag.MembershipInvite {
		if u := roomdag.UserID(*ev.StateKey()); u != sender && u.Server() == w.server {
			ur, err := w.ruleset(ctx, u)
			if err != nil {
				return err
			}
			if _, joined := rc.members[u]; !joined && !ur.ignores[sender] {
				o, err := evalFor(u, "")
				if err != nil {
					return err
				}
				if o.notify {
					except(u, o, outcome{})
				}
			}
		}
	}
	if !def.notify {
		return nil
	}
	rt, tt, err := w.runningTotals(ctx, room, thread)
	if err != nil {
		return err
	}
	for _, t := range []*[2]int64{rt, tt} {
		t[0]++
		if def.highlight {
			t[1]++
		}
	}
	b.Events = append(b.Events, storage.EventNotification{Room: room, EventPos: ev.Pos, Thread: thread, Actions: def.actions,
		Highlight: def.highlight, TS: ev.OriginServerTS(), NotifyTotal: rt[0], HighlightTotal: rt[1],
		ThreadNotifyTotal: tt[0], ThreadHighlightTotal: tt[1]})
	// The default row notifies every member but the sender. Waking them
	// all once per room and step is enough, unless the members changed
	// since, or that once left out a sender who is notified now.
	switch wr, ok := woken[room]; {
	case !ok || wr.snapshot != rc.snapshot:
		for u := range rc.members {
			if u != sender {
				wake[u] = struct{}{}
			}
		}
		wr = wokenRoom{snapshot: rc.snapshot}
		if _, member := rc.members[sender]; member {
			wr.except = sender
		}
		woken[room] = wr
	case wr.except != "" && wr.except != sender:
		wake[wr.except] = struct{}{}
		woken[room] = wokenRoom{snapshot: wr.snapshot}
	}
	return nil
}

// wokenRoom records that a room's members, as of a state snapshot, were
// put in a step's wake set, all but except (a sender) if set.
type wokenRoom struct {
	snapshot int64
	except   roomdag.UserID
}

// Interface guards.
var (
	_ roomdag.Listener     = (*Worker)(nil)
	_ streamworker.Stepper = (*steps)(nil)
)
