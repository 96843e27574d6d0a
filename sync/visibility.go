package sync

import (
	"context"

	"github.com/persistentchat/homeserver/roomdag"
)

// visibility checks history visibility for one user over many events,
// loading only the two state events each check needs.
type visibility struct {
	store   Store
	user    roomdag.UserID
	current string // the user's current membership in the room
	// results per state snapshot: events sharing a snapshot share the answer
	// unless the event is the user's own membership event.
	memo map[int64]bool
}

func newVisibility(store Store, user roomdag.UserID, current string) *visibility {
	return &visibility{store: store, user: user, current: current, memo: map[int64]bool{}}
}

// snapshotState is an AuthState that fetches events of a snapshot on demand.
type snapshotState struct {
	ctx   context.Context
	store Store
	ids   map[roomdag.StateKey]roomdag.EventID
	err   error
}

func (s *snapshotState) Get(evType, stateKey string) *roomdag.Event {
	id, ok := s.ids[roomdag.StateKey{Type: evType, StateKey: stateKey}]
	if !ok {
		return nil
	}
	// In a room joined over federation the state from before the join is
	// held as outliers.
	evs, err := s.store.EventsWithOutliers(s.ctx, []roomdag.EventID{id})
	if err != nil {
		s.err = err
		return nil
	}
	if len(evs) == 0 {
		return nil
	}
	return evs[0].Event
}

func (v *visibility) canSee(ctx context.Context, ev *roomdag.StoredEvent) (bool, error) {
	own := ev.Type() == roomdag.TypeMember && ev.StateKeyIs(string(v.user))
	if ok, seen := v.memo[ev.StateBefore]; seen && !own {
		return ok, nil
	}
	ids, err := v.store.Snapshot(ctx, ev.StateBefore)
	if err != nil {
		return false, err
	}
	st := &snapshotState{ctx: ctx, store: v.store, ids: ids}
	ok := roomdag.CanSee(ev.Event, st, v.user, v.current)
	if st.err != nil {
		return false, st.err
	}
	if !own {
		v.memo[ev.StateBefore] = ok
	}
	return ok, nil
}

// FilterVisible keeps the events the user may see; current is the user's
// current membership in the events' room.
func FilterVisible(ctx context.Context, store Store, user roomdag.UserID, current string, evs []*roomdag.StoredEvent) ([]*roomdag.StoredEvent, error) {
	v := newVisibility(store, user, current)
	out := evs[:0:0]
	for _, ev := range evs {
		ok, err := v.canSee(ctx, ev)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, ev)
		}
	}
	return out, nil
}
