package roomdag

import "encoding/json"

// History visibility values (spec: "Room History Visibility").
const (
	VisibilityWorldReadable = "world_readable"
	VisibilityShared        = "shared"
	VisibilityInvited       = "invited"
	VisibilityJoined        = "joined"
)

// HistoryVisibility returns the room's history visibility in state,
// "shared" when unset or unknown, as the spec says.
func HistoryVisibility(state AuthState) string {
	ev := state.Get(TypeHistoryVisibility, "")
	if ev == nil {
		return VisibilityShared
	}
	var c struct {
		HistoryVisibility string `json:"history_visibility"`
	}
	_ = json.Unmarshal(ev.Content(), &c)
	switch c.HistoryVisibility {
	case VisibilityWorldReadable, VisibilityShared, VisibilityInvited, VisibilityJoined:
		return c.HistoryVisibility
	}
	return VisibilityShared
}

// visibilityOrder ranks history visibility from least to most restrictive.
var visibilityOrder = []string{VisibilityWorldReadable, VisibilityShared, VisibilityInvited, VisibilityJoined}

// membershipOrder ranks memberships from most to least joined.
var membershipOrder = []string{MembershipJoin, MembershipInvite, MembershipKnock, MembershipLeave, MembershipBan}

func rank(order []string, v string) int {
	for i, x := range order {
		if x == v {
			return i
		}
	}
	return len(order)
}

// CanSee reports whether user may see ev, given the room state before ev
// and the user's current membership (spec: client-server API, "History
// visibility"). At the boundaries it is generous, as Synapse is: a change
// of history visibility is seen under the less restrictive of the old and
// new setting, and a user's own membership event under the more joined of
// their old and new membership, so joiners see their join and leavers
// their leave. A leave that ends an invite (a rejection, or an invite
// withdrawn) or a knock (a refusal, or a knock withdrawn) is seen too,
// whatever the visibility, as Synapse shows a rejected invite, or the
// invitee or knocker would never see the room go.
func CanSee(ev *Event, before AuthState, user UserID, current string) bool {
	vis := HistoryVisibility(before)
	if ev.Type() == TypeHistoryVisibility && ev.StateKeyIs("") {
		if next := HistoryVisibility(StateMap{ev.Tuple(): ev}); rank(visibilityOrder, next) < rank(visibilityOrder, vis) {
			vis = next
		}
	}
	if vis == VisibilityWorldReadable {
		return true
	}
	atEvent := ""
	if m := before.Get(TypeMember, string(user)); m != nil {
		atEvent = m.Membership()
	}
	if ev.Type() == TypeMember && ev.StateKeyIs(string(user)) {
		if ev.Membership() == MembershipLeave && (atEvent == MembershipInvite || atEvent == MembershipKnock) {
			return true
		}
		if next := ev.Membership(); rank(membershipOrder, next) < rank(membershipOrder, atEvent) {
			atEvent = next
		}
	}
	switch {
	case atEvent == MembershipJoin:
		return true
	case vis == VisibilityShared && current == MembershipJoin:
		return true
	case vis == VisibilityInvited && atEvent == MembershipInvite:
		return true
	}
	return false
}

// ServerCanSee reports whether server may be sent ev over federation
// (/event, /state, /backfill and the like), given the room state before
// ev and the room's current state. The rule is the client one, applied to
// the server's users, as the spec's "history visibility" and Synapse's
// filter_events_for_server read it: in a world_readable room every server
// may; otherwise a server may when one of its users may (CanSee), i.e.
// it had a member joined at the event (or invited, under "invited"), or,
// under "shared", it has a member joined now. A server with no user in
// the room, then or now, sees nothing outside world_readable rooms.
//
// before need hold only what decides: the m.room.history_visibility event
// and the server's users' m.room.member events.
func ServerCanSee(ev *Event, before, current StateMap, server ServerName) bool {
	if HistoryVisibility(before) == VisibilityWorldReadable {
		return true
	}
	seen := map[UserID]bool{}
	try := func(user UserID) bool {
		if seen[user] {
			return false
		}
		seen[user] = true
		cur := ""
		if m := current.Get(TypeMember, string(user)); m != nil {
			cur = m.Membership()
		}
		return CanSee(ev, before, user, cur)
	}
	// A server may always see its own users' membership events: an
	// invite is sent to the invitee's server, which then asks for its
	// auth chain (/event_auth, as Dendrite does) before it can trust it,
	// whatever the history visibility; a kick or ban tells the server
	// its user is gone.
	if ev.Type() == TypeMember && ev.StateKey() != nil {
		if u := UserID(*ev.StateKey()); u.Server() == server {
			return true
		}
	}
	for _, st := range []StateMap{before, current} {
		for k := range st {
			if k.Type != TypeMember {
				continue
			}
			if u := UserID(k.StateKey); u.Server() == server && try(u) {
				return true
			}
		}
	}
	// A history visibility change is seen under the less restrictive of
	// the two settings (CanSee): a change to world_readable is public.
	return CanSee(ev, before, "", "")
}

// ServerMayAsk reports whether server may ask about ev over federation at
// all (its state, its auth chain, the history before it, the event
// itself, redacted where ServerCanSee says no): when it may see ev, and,
// as Synapse's is_host_in_room lets it, whenever it has a member joined
// now or the room is world readable now. A server in the room needs the
// state and auth events from before it joined.
func ServerMayAsk(ev *Event, before, current StateMap, server ServerName) bool {
	if HistoryVisibility(current) == VisibilityWorldReadable {
		return true
	}
	for k, m := range current {
		if k.Type == TypeMember && UserID(k.StateKey).Server() == server && m.Membership() == MembershipJoin {
			return true
		}
	}
	return ServerCanSee(ev, before, current, server)
}
