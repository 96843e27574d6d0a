package federation

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/media"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// The inbound read endpoints of the server-server API: events and state
// (events.go), queries (query.go), the room directory and the space
// hierarchy (directory.go), and media (media.go). Every one is signed
// (Authenticator.Wrap); the room-scoped ones also apply the room's server
// ACL and the history visibility of what they return.

// Store is what the inbound read endpoints read from storage.
type Store interface {
	// Events returns the stored events among ids (unknown ones skipped).
	Events(ctx context.Context, ids []roomdag.EventID) ([]*roomdag.StoredEvent, error)
	// EventsWithOutliers is Events that also finds events held as
	// outliers: the state and auth chain of a room this server joined
	// over federation, which it serves on to others.
	EventsWithOutliers(ctx context.Context, ids []roomdag.EventID) ([]*roomdag.StoredEvent, error)
	// StateEvents returns the state of a snapshot.
	StateEvents(ctx context.Context, snapshot int64) (roomdag.StateMap, error)
	// Snapshot returns the state of a snapshot as event IDs (cached by
	// the store: cheaper than StateEvents when few events are needed).
	Snapshot(ctx context.Context, snapshot int64) (map[roomdag.StateKey]roomdag.EventID, error)
	// EventNearTimestamp is the event of room nearest tsMS looking
	// forwards or backwards, or storage.ErrNotFound.
	EventNearTimestamp(ctx context.Context, room roomdag.RoomID, tsMS int64, forwards bool) (roomdag.EventID, int64, error)
	// Alias resolves a local room alias, or storage.ErrNotFound.
	Alias(ctx context.Context, alias roomdag.RoomAlias) (roomdag.RoomID, roomdag.UserID, error)
	// User returns a local account, or storage.ErrNotFound.
	User(ctx context.Context, id roomdag.UserID) (*storage.User, error)
	// ProfileFields returns a user's extended profile fields.
	ProfileFields(ctx context.Context, user roomdag.UserID) (map[string]json.RawMessage, error)
	// PublishedRooms lists the rooms in the published room directory.
	PublishedRooms(ctx context.Context) ([]roomdag.RoomID, error)
}

// RoomStates gives a room's current state (roomdag.Rooms.State);
// roomdag.ErrUnknownRoom for a room this server does not know.
type RoomStates interface {
	State(ctx context.Context, id roomdag.RoomID) (*roomdag.RoomState, error)
}

// Endpoint is one endpoint of the federation router.
type Endpoint struct {
	Method, Path string
	Handler      httpapi.Func
}

// Inbound serves the read endpoints to other servers.
type Inbound struct {
	InboundOptions
}

// InboundOptions are what Inbound serves from.
type InboundOptions struct {
	Server roomdag.ServerName
	Store  Store
	Rooms  RoomStates
	// Auth authenticates every request.
	Auth *Authenticator
	// Media, unless nil, serves this server's media.
	Media *media.Repository
	// PublicRoomsGet and PublicRoomsPost serve the room directory (the
	// client API's handlers, whose requests and answers federation
	// shares); nil answers 404 M_UNRECOGNIZED.
	PublicRoomsGet, PublicRoomsPost httpapi.Func
	Clock                           clock.Clock
	Log                             *slog.Logger
}

// NewInbound serves o.
func NewInbound(o InboundOptions) *Inbound { return &Inbound{o} }

// Routes are the inbound read endpoints, each behind the Authenticator.
func (in *Inbound) Routes() []Endpoint {
	const v1 = "/_matrix/federation/v1"
	routes := []Endpoint{
		{http.MethodGet, v1 + "/event/{eventId}", in.event},
		{http.MethodGet, v1 + "/state/{roomId}", in.state},
		{http.MethodGet, v1 + "/state_ids/{roomId}", in.stateIDs},
		{http.MethodGet, v1 + "/event_auth/{roomId}/{eventId}", in.eventAuth},
		{http.MethodGet, v1 + "/backfill/{roomId}", in.backfill},
		{http.MethodPost, v1 + "/get_missing_events/{roomId}", in.getMissingEvents},
		{http.MethodGet, v1 + "/timestamp_to_event/{roomId}", in.timestampToEvent},
		{http.MethodGet, v1 + "/query/directory", in.queryDirectory},
		{http.MethodGet, v1 + "/query/profile", in.queryProfile},
		{http.MethodGet, v1 + "/publicRooms", orUnrecognized(in.PublicRoomsGet)},
		{http.MethodPost, v1 + "/publicRooms", orUnrecognized(in.PublicRoomsPost)},
		{http.MethodGet, v1 + "/hierarchy/{roomId}", in.hierarchy},
	}
	if in.Media != nil {
		routes = append(routes,
			Endpoint{http.MethodGet, v1 + "/media/download/{mediaId}", in.mediaDownload},
			Endpoint{http.MethodGet, v1 + "/media/thumbnail/{mediaId}", in.mediaThumbnail})
	}
	for i := range routes {
		routes[i].Handler = in.Auth.Wrap(routes[i].Handler)
	}
	return routes
}

// room is a room-scoped request's room: its current state, once the room
// is known (else 404 M_NOT_FOUND) and its server ACL lets the requesting
// server in (else 403 M_FORBIDDEN; server-server API, "Server Access
// Control Lists").
func (in *Inbound) room(r *http.Request, id roomdag.RoomID) (*roomdag.RoomState, error) {
	st, err := in.Rooms.State(r.Context(), id)
	if errors.Is(err, roomdag.ErrUnknownRoom) {
		return nil, httpapi.NotFound("unknown room %s", id)
	}
	if err != nil {
		return nil, err
	}
	if !roomdag.ServerAllowed(st.State, Origin(r.Context())) {
		return nil, httpapi.Forbidden("server %s is denied by the room's server ACL", Origin(r.Context()))
	}
	return st, nil
}

// roomParam parses the {roomId} of the path.
func roomParam(r *http.Request) (roomdag.RoomID, error) {
	id, err := roomdag.ParseRoomID(httpapi.PathParam(r, "roomId"))
	if err != nil {
		return "", httpapi.InvalidParam("%q is not a room ID", httpapi.PathParam(r, "roomId"))
	}
	return id, nil
}

// orUnrecognized is h, or for nil an endpoint this server does not
// serve.
func orUnrecognized(h httpapi.Func) httpapi.Func {
	if h != nil {
		return h
	}
	return func(*http.Request) (any, error) {
		return nil, httpapi.Errorf(http.StatusNotFound, httpapi.CodeUnrecognized, "unrecognized request")
	}
}
