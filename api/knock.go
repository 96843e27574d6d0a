package api

import (
	"errors"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"net/http"
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
	room, aliasServers, err := s.roomIDOrAlias(r)
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
	if errors.Is(err, roomdag.ErrUnknownRoom) || err == nil && (st.Create() == nil || !s.inRoom(st)) {
		// No user of this server is in the room: knock through one that is.
		return s.knockRemote(r, room, aliasServers, st, req.Reason)
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

// knockRemote knocks on room through the servers in it (the request's
// via, the alias's servers, the room ID's): the knock and the state the
// room answered with are kept out of band, so that the knocker's /sync
// lists the room under rooms.knock.
func (s *Server) knockRemote(r *http.Request, room roomdag.RoomID, aliasServers []roomdag.ServerName, st *roomdag.RoomState, reason string) (any, error) {
	servers := s.joinServers(r, room, aliasServers, nil)
	if s.cfg.RemoteMemberships == nil || len(servers) == 0 {
		msg := "room " + string(room) + " is not known to this server"
		if s.cfg.RemoteMemberships == nil {
			return nil, httpapi.NotFound("%s, and this server does not federate", msg)
		}
		return nil, httpapi.NotFound("%s and no server to knock through is known: give one with via", msg)
	}
	user := requester(r).UserID
	if st != nil && st.Create() != nil {
		// This server holds the room but none of its users is in it:
		// the room's servers decide, and take the knock into its DAG.
		if st.Membership(user) == roomdag.MembershipBan {
			return nil, httpapi.Forbidden("you are banned from this room")
		}
	}
	knock, state, err := s.cfg.RemoteMemberships.Knock(r.Context(), room, user, servers, reason)
	if err != nil {
		return nil, err
	}
	if _, err := s.rooms.StoreOutOfBand(r.Context(), knock, state); err != nil {
		if !errors.Is(err, roomdag.ErrRoomHere) {
			return nil, err
		}
		// The room's servers send the knock to this server's copy of the
		// room with their next transaction.
		s.log.Info("knock on a room held here, left to the room's transactions", "room", room, "event", knock.ID())
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
