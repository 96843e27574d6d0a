package sync

import (
	"context"
	"errors"
	gosync "sync"

	"github.com/persistentchat/homeserver/roomdag"
)

// Ending sessions under long-polls.
//
// A /sync or feed long-poll authenticates once, when it starts, and may
// then wait minutes. If its session ends meanwhile (logout, logout/all, a
// password change that logs other devices out, a deleted device, a
// deactivated account), the poll must not go on to return what happens
// after that: it ends with ErrSessionEnded, which the API answers with
// 401 M_UNKNOWN_TOKEN.
//
// The mechanism has two halves. Whoever ends sessions brackets the
// storage change with EndSessions: before it commits, the user's ending
// generation is raised; after it commits, the user's waiting requests are
// woken. A long-poll takes SessionMark before its token is looked up, and
// each time it is about to read, after taking the stream position it will
// read up to, it compares the user's ending generation with its mark. Only
// when an ending may have touched the user since its mark does it ask
// storage whether its own session still exists (SessionCheck.Alive), so
// the common path reads nothing.
//
// Why that is enough: if the storage change committed before the poll's
// Alive check, the poll sees its session gone and returns no data. If it
// commits after, every event the poll returns lies at or below a position
// taken before the check, so it arrived before the session ended. And
// the generation is raised before the commit and the mark taken before
// the token lookup, so a poll whose lookup saw the session alive always
// sees the generation move past its mark.

// ErrSessionEnded is returned by Sync and Feed when the session the
// request was made with ended while it waited.
var ErrSessionEnded = errors.New("the session of this request has ended")

// SessionCheck identifies the session a request runs under, for the
// checks above. A nil *SessionCheck is never checked (requests of
// application services, whose as_token no logout ends).
type SessionCheck struct {
	// Mark is Notifier.SessionMark, read before the request's access
	// token was looked up.
	Mark uint64
	// Alive reads from storage whether the session still exists.
	Alive func(ctx context.Context) (bool, error)
}

// sessionEnds holds the ending generations. last has at most one entry
// per local user whose sessions were ever ended while the server ran.
type sessionEnds struct {
	mu   gosync.Mutex
	gen  uint64
	last map[roomdag.UserID]uint64
	// all is the generation of the last ending that may have touched
	// every user (CaughtUp).
	all uint64
}

// SessionMark is the current ending generation.
func (n *Notifier) SessionMark() uint64 {
	n.ends.mu.Lock()
	defer n.ends.mu.Unlock()
	return n.ends.gen
}

// EndSessions brackets a storage change that ends sessions of user: call
// it before the change and the returned function once the change has
// committed (or failed). The function wakes the user's waiting requests,
// so those whose session ended answer at once.
func (n *Notifier) EndSessions(user roomdag.UserID) (committed func()) {
	n.ends.mu.Lock()
	n.ends.gen++
	if n.ends.last == nil {
		n.ends.last = map[roomdag.UserID]uint64{}
	}
	n.ends.last[user] = n.ends.gen
	n.ends.mu.Unlock()
	return func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		n.wakeLocked(user)
	}
}

// checkSession returns ErrSessionEnded if the request's session has
// ended. Call it after taking the position the request will read up to.
func (n *Notifier) checkSession(ctx context.Context, user roomdag.UserID, c *SessionCheck) error {
	if c == nil {
		return nil
	}
	n.ends.mu.Lock()
	last := max(n.ends.last[user], n.ends.all)
	n.ends.mu.Unlock()
	if last <= c.Mark {
		return nil
	}
	// Not remembered as checked: the generation may have been raised for
	// a change that has not committed yet, so the next read asks again.
	alive, err := c.Alive(ctx)
	if err != nil {
		return err
	}
	if !alive {
		return ErrSessionEnded
	}
	return nil
}
