package roomdag

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

// Out-of-band memberships: a local user's membership event in a room this
// server is not in, and so holds no state of (an invite another server
// sent over /invite, its rejection). It is stored with a stream position
// and sets the user's membership, so that /sync lists the room under
// rooms.invite (then rooms.leave) and push rules run on it as on a local
// invite, but it stays outside the room's DAG: the room's state, forward
// extremities and head do not change. Synapse calls these "out of band
// memberships" too.

// ErrRoomHere is StoreOutOfBand's error for a room this server holds
// state of: its events go through Receive.
var ErrRoomHere = errors.New("this server is in the room")

// StoreOutOfBand stores ev, an m.room.member event whose state_key is a
// local user, as an out-of-band membership, with inviteState (stripped
// state, for an invite) shown to the user, and returns once it is durable.
// The caller has checked ev (hashes, signatures, its fields). Storing an
// event already stored does nothing (pos 0). The room's head is built on
// nothing but its create event, so a room whose state holds one refuses
// with ErrRoomHere.
func (rs *Rooms) StoreOutOfBand(ctx context.Context, ev *Event, inviteState json.RawMessage) (StreamPos, error) {
	if ev.Type() != TypeMember || ev.StateKey() == nil {
		return 0, fmt.Errorf("%w: an out-of-band membership must be an m.room.member event", ErrEventFormat)
	}
	if u, err := ParseUserID(*ev.StateKey()); err != nil || u.Server() != rs.key.ServerName {
		return 0, fmt.Errorf("%w: out-of-band membership of %q, not a local user", ErrEventFormat, *ev.StateKey())
	}
	if known, err := rs.store.DAGEvents(ctx, []EventID{ev.ID()}); err != nil {
		return 0, err
	} else if known[ev.ID()] != nil {
		return 0, nil
	}
	r := rs.cache.acquire(ev.RoomID())
	defer rs.cache.release(r)
	r.mu.Lock()
	head, err := rs.headLocked(ctx, r)
	newRoom := false
	if errors.Is(err, ErrUnknownRoom) {
		head, err, newRoom = &RoomState{Version: ev.Version(), State: StateMap{}}, nil, true
	}
	if err == nil && head.Create() != nil {
		err = ErrRoomHere
	}
	if err == nil && head.Version.ID != ev.Version().ID {
		err = fmt.Errorf("%w: event of room version %s in a room of version %s", ErrEventFormat, ev.Version().ID, head.Version.ID)
	}
	if err != nil {
		r.mu.Unlock()
		return 0, err
	}
	per := &Persist{Event: ev, NewRoom: newRoom, OutOfBand: true, KeepExtremities: true,
		ExtremitiesBefore: head.Extremities, InviteState: inviteState, Generation: r.gen}
	q := &queuedEvent{ev: ev, gen: r.gen}
	epoch := r.currentEpoch()
	per.Committed = func(pos StreamPos) {
		q.pos = pos
		if newRoom {
			durable := *head
			durable.LastPos = pos
			r.publish(&durable, epoch)
		}
		for _, l := range rs.listeners {
			l.EventCommitted(ev, pos)
		}
	}
	q.done = rs.store.EnqueueEvent(per)
	if newRoom {
		r.head = head
	}
	r.mu.Unlock()
	_, pos, err := q.wait(r)
	return pos, err
}

// BuildLocalRejection builds the leave that rejects invite (or rescinds a
// knock) locally, when no server in the room could be reached to reject
// it there (Synapse's "locally generated out-of-band leave"): signed by
// this server, citing the invite as its only prev and auth event. No
// other server will accept it; it is for StoreOutOfBand only.
func (rs *Rooms) BuildLocalRejection(invite *Event, reason string) (*Event, error) {
	if m := invite.Membership(); invite.Type() != TypeMember || m != MembershipInvite && m != MembershipKnock || invite.StateKey() == nil {
		return nil, fmt.Errorf("%w: %s is not an invite or a knock", ErrEventFormat, invite.ID())
	}
	content := map[string]string{"membership": MembershipLeave}
	if reason != "" {
		content["reason"] = reason
	}
	c, _ := json.Marshal(content)
	user := *invite.StateKey()
	cur := &RoomState{Version: invite.Version(), Extremities: []EventID{invite.ID()},
		ExtremityEvents: []*Event{invite}, Depth: invite.Depth()}
	return rs.build(invite.Version(), invite.RoomID(),
		ProtoEvent{Type: TypeMember, StateKey: &user, Sender: UserID(user), Content: c}, cur, []*Event{invite})
}

// WithSignatures returns ev with the signatures of server taken from
// other, the same event as another server returned it (an invite its
// invitee's server signed). Nothing else of other is taken, so whatever
// else it changed is ignored; the caller verifies the signatures added.
func WithSignatures(ev *Event, server ServerName, other []byte) (*Event, error) {
	c, err := canonicalJSONFor(ev.Version(), other)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEventFormat, err)
	}
	sigs, ok := cjGet(c, "signatures")
	if !ok || !cjIsObject(sigs) {
		return nil, fmt.Errorf("%w: the event has no signatures", ErrSignature)
	}
	theirs, ok := cjGet(sigs, string(server))
	if !ok || !cjIsObject(theirs) {
		return nil, fmt.Errorf("%w: the event is not signed by %s", ErrSignature, server)
	}
	own, ok := cjGet(ev.JSON(), "signatures")
	if !ok {
		own = []byte("{}")
	}
	out, err := NewEventFromJSON(ev.Version(), cjWith(ev.JSON(), "signatures", cjWith(own, string(server), theirs)))
	if err == nil && out.ID() != ev.ID() {
		err = fmt.Errorf("roomdag: adding signatures changed event %s into %s", ev.ID(), out.ID())
	}
	return out, err
}
