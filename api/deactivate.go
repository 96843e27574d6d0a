package api

import (
	"context"
	"errors"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"net/http"
)

// Account deactivation (spec: POST /account/deactivate), and Synapse's
// admin form of it (POST /_synapse/admin/v1/deactivate/{userId}).
//
// What it does follows Synapse's DeactivateAccountHandler:
//   - in one transaction: the account is marked deactivated, its password
//     cleared, and every device deleted with its access and refresh tokens
//     and pushers; its account data and push rules are deleted too
//     (Synapse purges account data whether or not erase is asked);
//   - long-polls made with its tokens end at once with 401 M_UNKNOWN_TOKEN
//     (sync.SessionCheck);
//   - it leaves every room it is joined to, rejects every pending invite
//     and withdraws every knock, with real m.room.member leave events that
//     other members see, and forgets those rooms;
//   - it drops out of the user directory, which lists active users only;
//   - with erase: true it is also marked erased and its whole profile
//     (display name, avatar, custom fields) is removed, as Synapse does.
//
// As in Synapse, room aliases it created and rooms it published stay:
// they belong to the rooms as much as to the user. The account's row is
// kept, so its user ID is never registered again (M_USER_IN_USE); logging
// in answers 403 M_USER_DEACTIVATED. There are no third-party IDs, so
// there is nothing to unbind from an identity server.
//
// Parting rooms happens after the transaction. If the server stops in
// between, ResumeDeactivations finishes at the next start: a deactivated
// account still in a room is exactly the unfinished work, so it needs no
// queue of its own.

// Accounts is what deactivation needs of storage.
type Accounts interface {
	// DeactivateUser marks the account deactivated and, with erase,
	// erased; clears its password; deletes all its devices, access and
	// refresh tokens, pushers, account data and push rules, and with
	// erase its whole profile; all in one transaction.
	// storage.ErrNotFound if there is no such account.
	DeactivateUser(ctx context.Context, user roomdag.UserID, erase bool) error
	// DeactivatedMembers lists the deactivated accounts still joined to,
	// invited to or knocking on some room.
	DeactivatedMembers(ctx context.Context) ([]roomdag.UserID, error)
}

// unbindResult is id_server_unbind_result. The spec: it "must be success
// if the homeserver has no identifiers to unbind for the user", and this
// server keeps no third-party identifiers; Synapse answers the same then.
const unbindResult = "success"

func (s *Server) deactivateRoutes() []route {
	return []route{
		{"POST", v3 + "/account/deactivate", s.deactivateAccount, authRequired, rateLogin},
		{"POST", "/_synapse/admin/v1/deactivate/{userId}", s.adminDeactivate, authRequired, rateNone},
	}
}

// POST /account/deactivate
func (s *Server) deactivateAccount(r *http.Request) (any, error) {
	var req struct {
		Auth     *uiaAuth `json:"auth"`
		IDServer *string  `json:"id_server"` // no third-party IDs: nothing to unbind
		// erase is in the spec since v1.13 (MSC4025); Synapse had it before.
		Erase bool `json:"erase"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	rq := requester(r)
	// An application service deactivates its users without
	// user-interactive auth: they have no password (as Synapse allows).
	if rq.AppService == nil {
		if err := s.requirePassword(r, req.Auth); err != nil {
			return nil, err
		}
	}
	if err := s.deactivate(r.Context(), rq.UserID, req.Erase); err != nil {
		return nil, err
	}
	return map[string]string{"id_server_unbind_result": unbindResult}, nil
}

// POST /_synapse/admin/v1/deactivate/{userId} with an optional body
// {"erase": bool}: a server admin deactivates a local account.
func (s *Server) adminDeactivate(r *http.Request) (any, error) {
	admin, err := s.store.User(r.Context(), requester(r).UserID)
	if err != nil {
		return nil, err
	}
	if !admin.Admin {
		return nil, httpapi.Forbidden("You are not a server admin")
	}
	target, err := roomdag.ParseUserID(httpapi.PathParam(r, "userId"))
	if err != nil {
		return nil, httpapi.InvalidParam("malformed user ID")
	}
	if target.Server() != s.cfg.ServerName {
		return nil, httpapi.InvalidParam("only local users can be deactivated")
	}
	var req struct {
		Erase bool `json:"erase"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if err := s.deactivate(r.Context(), target, req.Erase); errors.Is(err, storage.ErrNotFound) {
		return nil, httpapi.NotFound("User not found")
	} else if err != nil {
		return nil, err
	}
	return map[string]string{"id_server_unbind_result": unbindResult}, nil
}

// deactivate deactivates user's account (see the top of this file).
//
// An erasure the Erasure guard refuses (a legal hold on the user) fails
// before anything changes: the account stays active, so that the user or
// admin can deactivate it without erase instead.
func (s *Server) deactivate(ctx context.Context, user roomdag.UserID, erase bool) error {
	if erase && s.cfg.Erasure != nil {
		if err := s.cfg.Erasure.CheckErasure(ctx, user); err != nil {
			return err
		}
	}
	committed := s.sync.Notifier().EndSessions(user)
	err := s.store.DeactivateUser(ctx, user, erase)
	committed()
	if err != nil {
		return err
	}
	s.log.Info("account deactivated", "user", user, "erase", erase)
	// The pushers are gone: their delivery loops stop now rather than at
	// their next delivery.
	if err := s.pushersChanged(ctx, user); err != nil {
		s.log.Warn("stopping the pushers of a deactivated account", "user", user, "err", err)
	}
	// A client that goes away must not leave the account half parted.
	s.partRooms(context.WithoutCancel(ctx), user)
	return nil
}

// partRooms makes a deactivated account leave every room it is joined
// to, invited to or knocking on, and forget them. A room that fails is
// logged and skipped, as Synapse does; ResumeDeactivations retries it at
// the next start.
func (s *Server) partRooms(ctx context.Context, user roomdag.UserID) {
	ms, err := s.store.UserRooms(ctx, user)
	if err != nil {
		s.log.Error("listing the rooms of a deactivated account", "user", user, "err", err)
		return
	}
	for _, m := range ms {
		switch m.Membership {
		case roomdag.MembershipJoin, roomdag.MembershipInvite, roomdag.MembershipKnock:
		default:
			continue
		}
		var err error
		if st, serr := s.rooms.State(ctx, m.RoomID); serr == nil && st.Create() == nil {
			// An invite from another server, kept out of band.
			_, err = s.leaveOutOfBand(ctx, m.RoomID, user, "")
		} else {
			var p roomdag.ProtoEvent
			if p, err = s.memberEvent(ctx, user, user, roomdag.MembershipLeave, ""); err == nil {
				_, _, err = s.rooms.Append(ctx, m.RoomID, p)
			}
		}
		if err == nil {
			err = s.store.Forget(ctx, user, m.RoomID)
		}
		if err != nil {
			s.log.Error("a deactivated account leaving a room", "user", user, "room", m.RoomID, "err", err)
		}
	}
}

// ResumeDeactivations finishes deactivations that stopped before their
// accounts had left every room (the server stopped in between). Call it
// once at start, before serving.
func (s *Server) ResumeDeactivations(ctx context.Context) error {
	users, err := s.store.DeactivatedMembers(ctx)
	if err != nil {
		return err
	}
	for _, u := range users {
		s.log.Info("finishing the deactivation of an account still in rooms", "user", u)
		s.partRooms(ctx, u)
	}
	return nil
}
