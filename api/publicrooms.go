package api

import (
	"cmp"
	"context"
	"errors"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// The room directory (spec: client-server API, "Room discovery").

func (s *Server) publicRoomRoutes() []route {
	return []route{
		{method: "GET", path: v3 + "/directory/list/room/{roomId}", handler: s.getRoomVisibility, auth: authNone, rate: rateNone},
		{method: "PUT", path: v3 + "/directory/list/room/{roomId}", handler: s.putRoomVisibility, auth: authRequired, rate: rateNone},
		{method: "GET", path: v3 + "/publicRooms", handler: s.getPublicRooms, auth: authOptional, rate: rateNone},
		{method: "POST", path: v3 + "/publicRooms", handler: s.postPublicRooms, auth: authRequired, rate: rateNone},
	}
}

const (
	visibilityPublic  = "public"
	visibilityPrivate = "private"
)

func (s *Server) getRoomVisibility(r *http.Request) (any, error) {
	room, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	published, err := s.store.Published(r.Context(), room)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httpapi.NotFound("room not found")
	}
	if err != nil {
		return nil, err
	}
	v := visibilityPrivate
	if published {
		v = visibilityPublic
	}
	return map[string]string{"visibility": v}, nil
}

// putRoomVisibility lists or unlists a room. As in Synapse, only a joined
// member with the power to send m.room.canonical_alias may (room admins and
// moderators in the default power levels; creators always can).
func (s *Server) putRoomVisibility(r *http.Request) (any, error) {
	room, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	var req struct {
		Visibility *string `json:"visibility"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	published := true // spec: "Defaults to 'public'."
	if req.Visibility != nil {
		switch *req.Visibility {
		case visibilityPublic:
		case visibilityPrivate:
			published = false
		default:
			return nil, httpapi.InvalidParam("visibility must be %q or %q", visibilityPublic, visibilityPrivate)
		}
	}
	st, err := s.rooms.State(r.Context(), room)
	if errors.Is(err, roomdag.ErrUnknownRoom) {
		return nil, httpapi.NotFound("room not found")
	}
	if err != nil {
		return nil, err
	}
	user := requester(r).UserID
	pl, err := roomdag.PowerLevelsFromState(st.State)
	if err != nil {
		return nil, err
	}
	if st.Membership(user) != roomdag.MembershipJoin ||
		roomdag.UserLevelIn(st.Version, pl, st.Create(), user) < pl.EventLevel(roomdag.TypeCanonicalAlias, true) {
		return nil, httpapi.Forbidden("you may not change this room's visibility in the directory")
	}
	return struct{}{}, s.store.SetPublished(r.Context(), room, published)
}

// roomInfo is what a room's current state says about it (roomdag.PublicRoom).
type roomInfo = roomdag.PublicRoom

// contentString is roomdag.ContentString.
func contentString(state roomdag.StateMap, typ, field string) string {
	return roomdag.ContentString(state, typ, field)
}

func describeRoom(id roomdag.RoomID, st *roomdag.RoomState) roomInfo {
	return roomdag.DescribeRoom(id, st)
}

// publicRoomsRequest is the query of GET and the body of POST /publicRooms.
type publicRoomsRequest struct {
	Limit  *int   `json:"limit"`
	Since  string `json:"since"`
	Filter *struct {
		GenericSearchTerm string `json:"generic_search_term"`
		// RoomTypes: a nil entry stands for rooms without a type.
		RoomTypes []*string `json:"room_types"`
	} `json:"filter"`
	IncludeAllNetworks   bool   `json:"include_all_networks"`
	ThirdPartyInstanceID string `json:"third_party_instance_id"`
}

// Page sizes of /publicRooms: a client that gives no limit (or 0) gets
// the default page, with next_batch if there is more.
const (
	defaultPublicRoomsLimit = 100
	maxPublicRoomsLimit     = 500
)

func (s *Server) getPublicRooms(r *http.Request) (any, error) {
	q := r.URL.Query()
	req := publicRoomsRequest{Since: q.Get("since")}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil {
			return nil, httpapi.InvalidParam("limit must be an integer")
		}
		req.Limit = &n
	}
	return s.publicRooms(r, req)
}

func (s *Server) postPublicRooms(r *http.Request) (any, error) {
	var req publicRoomsRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	return s.publicRooms(r, req)
}

func (s *Server) publicRooms(r *http.Request, req publicRoomsRequest) (any, error) {
	if srv := r.URL.Query().Get("server"); srv != "" {
		name, err := roomdag.ParseServerName(srv)
		if err != nil {
			return nil, httpapi.InvalidParam("malformed server name")
		}
		if name != s.cfg.ServerName {
			return nil, httpapi.NotFound("the room directories of other servers need federation, which is not built yet")
		}
	}
	if req.ThirdPartyInstanceID != "" {
		// No application service networks exist yet, so no instance does.
		return nil, httpapi.NotFound("unknown third party instance %q", req.ThirdPartyInstanceID)
	}
	limit := defaultPublicRoomsLimit
	if req.Limit != nil {
		switch n := *req.Limit; {
		case n < 0:
			return nil, httpapi.InvalidParam("limit must not be negative")
		case n > 0:
			limit = min(n, maxPublicRoomsLimit)
		}
	}
	var cursor *roomsCursor
	if req.Since != "" {
		c, err := parseRoomsCursor(req.Since)
		if err != nil {
			return nil, err
		}
		cursor = &c
	}
	var term string
	var types []*string
	if req.Filter != nil {
		term = strings.ToLower(strings.TrimSpace(req.Filter.GenericSearchTerm))
		types = req.Filter.RoomTypes
	}

	all, err := s.listedRooms(r.Context())
	if err != nil {
		return nil, err
	}
	rooms := all[:0]
	for _, info := range all {
		if matchesRoomTypes(info, types) && matchesSearch(info, term) {
			rooms = append(rooms, info)
		}
	}
	// spec: "ordered by the number of joined members, with the largest
	// rooms first"; the room ID breaks ties so pages are stable.
	slices.SortFunc(rooms, func(a, b roomInfo) int {
		return cmp.Or(cmp.Compare(b.NumJoinedMembers, a.NumJoinedMembers), cmp.Compare(a.RoomID, b.RoomID))
	})

	var start, end int // the page is rooms[start:end]
	switch {
	case cursor == nil:
		end = min(len(rooms), limit)
	case cursor.forward:
		start, _ = slices.BinarySearchFunc(rooms, *cursor, compareToCursor)
		if start < len(rooms) && compareToCursor(rooms[start], *cursor) == 0 {
			start++ // strictly after the cursor
		}
		end = min(len(rooms), start+limit)
	default:
		end, _ = slices.BinarySearchFunc(rooms, *cursor, compareToCursor) // strictly before
		start = max(0, end-limit)
	}
	page := rooms[start:end]
	out := map[string]any{"chunk": page, "total_room_count_estimate": len(rooms)}
	if len(page) > 0 {
		if end < len(rooms) {
			out["next_batch"] = roomsCursor{forward: true, joined: page[len(page)-1].NumJoinedMembers, room: page[len(page)-1].RoomID}.String()
		}
		if start > 0 {
			out["prev_batch"] = roomsCursor{joined: page[0].NumJoinedMembers, room: page[0].RoomID}.String()
		}
	}
	return out, nil
}

// listedRooms describes every published room that people may find: its
// join rule lets them join or knock, or its history is world readable.
func (s *Server) listedRooms(ctx context.Context) ([]roomInfo, error) {
	ids, err := s.store.PublishedRooms(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]roomInfo, 0, len(ids))
	for _, id := range ids {
		st, err := s.rooms.State(ctx, id)
		if errors.Is(err, roomdag.ErrUnknownRoom) {
			continue
		}
		if err != nil {
			return nil, err
		}
		info := describeRoom(id, st)
		switch {
		case info.JoinRule == "public", info.JoinRule == "knock", info.JoinRule == "knock_restricted", info.WorldReadable:
			out = append(out, info)
		}
	}
	return out, nil
}

func matchesRoomTypes(info roomInfo, types []*string) bool {
	if types == nil {
		return true
	}
	for _, t := range types {
		if t == nil && info.RoomType == "" || t != nil && *t == info.RoomType {
			return true
		}
	}
	return false
}

// matchesSearch: term (lower-cased) is in the name, topic or canonical
// alias, case-insensitively.
func matchesSearch(info roomInfo, term string) bool {
	if term == "" {
		return true
	}
	for _, f := range []string{info.Name, info.Topic, info.CanonicalAlias} {
		if strings.Contains(strings.ToLower(f), term) {
			return true
		}
	}
	return false
}

// roomsCursor is a /publicRooms pagination token: a place in the list's
// order (joined members descending, then room ID) and a direction. A
// place rather than an offset keeps pages from repeating or skipping rooms
// when rooms are added or removed between requests.
type roomsCursor struct {
	forward bool // next_batch: the rooms after the place; prev_batch: before
	joined  int
	room    roomdag.RoomID
}

func (c roomsCursor) String() string {
	dir := "p"
	if c.forward {
		dir = "n"
	}
	return dir + strconv.Itoa(c.joined) + "_" + string(c.room)
}

func parseRoomsCursor(tok string) (roomsCursor, error) {
	bad := httpapi.InvalidParam("malformed since token")
	if len(tok) < 2 || tok[0] != 'n' && tok[0] != 'p' {
		return roomsCursor{}, bad
	}
	num, room, ok := strings.Cut(tok[1:], "_")
	if !ok {
		return roomsCursor{}, bad
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 0 {
		return roomsCursor{}, bad
	}
	id, err := roomdag.ParseRoomID(room)
	if err != nil {
		return roomsCursor{}, bad
	}
	return roomsCursor{forward: tok[0] == 'n', joined: n, room: id}, nil
}

// compareToCursor orders a room against a cursor's place, in the list's
// order.
func compareToCursor(info roomInfo, place roomsCursor) int {
	return cmp.Or(cmp.Compare(place.joined, info.NumJoinedMembers), cmp.Compare(info.RoomID, place.room))
}

// PublicRoomsHandlers are the room directory's GET and POST handlers,
// which the federation serves to other servers as they are, behind its
// own authentication (server-server API, "Published Room Directory": the
// same request and response).
func (s *Server) PublicRoomsHandlers() (get, post httpapi.Func) {
	return s.getPublicRooms, s.postPublicRooms
}
