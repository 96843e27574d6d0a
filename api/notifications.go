package api

import (
	"encoding/json"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/sync"
	"net/http"
	"strconv"
)

// Notifications (spec: client-server API, "Push Notifications", GET
// /notifications): what the notification worker (push.Worker) recorded
// for the requester, newest first.
func (s *Server) notificationRoutes() []route {
	return []route{
		{"GET", v3 + "/notifications", s.getNotifications, authRequired, rateNone},
	}
}

// Page sizes of /notifications: the spec leaves the default to servers.
const (
	defaultNotificationLimit = 20
	maxNotificationLimit     = 100
)

type notificationJSON struct {
	Actions json.RawMessage `json:"actions"`
	Event   json.RawMessage `json:"event"`
	Read    bool            `json:"read"`
	RoomID  roomdag.RoomID  `json:"room_id"`
	TS      int64           `json:"ts"`
}

func (s *Server) getNotifications(r *http.Request) (any, error) {
	q := r.URL.Query()
	var before roomdag.StreamPos
	if from := q.Get("from"); from != "" {
		n, err := strconv.ParseInt(from, 10, 64)
		if err != nil || n <= 0 {
			return nil, httpapi.InvalidParam("malformed from token")
		}
		before = roomdag.StreamPos(n)
	}
	limit, err := queryLimit(r, defaultNotificationLimit)
	if err != nil {
		return nil, err
	}
	limit = min(limit, maxNotificationLimit)
	var onlyHighlight bool
	switch only := q.Get("only"); only {
	case "":
	case "highlight":
		onlyHighlight = true
	default:
		return nil, httpapi.InvalidParam("only must be \"highlight\"")
	}
	rq := requester(r)
	out := struct {
		Notifications []notificationJSON `json:"notifications"`
		NextToken     string             `json:"next_token,omitempty"`
	}{Notifications: []notificationJSON{}}
	if limit == 0 {
		return out, nil
	}
	ns, err := s.store.Notifications(r.Context(), rq.UserID, before, limit+1, onlyHighlight)
	if err != nil {
		return nil, err
	}
	if len(ns) > limit {
		ns = ns[:limit]
		out.NextToken = strconv.FormatInt(int64(ns[limit-1].EventPos), 10)
	}
	ids := make([]roomdag.EventID, len(ns))
	for i, n := range ns {
		ids[i] = n.EventID
	}
	evs, err := s.store.Events(r.Context(), ids)
	if err != nil {
		return nil, err
	}
	byID := make(map[roomdag.EventID]*roomdag.StoredEvent, len(evs))
	for _, ev := range evs {
		byID[ev.ID()] = ev
	}
	// unsigned.membership (MSC4115), one lookup per room at most: a
	// notification's event is usually after the user's newest membership
	// event there, which costs none.
	memberships, err := s.store.UserRooms(r.Context(), rq.UserID)
	if err != nil {
		return nil, err
	}
	view, err := sync.MembershipTrails(r.Context(), s.store,
		roomdag.ClientView{NowMS: s.clock.Now().UnixMilli(), UserID: rq.UserID, DeviceID: rq.DeviceID}, sync.MembershipsByRoom(memberships), evs)
	if err != nil {
		return nil, err
	}
	for _, n := range ns {
		ev := byID[n.EventID]
		if ev == nil {
			continue // purged by retention since (package retention)
		}
		out.Notifications = append(out.Notifications, notificationJSON{
			Actions: n.Actions, Event: ev.ClientJSON(view), Read: n.Read, RoomID: n.Room, TS: n.TS,
		})
	}
	return out, nil
}
