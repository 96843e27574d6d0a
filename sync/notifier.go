package sync

import (
	gosync "sync"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// Notifier wakes the long-polling /sync requests of the users a change
// concerns. It learns room membership from the events it hears, so it
// never reads the database on the write path.
type Notifier struct {
	mu  gosync.Mutex
	cur Token
	// members holds, per room, the local users with a membership that
	// makes them see its events (join, invite, knock).
	members map[roomdag.RoomID]map[roomdag.UserID]struct{}
	// waiting holds a channel per user with a pending sync; closing it
	// wakes all of that user's requests.
	waiting map[roomdag.UserID]chan struct{}
	// watchers holds, per room, users whose requests also wait for its
	// events without being members: followers of a topic feed (feeds.go).
	watchers map[roomdag.RoomID]map[roomdag.UserID]int
	server   roomdag.ServerName
	// ends tracks ended sessions (sessions.go); it has its own lock.
	ends sessionEnds
}

// NewNotifier starts at the given positions with the given memberships
// (from storage at start-up).
func NewNotifier(server roomdag.ServerName, cur Token, members map[roomdag.RoomID][]roomdag.UserID) *Notifier {
	n := &Notifier{cur: cur, server: server, members: map[roomdag.RoomID]map[roomdag.UserID]struct{}{},
		waiting: map[roomdag.UserID]chan struct{}{}, watchers: map[roomdag.RoomID]map[roomdag.UserID]int{}}
	for room, users := range members {
		set := map[roomdag.UserID]struct{}{}
		for _, u := range users {
			set[u] = struct{}{}
		}
		n.members[room] = set
	}
	return n
}

// Current is the newest position every stream has committed.
func (n *Notifier) Current() Token {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cur
}

// EventCommitted implements roomdag.Listener: it runs on the storage
// writer's goroutine, in commit order.
func (n *Notifier) EventCommitted(ev *roomdag.Event, pos roomdag.StreamPos) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if pos > n.cur.Events {
		n.cur.Events = pos
	}
	room := ev.RoomID()
	set := n.members[room]
	if ev.Type() == roomdag.TypeMember && ev.StateKey() != nil {
		// Members of other servers count too (as at start-up): a change
		// of theirs (device list, presence) wakes the room's local
		// members. Only local users ever wait.
		target := roomdag.UserID(*ev.StateKey())
		switch ev.Membership() {
		case roomdag.MembershipJoin, roomdag.MembershipInvite, roomdag.MembershipKnock:
			if set == nil {
				set = map[roomdag.UserID]struct{}{}
				n.members[room] = set
			}
			set[target] = struct{}{}
		default:
			delete(set, target)
		}
		if target.Server() == n.server {
			n.wakeLocked(target) // a user who left still hears of it
		}
	}
	n.wakeRoomLocked(room)
}

// Watch makes events in rooms wake the user's pending requests until the
// returned function is called (once).
func (n *Notifier) Watch(user roomdag.UserID, rooms []roomdag.RoomID) (stop func()) {
	if len(rooms) == 0 {
		return func() {}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, r := range rooms {
		w := n.watchers[r]
		if w == nil {
			w = map[roomdag.UserID]int{}
			n.watchers[r] = w
		}
		w[user]++
	}
	var once gosync.Once
	return func() {
		once.Do(func() {
			n.mu.Lock()
			defer n.mu.Unlock()
			for _, r := range rooms {
				if w := n.watchers[r]; w != nil {
					if w[user]--; w[user] <= 0 {
						delete(w, user)
					}
					if len(w) == 0 {
						delete(n.watchers, r)
					}
				}
			}
		})
	}
}

// wakeRoomLocked wakes every local member of the room, and its watchers.
func (n *Notifier) wakeRoomLocked(room roomdag.RoomID) {
	for u := range n.watchers[room] {
		n.wakeLocked(u)
	}
	set := n.members[room]
	if len(n.waiting) < len(set) {
		for u := range n.waiting {
			if _, ok := set[u]; ok {
				n.wakeLocked(u)
			}
		}
	} else {
		for u := range set {
			n.wakeLocked(u)
		}
	}
}

// ReceiptAdded is called after a receipt at pos in the receipt stream
// commits, in commit order. A public receipt wakes the room's members; a
// private one (m.read.private) only its owner, the only user who sees it.
func (n *Notifier) ReceiptAdded(room roomdag.RoomID, user roomdag.UserID, private bool, pos int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if pos > n.cur.Receipts {
		n.cur.Receipts = pos
	}
	if private {
		n.wakeLocked(user)
		return
	}
	n.wakeRoomLocked(room)
}

// receiptsAt raises the receipt position to pos (at start-up, from
// storage).
func (n *Notifier) receiptsAt(pos int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if pos > n.cur.Receipts {
		n.cur.Receipts = pos
	}
}

// typingChanged advances the in-memory typing stream for a change of who
// is typing in room, wakes the room's members and returns the new
// position.
func (n *Notifier) typingChanged(room roomdag.RoomID) int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cur.Typing++
	n.wakeRoomLocked(room)
	return n.cur.Typing
}

// typingAt raises the typing position to pos, the stored stream's (on a
// database several processes share), and wakes the room's members (room
// "": nobody).
func (n *Notifier) typingAt(room roomdag.RoomID, pos int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cur.Typing = max(n.cur.Typing, pos)
	if room != "" {
		n.wakeRoomLocked(room)
	}
}

// NotificationsAdded implements push.Waker: the notification worker has
// committed everything up to event position pos, and users got new
// notifications. Called in order, after the commit.
func (n *Notifier) NotificationsAdded(pos roomdag.StreamPos, users []roomdag.UserID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if pos > n.cur.Notifications {
		n.cur.Notifications = pos
	}
	for _, u := range users {
		n.wakeLocked(u)
	}
}

// AccountDataChanged wakes the user after an account data write at pos.
func (n *Notifier) AccountDataChanged(user roomdag.UserID, pos int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if pos > n.cur.AccountData {
		n.cur.AccountData = pos
	}
	n.wakeLocked(user)
}

func (n *Notifier) wakeLocked(u roomdag.UserID) {
	if ch, ok := n.waiting[u]; ok {
		close(ch)
		delete(n.waiting, u)
	}
}

// wakeup returns a channel closed at the user's next relevant change, and
// the current position. Taking both under one lock means a change that
// lands after the position was read always closes the channel.
func (n *Notifier) wakeup(u roomdag.UserID) (<-chan struct{}, Token) {
	n.mu.Lock()
	defer n.mu.Unlock()
	ch, ok := n.waiting[u]
	if !ok {
		ch = make(chan struct{})
		n.waiting[u] = ch
	}
	return ch, n.cur
}

// Apply announces a committed change of the account data, receipt and
// to-device streams, wherever it was committed: the store's commit hook calls it for
// this process's commits (on the writer goroutine, in commit order, before
// the writes return), and the cluster follower for other processes'.
// Room events reach the notifier as EventCommitted, the notification
// worker's steps as NotificationsAdded.
func (n *Notifier) Apply(c *storage.Change) {
	for _, a := range c.AccountData {
		n.AccountDataChanged(a.User, a.Pos)
	}
	for _, r := range c.Receipts {
		n.ReceiptAdded(r.Room, r.User, r.Private, r.Pos)
	}
	for _, d := range c.ToDevice {
		n.ToDeviceAdded(d.User, d.Pos)
	}
	for _, d := range c.DeviceLists {
		n.DeviceListChanged(d.User, d.Pos)
	}
}
