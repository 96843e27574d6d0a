package push

import (
	"errors"
	"slices"
	"strings"

	"github.com/persistentchat/homeserver/roomdag"
)

// CopyRoomRules gives room to a copy of each of the user's enabled rules
// about room from, when the user joins the room that replaced it (spec:
// "Room Upgrades", the server "should automatically transfer ... the user's
// personalized settings such as notifications"). A rule is about a room when
// it is the room's room rule, or an override or underride rule with a
// room_id event_match condition naming it, as Element writes for a muted
// room; Synapse copies the same rules (copy_push_rules_from_room_to_room).
//
// A copy's ID is the original's with the room ID replaced; an override or
// underride rule whose ID does not name the room is copied under the new
// room ID, as Synapse does. Each copy goes just before its original, so it
// keeps its priority. A rule the user already has under the copy's ID is
// left alone, so copying twice changes nothing and a rule the user set for
// the new room wins. Copying stops when the user has MaxRules rules. It
// reports whether anything was copied.
func (u *UserRules) CopyRoomRules(from, to roomdag.RoomID) bool {
	changed := false
	for _, kind := range []string{"override", "room", "underride"} {
		for _, r := range slices.Clone(u.Rules[kind]) {
			cp, ok := roomRuleCopy(kind, r, from, to)
			if !ok || slices.ContainsFunc(u.Rules[kind], func(x Rule) bool { return x.RuleID == cp.RuleID }) {
				continue
			}
			if err := u.Put(kind, cp, r.RuleID, ""); errors.Is(err, ErrTooMany) {
				return changed
			} else if err != nil {
				continue
			}
			changed = true
		}
	}
	return changed
}

// roomRuleCopy is r made about room to instead of room from, if r is an
// enabled rule about room from.
func roomRuleCopy(kind string, r Rule, from, to roomdag.RoomID) (Rule, bool) {
	if !r.Enabled {
		return Rule{}, false
	}
	if kind == "room" {
		if r.RuleID != string(from) {
			return Rule{}, false
		}
		r.RuleID = string(to)
		return r, true
	}
	names := false
	conds := slices.Clone(r.Conditions)
	for i, c := range conds {
		if c.Kind == "event_match" && c.Key == "room_id" && c.Pattern != nil && *c.Pattern == string(from) {
			p := string(to)
			conds[i].Pattern = &p
			names = true
		}
	}
	if !names {
		return Rule{}, false
	}
	r.Conditions = conds
	if strings.Contains(r.RuleID, string(from)) {
		r.RuleID = strings.ReplaceAll(r.RuleID, string(from), string(to))
	} else {
		r.RuleID = string(to)
	}
	return r, true
}
