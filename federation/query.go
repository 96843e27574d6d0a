package federation

import (
	"errors"
	"net/http"
	"slices"

	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// Queries (server-server API, "Querying for information"): room aliases
// and profiles of this server's users.

// GET /_matrix/federation/v1/query/directory?room_alias=
//
// The room a local alias names, and the servers with members joined to it
// (this one first), where the asking server may join it.
func (in *Inbound) queryDirectory(r *http.Request) (any, error) {
	raw := r.URL.Query().Get("room_alias")
	if raw == "" {
		return nil, httpapi.MissingParam("room_alias is required")
	}
	alias, err := roomdag.ParseRoomAlias(raw)
	if err != nil {
		return nil, httpapi.InvalidParam("%q is not a room alias", raw)
	}
	if alias.Server() != in.Server {
		return nil, httpapi.NotFound("room alias %s is not on this server", alias)
	}
	room, _, err := in.Store.Alias(r.Context(), alias)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httpapi.NotFound("room alias %s not found", alias)
	}
	if err != nil {
		return nil, err
	}
	servers := []roomdag.ServerName{in.Server}
	st, err := in.Rooms.State(r.Context(), room)
	if err != nil && !errors.Is(err, roomdag.ErrUnknownRoom) {
		return nil, err
	}
	if st != nil {
		if !roomdag.ServerAllowed(st.State, Origin(r.Context())) {
			return nil, httpapi.Forbidden("server %s is denied by the room's server ACL", Origin(r.Context()))
		}
		servers = joinedServers(st.State, in.Server)
	}
	return map[string]any{"room_id": room, "servers": servers}, nil
}

// joinedServers are the servers with a member joined in state, first
// (always) self, then the others in name order.
func joinedServers(state roomdag.StateMap, self roomdag.ServerName) []roomdag.ServerName {
	seen := map[roomdag.ServerName]bool{self: true}
	var others []roomdag.ServerName
	for k, ev := range state {
		if k.Type != roomdag.TypeMember || ev.Membership() != roomdag.MembershipJoin {
			continue
		}
		if s := roomdag.UserID(k.StateKey).Server(); s != "" && !seen[s] {
			seen[s] = true
			others = append(others, s)
		}
	}
	slices.Sort(others)
	return append([]roomdag.ServerName{self}, others...)
}

// Profile fields with a type of their own.
const (
	fieldDisplayName = "displayname"
	fieldAvatarURL   = "avatar_url"
)

// GET /_matrix/federation/v1/query/profile?user_id=&field=
//
// A local user's public profile: display name, avatar URL and the
// extended fields; with field, that field alone (404 M_NOT_FOUND when it
// is not set). Deactivated and unknown users are not found.
func (in *Inbound) queryProfile(r *http.Request) (any, error) {
	q := r.URL.Query()
	raw := q.Get("user_id")
	if raw == "" {
		return nil, httpapi.MissingParam("user_id is required")
	}
	user, err := roomdag.ParseUserID(raw)
	if err != nil {
		return nil, httpapi.InvalidParam("%q is not a user ID", raw)
	}
	if user.Server() != in.Server {
		return nil, httpapi.InvalidParam("user %s is not on this server", user)
	}
	u, err := in.Store.User(r.Context(), user)
	if errors.Is(err, storage.ErrNotFound) || err == nil && u.Deactivated {
		return nil, httpapi.NotFound("user %s does not exist", user)
	}
	if err != nil {
		return nil, err
	}
	fields, err := in.Store.ProfileFields(r.Context(), user)
	if err != nil {
		return nil, err
	}
	out := make(map[string]any, len(fields)+2)
	for k, v := range fields {
		out[k] = v
	}
	if u.DisplayName != nil {
		out[fieldDisplayName] = *u.DisplayName
	}
	if u.AvatarURL != nil {
		out[fieldAvatarURL] = *u.AvatarURL
	}
	if q.Has("field") {
		field := q.Get("field")
		v, ok := out[field]
		if !ok {
			return nil, httpapi.NotFound("user %s has no %s", user, field)
		}
		return map[string]any{field: v}, nil
	}
	return out, nil
}
