package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"github.com/persistentchat/homeserver/sync"
	"net/http"
	"time"
)

// Receipts, read markers and typing notifications (spec: modules
// "Receipts", "Fully read markers", "Typing Notifications"). Receipts and
// markers are durable; typing lives in the syncer's memory.
func (s *Server) receiptRoutes() []route {
	return []route{
		{"POST", v3 + "/rooms/{roomId}/receipt/{receiptType}/{eventId}", s.postReceipt, authRequired, rateNone},
		{"POST", v3 + "/rooms/{roomId}/read_markers", s.postReadMarkers, authRequired, rateNone},
		{"PUT", v3 + "/rooms/{roomId}/typing/{userId}", s.putTyping, authRequired, rateNone},
	}
}

// Receipt and marker types.
const (
	receiptRead        = "m.read"
	receiptReadPrivate = "m.read.private"
	markerFullyRead    = "m.fully_read"
)

// defaultTypingTimeout applies when a typing request gives none.
const defaultTypingTimeout = 30 * time.Second

// joinedRoom checks that the requester is joined to {roomId}.
func (s *Server) joinedRoom(r *http.Request) (roomdag.RoomID, error) {
	room, err := roomParam(r)
	if err != nil {
		return "", err
	}
	st, err := s.rooms.State(r.Context(), room)
	if err != nil {
		return "", err
	}
	if st.Membership(requester(r).UserID) != roomdag.MembershipJoin {
		return "", httpapi.Forbidden("you are not joined to this room")
	}
	return room, nil
}

// roomEvent loads an event of the room by its (unparsed) ID: 404 unless
// it exists there.
func (s *Server) roomEvent(r *http.Request, room roomdag.RoomID, raw string) (*roomdag.StoredEvent, error) {
	id, err := roomdag.ParseEventID(raw)
	if err != nil {
		return nil, httpapi.InvalidParam("malformed event ID")
	}
	ev, err := s.store.Event(r.Context(), id)
	if errors.Is(err, storage.ErrNotFound) || err == nil && ev.RoomID() != room {
		return nil, httpapi.NotFound("event %s not found in this room", id)
	}
	return ev, err
}

// receiptEvent loads the event a joined member marks as read: 404 unless
// it is in the room, and 403 unless its history visibility lets the
// member see it (say, a message from before they joined a room whose
// history is "joined"), as Synapse answers ("You don't have permission to
// access that event"): a receipt must not record, and announce to the
// room, an event its sender could not have read.
func (s *Server) receiptEvent(r *http.Request, room roomdag.RoomID, raw string) (*roomdag.StoredEvent, error) {
	ev, err := s.roomEvent(r, room, raw)
	if err != nil {
		return nil, err
	}
	visible, err := sync.FilterVisible(r.Context(), s.store, requester(r).UserID, roomdag.MembershipJoin, []*roomdag.StoredEvent{ev})
	if err != nil {
		return nil, err
	}
	if len(visible) == 0 {
		return nil, httpapi.Forbidden("you don't have permission to access event %s", ev.ID())
	}
	return ev, nil
}

func (s *Server) postReceipt(r *http.Request) (any, error) {
	typ := httpapi.PathParam(r, "receiptType")
	switch typ {
	case receiptRead, receiptReadPrivate, markerFullyRead:
	default:
		return nil, httpapi.InvalidParam("receipt type must be m.read, m.read.private or m.fully_read")
	}
	var body struct {
		ThreadID json.RawMessage `json:"thread_id"`
	}
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	thread, err := threadID(body.ThreadID)
	if err != nil {
		return nil, err
	}
	if thread != "" && typ == markerFullyRead {
		return nil, httpapi.InvalidParam("thread_id is not compatible with m.fully_read")
	}
	room, err := s.joinedRoom(r)
	if err != nil {
		return nil, err
	}
	ev, err := s.receiptEvent(r, room, httpapi.PathParam(r, "eventId"))
	if err != nil {
		return nil, err
	}
	if typ == markerFullyRead {
		return struct{}{}, s.setFullyRead(r, room, ev)
	}
	return struct{}{}, s.setReceipt(r, room, typ, thread, ev)
}

// threadID checks an optional thread_id: "main" or a thread root's event
// ID; "" when absent (an unthreaded receipt).
func threadID(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return "", nil
	}
	var t string
	if json.Unmarshal(raw, &t) != nil || t == "" {
		return "", httpapi.InvalidParam("thread_id field must be a non-empty string")
	}
	if t != "main" {
		if _, err := roomdag.ParseEventID(t); err != nil {
			return "", httpapi.InvalidParam("thread_id must be \"main\" or an event ID")
		}
	}
	return t, nil
}

// setReceipt stores a receipt and, if it moved, tells the notifier.
// Receipts never move back: one for an earlier event is accepted and
// ignored, as Synapse does.
func (s *Server) setReceipt(r *http.Request, room roomdag.RoomID, typ, thread string, ev *roomdag.StoredEvent) error {
	user := requester(r).UserID
	pos, err := s.store.PutReceipt(r.Context(), room, typ, user, thread, ev.ID(), ev.Pos, s.clock.Now().UnixMilli())
	if err != nil {
		return err
	}
	if pos > 0 { // the store's commit hook announced it (sync.Notifier.Apply)
		s.noteReceipt(room, user, typ, thread, ev.ID(), s.clock.Now().UnixMilli())
	}
	return nil
}

// setFullyRead moves the m.fully_read room account data forward.
func (s *Server) setFullyRead(r *http.Request, room roomdag.RoomID, ev *roomdag.StoredEvent) error {
	user := requester(r).UserID
	// The store's commit hook announces a move (sync.Notifier.Apply).
	_, err := s.store.PutFullyRead(r.Context(), user, room, ev.ID(), ev.Pos)
	return err
}

func (s *Server) postReadMarkers(r *http.Request) (any, error) {
	var body struct {
		FullyRead   *string `json:"m.fully_read"`
		Read        *string `json:"m.read"`
		ReadPrivate *string `json:"m.read.private"`
	}
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	room, err := s.joinedRoom(r)
	if err != nil {
		return nil, err
	}
	// Check every event before changing anything.
	type mark struct {
		typ string
		ev  *roomdag.StoredEvent
	}
	var marks []mark
	for _, m := range []struct {
		typ string
		id  *string
	}{{markerFullyRead, body.FullyRead}, {receiptRead, body.Read}, {receiptReadPrivate, body.ReadPrivate}} {
		if m.id == nil {
			continue
		}
		ev, err := s.receiptEvent(r, room, *m.id)
		if err != nil {
			return nil, err
		}
		marks = append(marks, mark{m.typ, ev})
	}
	for _, m := range marks {
		if m.typ == markerFullyRead {
			err = s.setFullyRead(r, room, m.ev)
		} else {
			err = s.setReceipt(r, room, m.typ, "", m.ev)
		}
		if err != nil {
			return nil, err
		}
	}
	return struct{}{}, nil
}

func (s *Server) putTyping(r *http.Request) (any, error) {
	user, err := ownUser(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		Typing  *bool  `json:"typing"`
		Timeout *int64 `json:"timeout"`
	}
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.Typing == nil {
		return nil, httpapi.MissingParam("typing is required")
	}
	timeout := defaultTypingTimeout
	if body.Timeout != nil {
		if *body.Timeout < 0 {
			return nil, httpapi.InvalidParam("timeout must not be negative")
		}
		timeout = time.Duration(min(*body.Timeout, int64(time.Hour/time.Millisecond))) * time.Millisecond
	}
	room, err := s.joinedRoom(r)
	if err != nil {
		return nil, err
	}
	if err := s.sync.SetTyping(r.Context(), room, user, *body.Typing, timeout); err != nil {
		return nil, err
	}
	s.noteTyping(room, user, *body.Typing, timeout)
	return struct{}{}, nil
}
