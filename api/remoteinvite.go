package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// Invites across servers (server-server API, "Inviting to a room" and
// "Leaving Rooms (Rejecting Invites)"): a local user's invite of another
// server's user is signed by that server before it is stored; an invite
// another server sent (kept out of band: roomdag.Rooms.StoreOutOfBand) is
// rejected through a server in the room, or here alone when none answers.

// RemoteMemberships sends membership requests to other servers
// (federation.Memberships).
type RemoteMemberships interface {
	// Invite has the invitee's server sign ev and returns ev with its
	// signature; a refusal is an error with the remote's Matrix error.
	Invite(ctx context.Context, ev *roomdag.Event, inviteState json.RawMessage) (*roomdag.Event, error)
	// Leave makes user leave room through server (make_leave,
	// send_leave) and returns the leave event server accepted.
	Leave(ctx context.Context, server roomdag.ServerName, room roomdag.RoomID, user roomdag.UserID, v *roomdag.RoomVersion, reason string) (*roomdag.Event, error)
	// Knock knocks on room as user through the first of servers that
	// takes the knock (make_knock, send_knock) and returns the knock and
	// the room's stripped state the server answered; a refusal is an
	// error with the remote's Matrix error.
	Knock(ctx context.Context, room roomdag.RoomID, user roomdag.UserID, servers []roomdag.ServerName, reason string) (*roomdag.Event, json.RawMessage, error)
}

// remoteInviteAttempts bounds how often an invite is built and sent
// again because the room moved on while the invitee's server signed it.
const remoteInviteAttempts = 3

// inviteRemote invites target, a user of another server, to room: the
// invite is built on the room's head, signed by target's server, then
// stored; if that server refuses, its error is the client's and nothing
// is stored.
func (s *Server) inviteRemote(ctx context.Context, room roomdag.RoomID, sender, target roomdag.UserID, reason string, isDirect bool) error {
	if s.cfg.RemoteMemberships == nil {
		return httpapi.Forbidden("this server does not federate: users of other servers cannot be invited")
	}
	p, err := s.memberEvent(ctx, sender, target, roomdag.MembershipInvite, reason)
	if err != nil {
		return err
	}
	if isDirect {
		var c map[string]any
		_ = json.Unmarshal(p.Content, &c)
		c["is_direct"] = true
		p.Content, _ = json.Marshal(c)
	}
	for attempt := 0; attempt < remoteInviteAttempts; attempt++ {
		ev, err := s.rooms.Build(ctx, room, p)
		if err != nil {
			return err
		}
		st, err := s.rooms.State(ctx, room)
		if err != nil {
			return err
		}
		signed, err := s.cfg.RemoteMemberships.Invite(ctx, ev, roomdag.StrippedStatePDUs(st.State.With(ev), ev))
		if err != nil {
			if httpapi.MapError(err) == nil && !errors.As(err, new(*httpapi.Error)) {
				s.log.Warn("remote invite failed", "room", room, "invitee", target, "err", err)
				return httpapi.Errorf(http.StatusBadGateway, httpapi.CodeUnknown, "could not invite %s: %s did not sign the invite", target, target.Server())
			}
			return err
		}
		_, err = s.rooms.AppendBuilt(ctx, signed)
		if errors.Is(err, roomdag.ErrRoomChanged) || errors.Is(err, roomdag.ErrStale) {
			continue
		}
		return err
	}
	return roomdag.ErrRoomBusy
}

// leaveOutOfBand rejects user's invite to room, or rescinds user's knock
// on it, when this server holds no state of the room (the invite came
// from another server, the knock went to one). handled is false when the
// user has no membership there at all.
//
// The leave goes through the inviting server, then the room's; if none
// can be reached or all refuse, the invite is rejected here alone, as
// Synapse does: the room leaves the user's invites and the client sees
// success, though the inviting server may still list the invite.
func (s *Server) leaveOutOfBand(ctx context.Context, room roomdag.RoomID, user roomdag.UserID, reason string) (handled bool, err error) {
	m, err := s.store.UserMembership(ctx, user, room)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	switch m.Membership {
	case roomdag.MembershipLeave:
		return true, nil // already left: nothing to do
	case roomdag.MembershipInvite, roomdag.MembershipKnock:
	default:
		return true, httpapi.Forbidden("you are not in this room")
	}
	evs, err := s.store.EventsAt(ctx, []roomdag.StreamPos{m.Pos})
	if err != nil {
		return true, err
	}
	if len(evs) != 1 {
		return true, httpapi.NotFound("your %s of %s is gone", m.Membership, room)
	}
	invite := evs[0].Event
	servers := leaveServers(invite, s.cfg.ServerName)
	if m.Membership == roomdag.MembershipKnock {
		servers = s.knockServers(ctx, invite, m.Pos)
	}
	if s.cfg.RemoteMemberships != nil {
		for _, server := range servers {
			leave, err := s.cfg.RemoteMemberships.Leave(ctx, server, room, user, invite.Version(), reason)
			if err != nil {
				s.log.Warn("rejecting an invite through another server failed", "room", room, "server", server, "err", err)
				continue
			}
			_, err = s.rooms.StoreOutOfBand(ctx, leave, nil)
			return true, err
		}
	}
	leave, err := s.rooms.BuildLocalRejection(invite, reason)
	if err != nil {
		return true, err
	}
	_, err = s.rooms.StoreOutOfBand(ctx, leave, nil)
	return true, err
}

// leaveServers are the servers to reject (or accept) invite through, in
// order: the inviter's, then the room ID's (rooms before v12 name one).
func leaveServers(invite *roomdag.Event, own roomdag.ServerName) []roomdag.ServerName {
	var out []roomdag.ServerName
	_, roomServer, _ := strings.Cut(string(invite.RoomID()), ":")
	for _, sv := range []roomdag.ServerName{invite.Sender().Server(), roomdag.ServerName(roomServer)} {
		if sv != "" && sv != own && (len(out) == 0 || out[0] != sv) {
			out = append(out, sv)
		}
	}
	return out
}

// inviteServers are the servers to join room through to accept user's
// invite from another server (kept out of band): the inviter's, then the
// room ID's; none if there is no such invite.
func (s *Server) inviteServers(ctx context.Context, room roomdag.RoomID, user roomdag.UserID) []roomdag.ServerName {
	m, err := s.store.UserMembership(ctx, user, room)
	if err != nil || m.Membership != roomdag.MembershipInvite {
		return nil
	}
	evs, err := s.store.EventsAt(ctx, []roomdag.StreamPos{m.Pos})
	if err != nil || len(evs) != 1 {
		return nil
	}
	return leaveServers(evs[0].Event, s.cfg.ServerName)
}

// knockServers are the servers to rescind knock (kept out of band at
// pos) through: the room ID's, then those of the senders of the room's
// state the knock was answered with.
func (s *Server) knockServers(ctx context.Context, knock *roomdag.Event, pos roomdag.StreamPos) []roomdag.ServerName {
	out := leaveServers(knock, s.cfg.ServerName)
	stripped, err := s.store.InviteState(ctx, pos)
	if err != nil {
		return out
	}
	var evs []struct {
		Sender roomdag.UserID `json:"sender"`
	}
	_ = json.Unmarshal(stripped, &evs)
	for _, e := range evs {
		if sv := e.Sender.Server(); sv != "" && sv != s.cfg.ServerName && !slices.Contains(out, sv) {
			out = append(out, sv)
		}
	}
	return out
}
