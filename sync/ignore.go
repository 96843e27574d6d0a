package sync

import (
	"context"
	"encoding/json"
	"errors"
	"sort"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// TypeIgnoredUserList is the global account data listing the users a user
// ignores (spec: "Ignoring Users").
const TypeIgnoredUserList = "m.ignored_user_list"

// Ignored is the set of users a user ignores. The zero value ignores
// nobody.
type Ignored map[roomdag.UserID]bool

// IgnoredUsers reads user's m.ignored_user_list. It is read afresh for
// every request, so a change applies to the very next sync, as the spec
// requires ("the sync API for all clients should immediately start
// ignoring (or un-ignoring) the user"). Content that does not parse
// ignores nobody; nobody ignores themselves.
func IgnoredUsers(ctx context.Context, store Store, user roomdag.UserID) (Ignored, error) {
	raw, err := store.AccountData(ctx, user, "", TypeIgnoredUserList)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var c struct {
		IgnoredUsers map[string]json.RawMessage `json:"ignored_users"`
	}
	if json.Unmarshal(raw, &c) != nil || len(c.IgnoredUsers) == 0 {
		return nil, nil
	}
	ig := Ignored{}
	for u := range c.IgnoredUsers {
		if id, err := roomdag.ParseUserID(u); err == nil && id != user {
			ig[id] = true
		}
	}
	return ig, nil
}

// Hides reports whether the user no longer receives ev: it was sent by an
// ignored user and is not a state event ("Servers must still send state
// events sent by ignored users to clients").
func (ig Ignored) Hides(ev *roomdag.Event) bool {
	return len(ig) > 0 && !ev.IsState() && ig[ev.Sender()]
}

// Drop returns the events of evs the user still receives, in order. It
// does not modify evs.
func (ig Ignored) Drop(evs []*roomdag.StoredEvent) []*roomdag.StoredEvent {
	if len(ig) == 0 {
		return evs
	}
	out := make([]*roomdag.StoredEvent, 0, len(evs))
	for _, ev := range evs {
		if !ig.Hides(ev.Event) {
			out = append(out, ev)
		}
	}
	return out
}

// List returns the ignored users, sorted.
func (ig Ignored) List() []roomdag.UserID {
	out := make([]roomdag.UserID, 0, len(ig))
	for u := range ig {
		out = append(out, u)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
