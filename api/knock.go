package api

import (
	"errors"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"net/http"
	"strings"
)

// Knocking (spec: client-server API, "Knocking on rooms"; room versions
// 7+, and the knock_restricted join rule from v10). A knock is a member
// event with membership knock that asks the room for an invite; members
// who may invite accept it by inviting, those who may kick or ban refuse
// it, and the knocker withdraws it by leaving.

// POST /_matrix/client/v3/knock/{roomIdOrAlias}?via=...&server_name=...
// {"reason"}: answers {"room_id"}. via and the deprecated server_name
// (ignored when via is given) name servers to knock through, which only
// matters for rooms of other servers.
func (s *Server) knock(r *http.Request) (any, error) {
	room, _, err := s.roomIDOrAlias(r)
	if err != nil {
		return nil, err
	}
	var req struct {
		Reason string `json:"reason"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	st, err := s.rooms.State(r.Context(), room)
	if errors.Is(err, roomdag.ErrUnknownRoom) {
		msg := "room " + string(room) + " is not known to this server"
		if via := viaServers(r); len(via) > 0 {
			msg += "; knocking through " + strings.Join(via, ", ")
		} else {
			msg += "; knocking on rooms of other servers"
		}
		return nil, httpapi.NotFound("%s needs federation, which this server does not offer yet", msg)
	}
	if err != nil {
		return nil, err
	}
	user := requester(r).UserID
	// The auth rules refuse all of these too (v7 rule 4.7); checked here
	// first for clear messages, and because before v7 knock is no
	// membership at all (a malformed event, not a refusal).
	if !st.Version.Knock {
		return nil, httpapi.Forbidden("room version %s does not support knocking (room versions 7 and later do)", st.Version.ID)
	}
	switch st.Membership(user) {
	case roomdag.MembershipJoin:
		return nil, httpapi.Forbidden("you are already in this room")
	case roomdag.MembershipInvite:
		return nil, httpapi.Forbidden("you are already invited to this room: join it to accept the invite")
	case roomdag.MembershipBan:
		return nil, httpapi.Forbidden("you are banned from this room")
	}
	jr := contentString(st.State, roomdag.TypeJoinRules, "join_rule")
	if jr != "knock" && !(jr == "knock_restricted" && st.Version.KnockRestricted) {
		if jr == "" {
			jr = "invite" // no m.room.join_rules event
		}
		return nil, httpapi.Forbidden("this room's join rule is %q: it does not allow knocking", jr)
	}
	// Knocking again (a knock with a new reason) makes a new event, as in
	// Synapse: Complement's "A user that has already knocked is allowed
	// to knock again on the same room".
	if _, err := s.appendMember(r, room, user, roomdag.MembershipKnock, req.Reason); err != nil {
		return nil, err
	}
	return map[string]any{"room_id": room}, nil
}

// viaServers reads the via query parameters, or, when there are none, the
// deprecated server_name ones (spec v1.12, MSC4156: "Homeservers MUST
// ignore all server_name parameters if any via parameters are supplied").
func viaServers(r *http.Request) []string {
	q := r.URL.Query()
	if via := q["via"]; len(via) > 0 {
		return via
	}
	return q["server_name"]
}
