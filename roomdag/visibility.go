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
