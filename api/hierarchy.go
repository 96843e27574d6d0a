package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// Spaces (spec: module "Spaces", GET /_matrix/client/v1/rooms/{roomId}/hierarchy):
// a depth-first walk of the m.space.child events of a space and its
// sub-spaces, showing each room the requester may see. Rooms this server
// does not know are left out (finding them needs federation, not built
// yet), as are rooms the requester may not see.
//
// Pagination follows Synapse: the first page stores the walk's remaining
// stack and the rooms already shown under a random token, for
// hierarchySessionTTL, and next_batch is that token. The walk goes on from
// there, so a page never repeats a room of an earlier one, whatever
// changed in between. The walks are stored in the database, so that the
// next page may be asked of any process sharing it.

const (
	// defaultHierarchyLimit is the page size when the client gives none,
	// and the most it may ask for (Synapse's MAX_ROOMS).
	defaultHierarchyLimit = 50
	// hierarchySessionTTL is how long a next_batch token stays valid.
	hierarchySessionTTL = 5 * time.Minute
	// maxHierarchySessions bounds the stored walks of one user.
	maxHierarchySessions = 100
	typeSpaceChild       = roomdag.TypeSpaceChild
	roomTypeSpace        = roomdag.RoomTypeSpace
)

func (s *Server) hierarchyRoutes() []route {
	h := &hierarchyAPI{s: s}
	return []route{
		{method: http.MethodGet, path: v1 + "/rooms/{roomId}/hierarchy", handler: h.hierarchy, auth: authRequired},
	}
}

type hierarchyAPI struct {
	s *Server
}

// hierarchySession is a walk in progress.
type hierarchySession struct {
	// What must not change between pages.
	user          roomdag.UserID
	root          roomdag.RoomID
	suggestedOnly bool
	maxDepth      int // -1: unbounded

	stack   []hierarchyEntry // the next room to visit is last
	visited map[roomdag.RoomID]bool
}

// hierarchyWalk is a session's stored form (the user is stored beside it).
type hierarchyWalk struct {
	Root          roomdag.RoomID   `json:"root"`
	SuggestedOnly bool             `json:"suggested_only"`
	MaxDepth      int              `json:"max_depth"`
	Stack         []hierarchyStep  `json:"stack"`
	Visited       []roomdag.RoomID `json:"visited"`
}

type hierarchyStep struct {
	Room  roomdag.RoomID `json:"r"`
	Depth int            `json:"d"`
}

type hierarchyEntry struct {
	room  roomdag.RoomID
	depth int
}

// hierarchyRoom is one entry of "rooms" (spec: SpaceHierarchyRoomsChunk).
type hierarchyRoom struct {
	roomInfo
	ChildrenState []json.RawMessage `json:"children_state"`
}

func (h *hierarchyAPI) hierarchy(r *http.Request) (any, error) {
	root, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	suggestedOnly := false
	switch q.Get("suggested_only") {
	case "", "false":
	case "true":
		suggestedOnly = true
	default:
		return nil, httpapi.InvalidParam("suggested_only must be true or false")
	}
	limit := defaultHierarchyLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return nil, httpapi.InvalidParam("limit must be an integer greater than zero")
		}
		limit = min(n, defaultHierarchyLimit)
	}
	maxDepth := -1
	if v := q.Get("max_depth"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, httpapi.InvalidParam("max_depth must be a non-negative integer")
		}
		maxDepth = n
	}
	user := requester(r).UserID
	ctx := r.Context()

	// The root must be visible whether or not this is a later page, so
	// that losing access ends the walk.
	if st, err := h.s.rooms.State(ctx, root); err != nil || !h.s.mayPreview(ctx, st, user) {
		if err != nil && !errors.Is(err, roomdag.ErrUnknownRoom) {
			return nil, err
		}
		return nil, httpapi.Forbidden("user %s is not in room %s, and room previews are disabled", user, root)
	}

	var sess *hierarchySession
	if from := q.Get("from"); from != "" {
		sess, err = h.takeSession(ctx, from)
		if err != nil {
			return nil, err
		}
		if sess == nil || sess.user != user || sess.root != root || sess.suggestedOnly != suggestedOnly || sess.maxDepth != maxDepth {
			return nil, httpapi.InvalidParam("unknown pagination token, or suggested_only or max_depth changed since it was issued")
		}
	} else {
		sess = &hierarchySession{user: user, root: root, suggestedOnly: suggestedOnly, maxDepth: maxDepth,
			stack: []hierarchyEntry{{room: root}}, visited: map[roomdag.RoomID]bool{}}
	}

	rooms := []hierarchyRoom{}
	for len(sess.stack) > 0 && len(rooms) < limit {
		e := sess.stack[len(sess.stack)-1]
		sess.stack = sess.stack[:len(sess.stack)-1]
		// Visiting each room once is what ends loops in the space graph.
		if sess.visited[e.room] {
			continue
		}
		sess.visited[e.room] = true
		st, err := h.s.rooms.State(ctx, e.room)
		if errors.Is(err, roomdag.ErrUnknownRoom) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if !h.s.mayPreview(ctx, st, user) {
			continue
		}
		entry := hierarchyRoom{roomInfo: describeRoom(e.room, st), ChildrenState: []json.RawMessage{}}
		var children []*roomdag.Event
		if entry.RoomType == roomTypeSpace {
			children = spaceChildren(st.State, suggestedOnly)
		}
		for _, ev := range children {
			stripped, err := json.Marshal(map[string]any{"type": ev.Type(), "state_key": ev.StateKey(),
				"content": ev.Content(), "sender": ev.Sender(), "origin_server_ts": ev.OriginServerTS()})
			if err != nil {
				return nil, err
			}
			entry.ChildrenState = append(entry.ChildrenState, stripped)
		}
		rooms = append(rooms, entry)
		if maxDepth < 0 || e.depth < maxDepth {
			// Pushed in reverse, so the first child is visited next.
			for i := len(children) - 1; i >= 0; i-- {
				child, err := roomdag.ParseRoomID(*children[i].StateKey())
				if err == nil && !sess.visited[child] {
					sess.stack = append(sess.stack, hierarchyEntry{room: child, depth: e.depth + 1})
				}
			}
		}
	}
	out := map[string]any{"rooms": rooms}
	if len(sess.stack) > 0 {
		tok, err := h.putSession(ctx, sess)
		if err != nil {
			return nil, err
		}
		out["next_batch"] = tok
	}
	return out, nil
}

// mayPreview says whether the user may see a room in a hierarchy (as
// Synapse's _is_local_room_accessible): anyone if its join rule is public,
// knock or knock_restricted or its history is world readable; its joined
// and invited members; and, for restricted rooms, members of a room the
// join rule names.
func (s *Server) mayPreview(ctx context.Context, st *roomdag.RoomState, user roomdag.UserID) bool {
	joinRule := contentString(st.State, roomdag.TypeJoinRules, "join_rule")
	switch joinRule {
	case "public", "knock", "knock_restricted":
		return true
	}
	if roomdag.HistoryVisibility(st.State) == roomdag.VisibilityWorldReadable {
		return true
	}
	switch st.Membership(user) {
	case roomdag.MembershipJoin, roomdag.MembershipInvite:
		return true
	}
	if joinRule == "restricted" {
		for _, id := range allowedRooms(st.State) {
			other, err := roomdag.ParseRoomID(id)
			if err != nil {
				continue
			}
			if ost, err := s.rooms.State(ctx, other); err == nil && ost.Membership(user) == roomdag.MembershipJoin {
				return true
			}
		}
	}
	return false
}

// spaceChildren is roomdag.SpaceChildren.
func spaceChildren(state roomdag.StateMap, suggestedOnly bool) []*roomdag.Event {
	return roomdag.SpaceChildren(state, suggestedOnly)
}

// putSession stores a walk under a new token.
func (h *hierarchyAPI) putSession(ctx context.Context, sess *hierarchySession) (string, error) {
	b := make([]byte, 18)
	if _, err := io.ReadFull(h.s.random, b); err != nil {
		return "", err
	}
	tok := base64.RawURLEncoding.EncodeToString(b)
	w := hierarchyWalk{Root: sess.root, SuggestedOnly: sess.suggestedOnly, MaxDepth: sess.maxDepth,
		Stack: make([]hierarchyStep, len(sess.stack)), Visited: slices.Sorted(maps.Keys(sess.visited))}
	for i, e := range sess.stack {
		w.Stack[i] = hierarchyStep{Room: e.room, Depth: e.depth}
	}
	walk, err := json.Marshal(w)
	if err != nil {
		return "", err
	}
	now := h.s.clock.Now()
	// Stored even if the client has gone: the token may still be retried.
	err = h.s.store.PutHierarchySession(context.WithoutCancel(ctx), tok, sess.user, walk,
		now.Add(hierarchySessionTTL).UnixMilli(), now.UnixMilli(), maxHierarchySessions)
	if err != nil {
		return "", err
	}
	return tok, nil
}

// takeSession returns the walk stored under tok, or nil if it is unknown
// or has expired. The stored walk stays as it was, so a client that
// retries a page gets the same page again.
func (h *hierarchyAPI) takeSession(ctx context.Context, tok string) (*hierarchySession, error) {
	user, walk, err := h.s.store.HierarchySession(ctx, tok, h.s.clock.Now().UnixMilli())
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var w hierarchyWalk
	if err := json.Unmarshal(walk, &w); err != nil {
		return nil, err
	}
	sess := &hierarchySession{user: user, root: w.Root, suggestedOnly: w.SuggestedOnly, maxDepth: w.MaxDepth,
		stack: make([]hierarchyEntry, len(w.Stack)), visited: make(map[roomdag.RoomID]bool, len(w.Visited))}
	for i, st := range w.Stack {
		sess.stack[i] = hierarchyEntry{room: st.Room, depth: st.Depth}
	}
	for _, id := range w.Visited {
		sess.visited[id] = true
	}
	return sess, nil
}
