package sync

import (
	"github.com/persistentchat/homeserver/roomdag"
)

// Changes made by other processes sharing the database (cluster package).
// They arrive after their commit, in commit order, through the same
// notifier methods a local change calls (EventCommitted, ReceiptAdded,
// AccountDataChanged, NotificationsAdded); what follows is what a local
// change does some other way: presence (this process caches it), ended
// sessions (a bracket around the local write), and the catch-up after announcements were lost.

// PresenceElsewhere applies a presence change another process stored at
// pos: this process's cached row for the user is dropped (the next change
// here reads the stored one), and the user and those who share a room with
// them are woken.
func (s *Syncer) PresenceElsewhere(user roomdag.UserID, pos int64) {
	s.presence.forget(user)
	s.notifier.presenceChanged(user, pos)
}

func (p *presence) forget(id roomdag.UserID) {
	p.mu.Lock()
	u := p.users[id]
	p.mu.Unlock()
	if u == nil {
		return
	}
	u.mu.Lock()
	u.loaded = false
	u.mu.Unlock()
}

// SessionsEndedElsewhere is EndSessions for a change another process has
// committed: the users' long-polls check their sessions and those whose
// session ended answer at once.
func (n *Notifier) SessionsEndedElsewhere(users []roomdag.UserID) {
	for _, u := range users {
		n.EndSessions(u)()
	}
}

// CaughtUp raises the positions to cur (streams read back after
// announcements from other processes may have been lost) and wakes every
// waiting request, each of which also checks its session: a lost
// announcement may have ended it.
func (n *Notifier) CaughtUp(cur Token) {
	n.ends.mu.Lock()
	n.ends.gen++
	n.ends.all = n.ends.gen
	n.ends.mu.Unlock()
	n.mu.Lock()
	defer n.mu.Unlock()
	n.raiseLocked(cur)
	for u := range n.waiting {
		n.wakeLocked(u)
	}
}

// Raise raises the positions to cur, waking nobody: the streams up to cur
// have committed in other processes, whose announcements wake the users
// they concern.
func (n *Notifier) Raise(cur Token) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.raiseLocked(cur)
}

// raiseLocked raises each durable stream's position to cur's (typing rises
// only as its changes are applied, typingshared.go). The caller holds n.mu.
func (n *Notifier) raiseLocked(cur Token) {
	n.cur.Events = max(n.cur.Events, cur.Events)
	n.cur.AccountData = max(n.cur.AccountData, cur.AccountData)
	n.cur.Receipts = max(n.cur.Receipts, cur.Receipts)
	n.cur.Presence = max(n.cur.Presence, cur.Presence)
	n.cur.Notifications = max(n.cur.Notifications, cur.Notifications)
	n.cur.ToDevice = max(n.cur.ToDevice, cur.ToDevice)
	n.cur.DeviceLists = max(n.cur.DeviceLists, cur.DeviceLists)
}

// ReloadPresence drops every cached presence row and what other processes
// announced of their clients (activity.go), after announcements may have
// been lost.
func (s *Syncer) ReloadPresence() {
	defer s.presence.forgetActivity()
	s.presence.mu.Lock()
	users := make([]*userPresence, 0, len(s.presence.users))
	for _, u := range s.presence.users {
		users = append(users, u)
	}
	s.presence.mu.Unlock()
	for _, u := range users {
		u.mu.Lock()
		u.loaded = false
		u.mu.Unlock()
	}
}
