package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/sync"
	"net/http"
)

// Presence (spec: module "Presence"). The syncer keeps presence
// (sync/presence.go); /sync's set_presence reaches it through the sync
// handler.

func (s *Server) presenceRoutes() []route {
	return []route{
		{method: http.MethodGet, path: v3 + "/presence/{userId}/status", handler: s.getPresence, auth: authRequired},
		{method: http.MethodPut, path: v3 + "/presence/{userId}/status", handler: s.putPresence, auth: authRequired},
	}
}

// presenceUser parses {userId}.
func presenceUser(r *http.Request) (roomdag.UserID, error) {
	u, err := roomdag.ParseUserID(httpapi.PathParam(r, "userId"))
	if err != nil {
		return "", httpapi.InvalidParam("malformed user ID")
	}
	return u, nil
}

// getPresence answers for the requester and for users who share a room
// with them; anyone else is 403, as Synapse answers. With presence off,
// everyone is offline.
func (s *Server) getPresence(r *http.Request) (any, error) {
	target, err := presenceUser(r)
	if err != nil {
		return nil, err
	}
	c, err := s.sync.GetPresence(r.Context(), requester(r).UserID, target)
	if errors.Is(err, sync.ErrPresenceHidden) {
		return nil, httpapi.Forbidden("You are not allowed to see their presence")
	}
	return c, err
}

// putPresence sets the requester's own presence. With presence off the
// request is checked and then ignored, as in Synapse.
func (s *Server) putPresence(r *http.Request) (any, error) {
	user, err := presenceUser(r)
	if err != nil {
		return nil, err
	}
	if user != requester(r).UserID {
		return nil, httpapi.Forbidden("you can only set your own presence")
	}
	var body struct {
		Presence  *string         `json:"presence"`
		StatusMsg json.RawMessage `json:"status_msg"`
	}
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.Presence == nil {
		return nil, httpapi.MissingParam("presence is required")
	}
	switch *body.Presence {
	case sync.PresenceOnline, sync.PresenceUnavailable, sync.PresenceOffline:
	default:
		return nil, httpapi.InvalidParam("presence must be online, unavailable or offline")
	}
	var msg string
	if len(body.StatusMsg) > 0 && !bytes.Equal(body.StatusMsg, []byte("null")) {
		if json.Unmarshal(body.StatusMsg, &msg) != nil {
			return nil, httpapi.BadJSON("status_msg must be a string")
		}
	}
	// The syncer hands the change to the application services
	// (sync.PresenceListener), as it does those /sync and timeouts make.
	if err := s.sync.SetPresence(r.Context(), user, *body.Presence, msg); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}
