package federation

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"

	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// Events and state for other servers (server-server API, "Retrieving
// events", "Backfilling and retrieving missing events", "Retrieving event
// authorisation information"). A server may ask about an event it may see
// (roomdag.ServerCanSee), or any event of a room it is in or that is
// world readable now (viewer.mayAsk); others get 403 M_FORBIDDEN. Events
// it may not see are sent redacted, as Synapse sends them.

const (
	// maxBackfill bounds one /backfill answer, whatever limit asks.
	maxBackfill = 100
	// maxAuthChain bounds an auth chain walk: a chain longer than this is
	// not one this server built.
	maxAuthChain = 100_000
	// eventBatch is how many events one storage read asks for.
	eventBatch = 500
)

// txnResponse is a transaction of PDUs as the federation answers hold
// them (single_pdu_transaction, unlimited_pdu_transaction).
type txnResponse struct {
	Origin         roomdag.ServerName `json:"origin"`
	OriginServerTS int64              `json:"origin_server_ts"`
	PDUs           []json.RawMessage  `json:"pdus"`
}

// viewer decides what one request's server may see. Deciding needs only
// a few events of the state before each event (its history visibility
// and the memberships of the server's users), which it reads once per
// state snapshot.
type viewer struct {
	in      *Inbound
	origin  roomdag.ServerName
	current roomdag.StateMap
	before  map[int64]roomdag.StateMap // the parts of snapshots that decide
}

func (in *Inbound) viewer(r *http.Request, st *roomdag.RoomState) *viewer {
	return &viewer{in: in, origin: Origin(r.Context()), current: st.State, before: map[int64]roomdag.StateMap{}}
}

// stateBefore is the whole state before ev.
func (v *viewer) stateBefore(ctx context.Context, ev *roomdag.StoredEvent) (roomdag.StateMap, error) {
	if isOutlier(ev) {
		return nil, httpapi.NotFound("the state at event %s is not known", ev.ID())
	}
	m, err := v.in.Store.StateEvents(ctx, ev.StateBefore)
	return m, unknownState(ev, err)
}

// isOutlier: ev is held with no place in the timeline and no state
// (EventsWithOutliers).
func isOutlier(ev *roomdag.StoredEvent) bool { return ev.Pos == 0 && ev.StateBefore == 0 }

// unknownState: a snapshot the store does not hold is "the server doesn't
// know about the state at that event" (404), not a failure.
func unknownState(ev *roomdag.StoredEvent, err error) error {
	if errors.Is(err, storage.ErrNotFound) {
		return httpapi.NotFound("the state at event %s is not known", ev.ID())
	}
	return err
}

// deciding is the part of the state before ev that ServerCanSee reads.
func (v *viewer) deciding(ctx context.Context, ev *roomdag.StoredEvent) (roomdag.StateMap, error) {
	if m, ok := v.before[ev.StateBefore]; ok {
		return m, nil
	}
	var ids map[roomdag.StateKey]roomdag.EventID
	if isOutlier(ev) {
		// An outlier (the state and auth chain of a room joined over
		// federation): the state before it is not known here, the
		// room's current state decides.
		ids = make(map[roomdag.StateKey]roomdag.EventID, len(v.current))
		for k, e := range v.current {
			ids[k] = e.ID()
		}
	} else {
		var err error
		if ids, err = v.in.Store.Snapshot(ctx, ev.StateBefore); err != nil {
			return nil, unknownState(ev, err)
		}
	}
	var want []roomdag.EventID
	for k, id := range ids {
		if k.Type == roomdag.TypeHistoryVisibility && k.StateKey == "" ||
			k.Type == roomdag.TypeMember && roomdag.UserID(k.StateKey).Server() == v.origin {
			want = append(want, id)
		}
	}
	// In a room joined over federation, the state from before the join
	// is held as outliers.
	evs, err := v.in.Store.EventsWithOutliers(ctx, want)
	if err != nil {
		return nil, err
	}
	m := make(roomdag.StateMap, len(evs))
	for _, e := range evs {
		m[e.Tuple()] = e.Event
	}
	v.before[ev.StateBefore] = m
	return m, nil
}

func (v *viewer) canSee(ctx context.Context, ev *roomdag.StoredEvent) (bool, error) {
	before, err := v.deciding(ctx, ev)
	if err != nil {
		return false, err
	}
	return roomdag.ServerCanSee(ev.Event, before, v.current, v.origin), nil
}

// mayAsk is roomdag.ServerMayAsk: whether the asking server may ask
// about ev at all.
func (v *viewer) mayAsk(ctx context.Context, ev *roomdag.StoredEvent) (bool, error) {
	before, err := v.deciding(ctx, ev)
	if err != nil {
		return false, err
	}
	return roomdag.ServerMayAsk(ev.Event, before, v.current, v.origin), nil
}

// roomEvent is the event of a room-scoped request: the room's state (ACL
// applied) and the event, which must be in that room (else 404) and
// visible to the asking server (else 403).
func (in *Inbound) roomEvent(r *http.Request, room roomdag.RoomID, rawID string) (*roomdag.RoomState, *roomdag.StoredEvent, *viewer, error) {
	st, err := in.room(r, room)
	if err != nil {
		return nil, nil, nil, err
	}
	if rawID == "" {
		return nil, nil, nil, httpapi.MissingParam("event_id is required")
	}
	id, err := roomdag.ParseEventID(rawID)
	if err != nil {
		return nil, nil, nil, httpapi.InvalidParam("%q is not an event ID", rawID)
	}
	evs, err := in.Store.EventsWithOutliers(r.Context(), []roomdag.EventID{id})
	if err != nil {
		return nil, nil, nil, err
	}
	if len(evs) == 0 || evs[0].RoomID() != room {
		return nil, nil, nil, httpapi.NotFound("could not find event %s", id)
	}
	v := in.viewer(r, st)
	ok, err := v.mayAsk(r.Context(), evs[0])
	if err != nil {
		return nil, nil, nil, err
	}
	if !ok {
		return nil, nil, nil, httpapi.Forbidden("server %s may not see event %s", v.origin, id)
	}
	return st, evs[0], v, nil
}

// GET /_matrix/federation/v1/event/{eventId}
func (in *Inbound) event(r *http.Request) (any, error) {
	raw := httpapi.PathParam(r, "eventId")
	id, err := roomdag.ParseEventID(raw)
	if err != nil {
		return nil, httpapi.InvalidParam("%q is not an event ID", raw)
	}
	evs, err := in.Store.EventsWithOutliers(r.Context(), []roomdag.EventID{id})
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 {
		return nil, httpapi.NotFound("could not find event %s", id)
	}
	_, ev, v, err := in.roomEvent(r, evs[0].RoomID(), raw)
	if err != nil {
		return nil, err
	}
	pdus, err := v.redactUnseen(r.Context(), []*roomdag.StoredEvent{ev})
	if err != nil {
		return nil, err
	}
	return in.txn(pdus...), nil
}

func (in *Inbound) txn(pdus ...[]byte) txnResponse {
	out := txnResponse{Origin: in.Server, OriginServerTS: in.Clock.Now().UnixMilli(), PDUs: make([]json.RawMessage, 0, len(pdus))}
	for _, p := range pdus {
		out.PDUs = append(out.PDUs, p)
	}
	return out
}

// stateAt is the state before the event of ?event_id= ("prior to
// considering any state changes induced by the requested event") and the
// auth chain of that state.
func (in *Inbound) stateAt(r *http.Request) (roomdag.StateMap, []*roomdag.StoredEvent, error) {
	room, err := roomParam(r)
	if err != nil {
		return nil, nil, err
	}
	_, ev, v, err := in.roomEvent(r, room, r.URL.Query().Get("event_id"))
	if err != nil {
		return nil, nil, err
	}
	state, err := v.stateBefore(r.Context(), ev)
	if err != nil {
		return nil, nil, err
	}
	starts := make([]*roomdag.Event, 0, len(state))
	for _, e := range state {
		starts = append(starts, e)
	}
	chain, err := in.authChain(r.Context(), starts)
	if err != nil {
		return nil, nil, err
	}
	return state, chain, nil
}

// GET /_matrix/federation/v1/state/{roomId}?event_id=
func (in *Inbound) state(r *http.Request) (any, error) {
	state, chain, err := in.stateAt(r)
	if err != nil {
		return nil, err
	}
	pdus, auth := eventsJSON(sortedState(state)), eventsJSON(chain)
	return map[string]any{"pdus": pdus, "auth_chain": auth}, nil
}

// GET /_matrix/federation/v1/state_ids/{roomId}?event_id=
func (in *Inbound) stateIDs(r *http.Request) (any, error) {
	state, chain, err := in.stateAt(r)
	if err != nil {
		return nil, err
	}
	pdus := make([]roomdag.EventID, 0, len(state))
	for _, e := range sortedState(state) {
		pdus = append(pdus, e.ID())
	}
	auth := make([]roomdag.EventID, 0, len(chain))
	for _, e := range chain {
		auth = append(auth, e.ID())
	}
	return map[string]any{"pdu_ids": pdus, "auth_chain_ids": auth}, nil
}

// eventsJSON is the events' JSON, in order, for a response body.
func eventsJSON[E interface{ JSON() []byte }](evs []E) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(evs))
	for _, e := range evs {
		out = append(out, e.JSON())
	}
	return out
}

// sortedState orders a state map's events by type and state key, so
// that answers are stable.
func sortedState(state roomdag.StateMap) []*roomdag.Event {
	out := make([]*roomdag.Event, 0, len(state))
	for _, e := range state {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b *roomdag.Event) int {
		ka, kb := a.Tuple(), b.Tuple()
		if ka.Type != kb.Type {
			if ka.Type < kb.Type {
				return -1
			}
			return 1
		}
		if ka.StateKey < kb.StateKey {
			return -1
		} else if ka.StateKey > kb.StateKey {
			return 1
		}
		return 0
	})
	return out
}

// GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}
func (in *Inbound) eventAuth(r *http.Request) (any, error) {
	room, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	_, ev, _, err := in.roomEvent(r, room, httpapi.PathParam(r, "eventId"))
	if err != nil {
		return nil, err
	}
	chain, err := in.authChain(r.Context(), []*roomdag.Event{ev.Event})
	if err != nil {
		return nil, err
	}
	auth := make([]json.RawMessage, 0, len(chain))
	for _, e := range chain {
		auth = append(auth, e.JSON())
	}
	return map[string]any{"auth_chain": auth}, nil
}

// authChain is the auth events of starts and theirs, recursively, without
// starts themselves unless one is another's auth event (as Synapse's
// get_auth_chain_ids), oldest (lowest depth) first. Auth events this
// server does not hold are left out.
//
// From room version 12 no event lists the create event among its
// auth_events (the room ID names it), yet it authorises every one: it is
// in the chain of any event but itself. Dendrite refuses a send_join
// answer whose auth_chain lacks it ("sanityCheckAuthChain: response is
// missing m.room.create event").
func (in *Inbound) authChain(ctx context.Context, starts []*roomdag.Event) ([]*roomdag.StoredEvent, error) {
	seen := map[roomdag.EventID]bool{}
	var next []roomdag.EventID
	for _, e := range starts {
		auth := e.AuthEvents()
		if e.Version().DomainlessRoomIDs && !e.IsCreate() {
			auth = append(slices.Clip(auth), roomdag.EventID("$"+string(e.RoomID())[1:]))
		}
		for _, a := range auth {
			if !seen[a] {
				seen[a] = true
				next = append(next, a)
			}
		}
	}
	var out []*roomdag.StoredEvent
	for len(next) > 0 {
		if len(seen) > maxAuthChain {
			return nil, errors.New("auth chain longer than the bound")
		}
		batch := next[:min(len(next), eventBatch)]
		next = next[len(batch):]
		evs, err := in.Store.EventsWithOutliers(ctx, batch)
		if err != nil {
			return nil, err
		}
		for _, e := range evs {
			out = append(out, e)
			for _, a := range e.AuthEvents() {
				if !seen[a] {
					seen[a] = true
					next = append(next, a)
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b *roomdag.StoredEvent) int {
		return cmp.Or(cmp.Compare(a.Depth(), b.Depth()), cmp.Compare(a.Pos, b.Pos))
	})
	return out, nil
}

// GET /_matrix/federation/v1/backfill/{roomId}?v=&limit=
//
// The events of v and those before them, walked along prev_events
// highest depth first, up to limit (at most maxBackfill). The asking
// server must be one that may ask about the events of v (viewer.mayAsk);
// the events it may not see are sent redacted, as Synapse does, so that
// its copy of the DAG stays connected without their content.
func (in *Inbound) backfill(r *http.Request) (any, error) {
	room, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	st, err := in.room(r, room)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	if !q.Has("limit") {
		return nil, httpapi.MissingParam("limit is required")
	}
	limit, err := strconv.Atoi(q.Get("limit"))
	if err != nil || limit < 0 {
		return nil, httpapi.InvalidParam("limit must be a non-negative integer")
	}
	limit = min(limit, maxBackfill)
	if len(q["v"]) == 0 {
		return nil, httpapi.MissingParam("v is required")
	}
	var from []roomdag.EventID
	for _, raw := range q["v"] {
		id, err := roomdag.ParseEventID(raw)
		if err != nil {
			return nil, httpapi.InvalidParam("%q is not an event ID", raw)
		}
		from = append(from, id)
	}
	if len(from) > maxBackfill {
		return nil, httpapi.InvalidParam("at most %d events in v", maxBackfill)
	}
	v := in.viewer(r, st)
	frontier, err := in.visibleStarts(r, v, room, from)
	if err != nil {
		return nil, err
	}
	if len(frontier) == 0 {
		return nil, httpapi.NotFound("none of the events of v is in room %s", room)
	}
	out, err := in.walkPrev(r.Context(), room, frontier, nil, limit, 0)
	if err != nil {
		return nil, err
	}
	pdus, err := v.redactUnseen(r.Context(), out)
	if err != nil {
		return nil, err
	}
	return in.txn(pdus...), nil
}

// visibleStarts are the events of ids in room (others, and unknown ones,
// skipped); 403 if the asking server may not ask about one of them.
func (in *Inbound) visibleStarts(r *http.Request, v *viewer, room roomdag.RoomID, ids []roomdag.EventID) ([]*roomdag.StoredEvent, error) {
	evs, err := in.Store.EventsWithOutliers(r.Context(), ids)
	if err != nil {
		return nil, err
	}
	var out []*roomdag.StoredEvent
	for _, e := range evs {
		if e.RoomID() != room {
			continue
		}
		ok, err := v.mayAsk(r.Context(), e)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, httpapi.Forbidden("server %s may not see event %s", v.origin, e.ID())
		}
		out = append(out, e)
	}
	return out, nil
}

// walkPrev walks room's DAG back along prev_events from frontier
// (included), highest depth first (then newest), as a priority queue
// would, skipping the events of skip and not going below minDepth, until
// it has limit events. Predecessors this server does not hold end the
// walk there.
func (in *Inbound) walkPrev(ctx context.Context, room roomdag.RoomID, frontier []*roomdag.StoredEvent, skip map[roomdag.EventID]bool, limit int, minDepth int64) ([]*roomdag.StoredEvent, error) {
	seen := map[roomdag.EventID]bool{}
	for id := range skip {
		seen[id] = true
	}
	for _, e := range frontier {
		seen[e.ID()] = true
	}
	var out []*roomdag.StoredEvent
	for len(frontier) > 0 && len(out) < limit {
		slices.SortFunc(frontier, func(a, b *roomdag.StoredEvent) int {
			return cmp.Or(cmp.Compare(b.Depth(), a.Depth()), cmp.Compare(b.Pos, a.Pos))
		})
		e := frontier[0]
		frontier = frontier[1:]
		out = append(out, e)
		var prev []roomdag.EventID
		for _, p := range e.PrevEvents() {
			if !seen[p] {
				seen[p] = true
				prev = append(prev, p)
			}
		}
		if len(prev) == 0 {
			continue
		}
		evs, err := in.Store.EventsWithOutliers(ctx, prev)
		if err != nil {
			return nil, err
		}
		for _, pe := range evs {
			if pe.RoomID() == room && pe.Depth() >= minDepth {
				frontier = append(frontier, pe)
			}
		}
	}
	return out, nil
}

// redactUnseen is evs as the asking server gets them: whole where it may
// see them, redacted elsewhere (Synapse's filter_events_for_server with
// redact), so that its copy of the DAG stays connected.
func (v *viewer) redactUnseen(ctx context.Context, evs []*roomdag.StoredEvent) ([][]byte, error) {
	out := make([][]byte, 0, len(evs))
	for _, e := range evs {
		ok, err := v.canSee(ctx, e)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, e.JSON())
			continue
		}
		red, err := roomdag.Redact(e.Version(), e.JSON())
		if err != nil {
			return nil, err
		}
		out = append(out, red)
	}
	return out, nil
}

// maxMissingEvents bounds one /get_missing_events answer.
const maxMissingEvents = 100

// POST /_matrix/federation/v1/get_missing_events/{roomId}
//
// The events before latest_events (not those themselves), breadth first
// along prev_events, not past earliest_events nor below min_depth, up to
// limit (default 10, at most maxMissingEvents), oldest first; those the
// asking server may not see redacted, as /backfill sends them.
func (in *Inbound) getMissingEvents(r *http.Request) (any, error) {
	room, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	st, err := in.room(r, room)
	if err != nil {
		return nil, err
	}
	var body struct {
		Limit          *int              `json:"limit"`
		MinDepth       int64             `json:"min_depth"`
		EarliestEvents []roomdag.EventID `json:"earliest_events"`
		LatestEvents   []roomdag.EventID `json:"latest_events"`
	}
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.LatestEvents == nil || body.EarliestEvents == nil {
		return nil, httpapi.BadJSON("earliest_events and latest_events are required")
	}
	if len(body.LatestEvents) > maxMissingEvents || len(body.EarliestEvents) > 10*maxMissingEvents {
		return nil, httpapi.BadJSON("too many events in earliest_events or latest_events")
	}
	limit := 10
	if body.Limit != nil {
		if *body.Limit < 0 {
			return nil, httpapi.BadJSON("limit must not be negative")
		}
		limit = min(*body.Limit, maxMissingEvents)
	}
	v := in.viewer(r, st)
	latest, err := in.visibleStarts(r, v, room, body.LatestEvents)
	if err != nil {
		return nil, err
	}
	skip := map[roomdag.EventID]bool{}
	for _, id := range body.EarliestEvents {
		skip[id] = true
	}
	// Start from the predecessors of latest_events.
	var prevIDs []roomdag.EventID
	for _, e := range latest {
		skip[e.ID()] = true
	}
	for _, e := range latest {
		for _, p := range e.PrevEvents() {
			if !skip[p] {
				skip[p] = true
				prevIDs = append(prevIDs, p)
			}
		}
	}
	var frontier []*roomdag.StoredEvent
	if len(prevIDs) > 0 {
		evs, err := in.Store.EventsWithOutliers(r.Context(), prevIDs)
		if err != nil {
			return nil, err
		}
		for _, e := range evs {
			if e.RoomID() == room && e.Depth() >= body.MinDepth {
				frontier = append(frontier, e)
			}
		}
	}
	out, err := in.walkPrev(r.Context(), room, frontier, skip, limit, body.MinDepth)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b *roomdag.StoredEvent) int {
		return cmp.Or(cmp.Compare(a.Depth(), b.Depth()), cmp.Compare(a.Pos, b.Pos))
	})
	pdus, err := v.redactUnseen(r.Context(), out)
	if err != nil {
		return nil, err
	}
	events := make([]json.RawMessage, len(pdus))
	for i, p := range pdus {
		events[i] = p
	}
	return map[string]any{"events": events}, nil
}

// GET /_matrix/federation/v1/timestamp_to_event/{roomId}?ts=&dir=
//
// As the client endpoint, on what this server holds; the asking server
// must be one that may ask about the event found (viewer.mayAsk).
func (in *Inbound) timestampToEvent(r *http.Request) (any, error) {
	room, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	st, err := in.room(r, room)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
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
	id, at, err := in.Store.EventNearTimestamp(r.Context(), room, ts, dir == "f")
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httpapi.NotFound("no event found %s %d", map[string]string{"f": "after", "b": "before"}[dir], ts)
	}
	if err != nil {
		return nil, err
	}
	evs, err := in.Store.Events(r.Context(), []roomdag.EventID{id})
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 {
		return nil, httpapi.NotFound("no event found %s %d", map[string]string{"f": "after", "b": "before"}[dir], ts)
	}
	ok, err := in.viewer(r, st).mayAsk(r.Context(), evs[0])
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, httpapi.Forbidden("server %s may not see room %s", Origin(r.Context()), room)
	}
	return map[string]any{"event_id": id, "origin_server_ts": at}, nil
}
