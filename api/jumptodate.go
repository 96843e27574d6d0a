package api

import (
	"errors"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/storage"
	"net/http"
	"strconv"
)

// timestampToEvent is "jump to date" (spec: GET
// /_matrix/client/v1/rooms/{roomId}/timestamp_to_event, since v1.6): the
// event nearest a time, looking forwards (dir=f) or backwards (dir=b).
// Like Synapse, it needs only the right to read the room, not to see the
// event found: a client then loads it with /context, which applies history
// visibility.
func (s *Server) timestampToEvent(r *http.Request) (any, error) {
	room, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	if _, err := s.access(r.Context(), room, requester(r).UserID); err != nil {
		return nil, err
	}
	if !q.Has("ts") {
		return nil, httpapi.MissingParam("ts is required")
	}
	ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
	if err != nil || ts < 0 {
		return nil, httpapi.InvalidParam("ts must be a non-negative integer of milliseconds")
	}
	dir := q.Get("dir")
	if dir != "f" && dir != "b" {
		return nil, httpapi.InvalidParam("dir must be f or b")
	}
	id, at, err := s.store.EventNearTimestamp(r.Context(), room, ts, dir == "f")
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httpapi.NotFound("no event found %s %d", map[string]string{"f": "after", "b": "before"}[dir], ts)
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"event_id": id, "origin_server_ts": at}, nil
}
