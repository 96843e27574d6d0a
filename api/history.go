package api

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"github.com/persistentchat/homeserver/sync"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
)

func (s *Server) historyRoutes() []route {
	return []route{
		{"GET", v3 + "/rooms/{roomId}/event/{eventId}", s.getEvent, authRequired, rateNone},
		{"GET", v3 + "/rooms/{roomId}/context/{eventId}", s.getContext, authRequired, rateNone},
		{"GET", v3 + "/rooms/{roomId}/messages", s.messages, authRequired, rateNone},
		{"GET", v1 + "/rooms/{roomId}/timestamp_to_event", s.timestampToEvent, authRequired, rateNone},
		{"GET", v3 + "/rooms/{roomId}/members", s.members, authRequired, rateNone},
		{"GET", v3 + "/rooms/{roomId}/joined_members", s.joinedMembers, authRequired, rateNone},
		{"GET", v3 + "/rooms/{roomId}/state", s.getState, authRequired, rateNone},
		{"GET", v3 + "/rooms/{roomId}/state/{eventType}", s.getStateEvent, authRequired, rateNone},
		{"GET", v3 + "/rooms/{roomId}/state/{eventType}/", s.getStateEvent, authRequired, rateNone},
		{"GET", v3 + "/rooms/{roomId}/state/{eventType}/{stateKey}", s.getStateEvent, authRequired, rateNone},
	}
}

// roomAccess is what a user may read of a room.
type roomAccess struct {
	st *roomdag.RoomState
	// membership is the user's current membership ("" if none).
	membership string
	// stateSnap is the snapshot of the state the user may see: the current
	// state if joined (or the room is world readable), else the state when
	// they left. 0 means "current".
	stateSnap int64
}

// access decides whether the user may read the room at all: members, past
// members (up to when they left) and anyone if it is world readable.
func (s *Server) access(ctx context.Context, room roomdag.RoomID, user roomdag.UserID) (*roomAccess, error) {
	st, err := s.rooms.State(ctx, room)
	if errors.Is(err, roomdag.ErrUnknownRoom) {
		return nil, httpapi.Forbidden("you are not in room %s", room)
	}
	if err != nil {
		return nil, err
	}
	a := &roomAccess{st: st, membership: st.Membership(user)}
	switch {
	case a.membership == roomdag.MembershipJoin:
		return a, nil
	case roomdag.HistoryVisibility(st.State) == roomdag.VisibilityWorldReadable:
		return a, nil
	case a.membership == roomdag.MembershipLeave || a.membership == roomdag.MembershipBan:
		// spec (forget): "After this API is called, however, a user will no
		// longer be able to retrieve history for this room."
		if forgot, err := s.forgotten(ctx, room, user); err != nil {
			return nil, err
		} else if forgot {
			return nil, httpapi.Forbidden("you are not in room %s", room)
		}
		ev := st.State.Get(roomdag.TypeMember, string(user))
		place, err := s.store.EventPlace(ctx, ev.ID())
		if err != nil {
			return nil, err
		}
		a.stateSnap = place.StateAfter
		return a, nil
	}
	return nil, httpapi.Forbidden("you are not in room %s", room)
}

// forgotten reports whether the user has forgotten the room.
func (s *Server) forgotten(ctx context.Context, room roomdag.RoomID, user roomdag.UserID) (bool, error) {
	rooms, err := s.store.UserRooms(ctx, user)
	if err != nil {
		return false, err
	}
	for _, m := range rooms {
		if m.RoomID == room {
			return m.Forgotten, nil
		}
	}
	return false, nil
}

// readableState parses {roomId} and returns the room, the requester's
// access and the state they may see.
func (s *Server) readableState(r *http.Request) (roomdag.RoomID, *roomAccess, roomdag.StateMap, error) {
	room, err := roomParam(r)
	if err != nil {
		return "", nil, nil, err
	}
	a, err := s.access(r.Context(), room, requester(r).UserID)
	if err != nil {
		return "", nil, nil, err
	}
	st, err := s.visibleState(r.Context(), a)
	return room, a, st, err
}

// visibleState returns the state the user may see.
func (s *Server) visibleState(ctx context.Context, a *roomAccess) (roomdag.StateMap, error) {
	if a.stateSnap == 0 {
		return a.st.State, nil
	}
	return s.store.StateEvents(ctx, a.stateSnap)
}

func (s *Server) view(r *http.Request) roomdag.ClientView {
	rq := requester(r)
	return roomdag.ClientView{NowMS: s.clock.Now().UnixMilli(), UserID: rq.UserID, DeviceID: rq.DeviceID}
}

func (s *Server) getEvent(r *http.Request) (any, error) {
	room, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	id, err := eventParam(r)
	if err != nil {
		return nil, err
	}
	user := requester(r).UserID
	a, err := s.access(r.Context(), room, user)
	if err != nil {
		return nil, hideForbidden(err)
	}
	ignored, err := sync.IgnoredUsers(r.Context(), s.store, user)
	if err != nil {
		return nil, err
	}
	ev, err := s.shownEvent(r, a, room, id, ignored)
	if err != nil {
		return nil, err
	}
	view, err := s.timelineView(r, ignored, []*roomdag.StoredEvent{ev})
	if err != nil {
		return nil, err
	}
	return ev.ClientJSON(view), nil
}

// timelineView is the requester's view of events of the timeline: their
// bundled aggregations (sync.Bundle) and the requester's membership at
// each (sync.MembershipTrails: MSC4115, one lookup per room).
func (s *Server) timelineView(r *http.Request, ignored sync.Ignored, evs ...[]*roomdag.StoredEvent) (roomdag.ClientView, error) {
	var all []*roomdag.StoredEvent
	if len(evs) == 1 {
		all = evs[0]
	} else {
		for _, l := range evs {
			all = append(all, l...)
		}
	}
	view, err := sync.Bundle(r.Context(), s.store, s.view(r), ignored, all)
	if err != nil {
		return view, err
	}
	return sync.MembershipTrails(r.Context(), s.store, view, nil, all)
}

// clientEvents renders evs of the timeline for the requester
// (timelineView).
func (s *Server) clientEvents(r *http.Request, ignored sync.Ignored, evs []*roomdag.StoredEvent) ([]json.RawMessage, error) {
	view, err := s.timelineView(r, ignored, evs)
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, 0, len(evs))
	for _, ev := range evs {
		out = append(out, ev.ClientJSON(view))
	}
	return out, nil
}

// hideForbidden turns a refusal to read a room into 404: /event and
// /context answer "The event was not found or you do not have permission
// to read this event" alike (spec; Complement TestFetchEventNonWorldReadable).
func hideForbidden(err error) error {
	var me *httpapi.Error
	if errors.As(err, &me) && me.Status == http.StatusForbidden {
		return httpapi.NotFound("event not found")
	}
	return err
}

// visibleEvent loads an event of the room the user may see, else 404.
func (s *Server) visibleEvent(r *http.Request, a *roomAccess, room roomdag.RoomID, id roomdag.EventID) (*roomdag.StoredEvent, error) {
	ev, err := s.store.Event(r.Context(), id)
	if errors.Is(err, storage.ErrNotFound) || err == nil && ev.RoomID() != room {
		return nil, httpapi.NotFound("event not found")
	}
	if err != nil {
		return nil, err
	}
	ok, err := sync.FilterVisible(r.Context(), s.store, requester(r).UserID, a.membership, []*roomdag.StoredEvent{ev})
	if err != nil {
		return nil, err
	}
	if len(ok) == 0 {
		return nil, httpapi.NotFound("event not found")
	}
	return ev, nil
}

// shownEvent is visibleEvent for an event the requester reads as part of
// the timeline (/event, the event of /context, the parent of /relations):
// a message of a user they ignore is not found either, as Synapse answers
// /event (spec: "Ignoring Users"; state events stay).
func (s *Server) shownEvent(r *http.Request, a *roomAccess, room roomdag.RoomID, id roomdag.EventID, ignored sync.Ignored) (*roomdag.StoredEvent, error) {
	ev, err := s.visibleEvent(r, a, room, id)
	if err != nil {
		return nil, err
	}
	if ignored.Hides(ev.Event) {
		return nil, httpapi.NotFound("event not found")
	}
	return ev, nil
}

// maxPageLimit bounds /messages and /context pages.
const maxPageLimit = 1000

func queryLimit(r *http.Request, def int) (int, error) {
	l := r.URL.Query().Get("limit")
	if l == "" {
		return def, nil
	}
	n, err := strconv.Atoi(l)
	if err != nil || n < 0 {
		return 0, httpapi.InvalidParam("limit must be a non-negative integer")
	}
	return min(n, maxPageLimit), nil
}

func queryFilter(r *http.Request) (*sync.RoomEventFilter, error) {
	f := &sync.RoomEventFilter{}
	if raw := r.URL.Query().Get("filter"); raw != "" {
		if len(raw) > sync.MaxFilterBytes {
			return nil, httpapi.BadJSON("filter is too large")
		}
		if err := json.Unmarshal([]byte(raw), f); err != nil {
			return nil, httpapi.BadJSON("invalid filter: %v", err)
		}
	}
	return f, nil
}

// topoFrom parses a /messages token: our topological token, or a sync
// token (next_batch), which points just after the room's newest event at
// that position.
func (s *Server) topoFrom(ctx context.Context, room roomdag.RoomID, tok string) (storage.TopoPos, error) {
	if strings.HasPrefix(tok, "t") {
		t, err := sync.ParseTopoToken(tok)
		if err != nil {
			return storage.TopoPos{}, httpapi.InvalidParam("malformed pagination token")
		}
		return storage.TopoPos{Depth: t.Depth, Pos: t.Pos}, nil
	}
	st, err := sync.ParseToken(tok)
	if err != nil {
		return storage.TopoPos{}, httpapi.InvalidParam("malformed pagination token")
	}
	t, err := s.store.TopoAtStream(ctx, room, st.Events)
	if errors.Is(err, storage.ErrNotFound) {
		return storage.TopoPos{}, nil
	}
	return t, err
}

func topoString(t storage.TopoPos) string {
	return sync.TopoToken{Depth: t.Depth, Pos: t.Pos}.String()
}

// maxScan bounds how many events one /messages call reads while skipping
// events the user may not see; the client continues from `end`.
const maxScan = 5000

func (s *Server) messages(r *http.Request) (any, error) {
	room, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	// Who may read the room is settled before the parameters: a room the
	// user may not page (one they forgot, say) is 403 whatever they ask
	// (Complement "Forgotten room messages cannot be paginated" sends no
	// dir).
	user := requester(r).UserID
	a, err := s.access(r.Context(), room, user)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	dir := q.Get("dir")
	if dir != "b" && dir != "f" {
		return nil, httpapi.InvalidParam("dir must be b or f")
	}
	backwards := dir == "b"
	limit, err := queryLimit(r, 10)
	if err != nil {
		return nil, err
	}
	filter, err := queryFilter(r)
	if err != nil {
		return nil, err
	}
	if filter.Limit > 0 {
		limit = min(filter.Limit, maxPageLimit)
	}
	var from storage.TopoPos
	switch {
	case q.Get("from") != "":
		if from, err = s.topoFrom(r.Context(), room, q.Get("from")); err != nil {
			return nil, err
		}
	case backwards:
		from = storage.TopoPos{Depth: math.MaxInt64, Pos: math.MaxInt64}
	}
	var to *storage.TopoPos
	if q.Get("to") != "" {
		t, err := s.topoFrom(r.Context(), room, q.Get("to"))
		if err != nil {
			return nil, err
		}
		to = &t
	}
	startTok := q.Get("from")
	if startTok == "" {
		startTok = topoString(from)
	}
	// Events of ignored users are left out, as from /sync (spec: "Ignoring
	// Users"), except state events.
	ignored, err := sync.IgnoredUsers(r.Context(), s.store, user)
	if err != nil {
		return nil, err
	}
	var kept []*roomdag.StoredEvent
	senders := map[roomdag.UserID]bool{}
	cursor, scanned, more := from, 0, true
	// A token names the place just before the event at its position (a
	// sync prev_batch is the position of the timeline's first event), in
	// both directions: dir=b returns the events before it, dir=f the events
	// from it on. The store pages strictly after a position, so forwards
	// starts one short of the token.
	if !backwards && q.Get("from") != "" {
		cursor.Pos--
	}
	// Paging back to events whose prev_events this server lacks asks
	// other servers for what lies before them, once per call
	// (Config.Backfill); the batch is then read again, with what came.
	backfilled := !backwards || to != nil || s.cfg.Backfill == nil
	for len(kept) < limit && more && scanned < maxScan {
		var batch []*roomdag.StoredEvent
		batch, more, err = s.store.RoomEventsTopo(r.Context(), room, cursor, backwards, min(limit-len(kept), 200)+1)
		if err != nil {
			return nil, err
		}
		if to != nil {
			batch, more = cutAt(batch, *to, backwards, more)
		}
		if !backfilled {
			evs := make([]*roomdag.Event, len(batch))
			for i, ev := range batch {
				evs[i] = ev.Event
			}
			if len(batch) == 0 {
				// Nothing before the token: the event at it (a sync's
				// prev_batch, a page's end) may be the oldest held.
				at := cursor
				at.Pos--
				edge, _, err := s.store.RoomEventsTopo(r.Context(), room, at, false, 1)
				if err != nil {
					return nil, err
				}
				for _, ev := range edge {
					if ev.Depth() == cursor.Depth && ev.Pos == cursor.Pos {
						evs = append(evs, ev.Event)
					}
				}
			}
			n, err := s.cfg.Backfill.Backfill(r.Context(), room, evs, min(max(limit-len(kept), minBackfill), maxPageLimit))
			if err != nil {
				s.log.Info("backfill failed", "room", room, "err", err)
			}
			if n > 0 {
				backfilled, more = true, true
				continue
			}
		}
		scanned += len(batch)
		if len(batch) > 0 {
			last := batch[len(batch)-1]
			cursor = storage.TopoPos{Depth: last.Depth(), Pos: last.Pos}
		}
		visible, err := sync.FilterVisible(r.Context(), s.store, user, a.membership, batch)
		if err != nil {
			return nil, err
		}
		for _, ev := range visible {
			if len(kept) == limit {
				more = true
				break
			}
			if filter.AllowsEvent(ev.Event) && !ignored.Hides(ev.Event) {
				kept = append(kept, ev)
				senders[ev.Sender()] = true
			}
			cursor = storage.TopoPos{Depth: ev.Depth(), Pos: ev.Pos}
		}
	}
	chunk, err := s.clientEvents(r, ignored, kept)
	if err != nil {
		return nil, err
	}
	resp := map[string]any{"start": startTok, "chunk": chunk}
	// end is there whenever this call read events, even when it reached
	// the edge of the room, and missing only when there was nothing left
	// to read: so Synapse answers, and clients page until end is missing
	// (an empty page with no end is where they stop). Forwards, the end at
	// the newest event is where a client resumes when more arrive.
	if more || scanned > 0 {
		end := cursor
		if !backwards {
			end.Pos++ // the place just after the last event read
		}
		resp["end"] = topoString(end)
	}
	if filter.LazyLoadMembers {
		state := []json.RawMessage{}
		cur, err := s.visibleState(r.Context(), a)
		if err != nil {
			return nil, err
		}
		view := s.view(r) // state events get no bundled aggregations
		for u := range senders {
			if ev := cur.Get(roomdag.TypeMember, string(u)); ev != nil {
				state = append(state, s.clientState(r, ev, view))
			}
		}
		resp["state"] = state
	}
	return resp, nil
}

// Backfiller fetches history from other servers: for the first of evs
// (events of room a page read, newest first) whose prev_events this
// server lacks, up to limit events before it. It returns how many events
// it stored.
type Backfiller interface {
	Backfill(ctx context.Context, room roomdag.RoomID, evs []*roomdag.Event, limit int) (int, error)
}

// minBackfill is the least one backfill asks for: each costs the other
// server a walk and this one a look at the state before the oldest.
const minBackfill = 50

// cutAt drops the events of batch beyond the `to` token.
func cutAt(batch []*roomdag.StoredEvent, to storage.TopoPos, backwards, more bool) ([]*roomdag.StoredEvent, bool) {
	for i, ev := range batch {
		p := storage.TopoPos{Depth: ev.Depth(), Pos: ev.Pos}
		beyond := backwards && topoLess(p, to) || !backwards && !topoLess(p, to)
		if beyond {
			return batch[:i], false
		}
	}
	return batch, more
}

func topoLess(a, b storage.TopoPos) bool {
	return a.Depth < b.Depth || a.Depth == b.Depth && a.Pos < b.Pos
}

func (s *Server) getContext(r *http.Request) (any, error) {
	room, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	id, err := eventParam(r)
	if err != nil {
		return nil, err
	}
	limit, err := queryLimit(r, 10)
	if err != nil {
		return nil, err
	}
	filter, err := queryFilter(r)
	if err != nil {
		return nil, err
	}
	user := requester(r).UserID
	a, err := s.access(r.Context(), room, user)
	if err != nil {
		return nil, hideForbidden(err)
	}
	// The event and those around it are the timeline: ignored users' are
	// left out.
	ignored, err := sync.IgnoredUsers(r.Context(), s.store, user)
	if err != nil {
		return nil, err
	}
	ev, err := s.shownEvent(r, a, room, id, ignored)
	if err != nil {
		return nil, err
	}
	at := storage.TopoPos{Depth: ev.Depth(), Pos: ev.Pos}
	page := func(backwards bool, n int) (storage.TopoPos, []*roomdag.StoredEvent, error) {
		var kept []*roomdag.StoredEvent
		cursor := at
		if n == 0 {
			return cursor, nil, nil
		}
		evs, _, err := s.store.RoomEventsTopo(r.Context(), room, at, backwards, n)
		if err != nil {
			return cursor, nil, err
		}
		vis, err := sync.FilterVisible(r.Context(), s.store, user, a.membership, evs)
		if err != nil {
			return cursor, nil, err
		}
		for _, e := range evs {
			cursor = storage.TopoPos{Depth: e.Depth(), Pos: e.Pos}
		}
		for _, e := range vis {
			if filter.AllowsEvent(e.Event) && !ignored.Hides(e.Event) {
				kept = append(kept, e)
			}
		}
		return cursor, kept, nil
	}
	start, beforeEvs, err := page(true, limit/2)
	if err != nil {
		return nil, err
	}
	end, afterEvs, err := page(false, limit-limit/2)
	if err != nil {
		return nil, err
	}
	view, err := s.timelineView(r, ignored, []*roomdag.StoredEvent{ev}, beforeEvs, afterEvs)
	if err != nil {
		return nil, err
	}
	stateView := s.view(r) // state events get neither aggregations nor unsigned.membership
	before, after := make([]json.RawMessage, 0, len(beforeEvs)), make([]json.RawMessage, 0, len(afterEvs))
	for _, e := range beforeEvs {
		before = append(before, e.ClientJSON(view))
	}
	for _, e := range afterEvs {
		after = append(after, e.ClientJSON(view))
	}
	// The state at the last event returned.
	last := ev
	if len(afterEvs) > 0 {
		last = afterEvs[len(afterEvs)-1]
	}
	place, err := s.store.EventPlace(r.Context(), last.ID())
	if err != nil {
		return nil, err
	}
	stateEvs, err := s.store.StateEvents(r.Context(), place.StateAfter)
	if err != nil {
		return nil, err
	}
	// Lazy loading keeps the members who sent the returned events (all
	// three parts of the reply) and the requester.
	senders := map[string]bool{string(ev.Sender()): true, string(user): true}
	for _, evs := range [][]*roomdag.StoredEvent{beforeEvs, afterEvs} {
		for _, e := range evs {
			senders[string(e.Sender())] = true
		}
	}
	state := []json.RawMessage{}
	for _, se := range sortedState(stateEvs) {
		if filter.LazyLoadMembers && se.Type() == roomdag.TypeMember && !senders[*se.StateKey()] {
			continue
		}
		state = append(state, s.clientState(r, se, stateView))
	}
	// Tokens sit just beyond the returned events, so paging from them
	// continues without repeating: start is the place before the oldest
	// event, end the place after the newest (see messages).
	end.Pos++
	return map[string]any{
		"event": ev.ClientJSON(view), "events_before": before, "events_after": after,
		"start": topoString(start), "end": topoString(end), "state": state,
	}, nil
}

func sortedState(m roomdag.StateMap) []*roomdag.Event {
	out := make([]*roomdag.Event, 0, len(m))
	for _, ev := range m {
		out = append(out, ev)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Type() != out[j].Type() {
			return out[i].Type() < out[j].Type()
		}
		return *out[i].StateKey() < *out[j].StateKey()
	})
	return out
}

func (s *Server) getState(r *http.Request) (any, error) {
	_, _, st, err := s.readableState(r)
	if err != nil {
		return nil, err
	}
	view := s.view(r)
	out := []json.RawMessage{}
	for _, ev := range sortedState(st) {
		out = append(out, s.clientState(r, ev, view))
	}
	return out, nil
}

func (s *Server) getStateEvent(r *http.Request) (any, error) {
	_, _, st, err := s.readableState(r)
	if err != nil {
		return nil, err
	}
	ev := st.Get(httpapi.PathParam(r, "eventType"), httpapi.PathParam(r, "stateKey"))
	if ev == nil {
		return nil, httpapi.NotFound("no such state event")
	}
	// format=event (v1.16) returns the whole event instead of its content.
	if r.URL.Query().Get("format") == "event" {
		return s.clientState(r, ev, s.view(r)), nil
	}
	return ev.Content(), nil
}

func (s *Server) members(r *http.Request) (any, error) {
	room, a, st, err := s.readableState(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	if at := q.Get("at"); at != "" {
		// spec: at is "obtained from a prev_batch token returned for each
		// room by the sync API", so it is a place in the room's history;
		// a next_batch is accepted too, as by /messages.
		place, err := s.topoFrom(r.Context(), room, at)
		if err != nil {
			return nil, err
		}
		ev, err := s.eventBeforePlace(r.Context(), room, place)
		if err != nil {
			return nil, err
		}
		var snap int64
		if ev != nil {
			// As Synapse: the state at a point the user may not see
			// (before they joined a room that hides earlier history) is
			// theirs no more than the events there.
			if ok, err := sync.FilterVisible(r.Context(), s.store, requester(r).UserID, a.membership, []*roomdag.StoredEvent{ev}); err != nil {
				return nil, err
			} else if len(ok) == 0 {
				return nil, httpapi.Forbidden("you may not see the room's members at that point")
			}
			p, err := s.store.EventPlace(r.Context(), ev.ID())
			if err != nil {
				return nil, err
			}
			snap = p.StateAfter
		}
		if a.stateSnap == 0 || snap < a.stateSnap {
			if st, err = s.store.StateEvents(r.Context(), snap); err != nil {
				return nil, err
			}
		}
	}
	want, notWant := q.Get("membership"), q.Get("not_membership")
	view := s.view(r)
	chunk := []json.RawMessage{}
	for _, ev := range sortedState(st) {
		if ev.Type() != roomdag.TypeMember {
			continue
		}
		m := ev.Membership()
		if want != "" && m != want || notWant != "" && m == notWant {
			continue
		}
		chunk = append(chunk, s.clientState(r, ev, view))
	}
	return map[string]any{"chunk": chunk}, nil
}

// eventBeforePlace is the newest event before a pagination token's
// place: the state after it is the state there.
//
// A place before the room's first event, as the prev_batch of a timeline
// that begins at m.room.create, would have no state at all; it stands for
// the room as created instead, the creator's join, so that the members
// there include the creator (Complement TestGetRoomMembersAtPoint asks for
// the members at an initial sync's prev_batch of a new room and expects
// its creator). It is nil only for a room without a creator's join.
func (s *Server) eventBeforePlace(ctx context.Context, room roomdag.RoomID, place storage.TopoPos) (*roomdag.StoredEvent, error) {
	evs, _, err := s.store.RoomEventsTopo(ctx, room, place, true, 1)
	if err != nil {
		return nil, err
	}
	if len(evs) > 0 {
		return evs[0], nil
	}
	// The creation events come first: the creator's join is among the
	// first few.
	if evs, _, err = s.store.RoomEventsTopo(ctx, room, storage.TopoPos{}, false, 8); err != nil {
		return nil, err
	}
	if len(evs) == 0 || evs[0].Type() != roomdag.TypeCreate {
		return nil, nil
	}
	for _, ev := range evs {
		if ev.Type() == roomdag.TypeMember && ev.StateKeyIs(string(evs[0].Sender())) && ev.Membership() == roomdag.MembershipJoin {
			return ev, nil
		}
	}
	return nil, nil
}

func (s *Server) joinedMembers(r *http.Request) (any, error) {
	room, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	a, err := s.access(r.Context(), room, requester(r).UserID)
	if err != nil {
		return nil, err
	}
	if a.membership != roomdag.MembershipJoin && roomdag.HistoryVisibility(a.st.State) != roomdag.VisibilityWorldReadable {
		return nil, httpapi.Forbidden("you are not joined to this room")
	}
	joined := map[string]any{}
	for k, ev := range a.st.State {
		if k.Type != roomdag.TypeMember || ev.Membership() != roomdag.MembershipJoin {
			continue
		}
		var c struct {
			DisplayName *string `json:"displayname"`
			AvatarURL   *string `json:"avatar_url"`
		}
		_ = json.Unmarshal(ev.Content(), &c)
		joined[k.StateKey] = map[string]any{"display_name": c.DisplayName, "avatar_url": c.AvatarURL}
	}
	return map[string]any{"joined": joined}, nil
}

// clientState renders a state event from its stored copy, which carries
// the server-kept unsigned fields (prev_content, replaces_state,
// redacted_because) that the in-memory state does not. Stored events are
// cached, so this costs no query for the state of busy rooms.
func (s *Server) clientState(r *http.Request, ev *roomdag.Event, view roomdag.ClientView) json.RawMessage {
	if st, err := s.store.Event(r.Context(), ev.ID()); err == nil {
		return st.ClientJSON(view)
	}
	return (&roomdag.StoredEvent{Event: ev}).ClientJSON(view)
}
