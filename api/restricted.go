package api

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"net/http"
)

// Restricted rooms (spec: client-server API, "Restricted rooms"; room
// versions 8+ for the restricted join rule, 10+ for knock_restricted):
// a user who is not invited may join if they are joined to a room the
// join rule's allow list names. The server vouches for the join by naming
// in content.join_authorised_via_users_server one of its users who is
// joined to the room and may invite (auth rule 4.3.5.2 in v8-v11), and
// signs the event as it signs every event of its users (rule 4.2.1).

// keyAuthorisedVia is the member content key naming a restricted join's
// authorising user.
const keyAuthorisedVia = "join_authorised_via_users_server"

// restrictedJoinRule says whether the room's join rule lets members of
// other rooms join it in its version: restricted (v8+) or
// knock_restricted (v10+).
func restrictedJoinRule(st *roomdag.RoomState) bool {
	jr := contentString(st.State, roomdag.TypeJoinRules, "join_rule")
	return jr == "restricted" && st.Version.RestrictedJoins || jr == "knock_restricted" && st.Version.KnockRestricted
}

// allowedRooms lists the room IDs of the m.room_membership conditions in
// the room's join rule. Entries of the wrong form are skipped, and an
// allow that is not a list allows nobody, as in Synapse
// (get_rooms_that_allow_join): Complement's "Join should fail with
// mangled join rules".
func allowedRooms(state roomdag.StateMap) []string { return roomdag.AllowedRooms(state) }

// inAllowedRoom says whether the user is joined to a room the join rule
// allows. Rooms this server does not know cannot be checked here; their
// members can only join through a server in them (federation).
func (s *Server) inAllowedRoom(ctx context.Context, st *roomdag.RoomState, user roomdag.UserID) (bool, error) {
	for _, id := range allowedRooms(st.State) {
		other, err := roomdag.ParseRoomID(id)
		if err != nil {
			continue
		}
		ost, err := s.rooms.State(ctx, other)
		if errors.Is(err, roomdag.ErrUnknownRoom) {
			continue
		}
		if err != nil {
			return false, err
		}
		if ost.Membership(user) == roomdag.MembershipJoin {
			return true, nil
		}
	}
	return false, nil
}

// joinAuthoriser returns the user to name in join_authorised_via_users_server
// of user's join to the room whose current state is st, or "" when the join
// needs none: the join rule is not restricted, or the user is invited or
// already joined (rule 4.3.5.1). A user in none of the allowed rooms gets
// 403. Of this server's users joined to the room who may invite, it picks
// the one with the highest power level (v12 creators first), then the
// lowest user ID, so the choice is the same every time.
func (s *Server) joinAuthoriser(ctx context.Context, st *roomdag.RoomState, user roomdag.UserID) (roomdag.UserID, error) {
	if !restrictedJoinRule(st) {
		return "", nil
	}
	switch st.Membership(user) {
	case roomdag.MembershipJoin, roomdag.MembershipInvite:
		return "", nil
	case roomdag.MembershipBan:
		return "", httpapi.Forbidden("you are banned from this room")
	}
	ok, err := s.inAllowedRoom(ctx, st, user)
	if err != nil {
		return "", err
	}
	if !ok {
		msg := "this room is restricted: you must be invited, or joined to one of the rooms its join rule allows"
		if contentString(st.State, roomdag.TypeJoinRules, "join_rule") == "knock_restricted" {
			msg += "; you may knock on it instead"
		}
		return "", httpapi.Forbidden("%s", msg)
	}
	best, err := roomdag.JoinAuthoriser(st.State, s.cfg.ServerName)
	if err != nil {
		return "", err
	}
	if best == "" {
		return "", httpapi.Errorf(http.StatusBadRequest, httpapi.CodeUnableToGrantJoin,
			"no user of this server who may invite is in the room, so this server cannot authorise your join")
	}
	return best, nil
}

// ownMemberContent prepares the content of a membership event a user sends
// about themselves. join_authorised_via_users_server is the server's to
// set, never the client's: it is removed (as Synapse does, since a client
// changing its display name may echo it back: Complement's restricted-room
// tests send "unused"), and a join that needs it gets it. Rejecting the
// invite to a server notices room is refused.
func (s *Server) ownMemberContent(ctx context.Context, st *roomdag.RoomState, user roomdag.UserID, content map[string]json.RawMessage) error {
	delete(content, keyAuthorisedVia)
	var membership string
	_ = json.Unmarshal(content["membership"], &membership)
	switch membership {
	case roomdag.MembershipJoin:
		via, err := s.joinAuthoriser(ctx, st, user)
		if err != nil {
			return err
		}
		if via != "" {
			content[keyAuthorisedVia], _ = json.Marshal(via)
		}
	case roomdag.MembershipLeave:
		return s.checkNoticeRoomLeave(st, user)
	}
	return nil
}
