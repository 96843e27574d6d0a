package sync

import (
	"github.com/persistentchat/homeserver/roomdag"
)

// Presence across processes. Each process knows only the clients syncing
// through it, so the offline timeout of one process would take a user
// offline while their client syncs through another (behind a load
// balancer a client's requests alternate between processes, and the user
// flapped offline and online). So each process announces when a user's
// clients connect to it (the first sync or PUT online after none) and
// when they have left (its offline timeout ran out), and a process takes
// a user offline only when no other process has announced them connected.
// When the last two leave at once, each sees the other still connected
// and defers; each then hears that the other left and takes the user
// offline (the second finds it done). Announcements are not stored: after
// its listening connection dropped a process forgets what it heard (a user
// connected elsewhere may then flap once, rather than stay online for
// ever).

// ActivityAnnouncer tells the other processes sharing the database that a
// user's clients connected to this process or left it (cluster package).
type ActivityAnnouncer interface {
	PresenceActivity(user roomdag.UserID, connected bool)
}

// activityNews is what a change of a user's connectedness here must tell
// the other processes: nothing, connected, or left.
type activityNews int

const (
	newsNone activityNews = iota
	newsConnected
	newsLeft
)

// connectedLocked records that the user has a client here; the caller
// holds p.mu and announces the news after unlocking.
func (p *presence) connectedLocked(u *userPresence) activityNews {
	u.deferred = false
	if p.activity == nil || u.announced {
		return newsNone
	}
	u.announced = true
	return newsConnected
}

// leftLocked records that the user's clients have left this process.
func (p *presence) leftLocked(u *userPresence) activityNews {
	if p.activity == nil || !u.announced {
		return newsNone
	}
	u.announced = false
	return newsLeft
}

func (n activityNews) announce(p *presence, id roomdag.UserID) {
	switch n {
	case newsConnected:
		p.activity.PresenceActivity(id, true)
	case newsLeft:
		p.activity.PresenceActivity(id, false)
	}
}

// PresenceActivityElsewhere applies another process's announcement that
// the user's clients connected to it or left it.
func (s *Syncer) PresenceActivityElsewhere(origin string, user roomdag.UserID, connected bool) {
	p := s.presence
	p.mu.Lock()
	defer p.mu.Unlock()
	set := p.remote[user]
	if connected {
		if set == nil {
			set = map[string]struct{}{}
			p.remote[user] = set
		}
		set[origin] = struct{}{}
		return
	}
	delete(set, origin)
	if len(set) > 0 {
		return
	}
	delete(p.remote, user)
	if u := p.users[user]; u != nil && u.deferred {
		go p.offlineDeferred(user, u)
	}
}

// offlineDeferred takes the user offline after the last other process
// that had them connected announced they left, if this process deferred
// to it and still has no client of theirs.
func (p *presence) offlineDeferred(id roomdag.UserID, u *userPresence) {
	u.mu.Lock()
	defer u.mu.Unlock()
	p.mu.Lock()
	due := u.deferred && u.syncing == 0 && u.seen.IsZero() && len(p.remote[id]) == 0
	u.deferred = false
	p.mu.Unlock()
	if due {
		p.goOfflineLocked(id, u)
	}
}

// forgetActivity drops what other processes announced, after
// announcements may have been lost; users this process deferred go
// offline unless a client of theirs is connected here.
func (p *presence) forgetActivity() {
	p.mu.Lock()
	p.remote = map[roomdag.UserID]map[string]struct{}{}
	var deferred []roomdag.UserID
	for id, u := range p.users {
		if u.deferred {
			deferred = append(deferred, id)
		}
	}
	p.mu.Unlock()
	for _, id := range deferred {
		go p.offlineDeferred(id, p.user(id))
	}
}
