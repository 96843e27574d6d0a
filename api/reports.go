package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"net/http"
	"strconv"
	"unicode/utf8"
)

// Reporting content (spec: module "Reporting content"): users report
// events, rooms and users; the reports are stored for the server's
// administrators, who list them through Synapse's admin API
// (/_synapse/admin/v1/event_reports, room_reports, user_reports).
//
// Which reports reveal what exists:
//   - an event report needs the reporter joined to the room and able to
//     see the event, which must not be redacted; otherwise 404, the same
//     answer whichever condition failed (spec; Synapse);
//   - room and user reports answer 200 whether or not the room or user
//     exists, so they cannot be used to probe for them (spec v1.18,
//     MSC4277; Synapse for users), and only reports of rooms this server
//     knows and of its own users are kept.

const (
	// maxReportReason bounds a report's reason, in characters (Synapse's
	// limit for user reports, applied to all three).
	maxReportReason = 1000
	// Report scores run from -100 (most offensive) to 0 (spec: reportEvent).
	minReportScore, maxReportScore = -100, 0
	// Admin listing pages.
	defaultReportsLimit, maxReportsLimit = 100, 1000
)

func (s *Server) reportRoutes() []route {
	return []route{
		{method: http.MethodPost, path: v3 + "/rooms/{roomId}/report/{eventId}", handler: s.reportEvent, auth: authRequired, rate: rateMessage},
		{method: http.MethodPost, path: v3 + "/rooms/{roomId}/report", handler: s.reportRoom, auth: authRequired, rate: rateMessage},
		{method: http.MethodPost, path: v3 + "/users/{userId}/report", handler: s.reportUser, auth: authRequired, rate: rateMessage},
		{method: http.MethodGet, path: "/_synapse/admin/v1/event_reports", handler: s.listReports(storage.ReportEvent, "event_reports"), auth: authRequired},
		{method: http.MethodGet, path: "/_synapse/admin/v1/room_reports", handler: s.listReports(storage.ReportRoom, "room_reports"), auth: authRequired},
		{method: http.MethodGet, path: "/_synapse/admin/v1/user_reports", handler: s.listReports(storage.ReportUser, "user_reports"), auth: authRequired},
	}
}

// reportBody reads a report's body: reason (optional string, at most
// maxReportReason characters) and, for events, score (optional integer
// from -100 to 0; spec v1.18 dropped it, but clients still send it).
func reportBody(r *http.Request, allowScore bool) (string, *int, error) {
	var body struct {
		Reason json.RawMessage `json:"reason"`
		Score  json.RawMessage `json:"score"`
	}
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return "", nil, err
	}
	var reason string
	if len(body.Reason) > 0 && !bytes.Equal(body.Reason, []byte("null")) {
		if json.Unmarshal(body.Reason, &reason) != nil {
			return "", nil, httpapi.BadJSON("reason must be a string")
		}
	}
	if n := utf8.RuneCountInString(reason); n > maxReportReason {
		return "", nil, httpapi.BadJSON("reason must be at most %d characters; it has %d", maxReportReason, n)
	}
	var score *int
	if allowScore && len(body.Score) > 0 && !bytes.Equal(body.Score, []byte("null")) {
		n, err := strconv.Atoi(string(body.Score))
		if err != nil || n < minReportScore || n > maxReportScore {
			return "", nil, httpapi.InvalidParam("score must be an integer from %d (most offensive) to %d (inoffensive)", minReportScore, maxReportScore)
		}
		score = &n
	}
	return reason, score, nil
}

// POST /rooms/{roomId}/report/{eventId}
func (s *Server) reportEvent(r *http.Request) (any, error) {
	room, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	id, err := eventParam(r)
	if err != nil {
		return nil, err
	}
	reason, score, err := reportBody(r, true)
	if err != nil {
		return nil, err
	}
	user := requester(r).UserID
	notFound := httpapi.NotFound("Unable to report event: it does not exist or you aren't able to see it.")
	st, err := s.rooms.State(r.Context(), room)
	if errors.Is(err, roomdag.ErrUnknownRoom) {
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	if st.Membership(user) != roomdag.MembershipJoin {
		return nil, notFound
	}
	ev, err := s.visibleEvent(r, &roomAccess{st: st, membership: roomdag.MembershipJoin}, room, id)
	if err != nil {
		var me *httpapi.Error
		if errors.As(err, &me) && me.Code == httpapi.CodeNotFound {
			return nil, notFound
		}
		return nil, err
	}
	if redacted(ev) {
		return nil, notFound
	}
	_, err = s.store.AddReport(r.Context(), storage.Report{Kind: storage.ReportEvent, Reporter: user, RoomID: room,
		EventID: id, Reason: reason, Score: score, ReceivedMS: s.clock.Now().UnixMilli()})
	if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// redacted reports whether the event was redacted (its unsigned data
// names the redaction).
func redacted(ev *roomdag.StoredEvent) bool {
	var u struct {
		RedactedBecause json.RawMessage `json:"redacted_because"`
	}
	return len(ev.Unsigned) > 0 && json.Unmarshal(ev.Unsigned, &u) == nil && len(u.RedactedBecause) > 0
}

// POST /rooms/{roomId}/report: the reporter need not be in the room.
func (s *Server) reportRoom(r *http.Request) (any, error) {
	room, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	reason, _, err := reportBody(r, false)
	if err != nil {
		return nil, err
	}
	if _, err := s.rooms.State(r.Context(), room); errors.Is(err, roomdag.ErrUnknownRoom) {
		return struct{}{}, nil // the same answer as for a room that exists
	} else if err != nil {
		return nil, err
	}
	_, err = s.store.AddReport(r.Context(), storage.Report{Kind: storage.ReportRoom, Reporter: requester(r).UserID,
		RoomID: room, Reason: reason, ReceivedMS: s.clock.Now().UnixMilli()})
	if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// POST /users/{userId}/report
func (s *Server) reportUser(r *http.Request) (any, error) {
	target, err := roomdag.ParseUserID(httpapi.PathParam(r, "userId"))
	if err != nil {
		return nil, httpapi.InvalidParam("malformed user ID")
	}
	reason, _, err := reportBody(r, false)
	if err != nil {
		return nil, err
	}
	if target.Server() != s.cfg.ServerName {
		return struct{}{}, nil // not ours to act on; say nothing about them
	}
	if _, err := s.store.User(r.Context(), target); errors.Is(err, storage.ErrNotFound) {
		return struct{}{}, nil // the same answer as for a user who exists
	} else if err != nil {
		return nil, err
	}
	_, err = s.store.AddReport(r.Context(), storage.Report{Kind: storage.ReportUser, Reporter: requester(r).UserID,
		TargetUser: target, Reason: reason, ReceivedMS: s.clock.Now().UnixMilli()})
	if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// reportJSON is one report in an admin listing, with Synapse's field
// names: user_id is the reporter.
type reportJSON struct {
	ID           int64           `json:"id"`
	ReceivedTS   int64           `json:"received_ts"`
	UserID       roomdag.UserID  `json:"user_id"`
	RoomID       roomdag.RoomID  `json:"room_id,omitempty"`
	EventID      roomdag.EventID `json:"event_id,omitempty"`
	TargetUserID roomdag.UserID  `json:"target_user_id,omitempty"`
	Reason       string          `json:"reason"`
	Score        *int            `json:"score,omitempty"`
}

// listReports is Synapse's admin listing of one kind of report:
// ?from=<offset>&limit=<n>&dir=b|f, newest first by default; next_token
// is the offset of the next page. Server administrators only.
func (s *Server) listReports(kind storage.ReportKind, key string) httpapi.Func {
	return func(r *http.Request) (any, error) {
		u, err := s.store.User(r.Context(), requester(r).UserID)
		if err != nil {
			return nil, err
		}
		if !u.Admin {
			return nil, httpapi.Forbidden("You are not a server admin")
		}
		q := r.URL.Query()
		from, limit := 0, defaultReportsLimit
		if v := q.Get("from"); v != "" {
			if from, err = strconv.Atoi(v); err != nil || from < 0 {
				return nil, httpapi.InvalidParam("from must be a non-negative integer")
			}
		}
		if v := q.Get("limit"); v != "" {
			if limit, err = strconv.Atoi(v); err != nil || limit < 0 {
				return nil, httpapi.InvalidParam("limit must be a non-negative integer")
			}
			limit = min(limit, maxReportsLimit)
		}
		forward := false
		switch q.Get("dir") {
		case "", "b":
		case "f":
			forward = true
		default:
			return nil, httpapi.InvalidParam("dir must be b or f")
		}
		reports, total, err := s.store.Reports(r.Context(), kind, from, limit, forward)
		if err != nil {
			return nil, err
		}
		list := make([]reportJSON, len(reports))
		for i, rep := range reports {
			list[i] = reportJSON{ID: rep.ID, ReceivedTS: rep.ReceivedMS, UserID: rep.Reporter, RoomID: rep.RoomID,
				EventID: rep.EventID, TargetUserID: rep.TargetUser, Reason: rep.Reason, Score: rep.Score}
		}
		out := map[string]any{key: list, "total": total}
		if from+len(list) < total && len(list) > 0 {
			out["next_token"] = from + len(list)
		}
		return out, nil
	}
}
