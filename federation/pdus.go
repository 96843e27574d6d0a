package federation

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	gosync "sync"
	"time"

	"github.com/persistentchat/homeserver/roomdag"
)

// Inbound PDUs (server-server API, "Checks performed on receipt of a
// PDU", "Retrieving events"): each PDU of a /send transaction goes into
// its room through roomdag.Rooms.Receive as a live event. When its
// prev_events are unknown, the origin is asked for the events between
// (/get_missing_events); when a gap remains, for the state before the
// event (/state_ids, and the events it names through /event or /state),
// which Receive takes as outliers before the event. The work one PDU
// may cause is bounded (requests, events, time), so a hostile origin
// cannot keep this server fetching.

const (
	// missingEventsLimit is the limit of one /get_missing_events request
	// (Synapse asks for 10; the spec's default).
	missingEventsLimit = 20
	// maxStatePrevs bounds the prev_events whose state one PDU may make
	// this server fetch.
	maxStatePrevs = 5
	// maxFetchedEvents bounds the events fetched for one PDU.
	maxFetchedEvents = 5000
	// MaxPDURequests bounds the requests one PDU makes of its origin: a
	// large state comes in one /state, so only a hostile origin (auth
	// chains it invents one event at a time) meets it.
	MaxPDURequests = 500
	// bulkStateAfter: more state events missing than this are fetched
	// with one /state request rather than one /event each.
	bulkStateAfter = 50
	// fetchParallel is how many /event requests run at once.
	fetchParallel = 4
	// pduTimeout bounds the time one PDU may take, fetches included.
	pduTimeout = 2 * time.Minute
	// maxFetchResponse bounds one answer of the origin (a /state may
	// carry a large room's whole state).
	maxFetchResponse = 64 << 20
)

// PDUReceiver is where received PDUs go (roomdag.Rooms).
type PDUReceiver interface {
	Receive(ctx context.Context, ev *roomdag.Event, opts roomdag.ReceiveOptions) (*roomdag.ReceiveResult, error)
	State(ctx context.Context, id roomdag.RoomID) (*roomdag.RoomState, error)
}

// DAGStore is what the PDU handler reads of the DAG (sqlstore.DB).
type DAGStore interface {
	DAGEvents(ctx context.Context, ids []roomdag.EventID) (map[roomdag.EventID]*roomdag.DAGEvent, error)
	StateEvents(ctx context.Context, snapshot int64) (roomdag.StateMap, error)
}

// RoomPDUs is the PDUHandler of a server that takes part in rooms: it
// receives PDUs into the DAG, fetching what they lack from their origin.
type RoomPDUs struct {
	Server roomdag.ServerName
	Rooms  PDUReceiver
	Store  DAGStore
	// Client fetches missing events from the origin (signed, IP deny-list).
	Client   Client
	Verifier roomdag.SignatureVerifier
	Log      *slog.Logger
}

// ErrNotInRoom: the PDU's room is one this server, or its origin, takes
// no part in.
var ErrNotInRoom = errors.New("not in room")

// HandlePDU implements PDUHandler. Rejected and soft-failed PDUs are
// stored as such and answered nil, as the spec counts them processed.
func (p *RoomPDUs) HandlePDU(ctx context.Context, origin roomdag.ServerName, room roomdag.RoomID, v *roomdag.RoomVersion, id roomdag.EventID, pdu json.RawMessage) error {
	ev, err := roomdag.NewEventFromJSON(v, pdu)
	if err != nil {
		return err
	}
	if ev.RoomID() != room {
		return fmt.Errorf("%w: PDU of room %s filed under %s", roomdag.ErrEventFormat, ev.RoomID(), room)
	}
	st, err := p.Rooms.State(ctx, room)
	if err != nil {
		return err
	}
	if !HasJoinedMember(st.State, p.Server) {
		return fmt.Errorf("%w: this server has no joined member in %s", ErrNotInRoom, room)
	}
	// A server with no one in the room may still send its own user's
	// join, leave or knock (the auth rules then decide).
	if !HasJoinedMember(st.State, origin) && !ownMembership(ev, origin) {
		return fmt.Errorf("%w: server %s has no joined member in %s", ErrNotInRoom, origin, room)
	}
	ctx, cancel := context.WithTimeout(ctx, pduTimeout)
	defer cancel()
	w := &pduWork{p: p, origin: origin, room: room, v: v, kind: roomdag.KindLive}
	res, err := w.receive(ctx, ev, true)
	if err != nil {
		return err
	}
	if res.Status == roomdag.StatusRejected || res.Status == roomdag.StatusSoftFailed {
		p.Log.Info("federation: PDU stored as "+res.Status.String(), "origin", origin, "room", room, "event", id, "reason", res.Rejection)
	}
	return nil
}

// ownMembership reports whether ev is a membership event of origin's
// user about themselves that a server outside the room may send.
func ownMembership(ev *roomdag.Event, origin roomdag.ServerName) bool {
	if ev.Type() != roomdag.TypeMember || !ev.StateKeyIs(string(ev.Sender())) || ev.Sender().Server() != origin {
		return false
	}
	switch ev.Membership() {
	case roomdag.MembershipJoin, roomdag.MembershipLeave, roomdag.MembershipKnock:
		return true
	}
	return false
}

// pduWork is the work one PDU causes, and its bounds.
type pduWork struct {
	p      *RoomPDUs
	origin roomdag.ServerName
	room   roomdag.RoomID
	v      *roomdag.RoomVersion
	// kind is how the events are received: live (a /send PDU and what
	// fills the gap before it) or backfill.
	kind    roomdag.EventKind
	fetched int

	mu       gosync.Mutex
	requests int
}

// receiveRounds bounds the retries of one event after fetching what it
// lacked: its auth events, its prev_events, then the state before it.
const receiveRounds = 5

// receive takes ev as w.kind, fetching what it lacks; missing asks
// /get_missing_events first (not for the events that request returned,
// which fall back to the state before them, nor for backfill, which takes
// the state before the event from /state_ids at it).
func (w *pduWork) receive(ctx context.Context, ev *roomdag.Event, missing bool) (*roomdag.ReceiveResult, error) {
	opts := roomdag.ReceiveOptions{Kind: w.kind, Verifier: w.p.Verifier}
	for round := 0; ; round++ {
		res, err := w.p.Rooms.Receive(ctx, ev, opts)
		var me *roomdag.MissingEventsError
		if !errors.As(err, &me) || round == receiveRounds {
			return res, err
		}
		switch {
		case len(me.Auth) > 0:
			if _, err := w.fetchOutliers(ctx, me.Auth); err != nil {
				return nil, fmt.Errorf("%w (fetching them: %w)", me, err)
			}
		case missing:
			missing = false
			if err := w.getMissing(ctx, ev); err != nil {
				w.p.Log.Info("federation: /get_missing_events failed", "origin", w.origin, "room", w.room, "event", ev.ID(), "err", err)
			}
		case opts.StateBefore == nil:
			var before []roomdag.EventID
			var err error
			if w.kind == roomdag.KindBackfill {
				before, err = w.stateAt(ctx, ev)
			} else {
				before, err = w.stateBefore(ctx, ev)
			}
			if err != nil {
				return nil, fmt.Errorf("%w (fetching the state before it: %w)", me, err)
			}
			opts.StateBefore = before
		default:
			return nil, err
		}
	}
}

// getMissing asks the origin for the events between the room's forward
// extremities and ev, and receives them oldest first.
func (w *pduWork) getMissing(ctx context.Context, ev *roomdag.Event) error {
	st, err := w.p.Rooms.State(ctx, w.room)
	if err != nil {
		return err
	}
	minDepth := int64(0)
	if ext, err := w.p.Store.DAGEvents(ctx, st.Extremities); err == nil {
		first := true
		for _, d := range ext {
			if first || d.Event.Depth() < minDepth {
				minDepth, first = d.Event.Depth(), false
			}
		}
	}
	body, err := json.Marshal(map[string]any{"earliest_events": st.Extremities, "latest_events": []roomdag.EventID{ev.ID()},
		"limit": missingEventsLimit, "min_depth": minDepth})
	if err != nil {
		return err
	}
	var out struct {
		Events []json.RawMessage `json:"events"`
	}
	if err := w.do(ctx, http.MethodPost, "/_matrix/federation/v1/get_missing_events/"+url.PathEscape(string(w.room)), body, &out); err != nil {
		return err
	}
	evs := w.parse(out.Events, missingEventsLimit)
	slices.SortStableFunc(evs, func(a, b *roomdag.Event) int { return cmp.Compare(a.Depth(), b.Depth()) })
	for _, e := range evs {
		if e.ID() == ev.ID() {
			continue
		}
		if _, err := w.receive(ctx, e, false); err != nil {
			w.p.Log.Info("federation: missing event not received", "origin", w.origin, "room", w.room, "event", e.ID(), "err", err)
		}
	}
	return nil
}

// parse is the events of raws in the work's room, at most limit; the
// others are dropped.
func (w *pduWork) parse(raws []json.RawMessage, limit int) []*roomdag.Event {
	var out []*roomdag.Event
	for _, raw := range raws {
		if len(out) == limit {
			break
		}
		e, err := roomdag.NewEventFromJSON(w.v, raw)
		if err != nil || e.RoomID() != w.room {
			continue
		}
		out = append(out, e)
	}
	return out
}

// stateAt is the state before ev as the origin tells it at ev: for
// history, whose prev_events are older still.
func (w *pduWork) stateAt(ctx context.Context, ev *roomdag.Event) ([]roomdag.EventID, error) {
	st, err := w.remoteState(ctx, ev.ID(), false)
	if err != nil {
		return nil, err
	}
	return stateIDs(st), nil
}

func stateIDs(state roomdag.StateMap) []roomdag.EventID {
	ids := make([]roomdag.EventID, 0, len(state))
	for _, e := range state {
		ids = append(ids, e.ID())
	}
	slices.Sort(ids)
	return ids
}

// stateBefore is the state before ev, whose prev_events this server
// lacks: the state after each prev_event (its state before, as the
// origin's /state_ids tells, with the prev_event itself if it is a state
// event; or as stored, for the prev_events this server holds), resolved
// where they are several. Every event of it is stored when it returns.
func (w *pduWork) stateBefore(ctx context.Context, ev *roomdag.Event) ([]roomdag.EventID, error) {
	prevs := ev.PrevEvents()
	if len(prevs) == 0 {
		return nil, fmt.Errorf("%w: event %s has no prev_events", roomdag.ErrEventFormat, ev.ID())
	}
	known, err := w.p.Store.DAGEvents(ctx, prevs)
	if err != nil {
		return nil, err
	}
	var states []roomdag.StateMap
	fetches := 0
	for _, prev := range prevs {
		if d := known[prev]; d != nil && d.Status != roomdag.StatusOutlier && d.StateAfter != 0 {
			st, err := w.p.Store.StateEvents(ctx, d.StateAfter)
			if err != nil {
				return nil, err
			}
			states = append(states, st)
			continue
		}
		if fetches++; fetches > maxStatePrevs {
			return nil, fmt.Errorf("more than %d prev_events of %s to fetch the state of", maxStatePrevs, ev.ID())
		}
		st, err := w.remoteState(ctx, prev, true)
		if err != nil {
			return nil, fmt.Errorf("state after %s: %w", prev, err)
		}
		states = append(states, st)
	}
	state := states[0]
	if len(states) > 1 {
		if state, err = roomdag.ResolveState(w.v, states, &storeSource{ctx: ctx, store: w.p.Store}); err != nil {
			return nil, err
		}
	}
	return stateIDs(state), nil
}

// remoteState is the state before the event at as the origin tells
// (/state_ids), or with after the state after it (at itself added, if a
// state event). The events named are fetched and stored as outliers
// (at too, with after); those that fail their checks are left out.
func (w *pduWork) remoteState(ctx context.Context, at roomdag.EventID, after bool) (roomdag.StateMap, error) {
	var ids struct {
		PDUIDs  []roomdag.EventID `json:"pdu_ids"`
		AuthIDs []roomdag.EventID `json:"auth_chain_ids"`
	}
	q := url.Values{"event_id": {string(at)}}
	if err := w.do(ctx, http.MethodGet, "/_matrix/federation/v1/state_ids/"+url.PathEscape(string(w.room))+"?"+q.Encode(), nil, &ids); err != nil {
		return nil, err
	}
	if len(ids.PDUIDs)+len(ids.AuthIDs) > maxFetchedEvents {
		return nil, fmt.Errorf("the state at %s names more than %d events", at, maxFetchedEvents)
	}
	want := append(slices.Clone(ids.PDUIDs), ids.AuthIDs...)
	if after {
		want = append(want, at)
	}
	known, err := w.p.Store.DAGEvents(ctx, want)
	if err != nil {
		return nil, err
	}
	var missing []roomdag.EventID
	for _, id := range want {
		if known[id] == nil && !slices.Contains(missing, id) {
			missing = append(missing, id)
		}
	}
	if len(missing) > bulkStateAfter {
		// One /state for the lot.
		if err := w.fetchState(ctx, at, missing); err != nil {
			return nil, err
		}
	}
	if _, err := w.fetchOutliers(ctx, missing); err != nil {
		return nil, err
	}
	stored, err := w.p.Store.DAGEvents(ctx, append(slices.Clone(ids.PDUIDs), at))
	if err != nil {
		return nil, err
	}
	state := roomdag.StateMap{}
	for _, id := range ids.PDUIDs {
		if d := stored[id]; d != nil && d.Event.IsState() && d.Event.RoomID() == w.room && d.Status != roomdag.StatusRejected {
			state[d.Event.Tuple()] = d.Event
		}
	}
	if !after {
		return state, nil
	}
	d := stored[at]
	if d == nil {
		return nil, fmt.Errorf("event %s could not be had", at)
	}
	if d.Event.IsState() && d.Status != roomdag.StatusRejected {
		state[d.Event.Tuple()] = d.Event
	}
	return state, nil
}

// fetchState takes the events of /state at prev (state and auth chain)
// as outliers, those of want only.
func (w *pduWork) fetchState(ctx context.Context, prev roomdag.EventID, want []roomdag.EventID) error {
	var out struct {
		PDUs      []json.RawMessage `json:"pdus"`
		AuthChain []json.RawMessage `json:"auth_chain"`
	}
	q := url.Values{"event_id": {string(prev)}}
	if err := w.do(ctx, http.MethodGet, "/_matrix/federation/v1/state/"+url.PathEscape(string(w.room))+"?"+q.Encode(), nil, &out); err != nil {
		return err
	}
	evs := map[roomdag.EventID]*roomdag.Event{}
	for _, e := range w.parse(append(out.PDUs, out.AuthChain...), maxFetchedEvents) {
		if slices.Contains(want, e.ID()) {
			evs[e.ID()] = e
		}
	}
	if w.fetched += len(evs); w.fetched > maxFetchedEvents {
		return fmt.Errorf("more than %d events fetched", maxFetchedEvents)
	}
	_, err := w.storeOutliers(ctx, evs)
	return err
}

// fetchOutliers makes sure the events of ids are stored, fetching those
// this server lacks from the origin with /event and taking them as
// outliers, their own missing auth events first. It returns how many it
// stored; events that fail their checks are logged and skipped.
func (w *pduWork) fetchOutliers(ctx context.Context, ids []roomdag.EventID) (int, error) {
	known, err := w.p.Store.DAGEvents(ctx, ids)
	if err != nil {
		return 0, err
	}
	var missing []roomdag.EventID
	for _, id := range ids {
		if known[id] == nil && !slices.Contains(missing, id) {
			missing = append(missing, id)
		}
	}
	if len(missing) == 0 {
		return 0, nil
	}
	evs, err := w.fetchEvents(ctx, missing)
	if err != nil {
		return 0, err
	}
	return w.storeOutliers(ctx, evs)
}

// fetchEvents fetches the events of ids with /event, a few at a time.
// Events the origin does not give are left out.
func (w *pduWork) fetchEvents(ctx context.Context, ids []roomdag.EventID) (map[roomdag.EventID]*roomdag.Event, error) {
	if w.fetched += len(ids); w.fetched > maxFetchedEvents {
		return nil, fmt.Errorf("more than %d events fetched", maxFetchedEvents)
	}
	w.mu.Lock()
	spent := w.requests >= MaxPDURequests
	w.mu.Unlock()
	if spent {
		return nil, fmt.Errorf("more than %d requests to %s for one PDU", MaxPDURequests, w.origin)
	}
	out := map[roomdag.EventID]*roomdag.Event{}
	var mu gosync.Mutex
	var wg gosync.WaitGroup
	next := make(chan roomdag.EventID)
	for range min(fetchParallel, len(ids)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range next {
				var txn struct {
					PDUs []json.RawMessage `json:"pdus"`
				}
				if err := w.do(ctx, http.MethodGet, "/_matrix/federation/v1/event/"+url.PathEscape(string(id)), nil, &txn); err != nil {
					w.p.Log.Info("federation: event not fetched", "origin", w.origin, "event", id, "err", err)
					continue
				}
				evs := w.parse(txn.PDUs, 1)
				if len(evs) == 0 || evs[0].ID() != id {
					w.p.Log.Info("federation: origin answered /event with another event", "origin", w.origin, "event", id)
					continue
				}
				mu.Lock()
				out[id] = evs[0]
				mu.Unlock()
			}
		}()
	}
	for _, id := range ids {
		select {
		case next <- id:
		case <-ctx.Done():
		}
	}
	close(next)
	wg.Wait()
	return out, ctx.Err()
}

// storeOutliers receives evs as outliers, each after those of its auth
// events that are among evs; auth events neither stored nor among evs
// are fetched (within the work's bound).
func (w *pduWork) storeOutliers(ctx context.Context, evs map[roomdag.EventID]*roomdag.Event) (int, error) {
	done := map[roomdag.EventID]bool{}
	stored := 0
	var visit func(ev *roomdag.Event) error
	visit = func(ev *roomdag.Event) error {
		if done[ev.ID()] {
			return nil
		}
		done[ev.ID()] = true
		for _, a := range ev.AuthEvents() {
			if e := evs[a]; e != nil {
				if err := visit(e); err != nil {
					return err
				}
			}
		}
		for round := 0; ; round++ {
			res, err := w.p.Rooms.Receive(ctx, ev, roomdag.ReceiveOptions{Kind: roomdag.KindOutlier, Verifier: w.p.Verifier, ExpectedID: ev.ID()})
			var me *roomdag.MissingEventsError
			if errors.As(err, &me) && len(me.Auth) > 0 && round < receiveRounds {
				more, ferr := w.fetchEvents(ctx, me.Auth)
				if ferr != nil {
					return ferr
				}
				for id, e := range more {
					evs[id] = e
					if err := visit(e); err != nil {
						return err
					}
				}
				continue
			}
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				w.p.Log.Info("federation: fetched event not stored", "origin", w.origin, "event", ev.ID(), "err", err)
				return nil
			}
			if res.Status == roomdag.StatusOutlier {
				stored++
			}
			return nil
		}
	}
	// Oldest first, so that chains seldom recurse deep.
	order := make([]*roomdag.Event, 0, len(evs))
	for _, e := range evs {
		order = append(order, e)
	}
	slices.SortFunc(order, func(a, b *roomdag.Event) int {
		return cmp.Or(cmp.Compare(a.Depth(), b.Depth()), strings.Compare(string(a.ID()), string(b.ID())))
	})
	for _, e := range order {
		if err := visit(e); err != nil {
			return stored, err
		}
	}
	return stored, nil
}

// do sends a request to the origin and decodes its 200 answer into out.
func (w *pduWork) do(ctx context.Context, method, path string, body []byte, out any) error {
	w.mu.Lock()
	w.requests++
	n := w.requests
	w.mu.Unlock()
	if n > MaxPDURequests {
		return fmt.Errorf("more than %d requests to %s for one PDU", MaxPDURequests, w.origin)
	}
	var rd io.Reader
	if body != nil {
		rd = strings.NewReader(string(body))
	}
	req, err := http.NewRequestWithContext(ctx, method, path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := w.p.Client.Do(ctx, w.origin, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxFetchResponse+1))
	if err != nil {
		return fmt.Errorf("reading %s's answer: %w", w.origin, err)
	}
	if len(b) > maxFetchResponse {
		return fmt.Errorf("%s's answer is over %d bytes", w.origin, maxFetchResponse)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s %s with %d", w.origin, method, req.URL.Path, resp.StatusCode)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s's answer to %s: %w", w.origin, req.URL.Path, err)
	}
	return nil
}

// storeSource is a roomdag.EventSource over the DAG, for resolving the
// states after several prev_events.
type storeSource struct {
	ctx   context.Context
	store DAGStore
	seen  map[roomdag.EventID]*roomdag.DAGEvent
}

func (s *storeSource) get(id roomdag.EventID) (*roomdag.DAGEvent, error) {
	if d := s.seen[id]; d != nil {
		return d, nil
	}
	m, err := s.store.DAGEvents(s.ctx, []roomdag.EventID{id})
	if err != nil {
		return nil, err
	}
	d := m[id]
	if d == nil {
		return nil, fmt.Errorf("%w %s", roomdag.ErrUnknownEvent, id)
	}
	if s.seen == nil {
		s.seen = map[roomdag.EventID]*roomdag.DAGEvent{}
	}
	s.seen[id] = d
	return d, nil
}

func (s *storeSource) Event(id roomdag.EventID) (*roomdag.Event, error) {
	d, err := s.get(id)
	if err != nil {
		return nil, err
	}
	return d.Event, nil
}

func (s *storeSource) Rejected(id roomdag.EventID) bool {
	d, err := s.get(id)
	return err == nil && d.Status == roomdag.StatusRejected
}

var _ PDUHandler = (*RoomPDUs)(nil)
