package sync

import (
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"math"
	"sort"
	gosync "sync"
	"sync/atomic"
	"time"

	"github.com/tidwall/gjson"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/push"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// Store is what /sync reads.
type Store interface {
	UserRooms(ctx context.Context, user roomdag.UserID) ([]storage.RoomMembership, error)
	RoomsWithEventsSince(ctx context.Context, user roomdag.UserID, after roomdag.StreamPos) (map[roomdag.RoomID]bool, error)
	RecentEvents(ctx context.Context, room roomdag.RoomID, after, upTo roomdag.StreamPos, limit int) ([]*roomdag.StoredEvent, bool, error)
	// RoomEventsTopo pages a room's timeline in topological order, the
	// backfilled history (negative stream positions) in its place.
	RoomEventsTopo(ctx context.Context, room roomdag.RoomID, from storage.TopoPos, backwards bool, limit int) ([]*roomdag.StoredEvent, bool, error)
	Snapshot(ctx context.Context, id int64) (map[roomdag.StateKey]roomdag.EventID, error)
	StateAtStream(ctx context.Context, room roomdag.RoomID, pos roomdag.StreamPos) (int64, error)
	Events(ctx context.Context, ids []roomdag.EventID) ([]*roomdag.StoredEvent, error)
	// EventsWithOutliers is Events that also finds outliers: the state
	// of a room joined over federation is held as outliers.
	EventsWithOutliers(ctx context.Context, ids []roomdag.EventID) ([]*roomdag.StoredEvent, error)
	AccountDataSince(ctx context.Context, user roomdag.UserID, after, upTo int64) ([]storage.AccountDataItem, error)
	// PushRules returns the user's push.UserRules document, nil if none.
	PushRules(ctx context.Context, user roomdag.UserID) (json.RawMessage, error)
	InviteState(ctx context.Context, pos roomdag.StreamPos) (json.RawMessage, error)
	// EventsAt returns the events at stream positions (unknown ones are
	// skipped), in no particular order.
	EventsAt(ctx context.Context, positions []roomdag.StreamPos) ([]*roomdag.StoredEvent, error)
	// TopoAtStream is the topological place just after the room's newest
	// event at or before pos (storage.ErrNotFound if none).
	TopoAtStream(ctx context.Context, room roomdag.RoomID, pos roomdag.StreamPos) (storage.TopoPos, error)

	// Receipts returns, per room of rooms, the contents of m.receipt
	// events (spec: m.receipt) holding the receipts whose receipt stream
	// position is in (after, upTo]: the newest per user, receipt type and
	// thread. viewer sees their own m.read.private receipts and nobody
	// else's. Rooms without receipts are absent.
	Receipts(ctx context.Context, viewer roomdag.UserID, rooms []roomdag.RoomID, after, upTo int64) (map[roomdag.RoomID][]json.RawMessage, error)
	// ReceiptPos is the newest committed receipt stream position.
	ReceiptPos(ctx context.Context) (int64, error)

	// UnreadCounts returns the user's notifications in each of rooms that
	// are after their read receipt there; rooms with none are absent.
	UnreadCounts(ctx context.Context, user roomdag.UserID, rooms []roomdag.RoomID) (map[roomdag.RoomID]storage.UnreadCount, error)
	// RoomsNotifiedSince returns the rooms where the user got
	// notifications for events in (after, upTo].
	RoomsNotifiedSince(ctx context.Context, user roomdag.UserID, after, upTo roomdag.StreamPos) (map[roomdag.RoomID]bool, error)

	// AccountData returns one account data entry ("" room: global), or
	// storage.ErrNotFound.
	AccountData(ctx context.Context, user roomdag.UserID, room roomdag.RoomID, typ string) (json.RawMessage, error)
	// RoomAccountData returns the user's room account data of one type,
	// by room (feeds read m.tag with it).
	RoomAccountData(ctx context.Context, user roomdag.UserID, typ string) (map[roomdag.RoomID]json.RawMessage, error)
	// RelationAggregates reads what bundled aggregations need
	// (storage.RelationAggregates documents it; see Bundle).
	RelationAggregates(ctx context.Context, parents []roomdag.EventID, viewer roomdag.UserID, ignored []roomdag.UserID) (*storage.RelationAggregates, error)

	// PresenceStore: the presence stream (presence.go).
	PresenceStore
	// MembershipStore: the viewer's membership history (membership.go).
	MembershipStore
	// ToDeviceStore: to-device messages (todevice.go).
	ToDeviceStore
}

// Syncer answers /sync requests.
type Syncer struct {
	store    Store
	rooms    *roomdag.Rooms
	notifier *Notifier
	typing   *typing
	clock    clock.Clock
	log      *slog.Logger
	// Backchat bounds: the server default and the most any filter or room
	// may ask for.
	backchatDefault, backchatMax int
	// closing is closed at shutdown: long-polls answer at once instead of
	// holding the shutdown for their whole timeout.
	closing   chan struct{}
	closeOnce gosync.Once
	parked    atomic.Int64 // long-polls waiting right now
	presence  *presence
	// toDeviceAcks: what this process deleted of whose to-device
	// messages (todevice.go).
	toDeviceAcks toDeviceAcks
	// keys serves the device key sections (devicelists.go); nil: none.
	keys DeviceKeys
}

// Parked is how many long-polls are waiting for news right now.
func (s *Syncer) Parked() int64 { return s.parked.Load() }

// Close makes pending and later long-polls return at once and stops the
// typing and presence timeouts, waiting for a sweep's writes in flight so
// that none outlives the database. Called when the server shuts down.
func (s *Syncer) Close() {
	s.closeOnce.Do(func() { close(s.closing) })
	// A loop starts under its owner's mutex only until closed is set
	// (sweeper.scheduleLocked), so every start happens before the wait.
	s.typing.mu.Lock()
	s.typing.closed = true
	s.typing.mu.Unlock()
	s.typing.wait()
	s.presence.mu.Lock()
	s.presence.closed = true
	s.presence.mu.Unlock()
	s.presence.wait()
}

// NewSyncer makes a Syncer. It raises the notifier's receipt position to
// the newest stored receipt, so tokens handed out before a restart stay
// valid.
//
// With presenceEnabled false, /sync carries no presence and set_presence
// is ignored (config presence.enabled). onPresence (nil: none) hears of
// every presence change once stored (PresenceListener). shared is zero on
// a database one process has to itself, and holds what the processes
// sharing one need (Shared).
//
// keys (nil: none) serves the device key sections of end-to-end
// encryption (devicelists.go); if it has a DeviceListPos method, the
// notifier's device-list position starts there.
func NewSyncer(store Store, rooms *roomdag.Rooms, n *Notifier, clk clock.Clock, log *slog.Logger, backchatDefault, backchatMax int, presenceEnabled bool, onPresence PresenceListener, shared Shared, keys DeviceKeys) *Syncer {
	if pos, err := store.ReceiptPos(context.Background()); err != nil {
		log.Error("reading the receipt stream position", "err", err)
	} else {
		n.receiptsAt(pos)
	}
	if p, ok := keys.(interface {
		DeviceListPos(context.Context) (int64, error)
	}); ok {
		if pos, err := p.DeviceListPos(context.Background()); err != nil {
			log.Error("reading the device-list stream position", "err", err)
		} else {
			n.deviceListsAt(pos)
		}
	}
	closing := make(chan struct{})
	return &Syncer{store: store, rooms: rooms, notifier: n, typing: newTyping(clk, n, shared.Typing, log, closing), clock: clk, log: log,
		backchatDefault: backchatDefault, backchatMax: backchatMax, closing: closing, keys: keys,
		presence: newPresence(presenceEnabled, store, clk, n, onPresence, shared.Activity, log, closing)}
}

// Shared is what a syncer needs where several processes share the
// database; both nil where one process has it to itself.
type Shared struct {
	// Typing stores typing changes (typing.go).
	Typing TypingStore
	// Activity tells the other processes when users' clients connect
	// here or leave (activity.go).
	Activity ActivityAnnouncer
}

// SetTyping marks user as typing in room for timeout (capped at
// MaxTypingTimeout), or, with on false, as having stopped; it wakes the
// room's members. The caller has checked that the user is joined. It
// fails only where typing is stored (several processes share the
// database) and the store fails.
func (s *Syncer) SetTyping(ctx context.Context, room roomdag.RoomID, user roomdag.UserID, on bool, timeout time.Duration) error {
	return s.typing.set(ctx, room, user, on, timeout)
}

// Notifier returns the notifier the syncer waits on.
func (s *Syncer) Notifier() *Notifier { return s.notifier }

// Request is one /sync call.
type Request struct {
	User      roomdag.UserID
	Device    string
	Since     *Token // nil for an initial sync
	Timeout   time.Duration
	Filter    *Filter
	FullState bool
	// SetPresence is the set_presence parameter: "online" (also for ""),
	// "unavailable" or "offline" (presence.go).
	SetPresence string
	// Session is the session the request was made with: if it ends, Sync
	// answers ErrSessionEnded instead of anything newer (sessions.go).
	Session *SessionCheck
	// StateAfter is set by use_state_after (v1.16): rooms carry, under
	// this key, the state at the end of their timelines in place of state
	// (stateafter.go). "" for state.
	StateAfter string

	// ignored and invitesBlocked are read once per sync by build.
	ignored        Ignored
	invitesBlocked bool
}

// Response is the /sync body.
type Response struct {
	NextBatch   string    `json:"next_batch"`
	Rooms       Rooms     `json:"rooms"`
	AccountData EventList `json:"account_data"`
	Presence    EventList `json:"presence"`
	// ToDevice holds the device's to-device messages (todevice.go).
	ToDevice EventList `json:"to_device"`
	// Feeds holds new matches of the user's topic feeds, by feed ID
	// (feeds.go); absent when there are none.
	Feeds map[string]*FeedSection `json:"org.persistentchat.feeds,omitempty"`
	// The device key sections (devicelists.go); absent without a key
	// server.
	DeviceLists            *DeviceLists     `json:"device_lists,omitempty"`
	OneTimeKeysCount       map[string]int64 `json:"device_one_time_keys_count,omitempty"`
	UnusedFallbackKeyTypes *[]string        `json:"device_unused_fallback_key_types,omitempty"`
}

// Rooms holds the per-membership sections.
type Rooms struct {
	Join   map[roomdag.RoomID]*JoinedRoom  `json:"join"`
	Invite map[roomdag.RoomID]*InvitedRoom `json:"invite"`
	Leave  map[roomdag.RoomID]*LeftRoom    `json:"leave"`
	Knock  map[roomdag.RoomID]*KnockedRoom `json:"knock"`
}

// EventList is {"events": [...]}.
type EventList struct {
	Events []json.RawMessage `json:"events"`
}

// Timeline is a room's timeline section.
type Timeline struct {
	Events    []json.RawMessage `json:"events"`
	Limited   bool              `json:"limited"`
	PrevBatch string            `json:"prev_batch,omitempty"`
}

// JoinedRoom is a room in rooms.join.
type JoinedRoom struct {
	Timeline            Timeline       `json:"timeline"`
	State               EventList      `json:"state"`
	AccountData         EventList      `json:"account_data"`
	Ephemeral           EventList      `json:"ephemeral"`
	Summary             map[string]any `json:"summary"`
	UnreadNotifications Unread         `json:"unread_notifications"`
	// UnreadThreadNotifications: by thread root, when the filter asks.
	UnreadThreadNotifications map[roomdag.EventID]Unread `json:"unread_thread_notifications,omitempty"`

	// stateAfter: State holds state_after, to go under this key
	// (stateafter.go).
	stateAfter string
}

// Unread holds a room's notification counts.
type Unread struct {
	NotificationCount int64 `json:"notification_count"`
	HighlightCount    int64 `json:"highlight_count"`
}

// InvitedRoom is a room in rooms.invite.
type InvitedRoom struct {
	InviteState EventList `json:"invite_state"`
}

// KnockedRoom is a room in rooms.knock: the stripped state the knocker
// may see, ending with their knock.
type KnockedRoom struct {
	KnockState EventList `json:"knock_state"`
}

// LeftRoom is a room in rooms.leave.
type LeftRoom struct {
	Timeline    Timeline  `json:"timeline"`
	State       EventList `json:"state"`
	AccountData EventList `json:"account_data"`

	// stateAfter: State holds state_after, to go under this key
	// (stateafter.go).
	stateAfter string
}

func (r *Response) empty() bool {
	return len(r.Rooms.Join) == 0 && len(r.Rooms.Invite) == 0 && len(r.Rooms.Leave) == 0 && len(r.Rooms.Knock) == 0 &&
		len(r.AccountData.Events) == 0 && len(r.Presence.Events) == 0 && len(r.Feeds) == 0 && len(r.ToDevice.Events) == 0 &&
		r.DeviceLists == nil
}

// Sync answers a sync request, long-polling up to req.Timeout when an
// incremental sync has nothing new.
func (s *Syncer) Sync(ctx context.Context, req Request) (*Response, error) {
	if req.Filter == nil {
		req.Filter = &Filter{}
	}
	// Before the position is taken, so the token covers the user's own
	// change (presence.go).
	connected := s.presence.syncStarted(ctx, req.User, req.SetPresence)
	defer s.presence.syncEnded(req.User, connected)
	if req.Since != nil {
		// Typing positions live in memory and restart at zero with the
		// server: a token from before a restart may be ahead of now.
		// Where they are stored, a token ahead of this process comes from
		// another whose changes have not reached this one yet: read them.
		since := *req.Since
		if since.Typing > s.notifier.Current().Typing && s.typing.store != nil {
			if err := s.typing.catchUp(ctx); err != nil {
				return nil, err
			}
		}
		if since.Typing > s.notifier.Current().Typing {
			since.Typing = 0
		}
		req.Since = &since
		// The client has what came with its token: delete it
		// (todevice.go), before anything else, so that even a sync
		// that finds nothing new acknowledges.
		if err := s.ackToDevice(ctx, req.User, req.Device, since.ToDevice, s.notifier.Current().ToDevice); err != nil {
			return nil, err
		}
	}
	if req.Since != nil && req.Timeout > 0 {
		// Events in followed rooms the user is not joined to must wake
		// this long-poll too, for the feeds section.
		rooms, err := s.feedWatch(ctx, req.User)
		if err != nil {
			return nil, err
		}
		defer s.notifier.Watch(req.User, rooms)()
	}
	var deadline <-chan time.Time
	for {
		s.typing.expire() // so that cur includes notifications that ran out
		wake, cur := s.notifier.wakeup(req.User)
		if err := s.notifier.checkSession(ctx, req.User, req.Session); err != nil {
			return nil, err
		}
		if req.Since != nil && !cur.after(*req.Since) && !req.FullState {
			// Nothing new at all: wait without touching the database.
		} else {
			resp, err := s.build(ctx, req, cur)
			if err != nil {
				return nil, err
			}
			if req.Since == nil || req.FullState || !resp.empty() || req.Timeout <= 0 {
				return resp, nil
			}
		}
		if req.Timeout <= 0 {
			return s.idleResponse(ctx, req, cur)
		}
		if deadline == nil {
			deadline = s.clock.After(req.Timeout)
		}
		s.parked.Add(1)
		select {
		case <-wake:
		case <-deadline:
			s.parked.Add(-1)
			return s.idleResponse(ctx, req, s.notifier.Current())
		case <-s.closing:
			s.parked.Add(-1)
			return s.idleResponse(ctx, req, s.notifier.Current())
		case <-ctx.Done():
			s.parked.Add(-1)
			return nil, ctx.Err()
		}
		s.parked.Add(-1)
	}
}

func (s *Syncer) emptyResponse(cur Token) *Response {
	return &Response{NextBatch: cur.String(), Rooms: emptyRooms(), AccountData: EventList{Events: []json.RawMessage{}},
		Presence: EventList{Events: []json.RawMessage{}}, ToDevice: EventList{Events: []json.RawMessage{}}}
}

func emptyRooms() Rooms {
	return Rooms{Join: map[roomdag.RoomID]*JoinedRoom{}, Invite: map[roomdag.RoomID]*InvitedRoom{},
		Leave: map[roomdag.RoomID]*LeftRoom{}, Knock: map[roomdag.RoomID]*KnockedRoom{}}
}

// build assembles everything between req.Since and cur.
func (s *Syncer) build(ctx context.Context, req Request, cur Token) (*Response, error) {
	resp := s.emptyResponse(cur)
	var since Token
	if req.Since != nil {
		since = *req.Since
	}
	memberships, err := s.store.UserRooms(ctx, req.User)
	if err != nil {
		return nil, err
	}
	if req.ignored, err = IgnoredUsers(ctx, s.store, req.User); err != nil {
		return nil, err
	}
	if req.invitesBlocked, err = InvitesBlocked(ctx, s.store, req.User); err != nil {
		return nil, err
	}
	shownLeft, err := s.leftRoomsShown(ctx, req, memberships, cur)
	if err != nil {
		return nil, err
	}
	var changed, notified map[roomdag.RoomID]bool
	if req.Since != nil && !req.FullState {
		if changed, err = s.store.RoomsWithEventsSince(ctx, req.User, since.Events); err != nil {
			return nil, err
		}
	}
	if req.Since != nil && cur.Notifications > since.Notifications {
		// Counts changed where the worker added notifications, even for
		// events an earlier sync already returned.
		if notified, err = s.store.RoomsNotifiedSince(ctx, req.User, since.Notifications, cur.Notifications); err != nil {
			return nil, err
		}
	}
	accountData, err := s.store.AccountDataSince(ctx, req.User, since.AccountData, cur.AccountData)
	if err != nil {
		return nil, err
	}
	roomData := map[roomdag.RoomID][]json.RawMessage{}
	// m.push_rules is in every initial sync, whether or not the user ever
	// changed a rule (clients build their notification settings from it),
	// and in an incremental one when the rules changed; its content is
	// rendered from the rules as GET /pushrules/ serves them.
	pushRules := req.Since == nil
	for _, it := range accountData {
		if it.RoomID == "" && it.Type == TypePushRules {
			pushRules = true
			continue
		}
		ev, _ := json.Marshal(map[string]any{"type": it.Type, "content": it.Content})
		if it.RoomID == "" {
			if req.Filter.AccountData.Allows(it.Type, "") {
				resp.AccountData.Events = append(resp.AccountData.Events, ev)
			}
		} else if req.Filter.Room.AccountData.Allows(it.Type, "") {
			roomData[it.RoomID] = append(roomData[it.RoomID], ev)
		}
	}
	if pushRules && req.Filter.AccountData.Allows(TypePushRules, "") {
		ev, err := s.pushRulesEvent(ctx, req.User)
		if err != nil {
			return nil, err
		}
		resp.AccountData.Events = append(resp.AccountData.Events, ev)
	}
	if resp.Feeds, err = s.feedSections(ctx, req, since, cur); err != nil {
		return nil, err
	}
	rf := &req.Filter.Room
	joinedNow, err := s.newlyJoined(ctx, req, memberships, since, cur)
	if err != nil {
		return nil, err
	}
	ephemeral, err := s.ephemeral(ctx, req, memberships, since, cur, joinedNow)
	if err != nil {
		return nil, err
	}
	// Users a join in this sync's range brought into a room with the user
	// (presenceEvents sends their presence).
	var joiners map[roomdag.UserID]bool
	for _, m := range memberships {
		if m.Pos > cur.Events || !rf.AllowsRoom(m.RoomID) {
			continue // a membership newer than this sync: the next one has it
		}
		newHere := req.Since == nil || m.Pos > since.Events
		switch m.Membership {
		case roomdag.MembershipJoin:
			// A join that follows a join is a profile change: the room is
			// new to this sync only if the user was not joined at the
			// token or left and came back since.
			newHere = req.Since == nil || joinedNow[m.RoomID]
			if !newHere && !req.FullState && !changed[m.RoomID] && !notified[m.RoomID] && roomData[m.RoomID] == nil && ephemeral[m.RoomID] == nil {
				continue
			}
			jr, joined, err := s.joinedRoom(ctx, req, m, since, cur, newHere)
			if err != nil {
				return nil, err
			}
			for _, u := range joined {
				if joiners == nil {
					joiners = map[roomdag.UserID]bool{}
				}
				joiners[u] = true
			}
			d := roomData[m.RoomID]
			if d != nil {
				jr.AccountData.Events = d
			}
			eph := ephemeral[m.RoomID]
			if eph != nil {
				jr.Ephemeral.Events = eph
			}
			// An incremental sync lists a room only if something changed.
			if newHere || req.FullState || len(jr.Timeline.Events) > 0 || len(jr.State.Events) > 0 || d != nil || eph != nil || notified[m.RoomID] {
				resp.Rooms.Join[m.RoomID] = jr
			}
		case roomdag.MembershipInvite, roomdag.MembershipKnock:
			if !newHere || m.Membership == roomdag.MembershipInvite && req.invitesBlocked {
				continue // invites are not served while the user blocks them (v1.18)
			}
			ir, err := s.invitedRoom(ctx, m, req.ignored)
			if err != nil {
				return nil, err
			}
			if ir == nil {
				continue // an invite from an ignored user
			}
			if m.Membership == roomdag.MembershipInvite {
				resp.Rooms.Invite[m.RoomID] = ir
			} else {
				// The same stripped state, kept with the knock, ends
				// with the knock itself (spec: knock_state).
				resp.Rooms.Knock[m.RoomID] = &KnockedRoom{KnockState: ir.InviteState}
			}
		case roomdag.MembershipLeave, roomdag.MembershipBan:
			if !shownLeft[m.RoomID] {
				continue
			}
			lr, err := s.leftRoom(ctx, req, m, since)
			if err != nil {
				return nil, err
			}
			resp.Rooms.Leave[m.RoomID] = lr
		}
	}
	if resp.Presence.Events, err = s.presenceEvents(ctx, req, since, cur, joiners); err != nil {
		return nil, err
	}
	if err := s.toDeviceEvents(ctx, req, since, cur, resp); err != nil {
		return nil, err
	}
	if err := s.unread(ctx, req, resp.Rooms.Join); err != nil {
		return nil, err
	}
	if err := s.deviceKeySections(ctx, req, since, cur, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// leftRoomsShown picks the rooms the user left (or was banned from) that
// go in rooms.leave, as Synapse does:
//
//   - an incremental sync (full_state or not) lists the rooms left since
//     the token, include_leave or not, even when already forgotten, so
//     the user's other devices learn of the leave (Complement "Leave for
//     forgotten room shows up in v2 incremental /sync");
//   - an initial sync lists, unless forgotten, every left room with
//     include_leave (spec: "Include rooms that the user has left"), and
//     without it the rooms the user was kicked or banned from, so they
//     learn why a room went; the rooms they left themselves (a rejected
//     invite too) stay out.
func (s *Syncer) leftRoomsShown(ctx context.Context, req Request, memberships []storage.RoomMembership, cur Token) (map[roomdag.RoomID]bool, error) {
	rf := &req.Filter.Room
	var out map[roomdag.RoomID]bool
	var leaves []roomdag.StreamPos
	for _, m := range memberships {
		if m.Membership != roomdag.MembershipLeave && m.Membership != roomdag.MembershipBan || m.Pos > cur.Events || !rf.AllowsRoom(m.RoomID) {
			continue
		}
		switch {
		case req.Since != nil && m.Pos <= req.Since.Events, req.Since == nil && m.Forgotten:
		case req.Since != nil, rf.IncludeLeave, m.Membership == roomdag.MembershipBan:
			if out == nil {
				out = map[roomdag.RoomID]bool{}
			}
			out[m.RoomID] = true
		default:
			leaves = append(leaves, m.Pos) // shown if someone else made the leave
		}
	}
	if len(leaves) == 0 {
		return out, nil
	}
	evs, err := s.store.EventsAt(ctx, leaves)
	if err != nil {
		return nil, err
	}
	for _, ev := range evs {
		if ev.Sender() != req.User {
			if out == nil {
				out = map[roomdag.RoomID]bool{}
			}
			out[ev.RoomID()] = true
		}
	}
	return out, nil
}

// unread fills in the joined rooms' notification counts: the user's
// notifications after their read receipt (spec: "Receiving
// notifications"). With the filter's unread_thread_notifications, the
// main timeline and each thread are counted apart; without, a room's
// count is their sum.
func (s *Syncer) unread(ctx context.Context, req Request, join map[roomdag.RoomID]*JoinedRoom) error {
	if len(join) == 0 {
		return nil
	}
	rooms := make([]roomdag.RoomID, 0, len(join))
	for id := range join {
		rooms = append(rooms, id)
	}
	counts, err := s.store.UnreadCounts(ctx, req.User, rooms)
	if err != nil {
		return err
	}
	perThread := req.Filter.Room.Timeline.UnreadThreadNotifications
	for id, c := range counts {
		jr := join[id]
		if !perThread {
			n, h := c.Total()
			jr.UnreadNotifications = Unread{NotificationCount: n, HighlightCount: h}
			continue
		}
		jr.UnreadNotifications = Unread{NotificationCount: c.Notifications, HighlightCount: c.Highlights}
		for root, tc := range c.Threads {
			if jr.UnreadThreadNotifications == nil {
				jr.UnreadThreadNotifications = map[roomdag.EventID]Unread{}
			}
			jr.UnreadThreadNotifications[root] = Unread{NotificationCount: tc.Notifications, HighlightCount: tc.Highlights}
		}
	}
	return nil
}

// newlyJoined returns the rooms an incremental sync's range brought the
// user into, as Synapse tells them (newly_joined_rooms): joined now, and
// not joined at the token or, since it, out of the room and back. A
// change of display name or avatar (a join after a join) is no new join.
// It reads the membership history only of the rooms whose current
// membership event is in the range.
func (s *Syncer) newlyJoined(ctx context.Context, req Request, memberships []storage.RoomMembership, since, cur Token) (map[roomdag.RoomID]bool, error) {
	if req.Since == nil {
		return nil, nil
	}
	var out map[roomdag.RoomID]bool
	for _, m := range memberships {
		if m.Membership != roomdag.MembershipJoin || m.Pos <= since.Events || m.Pos > cur.Events {
			continue
		}
		trail, err := s.store.MembershipChanges(ctx, m.RoomID, req.User)
		if err != nil {
			return nil, err
		}
		fresh := trail.At(since.Events) != roomdag.MembershipJoin
		for _, c := range trail {
			if c.Pos > since.Events && c.Pos <= cur.Events && c.Membership != roomdag.MembershipJoin {
				fresh = true
			}
		}
		if fresh {
			if out == nil {
				out = map[roomdag.RoomID]bool{}
			}
			out[m.RoomID] = true
		}
	}
	return out, nil
}

// ephemeral returns the ephemeral events (receipts, typing) of the joined
// rooms between since and cur. A room new to this sync (an initial sync
// or a fresh join, joinedNow) gets every current receipt and who is
// typing now.
func (s *Syncer) ephemeral(ctx context.Context, req Request, memberships []storage.RoomMembership, since, cur Token, joinedNow map[roomdag.RoomID]bool) (map[roomdag.RoomID][]json.RawMessage, error) {
	ef := &req.Filter.Room.Ephemeral
	wantReceipts, wantTyping := ef.Allows(TypeReceipt, ""), ef.Allows(TypeTyping, "")
	if !wantReceipts && !wantTyping {
		return nil, nil
	}
	var fresh, old []roomdag.RoomID
	for _, m := range memberships {
		if m.Membership != roomdag.MembershipJoin || m.Pos > cur.Events || !req.Filter.Room.AllowsRoom(m.RoomID) || !ef.AllowsRoom(m.RoomID) {
			continue
		}
		if req.Since == nil || joinedNow[m.RoomID] {
			fresh = append(fresh, m.RoomID)
		} else {
			old = append(old, m.RoomID)
		}
	}
	out := map[roomdag.RoomID][]json.RawMessage{}
	add := func(room roomdag.RoomID, typ string, content any) {
		ev, _ := json.Marshal(map[string]any{"type": typ, "content": content})
		out[room] = append(out[room], ev)
	}
	if wantReceipts {
		receipts := map[roomdag.RoomID][]json.RawMessage{}
		if len(fresh) > 0 && cur.Receipts > 0 {
			r, err := s.store.Receipts(ctx, req.User, fresh, 0, cur.Receipts)
			if err != nil {
				return nil, err
			}
			maps.Copy(receipts, r)
		}
		if len(old) > 0 && cur.Receipts > since.Receipts {
			r, err := s.store.Receipts(ctx, req.User, old, since.Receipts, cur.Receipts)
			if err != nil {
				return nil, err
			}
			maps.Copy(receipts, r)
		}
		for room, contents := range receipts {
			for _, c := range contents {
				add(room, TypeReceipt, c)
			}
		}
	}
	if wantTyping {
		for _, room := range fresh {
			if users, ok := s.typing.changedSince(room, 0, cur.Typing, true); ok {
				add(room, TypeTyping, map[string]any{"user_ids": users})
			}
		}
		if cur.Typing > since.Typing {
			for _, room := range old {
				if users, ok := s.typing.changedSince(room, since.Typing, cur.Typing, false); ok {
					add(room, TypeTyping, map[string]any{"user_ids": users})
				}
			}
		}
	}
	return out, nil
}

// Ephemeral event types in /sync (spec: m.receipt, m.typing).
const (
	TypeReceipt = "m.receipt"
	TypeTyping  = "m.typing"
)

// backchat is how many recent events a room's timeline holds when a member
// joins or reconnects: the filter's limit, else the room's backchat state
// event, else the server default; never more than the server maximum.
func (s *Syncer) backchat(f *Filter, st *roomdag.RoomState) int {
	n := s.backchatDefault
	if f.Room.Timeline.Limit > 0 || f.timelineLimitSet { // a given 0: no events
		n = f.Room.Timeline.Limit
	} else if ev := st.State.Get(roomdag.TypeBackchat, ""); ev != nil {
		var c struct {
			Limit int `json:"limit"`
		}
		if json.Unmarshal(ev.Content(), &c) == nil && c.Limit > 0 {
			n = c.Limit
		}
	}
	return min(n, s.backchatMax)
}

// joinedRoom builds a room of rooms.join. In an incremental sync, joined
// lists the users the range brought into the room with the user: everyone
// joined if the user's own join is in the range, else those whose join is
// (among the timeline and the state it returns, as Synapse reads them).
func (s *Syncer) joinedRoom(ctx context.Context, req Request, m storage.RoomMembership, since, cur Token, newHere bool) (jr *JoinedRoom, joined []roomdag.UserID, err error) {
	st, err := s.rooms.State(ctx, m.RoomID)
	if err != nil {
		return nil, nil, err
	}
	limit := s.backchat(req.Filter, st)
	after := since.Events
	full := newHere || req.FullState
	if newHere {
		after = 0
	}
	// Visibility needs checking only where the user was not joined for the
	// whole range: on a first sync or a fresh join, for earlier history.
	tl, limited, err := s.timeline(ctx, req, m.RoomID, after, cur.Events, limit, full, roomdag.MembershipJoin)
	if err != nil {
		return nil, nil, err
	}
	if newHere && req.Since != nil {
		// A room joined since the token is served as in an initial sync
		// (the token ignored, full state) and always limited, as Synapse
		// marks it ("limited or newly_joined_room"): the client has none of
		// its history, and pages back from prev_batch for more.
		limited = true
	}
	jr = &JoinedRoom{
		Timeline:    Timeline{Events: []json.RawMessage{}, Limited: limited},
		State:       EventList{Events: []json.RawMessage{}},
		AccountData: EventList{Events: []json.RawMessage{}},
		Ephemeral:   EventList{Events: []json.RawMessage{}},
	}
	members, err := s.membersAt(ctx, m.RoomID, st, cur.Events)
	if err != nil {
		return nil, nil, err
	}
	jr.Summary = summary(members, req.User)
	view := roomdag.ClientView{NowMS: s.clock.Now().UnixMilli(), UserID: req.User, DeviceID: req.Device}
	if newHere || limited {
		// spec: bundled aggregations go with limited timelines; a room new
		// to this sync is one too (Synapse: "limited or newly joined").
		// Otherwise the client has the children and aggregates itself.
		if view, err = Bundle(ctx, s.store, view, req.ignored, tl); err != nil {
			return nil, nil, err
		}
	}
	// State events get no unsigned.membership, as from Synapse; the
	// timeline's events do.
	stateView := view
	// The user's membership event in the room is known (m): a timeline
	// after it, the steady case, needs no lookup.
	if view, err = MembershipTrails(ctx, s.store, view, map[roomdag.RoomID]storage.RoomMembership{m.RoomID: m}, tl); err != nil {
		return nil, nil, err
	}
	for _, ev := range tl {
		jr.Timeline.Events = append(jr.Timeline.Events, ev.ClientJSON(view))
	}
	// State before the timeline: in full for a new room, otherwise what
	// changed in a gap the timeline does not cover.
	var stateBefore int64
	if len(tl) > 0 {
		stateBefore = tl[0].StateBefore
		jr.Timeline.PrevBatch = TopoToken{Depth: tl[0].Depth(), Pos: tl[0].Pos}.String()
	} else if stateBefore, err = s.store.StateAtStream(ctx, m.RoomID, cur.Events); err != nil {
		return nil, nil, err
	}
	if len(tl) == 0 {
		jr.Timeline.PrevBatch = TopoToken{Depth: st.Depth + 1, Pos: cur.Events + 1}.String()
	}
	var state []*roomdag.StoredEvent
	if req.StateAfter != "" {
		jr.stateAfter = req.StateAfter
		if state, err = s.stateAfter(ctx, req, m.RoomID, since, cur.Events, full, tl); err != nil {
			return nil, nil, err
		}
		for _, ev := range state {
			jr.State.Events = append(jr.State.Events, ev.ClientJSON(stateView))
		}
	} else if full || limited {
		var sinceSnap int64
		if !full {
			if sinceSnap, err = s.store.StateAtStream(ctx, m.RoomID, since.Events); err != nil {
				return nil, nil, err
			}
		}
		if state, err = s.stateDelta(ctx, req, sinceSnap, stateBefore, tl); err != nil {
			return nil, nil, err
		}
		for _, ev := range state {
			jr.State.Events = append(jr.State.Events, ev.ClientJSON(stateView))
		}
	}
	switch {
	case req.Since == nil:
	case newHere:
		for k, ev := range members {
			if k.Type == roomdag.TypeMember && ev.Membership() == roomdag.MembershipJoin {
				joined = append(joined, roomdag.UserID(k.StateKey))
			}
		}
	default:
		joined = newJoins(tl)
		if !req.FullState { // a full state is not what changed
			joined = append(joined, newJoins(state)...)
		}
	}
	return jr, joined, nil
}

// newJoins picks the users whose joins evs hold: join events that follow
// another membership (a join after a join is a profile change).
func newJoins(evs []*roomdag.StoredEvent) []roomdag.UserID {
	var out []roomdag.UserID
	for _, ev := range evs {
		if ev.Type() != roomdag.TypeMember || ev.Membership() != roomdag.MembershipJoin {
			continue
		}
		if gjson.GetBytes(ev.Unsigned, "prev_content.membership").String() == roomdag.MembershipJoin {
			continue
		}
		out = append(out, roomdag.UserID(*ev.StateKey()))
	}
	return out
}

// timeline returns up to limit events of the room in (after, upTo] that
// pass the filter (and, if check, history visibility), oldest first, and
// whether more matching ones were left out.
func (s *Syncer) timeline(ctx context.Context, req Request, room roomdag.RoomID, after, upTo roomdag.StreamPos, limit int, check bool, current string) ([]*roomdag.StoredEvent, bool, error) {
	if limit == 0 {
		// timeline.limit 0 (as Synapse): no events, limited if the range
		// had any, so the state section covers them.
		_, more, err := s.store.RecentEvents(ctx, room, after, upTo, 0)
		return nil, more, err
	}
	f := &req.Filter.Room.Timeline
	var out []*roomdag.StoredEvent
	top := upTo
	vis := newVisibility(s.store, req.User, current)
	hidden := false
	for len(out) < limit {
		batch, more, err := s.store.RecentEvents(ctx, room, after, top, limit)
		if err != nil {
			return nil, false, err
		}
		for i := len(batch) - 1; i >= 0 && len(out) <= limit; i-- {
			ev := batch[i]
			if !f.AllowsEvent(ev.Event) || req.ignored.Hides(ev.Event) {
				continue
			}
			if check {
				ok, err := vis.canSee(ctx, ev)
				if err != nil {
					return nil, false, err
				}
				if !ok {
					// Older events are hidden too unless the user was
					// joined before: stop at the visibility boundary.
					more, hidden = false, true
					break
				}
			}
			out = append(out, ev)
		}
		if !more || len(batch) == 0 || len(out) > limit {
			break
		}
		top = batch[0].Pos - 1
	}
	if after == 0 && !hidden && len(out) <= limit && (len(out) == 0 || !out[len(out)-1].IsCreate()) {
		// The live stream ran out before the backchat did: a room joined
		// over federation has its history before the join backfilled, under
		// negative stream positions, which only a topological read finds.
		// (Nothing comes before a create event: a local room ends there.)
		var err error
		if out, err = s.backfilledBefore(ctx, req, room, out, limit, check, vis); err != nil {
			return nil, false, err
		}
	}
	limited := len(out) > limit
	if limited {
		out = out[:limit]
	} else if len(out) == limit {
		// Exactly limit found: limited if anything older in range exists.
		_, more, err := s.store.RecentEvents(ctx, room, after, out[len(out)-1].Pos-1, 0)
		if err != nil {
			return nil, false, err
		}
		limited = more
	}
	reverseEvents(out)
	return out, limited, nil
}

// backfilledBefore appends to out (newest first) the backfilled events
// before its oldest, newest first, up to limit+1 in all.
func (s *Syncer) backfilledBefore(ctx context.Context, req Request, room roomdag.RoomID, out []*roomdag.StoredEvent, limit int, check bool, vis *visibility) ([]*roomdag.StoredEvent, error) {
	from := storage.TopoPos{Depth: math.MaxInt64, Pos: math.MaxInt64}
	if len(out) > 0 {
		oldest := out[len(out)-1]
		from = storage.TopoPos{Depth: oldest.Depth(), Pos: oldest.Pos}
	}
	f := &req.Filter.Room.Timeline
	for range 10 { // bounds the scan past filtered-out events
		batch, more, err := s.store.RoomEventsTopo(ctx, room, from, true, limit+1-len(out))
		if err != nil {
			return nil, err
		}
		for _, ev := range batch {
			from = storage.TopoPos{Depth: ev.Depth(), Pos: ev.Pos}
			if ev.Pos > 0 {
				continue // live: the stream read had it, or it is past upTo
			}
			if !f.AllowsEvent(ev.Event) || req.ignored.Hides(ev.Event) {
				continue
			}
			if check {
				ok, err := vis.canSee(ctx, ev)
				if err != nil {
					return nil, err
				}
				if !ok {
					return out, nil
				}
			}
			out = append(out, ev)
			if len(out) > limit {
				return out, nil
			}
		}
		if !more || len(batch) == 0 {
			break
		}
	}
	return out, nil
}

func reverseEvents(s []*roomdag.StoredEvent) {
	for i, j := 0, len(s)-1; i < j; i, j = i+1, j-1 {
		s[i], s[j] = s[j], s[i]
	}
}

// stateDelta returns the state at snapshot `to` that differs from `from`
// (0 = empty), after the state filter and lazy loading of members.
func (s *Syncer) stateDelta(ctx context.Context, req Request, from, to int64, tl []*roomdag.StoredEvent) ([]*roomdag.StoredEvent, error) {
	toIDs, err := s.store.Snapshot(ctx, to)
	if err != nil {
		return nil, err
	}
	fromIDs, err := s.store.Snapshot(ctx, from)
	if err != nil {
		return nil, err
	}
	sf := &req.Filter.Room.State
	lazy := sf.LazyLoadMembers
	senders := map[string]bool{string(req.User): true}
	for _, ev := range tl {
		senders[string(ev.Sender())] = true
	}
	var ids []roomdag.EventID
	for k, id := range toIDs {
		if fromIDs[k] == id {
			continue
		}
		if lazy && k.Type == roomdag.TypeMember && !senders[k.StateKey] {
			continue
		}
		ids = append(ids, id)
	}
	return s.stateEvents(ctx, ids, sf)
}

// stateEvents loads the state events ids that the state filter lets
// through, in stream order, the newest sf.Limit of them when it sets one.
func (s *Syncer) stateEvents(ctx context.Context, ids []roomdag.EventID, sf *RoomEventFilter) ([]*roomdag.StoredEvent, error) {
	evs, err := s.store.EventsWithOutliers(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := evs[:0]
	for _, ev := range evs {
		if sf.AllowsEvent(ev.Event) {
			out = append(out, ev)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pos < out[j].Pos })
	if sf.Limit > 0 && len(out) > sf.Limit {
		out = out[len(out)-sf.Limit:]
	}
	return out, nil
}

// membersAt returns the room's member events as of stream position pos,
// from st, its current state, unless events after pos changed that state
// (committed while this sync was being built): then from the snapshot at
// pos. What a response says of the members must agree with the timeline
// it stops at; matrix-js-sdk takes the summary's count as the members'.
func (s *Syncer) membersAt(ctx context.Context, room roomdag.RoomID, st *roomdag.RoomState, pos roomdag.StreamPos) (roomdag.StateMap, error) {
	if st.LastPos <= pos {
		return st.State, nil
	}
	snap, err := s.store.StateAtStream(ctx, room, pos)
	if err != nil {
		return nil, err
	}
	ids, err := s.store.Snapshot(ctx, snap)
	if err != nil {
		return nil, err
	}
	var memberIDs []roomdag.EventID
	for k, id := range ids {
		if k.Type == roomdag.TypeMember {
			memberIDs = append(memberIDs, id)
		}
	}
	// The state of a room joined over federation is held as outliers.
	evs, err := s.store.EventsWithOutliers(ctx, memberIDs)
	if err != nil {
		return nil, err
	}
	out := roomdag.StateMap{}
	for _, ev := range evs {
		if key := ev.StateKey(); key != nil {
			out[roomdag.StateKey{Type: roomdag.TypeMember, StateKey: *key}] = ev.Event
		}
	}
	return out, nil
}

// summary is the room summary clients name rooms with (spec: m.heroes),
// from the room's member events.
func summary(state roomdag.StateMap, user roomdag.UserID) map[string]any {
	joined, invited := 0, 0
	var heroes []string
	for k, ev := range state {
		if k.Type != roomdag.TypeMember {
			continue
		}
		switch ev.Membership() {
		case roomdag.MembershipJoin:
			joined++
		case roomdag.MembershipInvite:
			invited++
		default:
			continue
		}
		if k.StateKey != string(user) {
			heroes = append(heroes, k.StateKey)
		}
	}
	sort.Strings(heroes)
	if len(heroes) > 5 {
		heroes = heroes[:5]
	}
	if heroes == nil {
		heroes = []string{}
	}
	return map[string]any{"m.heroes": heroes, "m.joined_member_count": joined, "m.invited_member_count": invited}
}

// invitedRoom returns nil for an invite from an ignored user (spec:
// "Servers must not send room invites from ignored users to clients").
func (s *Syncer) invitedRoom(ctx context.Context, m storage.RoomMembership, ignored Ignored) (*InvitedRoom, error) {
	ir := &InvitedRoom{InviteState: EventList{Events: []json.RawMessage{}}}
	stripped, err := s.store.InviteState(ctx, m.Pos)
	if err == nil {
		var evs []json.RawMessage
		_ = json.Unmarshal(stripped, &evs)
		ir.InviteState.Events = append(ir.InviteState.Events, evs...)
	}
	// The invite event itself, stripped, so clients know who invited whom.
	evs, _, err := s.store.RecentEvents(ctx, m.RoomID, m.Pos-1, m.Pos, 1)
	if err != nil {
		return nil, err
	}
	for _, ev := range evs {
		if m.Membership == roomdag.MembershipInvite && ignored[ev.Sender()] {
			return nil, nil
		}
		b, _ := json.Marshal(map[string]any{"type": ev.Type(), "state_key": ev.StateKey(), "sender": ev.Sender(),
			"content": ev.Content(), "event_id": ev.ID(), "origin_server_ts": ev.OriginServerTS()})
		ir.InviteState.Events = append(ir.InviteState.Events, b)
	}
	return ir, nil
}

func (s *Syncer) leftRoom(ctx context.Context, req Request, m storage.RoomMembership, since Token) (*LeftRoom, error) {
	st, err := s.rooms.State(ctx, m.RoomID)
	if err != nil {
		return nil, err
	}
	after := since.Events
	if req.Since == nil {
		after = 0
	}
	// The user sees up to their leave event, and no further.
	tl, limited, err := s.timeline(ctx, req, m.RoomID, after, m.Pos, s.backchat(req.Filter, st), true, m.Membership)
	if err != nil {
		return nil, err
	}
	lr := &LeftRoom{Timeline: Timeline{Events: []json.RawMessage{}, Limited: limited},
		State: EventList{Events: []json.RawMessage{}}, AccountData: EventList{Events: []json.RawMessage{}}}
	view := roomdag.ClientView{NowMS: s.clock.Now().UnixMilli(), UserID: req.User, DeviceID: req.Device}
	if limited || req.Since == nil {
		if view, err = Bundle(ctx, s.store, view, req.ignored, tl); err != nil {
			return nil, err
		}
	}
	stateView := view
	if view, err = MembershipTrails(ctx, s.store, view, map[roomdag.RoomID]storage.RoomMembership{m.RoomID: m}, tl); err != nil {
		return nil, err
	}
	for _, ev := range tl {
		lr.Timeline.Events = append(lr.Timeline.Events, ev.ClientJSON(view))
	}
	// The state: before the timeline, as for joined rooms; with nothing in
	// the timeline (timeline.limit 0, or a filter none of the range
	// passes), the state at the leave, the leave included (Complement
	// TestArchivedRoomsHistory "timeline is empty").
	var stateAt int64
	switch {
	case len(tl) > 0:
		lr.Timeline.PrevBatch = TopoToken{Depth: tl[0].Depth(), Pos: tl[0].Pos}.String()
		if !limited && req.Since != nil && req.StateAfter == "" {
			return lr, nil // the timeline holds all that changed
		}
		stateAt = tl[0].StateBefore
	default:
		at, err := s.store.TopoAtStream(ctx, m.RoomID, m.Pos)
		if err != nil {
			return nil, err
		}
		lr.Timeline.PrevBatch = TopoToken{Depth: at.Depth, Pos: at.Pos}.String()
		if stateAt, err = s.store.StateAtStream(ctx, m.RoomID, m.Pos); err != nil {
			return nil, err
		}
	}
	if req.StateAfter != "" {
		// The state at the end of the timeline: at the leave.
		lr.stateAfter = req.StateAfter
		state, err := s.stateAfter(ctx, req, m.RoomID, since, m.Pos, req.Since == nil, tl)
		if err != nil {
			return nil, err
		}
		for _, ev := range state {
			lr.State.Events = append(lr.State.Events, ev.ClientJSON(stateView))
		}
		return lr, nil
	}
	var sinceSnap int64
	if req.Since != nil {
		if sinceSnap, err = s.store.StateAtStream(ctx, m.RoomID, since.Events); err != nil {
			return nil, err
		}
	}
	state, err := s.stateDelta(ctx, req, sinceSnap, stateAt, tl)
	if err != nil {
		return nil, err
	}
	for _, ev := range state {
		lr.State.Events = append(lr.State.Events, ev.ClientJSON(stateView))
	}
	return lr, nil
}

// TypePushRules is the global account data holding a user's push rules.
const TypePushRules = "m.push_rules"

// pushRulesEvent is the user's m.push_rules account data event. A stored
// document that cannot be read is logged and the defaults served, as the
// notification worker does, so one broken document does not break /sync.
func (s *Syncer) pushRulesEvent(ctx context.Context, user roomdag.UserID) (json.RawMessage, error) {
	doc, err := s.store.PushRules(ctx, user)
	if err != nil {
		return nil, err
	}
	content, err := push.AccountDataContent(user, doc)
	if err != nil {
		s.log.Error("push rules for /sync", "user", user, "err", err)
		if content, err = push.AccountDataContent(user, nil); err != nil {
			return nil, err
		}
	}
	return json.Marshal(map[string]any{"type": TypePushRules, "content": content})
}
