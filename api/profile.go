package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

func (s *Server) profileRoutes() []route {
	return []route{
		{"GET", v3 + "/profile/{userId}", s.getProfile, authOptional, rateNone},
		{"GET", v3 + "/profile/{userId}/{field}", s.getProfileField, authOptional, rateNone},
		{"PUT", v3 + "/profile/{userId}/{field}", s.putProfileField, authRequired, rateMessage},
	}
}

// maxProfileField bounds display names and avatar URLs.
const maxProfileField = 1024

func (s *Server) profileOf(r *http.Request) (*storage.User, error) {
	u, err := roomdag.ParseUserID(pathParam(r, "userId"))
	if err != nil {
		return nil, invalidParam("malformed user ID")
	}
	if u.Server() != s.cfg.ServerName {
		return nil, notFoundErr("profiles of remote users need federation, which is not built yet")
	}
	user, err := s.store.User(r.Context(), u)
	if errors.Is(err, storage.ErrNotFound) {
		// An application service may host it (spec: "Querying").
		if ok, qerr := s.localUserExists(r.Context(), u); qerr != nil {
			return nil, qerr
		} else if ok {
			user, err = s.store.User(r.Context(), u)
		}
	}
	if errors.Is(err, storage.ErrNotFound) {
		return nil, notFoundErr("unknown user")
	}
	return user, err
}

func profileBody(u *storage.User) map[string]any {
	out := map[string]any{}
	if u.DisplayName != nil {
		out["displayname"] = *u.DisplayName
	}
	if u.AvatarURL != nil {
		out["avatar_url"] = *u.AvatarURL
	}
	return out
}

func (s *Server) getProfile(r *http.Request) (any, error) {
	u, err := s.profileOf(r)
	if err != nil {
		return nil, err
	}
	return profileBody(u), nil
}

func profileKey(field string) (string, error) {
	switch field {
	case "displayname", "avatar_url":
		return field, nil
	}
	return "", errorf(http.StatusNotFound, CodeUnrecognized, "profile field %q is not supported", field)
}

func (s *Server) getProfileField(r *http.Request) (any, error) {
	key, err := profileKey(pathParam(r, "field"))
	if err != nil {
		return nil, err
	}
	u, err := s.profileOf(r)
	if err != nil {
		return nil, err
	}
	body := profileBody(u)
	if _, ok := body[key]; !ok {
		return nil, notFoundErr("no %s set", key)
	}
	return map[string]any{key: body[key]}, nil
}

func (s *Server) putProfileField(r *http.Request) (any, error) {
	key, err := profileKey(pathParam(r, "field"))
	if err != nil {
		return nil, err
	}
	user, err := ownUser(r)
	if err != nil {
		return nil, err
	}
	var body map[string]json.RawMessage
	if err := decodeJSON(r, &body); err != nil {
		return nil, err
	}
	var value *string
	if raw, ok := body[key]; ok && string(raw) != "null" {
		var v string
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, badJSON("%s must be a string", key)
		}
		if len(v) > maxProfileField {
			return nil, invalidParam("%s is too long", key)
		}
		value = &v
	} else if !ok {
		return nil, missingParam("%s is required", key)
	}
	u, err := s.store.User(r.Context(), user)
	if err != nil {
		return nil, err
	}
	if key == "displayname" {
		u.DisplayName = value
	} else {
		u.AvatarURL = value
	}
	if err := s.store.SetProfile(r.Context(), user, u.DisplayName, u.AvatarURL); err != nil {
		return nil, err
	}
	return struct{}{}, s.propagateProfile(r.Context(), u)
}

// propagateProfile sends a new join event with the profile into every room
// the user is joined to, as the spec requires.
func (s *Server) propagateProfile(ctx context.Context, u *storage.User) error {
	rooms, err := s.store.JoinedRooms(ctx, u.ID)
	if err != nil {
		return err
	}
	for _, room := range rooms {
		p, err := s.memberEvent(ctx, u.ID, u.ID, roomdag.MembershipJoin, "")
		if err != nil {
			return err
		}
		if _, _, err := s.rooms.Append(ctx, room, p); err != nil {
			var ae *roomdag.AuthError
			if errors.As(err, &ae) {
				continue // e.g. power levels forbid member changes there
			}
			return err
		}
	}
	return nil
}
