package api

import (
	"encoding/json"
	"errors"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"net/http"
)

// Room tags (spec: client-server API, "Room Tagging"). They are kept as the
// room's m.tag account data, {"tags": {name: TagInfo}}, so they reach /sync
// like any other room account data.

func (s *Server) tagRoutes() []route {
	return []route{
		{method: "GET", path: v3 + "/user/{userId}/rooms/{roomId}/tags", handler: s.getTags, auth: authRequired, rate: rateNone},
		{method: "PUT", path: v3 + "/user/{userId}/rooms/{roomId}/tags/{tag}", handler: s.putTag, auth: authRequired, rate: rateNone},
		{method: "DELETE", path: v3 + "/user/{userId}/rooms/{roomId}/tags/{tag}", handler: s.deleteTag, auth: authRequired, rate: rateNone},
	}
}

const typeTag = "m.tag"

// maxTagBytes bounds a tag name (spec: "The tag name ... up to 255 bytes").
const maxTagBytes = 255

// tagTarget reads {userId} (the requester's own), {roomId} and {tag}.
func tagTarget(r *http.Request, withTag bool) (roomdag.UserID, roomdag.RoomID, string, error) {
	user, err := ownUser(r)
	if err != nil {
		return "", "", "", err
	}
	room, err := roomParam(r)
	if err != nil {
		return "", "", "", err
	}
	if !withTag {
		return user, room, "", nil
	}
	tag := httpapi.PathParam(r, "tag")
	if tag == "" || len(tag) > maxTagBytes {
		return "", "", "", httpapi.InvalidParam("a tag name must be 1 to %d bytes", maxTagBytes)
	}
	return user, room, tag, nil
}

// tagsOf decodes m.tag content; content a client wrote through the account
// data endpoint may not fit, and then counts as no tags.
func tagsOf(content json.RawMessage) map[string]json.RawMessage {
	var c struct {
		Tags map[string]json.RawMessage `json:"tags"`
	}
	if json.Unmarshal(content, &c) != nil || c.Tags == nil {
		return map[string]json.RawMessage{}
	}
	return c.Tags
}

func (s *Server) getTags(r *http.Request) (any, error) {
	user, room, _, err := tagTarget(r, false)
	if err != nil {
		return nil, err
	}
	content, err := s.store.AccountData(r.Context(), user, room, typeTag)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	return map[string]any{"tags": tagsOf(content)}, nil
}

func (s *Server) putTag(r *http.Request) (any, error) {
	user, room, tag, err := tagTarget(r, true)
	if err != nil {
		return nil, err
	}
	body, err := httpapi.ReadObject(r)
	if err != nil {
		return nil, err
	}
	// spec (TagInfo): order is "a number in a range [0,1]"; other keys are
	// kept as the client sent them.
	var info struct {
		Order *float64 `json:"order"`
	}
	if err := json.Unmarshal(body, &info); err != nil {
		return nil, httpapi.BadJSON("order must be a number")
	}
	if info.Order != nil && (*info.Order < 0 || *info.Order > 1) {
		return nil, httpapi.InvalidParam("order must be a number from 0 to 1")
	}
	return s.updateTags(r, user, room, func(tags map[string]json.RawMessage) bool {
		tags[tag] = body
		return true
	})
}

func (s *Server) deleteTag(r *http.Request) (any, error) {
	user, room, tag, err := tagTarget(r, true)
	if err != nil {
		return nil, err
	}
	// Deleting a tag the room does not have succeeds, as in Synapse.
	return s.updateTags(r, user, room, func(tags map[string]json.RawMessage) bool {
		_, had := tags[tag]
		delete(tags, tag)
		return had
	})
}

// updateTags changes the room's tags atomically; change reports whether it
// changed anything. It wakes the user's /sync when it did.
func (s *Server) updateTags(r *http.Request, user roomdag.UserID, room roomdag.RoomID, change func(map[string]json.RawMessage) bool) (any, error) {
	pos, err := s.store.UpdateAccountData(r.Context(), user, room, typeTag, func(cur json.RawMessage) (json.RawMessage, error) {
		tags := tagsOf(cur)
		if !change(tags) {
			return nil, nil
		}
		return json.Marshal(map[string]any{"tags": tags})
	})
	if err != nil {
		return nil, err
	}
	if pos != 0 {
		s.sync.Notifier().AccountDataChanged(user, pos)
	}
	return struct{}{}, nil
}
