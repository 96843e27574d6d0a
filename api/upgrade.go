package api

import (
	"encoding/json"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"net/http"
)

// POST /rooms/{roomId}/upgrade (spec: client-server API, "Room Upgrades").
// The upgrade itself is api/roomupgrade.go.
func (s *Server) upgradeRoom(r *http.Request) (any, error) {
	room, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		NewVersion         *string         `json:"new_version"`
		AdditionalCreators json.RawMessage `json:"additional_creators"`
	}
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.NewVersion == nil {
		return nil, httpapi.MissingParam("new_version is required")
	}
	v, ok := roomdag.LookupRoomVersion(*body.NewVersion)
	if !ok {
		return nil, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeUnsupportedRoomVersion, "room version %q is not supported", *body.NewVersion)
	}
	req := upgradeRequest{user: requester(r).UserID, room: room, version: v}
	// spec: "When upgrading to a room version which doesn't support
	// additional creators, this field is ignored".
	if v.PrivilegedCreators && len(body.AdditionalCreators) > 0 && string(body.AdditionalCreators) != "null" {
		if req.creators, err = parseCreators(body.AdditionalCreators); err != nil {
			return nil, err
		}
	}
	newRoom, err := s.upgrades.upgrade(r.Context(), req)
	if err != nil {
		return nil, err
	}
	return map[string]any{"replacement_room": newRoom}, nil
}

// parseCreators reads additional_creators: an array of user IDs (as
// Synapse's check_valid_additional_creators requires).
func parseCreators(raw json.RawMessage) ([]roomdag.UserID, error) {
	var list []json.RawMessage
	if json.Unmarshal(raw, &list) != nil {
		return nil, httpapi.BadJSON("additional_creators must be an array")
	}
	out := make([]roomdag.UserID, 0, len(list))
	for _, item := range list {
		var str string
		if json.Unmarshal(item, &str) != nil {
			return nil, httpapi.BadJSON("additional_creators entries must be strings")
		}
		u, err := roomdag.ParseUserID(str)
		if err != nil {
			return nil, httpapi.InvalidParam("%q in additional_creators is not a valid user ID", str)
		}
		out = append(out, u)
	}
	return out, nil
}
