package federation

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
)

// The space hierarchy over federation (server-server API, "Spaces"): one
// space and its direct children as this server knows them, unpaginated;
// the asking server walks further itself.

// hierarchyChunk is a room of the answer (SpaceHierarchyChildRoomsChunk,
// and with children_state the root's).
type hierarchyChunk struct {
	roomdag.PublicRoom
	RoomVersion    string            `json:"room_version,omitempty"`
	Encryption     string            `json:"encryption,omitempty"`
	AllowedRoomIDs []string          `json:"allowed_room_ids,omitempty"`
	ChildrenState  []json.RawMessage `json:"children_state,omitempty"`
}

// GET /_matrix/federation/v1/hierarchy/{roomId}?suggested_only=
func (in *Inbound) hierarchy(r *http.Request) (any, error) {
	root, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	suggestedOnly := false
	switch r.URL.Query().Get("suggested_only") {
	case "", "false":
	case "true":
		suggestedOnly = true
	default:
		return nil, httpapi.InvalidParam("suggested_only must be true or false")
	}
	st, err := in.room(r, root)
	if err != nil {
		return nil, err
	}
	ctx, origin := r.Context(), Origin(r.Context())
	if !in.serverMayPeek(ctx, st, origin) {
		// The spec's answer for a room the asking server could not join.
		return nil, httpapi.NotFound("room %s is not accessible to %s", root, origin)
	}
	top := summarize(root, st)
	top.ChildrenState = []json.RawMessage{}
	var children []*roomdag.Event
	if top.RoomType == roomdag.RoomTypeSpace {
		children = roomdag.SpaceChildren(st.State, suggestedOnly)
	}
	out := map[string]any{}
	kids := []hierarchyChunk{}
	inaccessible := []roomdag.RoomID{}
	for _, ev := range children {
		stripped, err := json.Marshal(map[string]any{"type": ev.Type(), "state_key": ev.StateKey(),
			"content": ev.Content(), "sender": ev.Sender(), "origin_server_ts": ev.OriginServerTS()})
		if err != nil {
			return nil, err
		}
		top.ChildrenState = append(top.ChildrenState, stripped)
		child, err := roomdag.ParseRoomID(*ev.StateKey())
		if err != nil {
			continue
		}
		cst, err := in.Rooms.State(ctx, child)
		if errors.Is(err, roomdag.ErrUnknownRoom) {
			continue // nothing to tell of it: left out, as the spec says
		}
		if err != nil {
			return nil, err
		}
		if !roomdag.ServerAllowed(cst.State, origin) || !in.serverMayPeek(ctx, cst, origin) {
			inaccessible = append(inaccessible, child)
			continue
		}
		kids = append(kids, summarize(child, cst))
	}
	out["room"], out["children"], out["inaccessible_children"] = top, kids, inaccessible
	return out, nil
}

func summarize(id roomdag.RoomID, st *roomdag.RoomState) hierarchyChunk {
	c := hierarchyChunk{PublicRoom: roomdag.DescribeRoom(id, st),
		Encryption: roomdag.ContentString(st.State, roomdag.TypeEncryption, "algorithm")}
	if st.Version != nil {
		c.RoomVersion = st.Version.ID
	}
	switch c.JoinRule {
	case "restricted", "knock_restricted":
		c.AllowedRoomIDs = roomdag.AllowedRooms(st.State)
	}
	return c
}

// serverMayPeek says whether server could feasibly peek into or join the
// room (as Synapse's _is_remote_room_accessible): anyone where the join
// rule is public, knock or knock_restricted or history is world
// readable; a server with a member joined or invited; and, for restricted
// rooms, a server with a member joined to a room the join rule names.
func (in *Inbound) serverMayPeek(ctx context.Context, st *roomdag.RoomState, server roomdag.ServerName) bool {
	joinRule := roomdag.ContentString(st.State, roomdag.TypeJoinRules, "join_rule")
	switch joinRule {
	case "public", "knock", "knock_restricted":
		return true
	}
	if roomdag.HistoryVisibility(st.State) == roomdag.VisibilityWorldReadable {
		return true
	}
	if hasMember(st.State, server, roomdag.MembershipJoin, roomdag.MembershipInvite) {
		return true
	}
	if joinRule == "restricted" {
		for _, id := range roomdag.AllowedRooms(st.State) {
			other, err := roomdag.ParseRoomID(id)
			if err != nil {
				continue
			}
			if ost, err := in.Rooms.State(ctx, other); err == nil && hasMember(ost.State, server, roomdag.MembershipJoin) {
				return true
			}
		}
	}
	return false
}

// hasMember: a user of server has one of memberships in state.
func hasMember(state roomdag.StateMap, server roomdag.ServerName, memberships ...string) bool {
	for k, ev := range state {
		if k.Type != roomdag.TypeMember || roomdag.UserID(k.StateKey).Server() != server {
			continue
		}
		for _, m := range memberships {
			if ev.Membership() == m {
				return true
			}
		}
	}
	return false
}
