package api

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"net/http"
	"regexp"
)

func (s *Server) profileRoutes() []route {
	return []route{
		{"GET", v3 + "/profile/{userId}", s.getProfile, authOptional, rateNone},
		{"GET", v3 + "/profile/{userId}/{field}", s.getProfileField, authOptional, rateNone},
		{"PUT", v3 + "/profile/{userId}/{field}", s.putProfileField, authRequired, rateMessage},
		{"DELETE", v3 + "/profile/{userId}/{field}", s.deleteProfileField, authRequired, rateMessage},
	}
}

// Profiles stores extensible profiles (spec v1.16, MSC4133): the fields
// beyond displayname and avatar_url, which live on the account.
type Profiles interface {
	// ProfileFields returns the user's other fields, by key.
	ProfileFields(ctx context.Context, user roomdag.UserID) (map[string]json.RawMessage, error)
	// UpdateProfile reads the user's whole profile, lets change edit it
	// and stores the result, in one transaction; an error from change
	// stores nothing and is returned as it is. storage.ErrNotFound for an
	// unknown user.
	UpdateProfile(ctx context.Context, user roomdag.UserID, change func(p *storage.Profile) error) (*storage.Profile, error)
}

// Profile fields the spec names (profile.yaml).
const (
	fieldDisplayName = "displayname"
	fieldAvatarURL   = "avatar_url"
	fieldTimeZone    = "m.tz" // v1.16, MSC4175
)

const (
	// maxProfileField bounds display names and avatar URLs.
	maxProfileField = 1024
	// maxProfileBytes bounds a whole profile, as JSON: the spec's 64 KiB
	// (profile.yaml, PUT), counted as Synapse counts it.
	maxProfileBytes = 64 << 10
	// maxProfileKey is the spec's limit on a field's key, in bytes.
	maxProfileKey = 255
)

// profileKeyGrammar is the Common Namespaced Identifier Grammar
// (appendices), which every key follows: displayname, avatar_url and m.tz
// do. Like Synapse, keys without a namespace are accepted too; the grammar
// only recommends one.
var profileKeyGrammar = regexp.MustCompile(`^[a-z][a-z0-9_.-]*$`)

// profileKey checks the {field} path parameter.
func profileKey(r *http.Request) (string, error) {
	key := httpapi.PathParam(r, "field")
	if len(key) > maxProfileKey {
		return "", httpapi.Errorf(http.StatusBadRequest, httpapi.CodeKeyTooLarge, "profile keys are at most %d bytes", maxProfileKey)
	}
	if !profileKeyGrammar.MatchString(key) {
		return "", httpapi.InvalidParam("profile key %q does not follow the Common Namespaced Identifier Grammar", key)
	}
	return key, nil
}

func (s *Server) profileOf(r *http.Request) (*storage.User, error) {
	u, err := roomdag.ParseUserID(httpapi.PathParam(r, "userId"))
	if err != nil {
		return nil, httpapi.InvalidParam("malformed user ID")
	}
	if u.Server() != s.cfg.ServerName {
		return nil, httpapi.NotFound("profiles of remote users need federation, which is not built yet")
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
		return nil, httpapi.NotFound("unknown user")
	}
	return user, err
}

// profileBody is the whole profile as GET /profile/{userId} returns it:
// every field that is set.
func profileBody(p *storage.Profile) map[string]any {
	out := make(map[string]any, len(p.Fields)+2)
	for k, v := range p.Fields {
		out[k] = v
	}
	if p.DisplayName != nil {
		out[fieldDisplayName] = *p.DisplayName
	}
	if p.AvatarURL != nil {
		out[fieldAvatarURL] = *p.AvatarURL
	}
	return out
}

// fullProfile reads the profile of the user {userId} names.
func (s *Server) fullProfile(r *http.Request) (*storage.Profile, error) {
	u, err := s.profileOf(r)
	if err != nil {
		return nil, err
	}
	fields, err := s.store.ProfileFields(r.Context(), u.ID)
	if err != nil {
		return nil, err
	}
	return &storage.Profile{DisplayName: u.DisplayName, AvatarURL: u.AvatarURL, Fields: fields}, nil
}

func (s *Server) getProfile(r *http.Request) (any, error) {
	p, err := s.fullProfile(r)
	if err != nil {
		return nil, err
	}
	return profileBody(p), nil
}

func (s *Server) getProfileField(r *http.Request) (any, error) {
	key, err := profileKey(r)
	if err != nil {
		return nil, err
	}
	p, err := s.fullProfile(r)
	if err != nil {
		return nil, err
	}
	v, ok := profileBody(p)[key]
	if !ok {
		return nil, httpapi.NotFound("no %s set", key)
	}
	return map[string]any{key: v}, nil
}

// profileValue checks the new value of a field, from the body of PUT:
// display names and avatar URLs are strings (null clears them, as before
// v1.16), m.tz a string (the spec's IANA time zone name, which we do not
// check: clients must expect invalid values), and custom fields any JSON,
// null included, which is stored (spec: servers accepting null "SHOULD
// store them rather than treating null as a deletion request").
func profileValue(key string, raw json.RawMessage) (json.RawMessage, error) {
	null := string(raw) == "null"
	switch key {
	case fieldDisplayName, fieldAvatarURL:
		if null {
			return nil, nil
		}
		var v string
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, httpapi.BadJSON("%s must be a string", key)
		}
		if len(v) > maxProfileField {
			return nil, httpapi.InvalidParam("%s is too long", key)
		}
	case fieldTimeZone:
		var v string
		if null || json.Unmarshal(raw, &v) != nil {
			return nil, httpapi.BadJSON("%s must be a string naming an IANA time zone", key)
		}
	}
	return raw, nil
}

func (s *Server) putProfileField(r *http.Request) (any, error) {
	key, err := profileKey(r)
	if err != nil {
		return nil, err
	}
	user, err := ownUser(r)
	if err != nil {
		return nil, err
	}
	var body map[string]json.RawMessage
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	raw, ok := body[key]
	if !ok {
		return nil, httpapi.MissingParam("%s is required", key)
	}
	value, err := profileValue(key, raw)
	if err != nil {
		return nil, err
	}
	return s.changeProfile(r.Context(), user, key, value, true)
}

// deleteProfileField: DELETE /profile/{userId}/{keyName} (v1.16) removes
// the field, and answers 200 when it was not set.
func (s *Server) deleteProfileField(r *http.Request) (any, error) {
	key, err := profileKey(r)
	if err != nil {
		return nil, err
	}
	user, err := ownUser(r)
	if err != nil {
		return nil, err
	}
	return s.changeProfile(r.Context(), user, key, nil, false)
}

// changeProfile sets (set true) or deletes one field of the user's
// profile; value nil with set clears displayname or avatar_url. The whole
// profile must stay within maxProfileBytes. A new display name or avatar
// goes into every room the user is joined to.
func (s *Server) changeProfile(ctx context.Context, user roomdag.UserID, key string, value json.RawMessage, set bool) (any, error) {
	var roomsToo bool
	p, err := s.store.UpdateProfile(ctx, user, func(p *storage.Profile) error {
		switch key {
		case fieldDisplayName, fieldAvatarURL:
			target := &p.DisplayName
			if key == fieldAvatarURL {
				target = &p.AvatarURL
			}
			var next *string
			if value != nil {
				var v string
				_ = json.Unmarshal(value, &v) // profileValue checked it
				next = &v
			}
			roomsToo = !equalStrings(*target, next)
			*target = next
		default:
			if set {
				p.Fields[key] = value
			} else {
				delete(p.Fields, key)
			}
		}
		size, err := json.Marshal(profileBody(p))
		if err != nil {
			return err
		}
		if len(size) > maxProfileBytes {
			return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeProfileTooLarge, "the profile would be %d bytes; profiles are at most %d", len(size), maxProfileBytes)
		}
		return nil
	})
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httpapi.NotFound("unknown user")
	}
	if err != nil {
		return nil, err
	}
	if roomsToo {
		u, err := s.store.User(ctx, user)
		if err != nil {
			return nil, err
		}
		u.DisplayName, u.AvatarURL = p.DisplayName, p.AvatarURL
		if err := s.propagateProfile(ctx, u); err != nil {
			return nil, err
		}
	}
	return struct{}{}, nil
}

func equalStrings(a, b *string) bool {
	return a == nil && b == nil || a != nil && b != nil && *a == *b
}

// propagateProfile sends a new join event with the profile into every room
// the user is joined to, as the spec requires. Only the display name and
// avatar go there; other fields stay in the profile (as in Synapse).
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
