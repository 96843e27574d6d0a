package api

import (
	"context"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/sync"
	"net/http"
)

// checkInviteAllowed refuses, with 403 M_INVITE_BLOCKED, an invite of a
// local user whose m.invite_permission_config blocks invites. The spec
// names the endpoints that must refuse: POST /rooms/{roomId}/invite,
// createRoom's invite list and PUT /state/m.room.member with membership
// invite; each calls this. Unlike Synapse, server administrators get no
// exemption: the spec makes none. Server notices, which the server itself
// sends, do not pass here; room upgrades' invites do not either, and
// /sync does not show the user those (sync.InvitesBlocked).
func (s *Server) checkInviteAllowed(ctx context.Context, invitee roomdag.UserID) error {
	if invitee.Server() != s.cfg.ServerName {
		return nil // their server decides
	}
	blocked, err := sync.InvitesBlocked(ctx, s.store, invitee)
	if err != nil {
		return err
	}
	if blocked {
		return httpapi.Errorf(http.StatusForbidden, httpapi.CodeInviteBlocked, "%s does not accept invites", invitee)
	}
	return nil
}
