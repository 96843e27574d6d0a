package api

import (
	"errors"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"net/http"
)

func (s *Server) discoveryRoutes() []route {
	return []route{
		{"GET", "/_matrix/client/versions", s.versions, authOptional, rateNone},
		{"GET", "/.well-known/matrix/client", s.wellKnown, authNone, rateNone},
		{"GET", v3 + "/capabilities", s.capabilities, authRequired, rateNone},
		{"GET", v1 + "/auth_metadata", s.authMetadata, authNone, rateNone},
	}
}

// supportedVersions are the spec versions whose client-server API we serve:
// each up to the newest whose required features work. Clients act on them:
// matrix-js-sdk needs one of v1.1–v1.9, and a client that sees v1.11 uses
// authenticated media (and falls back to the legacy media paths, which no
// longer serve new media, without it). api/versions_test.go tests the
// headline of each version from v1.11 on:
//
//   - v1.11: authenticated media (/_matrix/client/v1/media);
//   - v1.12: account locking (M_USER_LOCKED), m.marked_unread, via on /join,
//     the uploaded Content-Type with safe Content-Disposition;
//   - v1.13: room reports, account suspension (M_USER_SUSPENDED);
//   - v1.14: user reports;
//   - v1.15: room summaries, the OAuth 2.0 probe answered 404;
//   - v1.16: extensible profiles (custom fields, m.tz, DELETE,
//     m.profile_fields), use_state_after on /sync, room version 12 with
//     the stripped create event in invites;
//   - v1.17: application services manage their users' devices (MSC4190)
//     and act as one of them (MSC4326);
//   - v1.18: invite blocking, redactions through /send,
//     m.forget_forced_upon_leave, the administrators' lock and suspend API;
//   - v1.19: mutual rooms, unsigned.replaces_state.
//
// What these versions add for OAuth 2.0 (the m.oauth stage, account
// management, the device grant) applies only to servers offering that
// API, which is optional and which we do not offer. What they add to
// end-to-end encryption, to federation and to clients alone (image packs,
// m.key_backup, history sharing, recent emoji) is account data and state
// that any client may store here, or belongs to those other parts.
var supportedVersions = []string{
	"r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10",
	"v1.11", "v1.12", "v1.13", "v1.14", "v1.15", "v1.16", "v1.17", "v1.18", "v1.19",
}

// unstableFeatures are the flags of features a client may look for before
// it knows the spec version that made them stable: each is served as the
// spec has it. MSC4222's unstable use_state_after is answered too
// (sync.KeyStateAfterUnstable), but, as in Synapse, without a flag:
// clients tell from the answer.
var unstableFeatures = map[string]bool{
	"uk.tcpip.msc4133.stable":                        true, // extensible profiles (v1.16)
	"org.matrix.msc4380.stable":                      true, // invite blocking (v1.18)
	"uk.half-shot.msc2666.query_mutual_rooms.stable": true, // mutual rooms (v1.19)
}

func (s *Server) versions(r *http.Request) (any, error) {
	return map[string]any{
		"versions":          supportedVersions,
		"unstable_features": unstableFeatures,
	}, nil
}

func (s *Server) wellKnown(r *http.Request) (any, error) {
	return map[string]any{"m.homeserver": map[string]string{"base_url": s.cfg.BaseURL}}, nil
}

func (s *Server) capabilities(r *http.Request) (any, error) {
	available := map[string]string{}
	for _, v := range roomdag.RoomVersions() {
		if v.Stable {
			available[v.ID] = "stable"
		} else {
			available[v.ID] = "unstable"
		}
	}
	caps := map[string]any{
		"m.room_versions":   map[string]any{"default": s.cfg.DefaultRoomVersion, "available": available},
		"m.change_password": map[string]bool{"enabled": true},
		// Every profile field may be set (v1.16); the two capabilities it
		// replaces are deprecated but still served, for older clients.
		"m.profile_fields":  map[string]bool{"enabled": true},
		"m.set_displayname": map[string]bool{"enabled": true},
		"m.set_avatar_url":  map[string]bool{"enabled": true},
		"m.3pid_changes":    map[string]bool{"enabled": false},
		"m.get_login_token": map[string]bool{"enabled": false},
		// Leaving a room does not forget it (v1.18, MSC4267): clients may
		// offer both, and show left rooms with include_leave.
		"m.forget_forced_upon_leave": map[string]bool{"enabled": false},
	}
	// Administrators may lock and suspend accounts (api/moderation.go);
	// others get no m.account_moderation at all (spec v1.18).
	if u, err := s.store.User(r.Context(), requester(r).UserID); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	} else if err == nil && u.Admin {
		caps["m.account_moderation"] = map[string]bool{"lock": true, "suspend": true}
	}
	return map[string]any{"capabilities": caps}, nil
}

// authMetadata: we do not run the OAuth 2.0 API, and clients probe this
// endpoint to choose legacy login, so it must answer 404 M_UNRECOGNIZED.
func (s *Server) authMetadata(r *http.Request) (any, error) {
	return nil, httpapi.Errorf(http.StatusNotFound, httpapi.CodeUnrecognized, "OAuth 2.0 is not supported by this server")
}
