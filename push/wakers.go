package push

import "github.com/persistentchat/homeserver/roomdag"

// Wakers is a Waker that tells each of its Wakers in turn, in order: the
// worker wakes /sync and the pusher sender through one. Each must return
// at once (NotificationsAdded runs on the worker's goroutine) and must not
// modify users, which they share.
type Wakers []Waker

// NotificationsAdded implements Waker.
func (ws Wakers) NotificationsAdded(pos roomdag.StreamPos, users []roomdag.UserID) {
	for _, w := range ws {
		w.NotificationsAdded(pos, users)
	}
}

// Interface guard.
var _ Waker = Wakers(nil)
