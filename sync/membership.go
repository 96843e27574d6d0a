package sync

import (
	"context"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// MembershipStore reads a user's membership history in a room, and who
// asked for their events to be erased.
type MembershipStore interface {
	// MembershipChanges returns the user's membership events in the room,
	// oldest first; none for a room they were never in.
	MembershipChanges(ctx context.Context, room roomdag.RoomID, user roomdag.UserID) (roomdag.MembershipTrail, error)
	// ErasedUsers returns the users whose deactivation asked for erasure,
	// as of the newest committed erasure. It is read on every timeline
	// rendered, so it is answered from memory; the map is shared and must
	// not be modified.
	ErasedUsers() map[roomdag.UserID]bool
}

// MembershipTrails returns view with the viewer's membership trail in
// each room of evs (MSC4115: unsigned.membership on every event served to
// a client), and the erased senders, for ClientJSON, which serves the
// events of those redacted to viewers who were not joined when they were
// sent. Call it after Bundle: the events bundled inside others get
// neither, as in Synapse.
//
// known holds the viewer's current membership per room, with the stream
// position of the event that set it (storage.UserRooms, which /sync reads
// anyway); it may be nil. A room's events at or after that event all have
// that membership, so then the trail costs nothing; otherwise it is read,
// once per room, whatever the number of events.
func MembershipTrails(ctx context.Context, store MembershipStore, view roomdag.ClientView, known map[roomdag.RoomID]storage.RoomMembership, evs ...[]*roomdag.StoredEvent) (roomdag.ClientView, error) {
	oldest := map[roomdag.RoomID]roomdag.StreamPos{}
	for _, list := range evs {
		for _, ev := range list {
			if p, ok := oldest[ev.RoomID()]; !ok || ev.Pos < p {
				oldest[ev.RoomID()] = ev.Pos
			}
		}
	}
	if len(oldest) == 0 {
		return view, nil
	}
	view.Erased = store.ErasedUsers()
	trails := make(map[roomdag.RoomID]roomdag.MembershipTrail, len(oldest)+len(view.Memberships))
	for room, t := range view.Memberships {
		trails[room] = t
	}
	for room, first := range oldest {
		// A trail already in the view (from an earlier page) serves if it
		// starts at or before these events: a trail known only from its
		// newest change says nothing of what came before.
		if t := trails[room]; len(t) > 0 && t[0].Pos <= first {
			continue
		}
		if m, ok := known[room]; ok && m.Pos <= first {
			trails[room] = roomdag.MembershipTrail{{Pos: m.Pos, Membership: m.Membership}}
			continue
		}
		t, err := store.MembershipChanges(ctx, room, view.UserID)
		if err != nil {
			return view, err
		}
		trails[room] = t
	}
	view.Memberships = trails
	return view, nil
}

// MembershipsByRoom indexes memberships by room, for MembershipTrails.
func MembershipsByRoom(ms []storage.RoomMembership) map[roomdag.RoomID]storage.RoomMembership {
	out := make(map[roomdag.RoomID]storage.RoomMembership, len(ms))
	for _, m := range ms {
		out[m.RoomID] = m
	}
	return out
}
