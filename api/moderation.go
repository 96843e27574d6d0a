package api

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"net/http"
)

// Account locking (spec v1.12, "Account locking") and suspension (v1.13,
// "Account suspension"): reversible holds the server's administrators put
// on an account, set with the administration API of v1.18 (MSC4323,
// GET/PUT /_matrix/client/v1/admin/{lock,suspend}/{userId}).
//
// A locked account's requests all answer 401 M_USER_LOCKED with
// soft_logout, except logging out; it cannot log in either. Its tokens
// stay valid, so its sessions resume once it is unlocked.
//
// A suspended account can read, leave rooms, redact its own events and
// manage its sessions, but not join, knock, invite, create rooms, send
// events or change its profile (the spec's recommended list, and
// Synapse's): those answer 403 M_USER_SUSPENDED.

// AccountModeration is what the holds need from storage.
type AccountModeration interface {
	// SetUserLocked and SetUserSuspended set a hold; storage.ErrNotFound
	// for an unknown user.
	SetUserLocked(ctx context.Context, user roomdag.UserID, locked bool) error
	SetUserSuspended(ctx context.Context, user roomdag.UserID, suspended bool) error
}

func (s *Server) moderationRoutes() []route {
	return []route{
		{method: http.MethodGet, path: v1 + "/admin/lock/{userId}", handler: s.getHold(holdLock), auth: authRequired},
		{method: http.MethodPut, path: v1 + "/admin/lock/{userId}", handler: s.putHold(holdLock), auth: authRequired},
		{method: http.MethodGet, path: v1 + "/admin/suspend/{userId}", handler: s.getHold(holdSuspend), auth: authRequired},
		{method: http.MethodPut, path: v1 + "/admin/suspend/{userId}", handler: s.putHold(holdSuspend), auth: authRequired},
	}
}

// hold is one kind of hold: its name in the API and how to read and set it.
type hold struct {
	key string // "locked" or "suspended"
	get func(*storage.User) bool
	set func(s *Server, ctx context.Context, user roomdag.UserID, on bool) error
}

var (
	holdLock = hold{"locked", func(u *storage.User) bool { return u.Locked },
		func(s *Server, ctx context.Context, user roomdag.UserID, on bool) error {
			return s.store.SetUserLocked(ctx, user, on)
		}}
	holdSuspend = hold{"suspended", func(u *storage.User) bool { return u.Suspended },
		func(s *Server, ctx context.Context, user roomdag.UserID, on bool) error {
			return s.store.SetUserSuspended(ctx, user, on)
		}}
)

// holdTarget checks that the requester is an administrator before it
// looks the target up (spec: no user enumeration by non-admins), then
// returns the target: 400 M_INVALID_PARAM for another server's user, 404
// M_NOT_FOUND for an unknown or deactivated one.
func (s *Server) holdTarget(r *http.Request) (*storage.User, error) {
	admin, err := s.store.User(r.Context(), requester(r).UserID)
	if err != nil {
		return nil, err
	}
	if !admin.Admin {
		return nil, httpapi.Forbidden("You are not a server admin")
	}
	id, err := roomdag.ParseUserID(httpapi.PathParam(r, "userId"))
	if err != nil {
		return nil, httpapi.InvalidParam("malformed user ID")
	}
	if id.Server() != s.cfg.ServerName {
		return nil, httpapi.InvalidParam("%s is not a user of this server", id)
	}
	u, err := s.store.User(r.Context(), id)
	if errors.Is(err, storage.ErrNotFound) || err == nil && u.Deactivated {
		return nil, httpapi.NotFound("user not found")
	}
	return u, err
}

func (s *Server) getHold(h hold) httpapi.Func {
	return func(r *http.Request) (any, error) {
		u, err := s.holdTarget(r)
		if err != nil {
			return nil, err
		}
		return map[string]bool{h.key: h.get(u)}, nil
	}
}

func (s *Server) putHold(h hold) httpapi.Func {
	return func(r *http.Request) (any, error) {
		u, err := s.holdTarget(r)
		if err != nil {
			return nil, err
		}
		var body map[string]json.RawMessage
		if err := httpapi.DecodeJSON(r, &body); err != nil {
			return nil, err
		}
		var on bool
		raw, ok := body[h.key]
		if !ok {
			return nil, httpapi.MissingParam("%s is required", h.key)
		}
		if json.Unmarshal(raw, &on) != nil {
			return nil, httpapi.BadJSON("%s must be a boolean", h.key)
		}
		// Spec: administrators may not hold their own account or another
		// administrator's.
		if u.ID == requester(r).UserID || u.Admin {
			return nil, httpapi.Forbidden("administrators' accounts cannot be %s", h.key)
		}
		if err := h.set(s, r.Context(), u.ID, on); errors.Is(err, storage.ErrNotFound) {
			return nil, httpapi.NotFound("user not found")
		} else if err != nil {
			return nil, err
		}
		return map[string]bool{h.key: on}, nil
	}
}

// lockExempt are the routes a locked account may still use (spec).
var lockExempt = map[string]bool{v3 + "/logout": true, v3 + "/logout/all": true}

// suspendedRoutes are the routes a suspended account may not use, by
// method and path; redacting other users' events is refused in
// sendRedaction, which knows the target.
var suspendedRoutes = map[string]bool{
	"POST " + v3 + "/createRoom":                                 true,
	"POST " + v3 + "/join/{roomIdOrAlias}":                       true,
	"POST " + v3 + "/rooms/{roomId}/join":                        true,
	"POST " + v3 + "/knock/{roomIdOrAlias}":                      true,
	"POST " + v3 + "/rooms/{roomId}/invite":                      true,
	"POST " + v3 + "/rooms/{roomId}/ban":                         true,
	"POST " + v3 + "/rooms/{roomId}/upgrade":                     true,
	"PUT " + v3 + "/rooms/{roomId}/send/{eventType}/{txnId}":     true,
	"PUT " + v3 + "/rooms/{roomId}/state/{eventType}":            true,
	"PUT " + v3 + "/rooms/{roomId}/state/{eventType}/":           true,
	"PUT " + v3 + "/rooms/{roomId}/state/{eventType}/{stateKey}": true,
	"PUT " + v3 + "/profile/{userId}/{field}":                    true,
	"DELETE " + v3 + "/profile/{userId}/{field}":                 true,
}

// checkHolds refuses a request of a locked or suspended account that the
// hold forbids. Called by wrap once the requester is known.
func checkHolds(rt route, r *http.Request, rq *Requester) error {
	if rq.Locked && !lockExempt[rt.path] {
		e := httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUserLocked, "This account has been locked")
		e.Extra = map[string]any{"soft_logout": true}
		return e
	}
	if rq.Suspended && suspendedRoutes[rt.method+" "+rt.path] {
		// Redacting one's own events stays allowed, also through /send
		// (spec v1.18); sendRedaction checks the target's sender.
		if rt.path == v3+"/rooms/{roomId}/send/{eventType}/{txnId}" && httpapi.PathParam(r, "eventType") == roomdag.TypeRedaction {
			return nil
		}
		return httpapi.Errorf(http.StatusForbidden, httpapi.CodeUserSuspended, "You cannot perform this action while suspended.")
	}
	return nil
}
