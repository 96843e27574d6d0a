package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
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
	a, err := roomdag.ParseRoomAlias(pathParam(r, "roomAlias"))
	if err != nil {
		return "", invalidParam("malformed room alias")
	}
	return a, nil
}

// resolveAlias finds the room of a local alias.
func (s *Server) resolveAlias(ctx context.Context, alias roomdag.RoomAlias) (roomdag.RoomID, error) {
	if alias.Server() != s.cfg.ServerName {
		return "", notFoundErr("resolving aliases of other servers needs federation, which is not built yet")
	}
	room, _, err := s.store.Alias(ctx, alias)
	if errors.Is(err, storage.ErrNotFound) {
		// An application service may host it (spec: "Querying").
		room, err = s.queryAliasRoom(ctx, alias)
	}
	if errors.Is(err, storage.ErrNotFound) {
		return "", notFoundErr("room alias %s not found", alias)
	}
	return room, err
}

func (s *Server) putAlias(r *http.Request) (any, error) {
	alias, err := s.aliasParam(r)
	if err != nil {
		return nil, err
	}
	if alias.Server() != s.cfg.ServerName {
		return nil, invalidParam("alias must be on this server")
	}
	if err := s.checkAliasClaim(r, alias); err != nil {
		return nil, err
	}
	var req struct {
		RoomID string `json:"room_id"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return nil, err
	}
	room, err := roomdag.ParseRoomID(req.RoomID)
	if err != nil {
		return nil, invalidParam("malformed room_id")
	}
	if _, err := s.rooms.State(r.Context(), room); errors.Is(err, roomdag.ErrUnknownRoom) {
		return nil, notFoundErr("unknown room")
	} else if err != nil {
		return nil, err
	}
	if err := s.store.PutAlias(r.Context(), alias, room, requester(r).UserID); errors.Is(err, storage.ErrConflict) {
		return nil, errorf(http.StatusConflict, "M_UNKNOWN", "room alias %s already exists", alias)
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
	room, err := s.resolveAlias(r.Context(), alias)
	if err != nil {
		return nil, err
	}
	return map[string]any{"room_id": room, "servers": []roomdag.ServerName{s.cfg.ServerName}}, nil
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
		return nil, notFoundErr("room alias %s not found", alias)
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
			return nil, forbidden("you may not delete this alias")
		}
	}
	return struct{}{}, s.store.DeleteAlias(r.Context(), alias)
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
		return badJSON("invalid m.room.canonical_alias content")
	}
	all := c.AltAliases
	if c.Alias != nil && *c.Alias != "" {
		all = append(all, *c.Alias)
	}
	for _, a := range all {
		alias, err := roomdag.ParseRoomAlias(a)
		if err != nil {
			return invalidParam("%q is not a room alias", a)
		}
		if alias.Server() != s.cfg.ServerName {
			continue // remote aliases cannot be checked without federation
		}
		got, _, err := s.store.Alias(ctx, alias)
		if errors.Is(err, storage.ErrNotFound) || err == nil && got != room {
			return errorf(http.StatusBadRequest, "M_BAD_ALIAS", "alias %s does not point to this room", a)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
