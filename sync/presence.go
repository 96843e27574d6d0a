package sync

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sort"
	gosync "sync"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// Presence (spec: "Presence"): whether users are online, idle
// ("unavailable") or offline, with a status message and when they were
// last active. Each change is a row in the durable presence stream; /sync
// sends a user the changes of everyone who shares a joined room with them,
// and of themselves.
//
// What changes presence:
//   - PUT /presence/{userId}/status sets the state and status message and
//     counts as activity (last_active_ago restarts). An explicit
//     "unavailable" sticks: syncing does not turn it back to online.
//   - /sync with set_presence "online" (the default) brings an offline
//     user online, and a user who went unavailable through set_presence
//     back; "unavailable" makes the user unavailable; "offline" changes
//     nothing and does not count as a connected client. Polling is not
//     activity: clients report activity with PUT (as Element does).
//   - A user none of whose clients has had a sync running for
//     PresenceOfflineTimeout, and who has not PUT since, goes offline
//     (Synapse's SYNC_ONLINE_TIMEOUT).
//
// last_active_ago and currently_active are computed when an event is
// sent, from the stored last-active time, so they change without stream
// traffic.

// Presence states.
const (
	PresenceOnline      = "online"
	PresenceUnavailable = "unavailable"
	PresenceOffline     = "offline"
)

// TypePresence is the type of presence events in /sync.
const TypePresence = "m.presence"

const (
	// PresenceOfflineTimeout is how long after its clients' last sync
	// (or its last PUT) a user goes offline.
	PresenceOfflineTimeout = 30 * time.Second
	// presenceActiveWindow is how recent the last activity must be for
	// an online user to be currently_active (Synapse's
	// LAST_ACTIVE_GRANULARITY).
	presenceActiveWindow = 60 * time.Second
	// maxPresencePeerChecks: up to this many changes in a sync are
	// checked one by one for a shared room; more, against the list of
	// everyone the user shares a room with.
	maxPresencePeerChecks = 8
)

// PresenceListener hears of every presence change, whatever made it: PUT
// /presence, a sync's set_presence or the offline timeout. It is the one
// place changes leave this package (application services with
// receive_ephemeral get them as m.presence events).
type PresenceListener interface {
	// PresenceChanged is called after the change is stored, in order for
	// each user, with the m.presence content as it stands then. It must
	// not block: the user's presence stays locked while it runs.
	PresenceChanged(user roomdag.UserID, content json.RawMessage)
}

// ErrPresenceHidden: the viewer may not see that user's presence (they
// share no room).
var ErrPresenceHidden = errors.New("sync: presence not visible")

// PresenceStore is what presence reads and writes (storage/sqlstore/presence.go).
type PresenceStore interface {
	// PutPresence stores a user's presence (p.Pos is ignored) and returns
	// its new presence stream position, once durable.
	PutPresence(ctx context.Context, p storage.Presence) (int64, error)
	// Presence returns a user's stored presence, or storage.ErrNotFound.
	Presence(ctx context.Context, user roomdag.UserID) (storage.Presence, error)
	// PresenceSince returns the rows whose last change is in (after, upTo],
	// oldest first.
	PresenceSince(ctx context.Context, after, upTo int64) ([]storage.Presence, error)
	// PresenceOf returns the stored presence of those of users who have
	// one, in no particular order.
	PresenceOf(ctx context.Context, users []roomdag.UserID) ([]storage.Presence, error)
	// PresencePos is the newest presence stream position.
	PresencePos(ctx context.Context) (int64, error)
	// RoomPeers returns the users joined to a room that user is joined to.
	RoomPeers(ctx context.Context, user roomdag.UserID) (map[roomdag.UserID]bool, error)
	// SharesRoom reports whether a and b are both joined to some room.
	SharesRoom(ctx context.Context, a, b roomdag.UserID) (bool, error)
}

// PresenceContent is the content of an m.presence event and the body of
// GET /presence/{userId}/status.
type PresenceContent struct {
	Presence        string `json:"presence"`
	LastActiveAgo   *int64 `json:"last_active_ago,omitempty"`
	StatusMsg       string `json:"status_msg,omitempty"`
	CurrentlyActive *bool  `json:"currently_active,omitempty"`
}

func presenceContent(p storage.Presence, now time.Time) PresenceContent {
	c := PresenceContent{Presence: p.State, StatusMsg: p.StatusMsg}
	if p.LastActiveMS > 0 {
		ago := max(now.UnixMilli()-p.LastActiveMS, 0)
		c.LastActiveAgo = &ago
	}
	if p.State == PresenceOnline {
		active := c.LastActiveAgo != nil && time.Duration(*c.LastActiveAgo)*time.Millisecond < presenceActiveWindow
		c.CurrentlyActive = &active
	}
	return c
}

// presence tracks users' presence: a cache of the stored rows of users
// seen since start, which clients are syncing, and the timer that takes
// users offline.
type presence struct {
	enabled  bool
	store    PresenceStore
	clock    clock.Clock
	notifier *Notifier
	listener PresenceListener // nil: none
	// activity tells the other processes sharing the database when a
	// user's clients connect here or leave (nil: the only process).
	activity ActivityAnnouncer
	log      *slog.Logger
	closing  <-chan struct{}

	mu    gosync.Mutex
	users map[roomdag.UserID]*userPresence
	// remote holds, per user, the other processes that announced a
	// client of theirs connected and not yet that it left (activity.go).
	remote map[roomdag.UserID]map[string]struct{}
	// sweeper wakes at the next offline deadline; guarded by mu.
	sweeper
}

type userPresence struct {
	// mu is held across a change and its write, so one user's changes
	// are stored, cached and announced in order. Lock order: mu, then
	// presence.mu.
	mu     gosync.Mutex
	loaded bool
	cur    storage.Presence
	// explicit is set when the state came from PUT unavailable: a
	// sync's default "online" does not override it.
	explicit bool

	// Guarded by presence.mu: running syncs that keep the user connected,
	// and when the last one ended (or the user last PUT); zero once the
	// user went offline.
	syncing int
	seen    time.Time
	// announced: the other processes were told the user is connected
	// here (and not yet that they left). deferred: the offline timeout
	// ran out here while another process still had the user connected,
	// so it is that process's to take them offline, or this one's again
	// if it announces its client left while none is connected here.
	announced, deferred bool
}

// newPresence loads the users stored as online or unavailable and gives
// them the offline timeout from now: unless a client syncs, they go
// offline, as their clients may have gone while the server was down.
func newPresence(enabled bool, store PresenceStore, clk clock.Clock, n *Notifier, listener PresenceListener, activity ActivityAnnouncer, log *slog.Logger, closing <-chan struct{}) *presence {
	p := &presence{enabled: enabled, store: store, clock: clk, notifier: n, listener: listener, activity: activity, log: log, closing: closing,
		users: map[roomdag.UserID]*userPresence{}, remote: map[roomdag.UserID]map[string]struct{}{}, sweeper: newSweeper(clk, closing)}
	ctx := context.Background()
	pos, err := store.PresencePos(ctx)
	if err != nil {
		log.Error("reading the presence stream position", "err", err)
		return p
	}
	n.presenceAt(pos)
	if !enabled {
		return p
	}
	rows, err := store.PresenceSince(ctx, 0, pos)
	if err != nil {
		log.Error("reading presence", "err", err)
		return p
	}
	now := clk.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, row := range rows {
		if row.State == PresenceOffline {
			continue
		}
		p.users[row.UserID] = &userPresence{loaded: true, cur: row, seen: now}
		p.scheduleLocked(now, now.Add(PresenceOfflineTimeout), p.sweep)
	}
	return p
}

func (p *presence) user(id roomdag.UserID) *userPresence {
	p.mu.Lock()
	defer p.mu.Unlock()
	u := p.users[id]
	if u == nil {
		u = &userPresence{}
		p.users[id] = u
	}
	return u
}

// loadLocked reads the user's stored presence once; the caller holds u.mu.
func (p *presence) loadLocked(ctx context.Context, id roomdag.UserID, u *userPresence) error {
	if u.loaded {
		return nil
	}
	row, err := p.store.Presence(ctx, id)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		row = storage.Presence{UserID: id, State: PresenceOffline}
	case err != nil:
		return err
	}
	u.cur, u.loaded = row, true
	return nil
}

// change applies fn to the user's presence; when fn reports a change, it
// is stored and then announced. The caller holds nothing.
func (p *presence) change(ctx context.Context, id roomdag.UserID, fn func(cur storage.Presence, explicit bool) (storage.Presence, bool, bool)) error {
	u := p.user(id)
	u.mu.Lock()
	defer u.mu.Unlock()
	return p.changeLocked(ctx, id, u, fn)
}

func (p *presence) changeLocked(ctx context.Context, id roomdag.UserID, u *userPresence, fn func(cur storage.Presence, explicit bool) (storage.Presence, bool, bool)) error {
	if err := p.loadLocked(ctx, id, u); err != nil {
		return err
	}
	next, explicit, changed := fn(u.cur, u.explicit)
	if !changed {
		return nil
	}
	next.UserID = id
	// The write must land even if the client goes away meanwhile, or the
	// cache would disagree with storage.
	pos, err := p.store.PutPresence(context.WithoutCancel(ctx), next)
	if err != nil {
		return err
	}
	next.Pos = pos
	u.cur, u.explicit = next, explicit
	p.notifier.presenceChanged(id, pos)
	if p.listener != nil {
		b, _ := json.Marshal(presenceContent(next, p.clock.Now())) // strings, numbers, bools: cannot fail
		p.listener.PresenceChanged(id, b)
	}
	return nil
}

// set is PUT /presence/{userId}/status: the caller checked state.
func (p *presence) set(ctx context.Context, id roomdag.UserID, state, statusMsg string) error {
	now := p.clock.Now()
	err := p.change(ctx, id, func(cur storage.Presence, _ bool) (storage.Presence, bool, bool) {
		cur.State, cur.StatusMsg, cur.LastActiveMS = state, statusMsg, now.UnixMilli()
		return cur, state == PresenceUnavailable, true
	})
	if err != nil {
		return err
	}
	p.seen(id, now, state != PresenceOffline)
	return nil
}

// seen records that the user was connected at now; unless a sync is
// running, the offline timeout starts. With connected false (the user
// went offline) the timeout is cleared.
func (p *presence) seen(id roomdag.UserID, now time.Time, connected bool) {
	p.mu.Lock()
	u := p.users[id]
	if u == nil {
		p.mu.Unlock()
		return
	}
	if !connected {
		u.seen = time.Time{}
		tell := p.leftLocked(u)
		p.mu.Unlock()
		tell.announce(p, id)
		return
	}
	u.seen = now
	if u.syncing == 0 {
		p.scheduleLocked(now, now.Add(PresenceOfflineTimeout), p.sweep)
	}
	tell := p.connectedLocked(u)
	p.mu.Unlock()
	tell.announce(p, id)
}

// syncStarted applies a sync's set_presence and reports whether the sync
// keeps the user connected (syncEnded must then be called). Errors are
// logged: presence never fails a sync.
func (p *presence) syncStarted(ctx context.Context, id roomdag.UserID, setPresence string) bool {
	if !p.enabled || setPresence == PresenceOffline {
		return false
	}
	u := p.user(id)
	p.mu.Lock()
	u.syncing++
	tell := p.connectedLocked(u)
	p.mu.Unlock()
	tell.announce(p, id)
	now := p.clock.Now()
	err := p.change(ctx, id, func(cur storage.Presence, explicit bool) (storage.Presence, bool, bool) {
		switch {
		case setPresence == PresenceUnavailable:
			if cur.State == PresenceUnavailable {
				return cur, explicit, false
			}
			cur.State = PresenceUnavailable
			return cur, false, true
		case cur.State == PresenceOffline, cur.State == PresenceUnavailable && !explicit:
			cur.State, cur.LastActiveMS = PresenceOnline, now.UnixMilli()
			return cur, false, true
		}
		return cur, explicit, false
	})
	if err != nil {
		p.log.Error("setting presence from sync", "user", id, "err", err)
	}
	return true
}

// syncEnded ends what syncStarted began: when no other sync of the user
// runs, the offline timeout starts. The timer is made before the sync's
// response is written, so a test's fake clock never passes it unmade.
func (p *presence) syncEnded(id roomdag.UserID, tracked bool) {
	if !tracked {
		return
	}
	now := p.clock.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	u := p.users[id]
	u.syncing--
	u.seen = now
	if u.syncing == 0 {
		p.scheduleLocked(now, now.Add(PresenceOfflineTimeout), p.sweep)
	}
}

// sweep takes users offline as their timeouts run out; it exits when no
// timeout is pending, or at shutdown.
func (p *presence) sweep(timer <-chan time.Time) {
	for {
		select {
		case <-timer:
		case timer = <-p.timers:
			continue
		case <-p.closing:
			p.mu.Lock()
			p.stopLocked()
			p.mu.Unlock()
			return
		}
		now := p.clock.Now()
		p.mu.Lock()
		var due []roomdag.UserID
		for id, u := range p.users {
			if u.syncing == 0 && !u.seen.IsZero() && !u.seen.Add(PresenceOfflineTimeout).After(now) {
				due = append(due, id)
			}
		}
		p.mu.Unlock()
		for _, id := range due {
			p.expire(id, now)
		}
		p.mu.Lock()
		var next time.Time
		for _, u := range p.users {
			if u.syncing == 0 && !u.seen.IsZero() {
				if d := u.seen.Add(PresenceOfflineTimeout); next.IsZero() || d.Before(next) {
					next = d
				}
			}
		}
		if timer = p.againLocked(now, next); timer == nil {
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
	}
}

// expire takes the user offline if they are still due at now.
func (p *presence) expire(id roomdag.UserID, now time.Time) {
	u := p.user(id)
	u.mu.Lock()
	defer u.mu.Unlock()
	p.mu.Lock()
	due := u.syncing == 0 && !u.seen.IsZero() && !u.seen.Add(PresenceOfflineTimeout).After(now)
	var tell activityNews
	elsewhere := false
	if due {
		u.seen = time.Time{}
		tell = p.leftLocked(u)
		// Another process still serves a client of the user's: it takes
		// them offline when that one leaves.
		elsewhere = len(p.remote[id]) > 0
		u.deferred = elsewhere
	}
	p.mu.Unlock()
	if !due {
		return
	}
	if elsewhere {
		tell.announce(p, id)
		return
	}
	// Stored before the others hear this client left, so that whoever
	// hears it reads the user offline already (both go through the
	// database's one channel, in order).
	defer tell.announce(p, id)
	p.goOfflineLocked(id, u)
}

// goOfflineLocked stores the user offline unless they are already; the
// caller holds u.mu.
func (p *presence) goOfflineLocked(id roomdag.UserID, u *userPresence) {
	err := p.changeLocked(context.Background(), id, u, func(cur storage.Presence, _ bool) (storage.Presence, bool, bool) {
		if cur.State == PresenceOffline {
			return cur, false, false
		}
		cur.State = PresenceOffline
		return cur, false, true
	})
	if err != nil {
		p.log.Error("presence timeout", "user", id, "err", err)
	}
}

// current returns the user's presence: cached, else stored, else offline.
func (p *presence) current(ctx context.Context, id roomdag.UserID) (storage.Presence, error) {
	p.mu.Lock()
	u := p.users[id]
	p.mu.Unlock()
	if u != nil {
		u.mu.Lock()
		defer u.mu.Unlock()
		if u.loaded {
			return u.cur, nil
		}
	}
	row, err := p.store.Presence(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return storage.Presence{UserID: id, State: PresenceOffline}, nil
	}
	return row, err
}

// SetPresence is PUT /presence/{userId}/status: state is online,
// unavailable or offline, statusMsg "" for none. With presence off it
// does nothing, as Synapse.
func (s *Syncer) SetPresence(ctx context.Context, user roomdag.UserID, state, statusMsg string) error {
	if !s.presence.enabled {
		return nil
	}
	return s.presence.set(ctx, user, state, statusMsg)
}

// RemotePresence sets a remote user's presence as their server reports
// it in an m.presence EDU (federation): stored and announced as a local
// change is, but with no offline timeout of ours, as the user's own
// server says when they go offline. With presence off it does nothing.
func (s *Syncer) RemotePresence(ctx context.Context, user roomdag.UserID, state, statusMsg string, lastActiveMS int64) error {
	if !s.presence.enabled {
		return nil
	}
	return s.presence.change(ctx, user, func(cur storage.Presence, _ bool) (storage.Presence, bool, bool) {
		changed := cur.State != state || cur.StatusMsg != statusMsg || cur.LastActiveMS != lastActiveMS
		cur.State, cur.StatusMsg, cur.LastActiveMS = state, statusMsg, lastActiveMS
		return cur, false, changed
	})
}

// GetPresence is GET /presence/{userId}/status: target's presence as
// viewer sees it, or ErrPresenceHidden unless they share a room. With
// presence off everyone is offline, as Synapse answers.
func (s *Syncer) GetPresence(ctx context.Context, viewer, target roomdag.UserID) (PresenceContent, error) {
	if !s.presence.enabled {
		return PresenceContent{Presence: PresenceOffline}, nil
	}
	if viewer != target {
		ok, err := s.presence.store.SharesRoom(ctx, viewer, target)
		if err != nil {
			return PresenceContent{}, err
		}
		if !ok {
			return PresenceContent{}, ErrPresenceHidden
		}
	}
	row, err := s.presence.current(ctx, target)
	if err != nil {
		return PresenceContent{}, err
	}
	return presenceContent(row, s.clock.Now()), nil
}

// presenceEvents returns the presence section of a sync: the changes in
// (since, cur] of the user and of everyone sharing a joined room with
// them. An initial sync (or one from a token older than the presence
// stream) gets everyone's current presence except offline, the default.
func (s *Syncer) presenceEvents(ctx context.Context, req Request, since, cur Token, joiners map[roomdag.UserID]bool) ([]json.RawMessage, error) {
	out := []json.RawMessage{}
	f := &req.Filter.Presence
	if !s.presence.enabled || anyMatch(f.NotTypes, TypePresence) || f.Types != nil && !anyMatch(*f.Types, TypePresence) {
		return out, nil
	}
	initial := req.Since == nil || since.Presence == 0
	after := since.Presence
	if initial {
		after = 0
	}
	var rows []storage.Presence
	var err error
	if cur.Presence > after {
		if rows, err = s.store.PresenceSince(ctx, after, cur.Presence); err != nil {
			return nil, err
		}
	}
	if !initial {
		if rows, err = s.withJoiners(ctx, req, rows, joiners, cur); err != nil {
			return nil, err
		}
	}
	if len(rows) == 0 {
		return out, nil
	}
	// A few changes (the usual incremental sync) are checked one by one;
	// many (an initial sync) against everyone the user shares a room with.
	var peers map[roomdag.UserID]bool
	if len(rows) > maxPresencePeerChecks {
		if peers, err = s.store.RoomPeers(ctx, req.User); err != nil {
			return nil, err
		}
	}
	now := s.clock.Now()
	for _, row := range rows {
		if initial && row.State == PresenceOffline || req.ignored[row.UserID] || !f.Allows(TypePresence, row.UserID) {
			continue
		}
		if row.UserID != req.User {
			shared := peers[row.UserID]
			if peers == nil {
				if shared, err = s.store.SharesRoom(ctx, req.User, row.UserID); err != nil {
					return nil, err
				}
			}
			if !shared {
				continue
			}
		}
		ev, err := json.Marshal(struct {
			Type    string          `json:"type"`
			Sender  roomdag.UserID  `json:"sender"`
			Content PresenceContent `json:"content"`
		}{TypePresence, row.UserID, presenceContent(row, now)})
		if err != nil {
			return nil, err
		}
		out = append(out, ev)
	}
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[len(out)-f.Limit:] // the newest changes
	}
	return out, nil
}

// withJoiners adds to the presence changes of an incremental sync the
// current presence of the users a join in its range brought into a room
// with the user (Synapse's newly joined users and the members of newly
// joined rooms), even if it last changed before the token: the client
// had no reason to know it (Complement TestSync "Newly joined room
// includes presence in incremental sync", "Get presence for newly joined
// members in incremental sync"). A user already among the changes, the
// user themselves and users with no presence stored are left out.
func (s *Syncer) withJoiners(ctx context.Context, req Request, rows []storage.Presence, joiners map[roomdag.UserID]bool, cur Token) ([]storage.Presence, error) {
	if len(joiners) == 0 {
		return rows, nil
	}
	have := make(map[roomdag.UserID]bool, len(rows))
	for _, r := range rows {
		have[r.UserID] = true
	}
	var users []roomdag.UserID
	for u := range joiners {
		if !have[u] && u != req.User {
			users = append(users, u)
		}
	}
	if len(users) == 0 {
		return rows, nil
	}
	found, err := s.store.PresenceOf(ctx, users)
	if err != nil {
		return nil, err
	}
	var extra []storage.Presence
	for _, p := range found {
		if p.Pos <= cur.Presence { // a later change is the next sync's
			extra = append(extra, p)
		}
	}
	// Oldest first, as the stream's changes are, so the limit keeps the
	// newest.
	sort.Slice(extra, func(i, j int) bool { return extra[i].Pos < extra[j].Pos })
	return append(extra, rows...), nil
}

// presenceChanged is called after a presence change at pos commits: it
// wakes the user and everyone in a room with them.
func (n *Notifier) presenceChanged(user roomdag.UserID, pos int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if pos > n.cur.Presence {
		n.cur.Presence = pos
	}
	n.wakeLocked(user)
	for room, set := range n.members {
		if _, ok := set[user]; ok {
			n.wakeRoomLocked(room)
		}
	}
}

// presenceAt raises the presence position to pos (at start-up).
func (n *Notifier) presenceAt(pos int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if pos > n.cur.Presence {
		n.cur.Presence = pos
	}
}
