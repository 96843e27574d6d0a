package api

import (
	"encoding/base64"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"net/http"
	"sort"
)

// Mutual rooms (spec v1.19, MSC2666): GET /_matrix/client/v1/mutual_rooms.

func (s *Server) mutualRoomRoutes() []route {
	return []route{
		{method: "GET", path: v1 + "/mutual_rooms", handler: s.mutualRooms, auth: authRequired, rate: rateNone},
	}
}

// mutualRoomsBatch is how many rooms one answer lists (Synapse's limit).
const mutualRoomsBatch = 100

// mutualRooms lists the rooms where both the requester and user_id are
// joined, by room ID, a batch at a time. next_batch is the last room ID of
// the batch (URL-safe base64), and the next batch starts after it, so a
// room joined meanwhile with a smaller ID waits for a fresh listing, as in
// Synapse. A user ID that is well formed but unknown shares no rooms.
func (s *Server) mutualRooms(r *http.Request) (any, error) {
	q := r.URL.Query()
	if len(q["user_id"]) == 0 {
		return nil, httpapi.MissingParam("user_id is required")
	}
	if len(q["user_id"]) > 1 || len(q["from"]) > 1 {
		return nil, httpapi.InvalidParam("give user_id and from at most once")
	}
	other, err := roomdag.ParseUserID(q.Get("user_id"))
	if err != nil {
		return nil, httpapi.InvalidParam("malformed user_id")
	}
	me := requester(r).UserID
	if other == me {
		return nil, httpapi.InvalidParam("you cannot list the rooms you share with yourself")
	}
	var after string
	if from := q.Get("from"); from != "" {
		b, err := base64.RawURLEncoding.DecodeString(from)
		if err != nil || len(b) == 0 {
			return nil, httpapi.InvalidParam("malformed from token")
		}
		after = string(b)
	}
	mine, err := s.store.JoinedRooms(r.Context(), me)
	if err != nil {
		return nil, err
	}
	theirs, err := s.store.JoinedRooms(r.Context(), other)
	if err != nil {
		return nil, err
	}
	in := make(map[roomdag.RoomID]bool, len(theirs))
	for _, id := range theirs {
		in[id] = true
	}
	shared := []string{}
	for _, id := range mine {
		if in[id] {
			shared = append(shared, string(id))
		}
	}
	sort.Strings(shared)
	out := map[string]any{"count": len(shared)}
	page := shared[sort.SearchStrings(shared, after):]
	if len(page) > 0 && page[0] == after {
		page = page[1:]
	}
	if len(page) > mutualRoomsBatch {
		page = page[:mutualRoomsBatch]
		out["next_batch"] = base64.RawURLEncoding.EncodeToString([]byte(page[len(page)-1]))
	}
	out["joined"] = page
	return out, nil
}
