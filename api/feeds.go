package api

import (
	"encoding/json"
	"errors"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/sync"
	"net/http"
	"strconv"
	"time"
)

// Topic feeds (sync/feeds.go; README, "Topic feeds"): the feed endpoint,
// under our unstable prefix, and the checks on the account data that
// defines feeds and follows.

const feedPrefix = "/_matrix/client/unstable/org.persistentchat"

func (s *Server) feedRoutes() []route {
	return []route{
		{"GET", feedPrefix + "/feeds/{feedId}", s.getFeed, authRequired, rateNone},
	}
}

const (
	defaultFeedLimit = 20
	maxFeedLimit     = 100
)

// getFeed answers GET .../feeds/{feedId}?since=&timeout=&limit=: the
// feed's newest matches, or, with since, the matches after it, waiting
// up to timeout milliseconds for one.
func (s *Server) getFeed(r *http.Request) (any, error) {
	rq := requester(r)
	q := r.URL.Query()
	var since *roomdag.StreamPos
	if v := q.Get("since"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return nil, httpapi.InvalidParam("malformed since token")
		}
		if roomdag.StreamPos(n) > s.sync.Notifier().Current().Events {
			return nil, httpapi.InvalidParam("since token is from the future")
		}
		p := roomdag.StreamPos(n)
		since = &p
	}
	var timeout time.Duration
	if t := q.Get("timeout"); t != "" {
		ms, err := strconv.ParseInt(t, 10, 64)
		if err != nil || ms < 0 {
			return nil, httpapi.InvalidParam("timeout must be a non-negative integer")
		}
		timeout = min(time.Duration(ms)*time.Millisecond, maxSyncTimeout)
	}
	limit, err := queryLimit(r, defaultFeedLimit)
	if err != nil {
		return nil, err
	}
	limit = min(limit, maxFeedLimit)
	if limit == 0 {
		return nil, httpapi.InvalidParam("limit must be positive")
	}
	resp, err := s.sync.Feed(r.Context(), rq.UserID, rq.DeviceID, s.sessionCheck(rq), httpapi.PathParam(r, "feedId"), since, timeout, limit)
	if errors.Is(err, sync.ErrNoFeed) {
		return nil, httpapi.NotFound("no feed %q in your %s account data", httpapi.PathParam(r, "feedId"), sync.TypeFeeds)
	}
	return resp, err
}

// checkFeedData refuses feed and follow definitions the feeds could not
// use, with the reason, when they are written as global account data.
func checkFeedData(room roomdag.RoomID, typ string, content json.RawMessage) error {
	if room != "" {
		return nil
	}
	var err error
	switch typ {
	case sync.TypeFeeds:
		_, err = sync.ParseFeeds(content)
	case sync.TypeFollows:
		_, err = sync.ParseFollows(content)
	}
	if err != nil {
		return httpapi.BadJSON("%v", err)
	}
	return nil
}
