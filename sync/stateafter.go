package sync

import (
	"context"
	"encoding/json"

	"github.com/persistentchat/homeserver/roomdag"
)

// use_state_after (spec v1.16, MSC4222): a client that passes
// use_state_after=true gets, for each joined and left room, state_after
// (the state at the end of the timeline) in place of state (the state at
// its start). It then takes the room's state from state_after alone and
// never from the timeline, which cannot mislead it where the DAG forks.
// The response has one or the other, never both; state_after is there even
// when empty, which is how a client tells the parameter was understood.

// stateAfter is the state_after section of a room: the room's state at end
// (the sync's position, or the user's leave) that differs from its state at
// since, or all of it when full (an initial sync, a room new to this sync,
// full_state). Unlike the state section, it holds the timeline's state
// events too.
//
// With lazy_load_members it follows Synapse: a full state holds only the
// memberships of the timeline's senders and the user's own; an incremental
// one holds every change, memberships included, and the current
// memberships of the timeline's senders whether they changed or not, since
// the client may never have had them. The server keeps no record of the
// memberships a device has been sent, so those go out every time, as with
// include_redundant_members.
func (s *Syncer) stateAfter(ctx context.Context, req Request, room roomdag.RoomID, since Token, end roomdag.StreamPos, full bool, tl []*roomdag.StoredEvent) ([]*roomdag.StoredEvent, error) {
	endSnap, err := s.store.StateAtStream(ctx, room, end)
	if err != nil {
		return nil, err
	}
	var sinceSnap int64
	if !full {
		if sinceSnap, err = s.store.StateAtStream(ctx, room, since.Events); err != nil {
			return nil, err
		}
	}
	endIDs, err := s.store.Snapshot(ctx, endSnap)
	if err != nil {
		return nil, err
	}
	sinceIDs, err := s.store.Snapshot(ctx, sinceSnap)
	if err != nil {
		return nil, err
	}
	sf := &req.Filter.Room.State
	senders := map[string]bool{}
	for _, ev := range tl {
		senders[string(ev.Sender())] = true
	}
	if full {
		senders[string(req.User)] = true
	}
	var ids []roomdag.EventID
	for k, id := range endIDs {
		changed := sinceIDs[k] != id
		switch {
		case sf.LazyLoadMembers && k.Type == roomdag.TypeMember && full:
			if !senders[k.StateKey] {
				continue
			}
		case sf.LazyLoadMembers && k.Type == roomdag.TypeMember:
			if !changed && !senders[k.StateKey] {
				continue
			}
		case !changed:
			continue
		}
		ids = append(ids, id)
	}
	return s.stateEvents(ctx, ids, sf)
}

// Where state_after goes: the spec's key, and MSC4222's unstable one,
// which matrix-rust-sdk and other clients still send and read
// (org.matrix.msc4222.use_state_after; Synapse knows only that one). A
// client gets the key of the parameter it sent.
const (
	KeyStateAfter         = "state_after"
	KeyStateAfterUnstable = "org.matrix.msc4222.state_after"
)

// MarshalJSON writes the room's state section under its stateAfter key
// when the client asked for that, and as state otherwise: the rest of
// /sync fills State either way. In the state_after forms the outer State,
// nil and omitted, hides the room's own (encoding/json takes the
// shallower of two fields with one name).
func (jr *JoinedRoom) MarshalJSON() ([]byte, error) {
	type plain JoinedRoom
	switch jr.stateAfter {
	case KeyStateAfter:
		return json.Marshal(struct {
			*plain
			State      *EventList `json:"state,omitempty"`
			StateAfter EventList  `json:"state_after"`
		}{plain: (*plain)(jr), StateAfter: jr.State})
	case KeyStateAfterUnstable:
		return json.Marshal(struct {
			*plain
			State      *EventList `json:"state,omitempty"`
			StateAfter EventList  `json:"org.matrix.msc4222.state_after"`
		}{plain: (*plain)(jr), StateAfter: jr.State})
	}
	return json.Marshal((*plain)(jr))
}

// MarshalJSON: as for JoinedRoom.
func (lr *LeftRoom) MarshalJSON() ([]byte, error) {
	type plain LeftRoom
	switch lr.stateAfter {
	case KeyStateAfter:
		return json.Marshal(struct {
			*plain
			State      *EventList `json:"state,omitempty"`
			StateAfter EventList  `json:"state_after"`
		}{plain: (*plain)(lr), StateAfter: lr.State})
	case KeyStateAfterUnstable:
		return json.Marshal(struct {
			*plain
			State      *EventList `json:"state,omitempty"`
			StateAfter EventList  `json:"org.matrix.msc4222.state_after"`
		}{plain: (*plain)(lr), StateAfter: lr.State})
	}
	return json.Marshal((*plain)(lr))
}
