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

// CanSee reports whether user may see ev, given the room state before ev
// and the user's current membership (spec: client-server API, "History
// visibility"). A user's own membership events count with their new
// membership, so a joiner sees their own join.
func CanSee(ev *Event, before AuthState, user UserID, current string) bool {
	vis := HistoryVisibility(before)
	if vis == VisibilityWorldReadable {
		return true
	}
	atEvent := ""
	if m := before.Get(TypeMember, string(user)); m != nil {
		atEvent = m.Membership()
	}
	if ev.Type() == TypeMember && ev.StateKeyIs(string(user)) {
		atEvent = ev.Membership()
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
