package api

import (
	"errors"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"net/http"
	"strings"
)

// Room summaries (spec v1.15: GET /_matrix/client/v1/room_summary).

func (s *Server) summaryRoutes() []route {
	return []route{
		{method: "GET", path: v1 + "/room_summary/{roomIdOrAlias}", handler: s.roomSummary, auth: authOptional, rate: rateNone},
	}
}

type roomSummary struct {
	roomInfo
	RoomVersion    string   `json:"room_version"`
	Encryption     string   `json:"encryption,omitempty"`
	Membership     string   `json:"membership,omitempty"`
	AllowedRoomIDs []string `json:"allowed_room_ids,omitempty"`
}

// roomSummary shows a room to whoever could see or join it: members (joined,
// invited or knocking), anyone if it is world readable or its join rule is
// public or knock, and, for restricted rooms, members of an allowed room.
// Everyone else gets 404, as for a room that does not exist, so the
// endpoint does not reveal which private rooms exist.
func (s *Server) roomSummary(r *http.Request) (any, error) {
	room, _, err := s.roomIDOrAlias(r)
	if err != nil {
		return nil, err
	}
	notFound := httpapi.NotFound("room not found, or you may not see its summary")
	st, err := s.rooms.State(r.Context(), room)
	if errors.Is(err, roomdag.ErrUnknownRoom) {
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	out := roomSummary{
		roomInfo:    describeRoom(room, st),
		RoomVersion: st.Version.ID,
		Encryption:  contentString(st.State, roomdag.TypeEncryption, "algorithm"),
	}
	if strings.HasSuffix(out.JoinRule, "restricted") {
		out.AllowedRoomIDs = allowedRooms(st.State)
	}
	var user roomdag.UserID
	if rq := requester(r); rq != nil {
		user = rq.UserID
		out.Membership = st.Membership(user)
		if out.Membership == "" {
			out.Membership = roomdag.MembershipLeave // as Synapse answers
		}
	}
	if !s.maySeeSummary(r, st, out, user) {
		return nil, notFound
	}
	return out, nil
}

func (s *Server) maySeeSummary(r *http.Request, st *roomdag.RoomState, out roomSummary, user roomdag.UserID) bool {
	switch {
	case out.WorldReadable, out.JoinRule == "public", out.JoinRule == "knock", out.JoinRule == "knock_restricted":
		return true
	case user == "":
		return false
	}
	switch st.Membership(user) {
	case roomdag.MembershipJoin, roomdag.MembershipInvite, roomdag.MembershipKnock:
		return true
	}
	for _, id := range out.AllowedRoomIDs {
		other, err := roomdag.ParseRoomID(id)
		if err != nil {
			continue
		}
		if ost, err := s.rooms.State(r.Context(), other); err == nil && ost.Membership(user) == roomdag.MembershipJoin {
			return true
		}
	}
	return false
}
