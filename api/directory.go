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

func (s *Server) directoryRoutes() []route {
	return []route{
		{"PUT", v3 + "/directory/room/{roomAlias}", s.putAlias, authRequired, rateMessage},
		{"GET", v3 + "/directory/room/{roomAlias}", s.getAlias, authOptional, rateNone},
		{"DELETE", v3 + "/directory/room/{roomAlias}", s.deleteAlias, authRequired, rateNone},
		{"GET", v3 + "/rooms/{roomId}/aliases", s.roomAliases, authRequired, rateNone},
	}
}

func (s *Server) aliasParam(r *http.Request) (roomdag.RoomAlias, error) {
	a, err := roomdag.ParseRoomAlias(httpapi.PathParam(r, "roomAlias"))
	if err != nil {
		return "", httpapi.InvalidParam("malformed room alias")
	}
	return a, nil
}

// resolveAlias finds the room of an alias and the servers in it: a local
// alias here, another server's by asking it (RemoteJoins).
func (s *Server) resolveAlias(ctx context.Context, alias roomdag.RoomAlias) (roomdag.RoomID, []roomdag.ServerName, error) {
	if alias.Server() != s.cfg.ServerName {
		if s.cfg.RemoteJoins == nil {
			return "", nil, httpapi.NotFound("resolving aliases of other servers needs federation, which is off")
		}
		return s.cfg.RemoteJoins.ResolveAlias(ctx, alias)
	}
	room, _, err := s.store.Alias(ctx, alias)
	if errors.Is(err, storage.ErrNotFound) {
		// An application service may host it (spec: "Querying").
		room, err = s.queryAliasRoom(ctx, alias)
	}
	if errors.Is(err, storage.ErrNotFound) {
		return "", nil, httpapi.NotFound("room alias %s not found", alias)
	}
	return room, []roomdag.ServerName{s.cfg.ServerName}, err
}

func (s *Server) putAlias(r *http.Request) (any, error) {
	alias, err := s.aliasParam(r)
	if err != nil {
		return nil, err
	}
	if alias.Server() != s.cfg.ServerName {
		return nil, httpapi.InvalidParam("alias must be on this server")
	}
	if err := s.checkAliasClaim(r, alias); err != nil {
		return nil, err
	}
	var req struct {
		RoomID string `json:"room_id"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	room, err := roomdag.ParseRoomID(req.RoomID)
	if err != nil {
		return nil, httpapi.InvalidParam("malformed room_id")
	}
	if _, err := s.rooms.State(r.Context(), room); errors.Is(err, roomdag.ErrUnknownRoom) {
		return nil, httpapi.NotFound("unknown room")
	} else if err != nil {
		return nil, err
	}
	if err := s.store.PutAlias(r.Context(), alias, room, requester(r).UserID); errors.Is(err, storage.ErrConflict) {
		return nil, httpapi.Errorf(http.StatusConflict, "M_UNKNOWN", "room alias %s already exists", alias)
	} else if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func (s *Server) getAlias(r *http.Request) (any, error) {
	alias, err := s.aliasParam(r)
	if err != nil {
		return nil, err
	}
	room, servers, err := s.resolveAlias(r.Context(), alias)
	if err != nil {
		return nil, err
	}
	return map[string]any{"room_id": room, "servers": servers}, nil
}

// deleteAlias: the alias's creator, or a room member with the power to
// change m.room.canonical_alias, may delete it (as Synapse allows).
func (s *Server) deleteAlias(r *http.Request) (any, error) {
	alias, err := s.aliasParam(r)
	if err != nil {
		return nil, err
	}
	room, creator, err := s.store.Alias(r.Context(), alias)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httpapi.NotFound("room alias %s not found", alias)
	}
	if err != nil {
		return nil, err
	}
	if err := s.checkAliasOwner(r, alias); err != nil {
		return nil, err
	}
	user := requester(r).UserID
	if creator != user {
		st, err := s.rooms.State(r.Context(), room)
		if err != nil {
			return nil, err
		}
		pl, err := roomdag.PowerLevelsFromState(st.State)
		if err != nil {
			return nil, err
		}
		if st.Membership(user) != roomdag.MembershipJoin ||
			roomdag.UserLevelIn(st.Version, pl, st.Create(), user) < pl.EventLevel(roomdag.TypeCanonicalAlias, true) {
			return nil, httpapi.Forbidden("you may not delete this alias")
		}
	}
	if err := s.store.DeleteAlias(r.Context(), alias); err != nil {
		return nil, err
	}
	if requester(r).AppService == nil { // as Synapse: a service's deletion leaves the room's state alone
		if err := s.dropCanonicalAlias(r, room, alias); err != nil {
			return nil, err
		}
	}
	return struct{}{}, nil
}

// dropCanonicalAlias sends a new m.room.canonical_alias without a deleted
// alias when the room's current one names it, as alias or in alt_aliases,
// so the room does not advertise an alias that no longer resolves (as
// Synapse does). It is sent as the user who deleted the alias; when they
// may not change the event, the alias is deleted all the same and the
// event stays (Synapse logs and carries on: Complement "Alias creators
// can delete canonical alias with no ops").
func (s *Server) dropCanonicalAlias(r *http.Request, room roomdag.RoomID, alias roomdag.RoomAlias) error {
	st, err := s.rooms.State(r.Context(), room)
	if err != nil {
		return err
	}
	cur := st.State.Get(roomdag.TypeCanonicalAlias, "")
	if cur == nil {
		return nil
	}
	content, changed := withoutAlias(cur.Content(), alias)
	if !changed {
		return nil
	}
	empty := ""
	user := requester(r).UserID
	_, _, err = s.rooms.Append(r.Context(), room, roomdag.ProtoEvent{Type: roomdag.TypeCanonicalAlias, StateKey: &empty,
		Sender: user, Content: content})
	var ae *roomdag.AuthError
	if errors.As(err, &ae) {
		s.log.Info("alias deleted; m.room.canonical_alias left as it is", "room", room, "alias", alias, "user", user, "reason", err)
		return nil
	}
	return err
}

// withoutAlias removes alias from m.room.canonical_alias content: the
// alias key if it is that alias, and the entry in alt_aliases (the key
// goes when the list empties). Other keys stay; an alt_aliases that is not
// a list is left alone. changed reports whether anything was removed.
func withoutAlias(content []byte, alias roomdag.RoomAlias) (json.RawMessage, bool) {
	var c map[string]json.RawMessage
	if json.Unmarshal(content, &c) != nil {
		return nil, false
	}
	changed := false
	var main string
	if json.Unmarshal(c["alias"], &main) == nil && main == string(alias) {
		delete(c, "alias")
		changed = true
	}
	var alt []json.RawMessage
	if json.Unmarshal(c["alt_aliases"], &alt) == nil && alt != nil {
		kept := alt[:0:0]
		for _, a := range alt {
			var v string
			if json.Unmarshal(a, &v) == nil && v == string(alias) {
				continue
			}
			kept = append(kept, a)
		}
		if len(kept) != len(alt) {
			changed = true
			if len(kept) == 0 {
				delete(c, "alt_aliases")
			} else {
				c["alt_aliases"], _ = json.Marshal(kept)
			}
		}
	}
	if !changed {
		return nil, false
	}
	out, _ := json.Marshal(c)
	return out, true
}

func (s *Server) roomAliases(r *http.Request) (any, error) {
	room, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	if _, err := s.access(r.Context(), room, requester(r).UserID); err != nil {
		return nil, err
	}
	aliases, err := s.store.RoomAliases(r.Context(), room)
	if err != nil {
		return nil, err
	}
	return map[string]any{"aliases": aliases}, nil
}

// checkCanonicalAlias: every alias an m.room.canonical_alias event names
// must exist and point to the room (spec: M_BAD_ALIAS).
func (s *Server) checkCanonicalAlias(ctx context.Context, room roomdag.RoomID, content []byte) error {
	var c struct {
		Alias      *string  `json:"alias"`
		AltAliases []string `json:"alt_aliases"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return httpapi.BadJSON("invalid m.room.canonical_alias content")
	}
	all := c.AltAliases
	if c.Alias != nil && *c.Alias != "" {
		all = append(all, *c.Alias)
	}
	for _, a := range all {
		alias, err := roomdag.ParseRoomAlias(a)
		if err != nil {
			return httpapi.InvalidParam("%q is not a room alias", a)
		}
		if alias.Server() != s.cfg.ServerName {
			continue // remote aliases cannot be checked without federation
		}
		got, _, err := s.store.Alias(ctx, alias)
		if errors.Is(err, storage.ErrNotFound) || err == nil && got != room {
			return httpapi.Errorf(http.StatusBadRequest, "M_BAD_ALIAS", "alias %s does not point to this room", a)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
