package e2ee

import (
	"context"
	"sort"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"github.com/persistentchat/homeserver/sync"
)

// Device lists (spec: "Tracking the device list for a user"): a client
// tracks the devices of every user it shares a room with, and /sync (and
// GET /keys/changes) tell it whose lists to refetch (changed) and whom it
// may stop tracking (left). The device-list stream (Token.DeviceLists) has
// one row per user, at the position of their latest change; membership
// changes come from the event stream.

// DeviceListChanges implements sync.DeviceKeys: between since and cur,
//
//   - changed: the user themself and those sharing a room with them now
//     whose device list changed; those who joined a room the user is in;
//     and the members of a room the user joined;
//   - left: those who left (or were removed from) a room the user was in,
//     or whose room the user left, and share no room with the user now.
//
// A user is in at most one of the two, sorted by ID.
func (k *Keys) DeviceListChanges(ctx context.Context, user roomdag.UserID, since, cur sync.Token) (changed, left []roomdag.UserID, err error) {
	if cur.DeviceLists <= since.DeviceLists && cur.Events <= since.Events {
		return nil, nil, nil
	}
	var users []roomdag.UserID
	if cur.DeviceLists > since.DeviceLists {
		if users, err = k.store.DeviceListsChangedSince(ctx, since.DeviceLists, cur.DeviceLists); err != nil {
			return nil, nil, err
		}
	}
	var mcs []storage.MemberChange
	if cur.Events > since.Events {
		if mcs, err = k.store.MembershipChangesSince(ctx, user, since.Events, cur.Events); err != nil {
			return nil, nil, err
		}
	}
	if len(users) == 0 && len(mcs) == 0 {
		return nil, nil, nil // most syncs: nothing to look up
	}
	peers, err := k.store.RoomPeers(ctx, user)
	if err != nil {
		return nil, nil, err
	}
	ch, lf := map[roomdag.UserID]bool{}, map[roomdag.UserID]bool{}
	for _, u := range users {
		if u == user || peers[u] {
			ch[u] = true
		}
	}
	// The user's own joins and leaves in the range, by room.
	mine := map[roomdag.RoomID]string{}
	for _, mc := range mcs {
		if mc.User == user {
			mine[mc.Room] = mc.Membership
		}
	}
	for _, mc := range mcs {
		if mc.User == user {
			continue
		}
		_, leftHere := mine[mc.Room]
		if mc.Mine != roomdag.MembershipJoin && !(leftHere && mc.Mine != roomdag.MembershipInvite) {
			continue // a room the user only was invited to, or long left
		}
		switch mc.Membership {
		case roomdag.MembershipJoin:
			if peers[mc.User] {
				ch[mc.User] = true
			}
		case roomdag.MembershipLeave, roomdag.MembershipBan:
			if !peers[mc.User] {
				lf[mc.User] = true
			}
		}
	}
	for room, m := range mine {
		if m != roomdag.MembershipJoin && m != roomdag.MembershipLeave && m != roomdag.MembershipBan {
			continue
		}
		members, err := k.store.JoinedMembersOf(ctx, room)
		if err != nil {
			return nil, nil, err
		}
		for _, u := range members {
			switch {
			case u == user:
			case m == roomdag.MembershipJoin:
				ch[u] = true
			case !peers[u]:
				lf[u] = true
			}
		}
	}
	for u := range lf {
		delete(ch, u)
	}
	return sortedUsers(ch), sortedUsers(lf), nil
}

func sortedUsers(set map[roomdag.UserID]bool) []roomdag.UserID {
	if len(set) == 0 {
		return nil
	}
	out := make([]roomdag.UserID, 0, len(set))
	for u := range set {
		out = append(out, u)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// KeyCounts implements sync.DeviceKeys.
func (k *Keys) KeyCounts(ctx context.Context, user roomdag.UserID, device string) (map[string]int64, []string, error) {
	counts, err := k.store.OneTimeKeyCounts(ctx, user, device)
	if err != nil {
		return nil, nil, err
	}
	fallback, err := k.store.UnusedFallbackKeyTypes(ctx, user, device)
	if err != nil {
		return nil, nil, err
	}
	return counts, fallback, nil
}

// DeviceListPos is the device-list stream's newest position (read by
// sync.NewSyncer at start-up).
func (k *Keys) DeviceListPos(ctx context.Context) (int64, error) { return k.store.DeviceListPos(ctx) }

var _ sync.DeviceKeys = (*Keys)(nil)
