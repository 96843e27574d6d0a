package api

import (
	"encoding/json"
	"errors"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"github.com/persistentchat/homeserver/sync"
	"net/http"
	"strconv"
	"strings"
	"time"
)

func (s *Server) syncRoutes() []route {
	return []route{
		{"GET", v3 + "/sync", s.syncHandler, authRequired, rateNone},
		{"POST", v3 + "/user/{userId}/filter", s.putFilter, authRequired, rateNone},
		{"GET", v3 + "/user/{userId}/filter/{filterId}", s.getFilter, authRequired, rateNone},
	}
}

// maxSyncTimeout caps how long one long-poll may wait.
const maxSyncTimeout = 5 * time.Minute

func (s *Server) syncHandler(r *http.Request) (any, error) {
	rq := requester(r)
	q := r.URL.Query()
	req := sync.Request{User: rq.UserID, Device: rq.DeviceID, FullState: q.Get("full_state") == "true", Session: s.sessionCheck(rq)}
	if since := q.Get("since"); since != "" {
		tok, err := sync.ParseToken(since)
		if err != nil {
			return nil, httpapi.InvalidParam("malformed since token")
		}
		// Durable streams only: typing restarts at zero with the server.
		if cur := s.sync.Notifier().Current(); tok.Events > cur.Events || tok.AccountData > cur.AccountData || tok.Receipts > cur.Receipts ||
			tok.Presence > cur.Presence {
			return nil, httpapi.InvalidParam("since token is from the future")
		}
		req.Since = &tok
	}
	if t := q.Get("timeout"); t != "" {
		ms, err := strconv.ParseInt(t, 10, 64)
		if err != nil || ms < 0 {
			return nil, httpapi.InvalidParam("timeout must be a non-negative integer")
		}
		req.Timeout = min(time.Duration(ms)*time.Millisecond, maxSyncTimeout)
	}
	// use_state_after (v1.16), or its unstable name, which clients still
	// send: the answer uses the key that goes with the name.
	for _, p := range []struct{ name, key string }{
		{"use_state_after", sync.KeyStateAfter},
		{"org.matrix.msc4222.use_state_after", sync.KeyStateAfterUnstable},
	} {
		switch q.Get(p.name) {
		case "", "false":
		case "true":
			if req.StateAfter == "" {
				req.StateAfter = p.key
			}
		default:
			return nil, httpapi.InvalidParam("%s must be true or false", p.name)
		}
	}
	switch p := q.Get("set_presence"); p {
	case "", "online", "offline", "unavailable":
		req.SetPresence = p
	default:
		return nil, httpapi.InvalidParam("set_presence must be online, offline or unavailable")
	}
	if f := q.Get("filter"); f != "" {
		var raw []byte
		if strings.HasPrefix(f, "{") {
			raw = []byte(f)
		} else {
			id, err := strconv.ParseInt(f, 10, 64)
			if err != nil {
				return nil, httpapi.InvalidParam("filter must be a filter ID or a JSON object")
			}
			if raw, err = s.store.Filter(r.Context(), rq.UserID, id); errors.Is(err, storage.ErrNotFound) {
				return nil, httpapi.NotFound("unknown filter")
			} else if err != nil {
				return nil, err
			}
		}
		filter, err := sync.ParseFilter(raw)
		if err != nil {
			return nil, httpapi.BadJSON("%v", err)
		}
		req.Filter = filter
	}
	return s.sync.Sync(r.Context(), req)
}

// ownUser checks that {userId} is the requester.
func ownUser(r *http.Request) (roomdag.UserID, error) {
	u, err := roomdag.ParseUserID(httpapi.PathParam(r, "userId"))
	if err != nil {
		return "", httpapi.InvalidParam("malformed user ID")
	}
	if u != requester(r).UserID {
		return "", httpapi.Forbidden("you can only do that for your own account")
	}
	return u, nil
}

func (s *Server) putFilter(r *http.Request) (any, error) {
	user, err := ownUser(r)
	if err != nil {
		return nil, err
	}
	body, err := httpapi.ReadObject(r)
	if err != nil {
		return nil, err
	}
	if _, err := sync.ParseFilter(body); err != nil {
		return nil, httpapi.BadJSON("%v", err)
	}
	id, err := s.store.PutFilter(r.Context(), user, json.RawMessage(body))
	if err != nil {
		return nil, err
	}
	return map[string]string{"filter_id": strconv.FormatInt(id, 10)}, nil
}

func (s *Server) getFilter(r *http.Request) (any, error) {
	user, err := ownUser(r)
	if err != nil {
		return nil, err
	}
	id, err := strconv.ParseInt(httpapi.PathParam(r, "filterId"), 10, 64)
	if err != nil {
		return nil, httpapi.NotFound("unknown filter")
	}
	f, err := s.store.Filter(r.Context(), user, id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httpapi.NotFound("unknown filter")
	}
	if err != nil {
		return nil, err
	}
	return f, nil
}
