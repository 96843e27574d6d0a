package retention

import (
	"context"
	"net/http"
	"strconv"

	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// The legal holds admin API, for server administrators only:
//
//	POST   /_persistentchat/admin/v1/holds                   {"user_id" | "room_id", "reason"} -> the hold
//	GET    /_persistentchat/admin/v1/holds[?all=true]        -> {"holds": [...]}, active ones unless all
//	DELETE /_persistentchat/admin/v1/holds/{holdId}          -> the released hold
//	POST   /_persistentchat/admin/v1/holds/{holdId}/release  -> the same
//
// Anyone else gets 403 M_FORBIDDEN; a request without a token 401
// (the client API's authentication).

// AdminPrefix is where the admin API lives.
const AdminPrefix = "/_persistentchat/admin/v1"

// Route is one route of the admin API; the server serves them with an
// access token required (api.Config.ExtraRoutes).
type Route struct {
	Method, Path string
	Handler      httpapi.Func
}

// Admins tells server administrators (storage's accounts).
type Admins interface {
	User(ctx context.Context, id roomdag.UserID) (*storage.User, error)
}

// API serves the holds admin API.
type API struct {
	holds  *Holds
	admins Admins
	// requester reads the authenticated user of a request (api.RequesterID).
	requester func(*http.Request) roomdag.UserID
}

// NewAPI makes the admin API; requester returns the authenticated user
// of a request, "" for none.
func NewAPI(holds *Holds, admins Admins, requester func(*http.Request) roomdag.UserID) *API {
	return &API{holds: holds, admins: admins, requester: requester}
}

// Routes are the admin API's routes.
func (a *API) Routes() []Route {
	return []Route{
		{"POST", AdminPrefix + "/holds", a.create},
		{"GET", AdminPrefix + "/holds", a.list},
		{"DELETE", AdminPrefix + "/holds/{holdId}", a.release},
		{"POST", AdminPrefix + "/holds/{holdId}/release", a.release},
	}
}

// admin returns the requester if a server administrator, else 403.
func (a *API) admin(r *http.Request) (roomdag.UserID, error) {
	id := a.requester(r)
	if id == "" {
		return "", httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeMissingToken, "missing access token")
	}
	u, err := a.admins.User(r.Context(), id)
	if err != nil && err != storage.ErrNotFound {
		return "", err
	}
	if u == nil || !u.Admin {
		return "", httpapi.Forbidden("You are not a server admin")
	}
	return id, nil
}

// HoldJSON is a hold as the admin API shows it.
type HoldJSON struct {
	ID         int64  `json:"hold_id"`
	UserID     string `json:"user_id,omitempty"`
	RoomID     string `json:"room_id,omitempty"`
	Reason     string `json:"reason"`
	CreatedBy  string `json:"created_by"`
	CreatedTS  int64  `json:"created_ts"`
	Active     bool   `json:"active"`
	ReleasedBy string `json:"released_by,omitempty"`
	ReleasedTS int64  `json:"released_ts,omitempty"`
}

// ToJSON is h as the admin API shows it.
func ToJSON(h storage.Hold) HoldJSON {
	return HoldJSON{ID: h.ID, UserID: string(h.User), RoomID: string(h.Room), Reason: h.Reason, CreatedBy: string(h.CreatedBy),
		CreatedTS: h.CreatedMS, Active: h.Active(), ReleasedBy: string(h.ReleasedBy), ReleasedTS: h.ReleasedMS}
}

func (a *API) create(r *http.Request) (any, error) {
	admin, err := a.admin(r)
	if err != nil {
		return nil, err
	}
	var req struct {
		UserID *string `json:"user_id"`
		RoomID *string `json:"room_id"`
		Reason string  `json:"reason"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	user, room, err := ParseTarget(deref(req.UserID), deref(req.RoomID), req.UserID != nil, req.RoomID != nil)
	if err != nil {
		return nil, err
	}
	h, err := a.holds.Create(r.Context(), admin, user, room, req.Reason)
	if err != nil {
		return nil, err
	}
	return ToJSON(h), nil
}

// ParseTarget checks a hold's target: exactly one of a user ID and a
// room ID, well formed.
func ParseTarget(user, room string, hasUser, hasRoom bool) (roomdag.UserID, roomdag.RoomID, error) {
	if hasUser == hasRoom {
		return "", "", errTarget
	}
	if hasUser {
		u, err := roomdag.ParseUserID(user)
		if err != nil {
			return "", "", httpapi.InvalidParam("malformed user_id")
		}
		return u, "", nil
	}
	rm, err := roomdag.ParseRoomID(room)
	if err != nil {
		return "", "", httpapi.InvalidParam("malformed room_id")
	}
	return "", rm, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func (a *API) list(r *http.Request) (any, error) {
	if _, err := a.admin(r); err != nil {
		return nil, err
	}
	all := false
	switch v := r.URL.Query().Get("all"); v {
	case "", "false":
	case "true":
		all = true
	default:
		return nil, httpapi.InvalidParam("all must be true or false")
	}
	hs, err := a.holds.List(r.Context(), all)
	if err != nil {
		return nil, err
	}
	out := make([]HoldJSON, len(hs))
	for i, h := range hs {
		out[i] = ToJSON(h)
	}
	return map[string]any{"holds": out}, nil
}

func (a *API) release(r *http.Request) (any, error) {
	admin, err := a.admin(r)
	if err != nil {
		return nil, err
	}
	id, err := strconv.ParseInt(httpapi.PathParam(r, "holdId"), 10, 64)
	if err != nil || id <= 0 {
		return nil, httpapi.InvalidParam("malformed hold ID")
	}
	h, err := a.holds.Release(r.Context(), admin, id)
	if err != nil {
		return nil, err
	}
	return ToJSON(h), nil
}
