package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"github.com/persistentchat/homeserver/sync"
	"net/http"
	"slices"
	"sort"
	"strings"
)

// Server-side search (spec: client-server API, "Server Side Search"): full
// text search over the room events a user may see, in rooms they are in or
// have left. The store finds matching events with what is needed to
// filter them (storage.SearchHit); this file applies history visibility,
// the client's filter and the searcher's ignored users, orders, pages, and
// adds context and bundled aggregations.

func (s *Server) searchRoutes() []route {
	return []route{
		{method: "POST", path: v3 + "/search", handler: s.search, auth: authRequired, rate: rateNone},
	}
}

// Bounds on one search reply: results per page (the rest pages in with
// next_batch) and context events on each side of a result.
const (
	searchDefaultLimit   = 10 // spec (RoomEventFilter): limit
	searchMaxLimit       = 100
	searchDefaultContext = 5 // spec: before_limit and after_limit
	searchMaxContext     = 50
)

type searchRequest struct {
	SearchCategories *struct {
		RoomEvents *roomEventsCriteria `json:"room_events"`
	} `json:"search_categories"`
}

type roomEventsCriteria struct {
	SearchTerm   *string         `json:"search_term"`
	Keys         []string        `json:"keys"`
	Filter       json.RawMessage `json:"filter"`
	OrderBy      string          `json:"order_by"`
	EventContext *struct {
		BeforeLimit    *int `json:"before_limit"`
		AfterLimit     *int `json:"after_limit"`
		IncludeProfile bool `json:"include_profile"`
	} `json:"event_context"`
	IncludeState bool `json:"include_state"`
	Groupings    struct {
		GroupBy []struct {
			Key string `json:"key"`
		} `json:"group_by"`
	} `json:"groupings"`
}

const (
	orderRank   = "rank"
	orderRecent = "recent"
	groupRoom   = "room_id"
	groupSender = "sender"
)

// roomSearch is a checked room_events request.
type roomSearch struct {
	phrases      []storage.SearchPhrase
	keys         []string
	filter       sync.RoomEventFilter
	limit        int
	order        string
	context      *searchContextParams
	includeState bool
	groupBy      []string
	// ignored is the searcher's m.ignored_user_list: their messages are
	// not found, as /sync and /messages leave them out (spec: "Ignoring
	// Users").
	ignored sync.Ignored
}

type searchContextParams struct {
	before, after int
	profile       bool
}

func (s *Server) search(r *http.Request) (any, error) {
	var req searchRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.SearchCategories == nil {
		return nil, httpapi.BadJSON("search_categories is required")
	}
	// room_events is the only category the spec defines. A request for
	// others only gets no answer for them, as a request for none gets an
	// empty reply, so clients that know later categories still work.
	out := map[string]any{}
	if rc := req.SearchCategories.RoomEvents; rc != nil {
		q, err := parseRoomSearch(rc)
		if err != nil {
			return nil, err
		}
		var tok *searchToken
		if nb := r.URL.Query().Get("next_batch"); nb != "" {
			if tok, err = parseSearchToken(nb, q.order); err != nil {
				return nil, err
			}
		}
		res, err := s.searchRoomEvents(r, q, tok)
		if err != nil {
			return nil, err
		}
		out["room_events"] = res
	}
	return map[string]any{"search_categories": out}, nil
}

func parseRoomSearch(rc *roomEventsCriteria) (*roomSearch, error) {
	if rc.SearchTerm == nil {
		return nil, httpapi.BadJSON("search_term is required")
	}
	if strings.TrimSpace(*rc.SearchTerm) == "" {
		return nil, httpapi.InvalidParam("search_term must not be empty")
	}
	q := &roomSearch{phrases: storage.ParseSearchTerm(*rc.SearchTerm), limit: searchDefaultLimit, order: orderRank,
		includeState: rc.IncludeState}
	for _, k := range rc.Keys {
		if storage.SearchKeyType(k) == "" {
			return nil, httpapi.InvalidParam("unknown search key %q: keys are %s, %s and %s", k, storage.SearchKeyBody, storage.SearchKeyName, storage.SearchKeyTopic)
		}
		q.keys = append(q.keys, k)
	}
	if len(rc.Filter) > 0 && string(rc.Filter) != "null" {
		if len(rc.Filter) > sync.MaxFilterBytes {
			return nil, httpapi.BadJSON("filter is too large")
		}
		if err := json.Unmarshal(rc.Filter, &q.filter); err != nil {
			return nil, httpapi.BadJSON("invalid filter: %v", err)
		}
		if q.filter.Limit < 0 {
			return nil, httpapi.InvalidParam("filter limit must not be negative")
		}
		if q.filter.Limit > 0 {
			q.limit = min(q.filter.Limit, searchMaxLimit)
		}
	}
	switch rc.OrderBy {
	case "", orderRank:
	case orderRecent:
		q.order = orderRecent
	default:
		return nil, httpapi.InvalidParam("order_by must be %q or %q", orderRank, orderRecent)
	}
	if ec := rc.EventContext; ec != nil {
		q.context = &searchContextParams{before: searchDefaultContext, after: searchDefaultContext, profile: ec.IncludeProfile}
		for _, l := range []struct {
			v   *int
			dst *int
		}{{ec.BeforeLimit, &q.context.before}, {ec.AfterLimit, &q.context.after}} {
			if l.v == nil {
				continue
			}
			if *l.v < 0 {
				return nil, httpapi.InvalidParam("event_context limits must not be negative")
			}
			*l.dst = min(*l.v, searchMaxContext)
		}
	}
	for _, g := range rc.Groupings.GroupBy {
		if g.Key != groupRoom && g.Key != groupSender {
			return nil, httpapi.InvalidParam("group_by key must be %q or %q", groupRoom, groupSender)
		}
		if !slices.Contains(q.groupBy, g.Key) {
			q.groupBy = append(q.groupBy, g.Key)
		}
	}
	return q, nil
}

// searchToken is what next_batch encodes: where the last page ended in
// the search's order, and, for a group's next_batch, the group. UpTo
// holds every page of one search to the events that existed when its first
// page was read, so later events do not shift the pages.
type searchToken struct {
	Version    int     `json:"v"`
	Order      string  `json:"o"`
	UpTo       int64   `json:"u"`
	Rank       float64 `json:"r"`
	Pos        int64   `json:"p"`
	GroupKey   string  `json:"gk,omitempty"`
	GroupValue string  `json:"gv,omitempty"`
}

const searchTokenVersion = 1

func (t searchToken) String() string {
	b, _ := json.Marshal(t)
	return base64.RawURLEncoding.EncodeToString(b)
}

// parseSearchToken reads a next_batch. The token is opaque to clients, so
// anything but a token of this server for a search in the same order is
// M_INVALID_PARAM.
func parseSearchToken(s, order string) (*searchToken, error) {
	bad := httpapi.InvalidParam("invalid next_batch")
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, bad
	}
	var t searchToken
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if dec.Decode(&t) != nil || dec.More() {
		return nil, bad
	}
	validGroup := t.GroupKey == "" && t.GroupValue == "" || (t.GroupKey == groupRoom || t.GroupKey == groupSender) && t.GroupValue != ""
	if t.Version != searchTokenVersion || t.Order != order || t.Pos <= 0 || t.UpTo < t.Pos || !validGroup {
		return nil, bad
	}
	return &t, nil
}

// after reports whether h comes after the token's place in its order.
func (t *searchToken) after(h storage.SearchHit) bool {
	if t.Order == orderRank && h.Rank != t.Rank {
		return h.Rank < t.Rank
	}
	return int64(h.Pos) < t.Pos
}

func (t *searchToken) inGroup(h storage.SearchHit) bool {
	return t.GroupKey == "" || groupValue(t.GroupKey, h) == t.GroupValue
}

func groupValue(key string, h storage.SearchHit) string {
	if key == groupRoom {
		return string(h.Room)
	}
	return string(h.Sender)
}

type roomEventsResult struct {
	Count      int                                  `json:"count"`
	Highlights []string                             `json:"highlights"`
	Results    []searchResult                       `json:"results"`
	NextBatch  string                               `json:"next_batch,omitempty"`
	Groups     map[string]map[string]*searchGroup   `json:"groups,omitempty"`
	State      map[roomdag.RoomID][]json.RawMessage `json:"state,omitempty"`
}

type searchResult struct {
	Rank    float64         `json:"rank"`
	Result  json.RawMessage `json:"result"`
	Context *searchContext  `json:"context,omitempty"`
}

type searchGroup struct {
	NextBatch string   `json:"next_batch,omitempty"`
	Order     int      `json:"order"`
	Results   []string `json:"results"`
	last      storage.SearchHit
}

type searchContext struct {
	Start        string                         `json:"start"`
	End          string                         `json:"end"`
	ProfileInfo  map[roomdag.UserID]profileInfo `json:"profile_info,omitempty"`
	EventsBefore []json.RawMessage              `json:"events_before"`
	EventsAfter  []json.RawMessage              `json:"events_after"`
}

type profileInfo struct {
	DisplayName string `json:"displayname,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

func (s *Server) searchRoomEvents(r *http.Request, q *roomSearch, tok *searchToken) (*roomEventsResult, error) {
	ctx := r.Context()
	user := requester(r).UserID
	res := &roomEventsResult{Highlights: []string{}, Results: []searchResult{}}
	// spec: "all rooms that the user has been in, including those that
	// they have left"; a forgotten room's history is no longer theirs.
	memberships, err := s.store.UserRooms(ctx, user)
	if err != nil {
		return nil, err
	}
	// A search of an upgraded room also covers the rooms it replaced.
	if q.filter.Rooms != nil {
		withOld := s.withPredecessors(ctx, *q.filter.Rooms)
		q.filter.Rooms = &withOld
	}
	current := map[roomdag.RoomID]string{}
	var rooms []roomdag.RoomID
	for _, m := range memberships {
		switch m.Membership {
		case roomdag.MembershipJoin, roomdag.MembershipLeave, roomdag.MembershipBan:
		default:
			continue
		}
		if m.Forgotten || !q.filter.AllowsRoom(m.RoomID) || tok != nil && tok.GroupKey == groupRoom && string(m.RoomID) != tok.GroupValue {
			continue
		}
		current[m.RoomID] = m.Membership
		rooms = append(rooms, m.RoomID)
	}
	if len(q.phrases) == 0 || len(rooms) == 0 {
		return res, nil
	}
	if q.ignored, err = sync.IgnoredUsers(ctx, s.store, user); err != nil {
		return nil, err
	}
	visible, upTo, truncated, err := s.collectHits(ctx, user, current, rooms, q, tok, scanBudget{searchCountScan, searchRankScan})
	if err != nil {
		return nil, err
	}
	if q.order == orderRank {
		// Stable: equal ranks stay newest first.
		sort.SliceStable(visible, func(i, j int) bool { return visible[i].Rank > visible[j].Rank })
	}
	// The count is of the whole search, the same on every page: exact
	// unless the scan stopped early, then estimated from how much of the
	// event stream it covered.
	res.Count = estimateCount(len(visible), upTo, truncated)
	start := 0
	if tok != nil {
		start = sort.Search(len(visible), func(i int) bool { return tok.after(visible[i]) })
	}
	page := visible[start:min(start+q.limit, len(visible))]
	rest := visible[start+len(page):]
	place := func(h storage.SearchHit, groupKey, groupVal string) string {
		return searchToken{Version: searchTokenVersion, Order: q.order, UpTo: int64(upTo), Rank: h.Rank, Pos: int64(h.Pos),
			GroupKey: groupKey, GroupValue: groupVal}.String()
	}
	// A full page has a next_batch even when nothing follows, as in
	// Synapse: clients and Complement ("Can back-paginate search results")
	// take a missing one for the end, and page on from a full page to an
	// empty one without.
	if len(rest) > 0 || len(page) > 0 && len(page) == q.limit {
		gk, gv := "", ""
		if tok != nil {
			gk, gv = tok.GroupKey, tok.GroupValue
		}
		res.NextBatch = place(page[len(page)-1], gk, gv)
	}

	positions := make([]roomdag.StreamPos, len(page))
	for i, h := range page {
		positions[i] = h.Pos
	}
	evs, err := s.store.EventsAt(ctx, positions)
	if err != nil {
		return nil, err
	}
	byPos := make(map[roomdag.StreamPos]*roomdag.StoredEvent, len(evs))
	for _, ev := range evs {
		byPos[ev.Pos] = ev
	}
	// The results and their context events get bundled aggregations, as
	// from /messages and /context: all at once, once they are known.
	type pending struct {
		ev            *roomdag.StoredEvent
		rank          float64
		context       *searchContext
		before, after []*roomdag.StoredEvent
	}
	var shown []storage.SearchHit
	var results []pending
	var all []*roomdag.StoredEvent
	for _, h := range page {
		ev := byPos[h.Pos]
		if ev == nil {
			continue
		}
		p := pending{ev: ev, rank: h.Rank}
		if q.context != nil {
			if p.context, p.before, p.after, err = s.resultContext(ctx, user, current[h.Room], q.ignored, ev, q.context); err != nil {
				return nil, err
			}
		}
		results = append(results, p)
		all = append(append(append(all, ev), p.before...), p.after...)
		shown = append(shown, h)
	}
	view, err := sync.Bundle(ctx, s.store, s.view(r), q.ignored, all)
	if err != nil {
		return nil, err
	}
	// unsigned.membership (MSC4115): read at most once per room, not at
	// all where the results follow the user's newest membership event.
	if view, err = sync.MembershipTrails(ctx, s.store, view, sync.MembershipsByRoom(memberships), all); err != nil {
		return nil, err
	}
	for _, p := range results {
		sr := searchResult{Rank: p.rank, Result: p.ev.ClientJSON(view), Context: p.context}
		if c := sr.Context; c != nil {
			for _, e := range p.before {
				c.EventsBefore = append(c.EventsBefore, e.ClientJSON(view))
			}
			for _, e := range p.after {
				c.EventsAfter = append(c.EventsAfter, e.ClientJSON(view))
			}
		}
		res.Results = append(res.Results, sr)
	}
	if res.Highlights, err = s.highlights(ctx, q.phrases, shown); err != nil {
		return nil, err
	}

	res.Groups = groupResults(q, shown, rest, byPos, truncated != 0, place)
	if q.includeState {
		if res.State, err = s.searchState(r, shown, s.view(r)); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// groupResults partitions the shown results by each requested key (spec:
// "Groups"). A group's order is where its first result is among them; it
// has a next_batch, which pages on within the group, when results of the
// group come after this page (any may, when the scan stopped early in
// recent order).
func groupResults(q *roomSearch, shown, rest []storage.SearchHit, byPos map[roomdag.StreamPos]*roomdag.StoredEvent,
	truncated bool, place func(h storage.SearchHit, groupKey, groupVal string) string) map[string]map[string]*searchGroup {
	if len(q.groupBy) == 0 {
		return nil
	}
	out := map[string]map[string]*searchGroup{}
	for _, key := range q.groupBy {
		groups := map[string]*searchGroup{}
		for _, h := range shown {
			v := groupValue(key, h)
			g := groups[v]
			if g == nil {
				g = &searchGroup{Order: len(groups) + 1, Results: []string{}}
				groups[v] = g
			}
			g.Results = append(g.Results, string(byPos[h.Pos].ID()))
			g.last = h
		}
		for v, g := range groups {
			if truncated && q.order == orderRecent {
				g.NextBatch = place(g.last, key, v)
			}
		}
		for _, h := range rest {
			if v := groupValue(key, h); groups[v] != nil && groups[v].NextBatch == "" {
				groups[v].NextBatch = place(groups[v].last, key, v)
			}
		}
		out[key] = groups
	}
	return out
}

// searchState is the state of each room with shown results that the user
// may see (spec: include_state): the current state, or the state when they
// left.
func (s *Server) searchState(r *http.Request, shown []storage.SearchHit, view roomdag.ClientView) (map[roomdag.RoomID][]json.RawMessage, error) {
	out := map[roomdag.RoomID][]json.RawMessage{}
	for _, h := range shown {
		if _, done := out[h.Room]; done {
			continue
		}
		a, err := s.access(r.Context(), h.Room, requester(r).UserID)
		var me *httpapi.Error
		if errors.As(err, &me) {
			continue // left and forgot since the search began
		}
		if err != nil {
			return nil, err
		}
		st, err := s.visibleState(r.Context(), a)
		if err != nil {
			return nil, err
		}
		list := []json.RawMessage{}
		for _, ev := range sortedState(st) {
			list = append(list, s.clientState(r, ev, view))
		}
		out[h.Room] = list
	}
	return out, nil
}

// How much of the index one search reads. In recent order the scan stops
// once it has the page and the one result after it, but reads at least
// searchCountScan hits so that the count of all but large searches is
// exact. In rank order the newest searchRankScan hits are ranked: a term
// matching more is not a useful query, and without a bound one request
// could keep a core busy for seconds on a large server.
const (
	searchCountScan = 5_000
	searchRankScan  = 50_000
)

type scanBudget struct{ count, rank int }

// collectHits reads the hits the user may see in the search's scope,
// newest first, from upTo down (the search's first page sets upTo to its
// newest hit). truncated is 0 when every hit was read, else the position
// of the oldest hit read.
func (s *Server) collectHits(ctx context.Context, user roomdag.UserID, current map[roomdag.RoomID]string, rooms []roomdag.RoomID,
	q *roomSearch, tok *searchToken, budget scanBudget) (visible []storage.SearchHit, upTo, truncated roomdag.StreamPos, err error) {
	if tok != nil {
		upTo = roomdag.StreamPos(tok.UpTo)
	}
	from, batch, scanned := upTo, budget.count, 0
	if q.order == orderRank {
		batch = budget.rank
	}
	for {
		hits, err := s.store.SearchEvents(ctx, storage.SearchQuery{Phrases: q.phrases, Rooms: rooms, Keys: q.keys, UpTo: from, Limit: batch})
		if err != nil {
			return nil, 0, 0, err
		}
		if len(hits) == 0 {
			return visible, upTo, 0, nil
		}
		if upTo == 0 {
			upTo = hits[0].Pos
		}
		scanned += len(hits)
		oldest := hits[len(hits)-1].Pos
		kept := hits[:0]
		for _, h := range hits {
			if !q.filter.Allows(storage.SearchKeyType(h.Key), h.Sender) || q.hidesIgnored(h) ||
				q.filter.ContainsURL != nil && *q.filter.ContainsURL != h.HasURL || tok != nil && !tok.inGroup(h) {
				continue
			}
			kept = append(kept, h)
		}
		vis, err := s.visibleHits(ctx, user, current, kept)
		if err != nil {
			return nil, 0, 0, err
		}
		visible = append(visible, vis...)
		if len(hits) < batch || oldest == 1 {
			return visible, upTo, 0, nil
		}
		if q.order == orderRank {
			return visible, upTo, oldest, nil
		}
		pageDone := len(visible) > q.limit
		if tok != nil {
			past := sort.Search(len(visible), func(i int) bool { return tok.after(visible[i]) })
			pageDone = len(visible)-past > q.limit
		}
		if pageDone && scanned >= budget.count {
			return visible, upTo, oldest, nil
		}
		from, batch = oldest-1, min(2*batch, budget.rank)
	}
}

// hidesIgnored reports whether h is a message of a user the searcher
// ignores. Names and topics are state events, which ignoring does not hide
// (sync.Ignored.Hides); messages are indexed only when they are not state.
func (q *roomSearch) hidesIgnored(h storage.SearchHit) bool {
	return q.ignored[h.Sender] && h.Key == storage.SearchKeyBody
}

// estimateCount is the count of a search that found n results among the
// hits from upTo down to truncated (0: all of them). A truncated count is
// extrapolated to the whole event stream, so it assumes matches spread
// evenly over time; the spec asks only for "an approximate count".
func estimateCount(n int, upTo, truncated roomdag.StreamPos) int {
	if truncated == 0 || upTo == 0 {
		return n
	}
	covered := float64(upTo-truncated+1) / float64(upTo)
	return max(n+1, int(float64(n)/covered))
}

// visibleHits keeps the hits the user may see (spec: "The server must only
// return results that the user has permission to see"), by the rule
// /messages and /sync apply, roomdag.CanSee, decided once per room and
// state snapshot: for a searchable event CanSee depends only on the state
// before it, the user and their current membership (it looks at the event
// itself only for history visibility changes and the user's own membership
// events, which are never indexed), so one event per snapshot decides for
// all that share it. It reads just the two state entries CanSee uses
// rather than going through sync.FilterVisible, which builds each whole
// snapshot: a search meets many old snapshots of rooms whose state may
// hold thousands of members.
func (s *Server) visibleHits(ctx context.Context, user roomdag.UserID, current map[roomdag.RoomID]string, hits []storage.SearchHit) ([]storage.SearchHit, error) {
	type snap struct {
		room roomdag.RoomID
		id   int64
	}
	var reps []roomdag.StreamPos
	seen := map[snap]bool{}
	for _, h := range hits {
		if k := (snap{h.Room, h.StateBefore}); !seen[k] {
			seen[k] = true
			reps = append(reps, h.Pos)
		}
	}
	evs, err := s.store.EventsAt(ctx, reps)
	if err != nil {
		return nil, err
	}
	keys := []roomdag.StateKey{{Type: roomdag.TypeHistoryVisibility}, {Type: roomdag.TypeMember, StateKey: string(user)}}
	canSee := make(map[snap]bool, len(evs))
	for _, ev := range evs {
		ids, err := s.store.StateEntries(ctx, ev.StateBefore, keys)
		if err != nil {
			return nil, err
		}
		list := make([]roomdag.EventID, 0, len(ids))
		for _, id := range ids {
			list = append(list, id)
		}
		stateEvs, err := s.store.Events(ctx, list)
		if err != nil {
			return nil, err
		}
		before := roomdag.StateMap{}
		for _, se := range stateEvs {
			before[se.Tuple()] = se.Event
		}
		canSee[snap{ev.RoomID(), ev.StateBefore}] = roomdag.CanSee(ev.Event, before, user, current[ev.RoomID()])
	}
	out := hits[:0]
	for _, h := range hits {
		if canSee[snap{h.Room, h.StateBefore}] {
			out = append(out, h)
		}
	}
	return out, nil
}

// resultContext is the events around a result, as /context shows them
// (before newest first, without ignored users' events), with pagination
// tokens for /messages. The caller renders the events into the context's
// events_before and events_after.
func (s *Server) resultContext(ctx context.Context, user roomdag.UserID, membership string, ignored sync.Ignored,
	ev *roomdag.StoredEvent, p *searchContextParams) (c *searchContext, before, after []*roomdag.StoredEvent, err error) {
	at := storage.TopoPos{Depth: ev.Depth(), Pos: ev.Pos}
	side := func(backwards bool, n int) ([]*roomdag.StoredEvent, storage.TopoPos, error) {
		if n == 0 {
			return nil, at, nil
		}
		evs, _, err := s.store.RoomEventsTopo(ctx, ev.RoomID(), at, backwards, n)
		if err != nil {
			return nil, at, err
		}
		cursor := at
		if len(evs) > 0 {
			last := evs[len(evs)-1]
			cursor = storage.TopoPos{Depth: last.Depth(), Pos: last.Pos}
		}
		vis, err := sync.FilterVisible(ctx, s.store, user, membership, evs)
		return ignored.Drop(vis), cursor, err
	}
	before, start, err := side(true, p.before)
	if err != nil {
		return nil, nil, nil, err
	}
	after, end, err := side(false, p.after)
	if err != nil {
		return nil, nil, nil, err
	}
	// As in /context: start is the place before the oldest event read,
	// end the place after the newest.
	end.Pos++
	c = &searchContext{Start: topoString(start), End: topoString(end), EventsBefore: []json.RawMessage{}, EventsAfter: []json.RawMessage{}}
	if p.profile {
		last := ev
		if len(after) > 0 {
			last = after[len(after)-1]
		}
		senders := map[roomdag.UserID]bool{ev.Sender(): true}
		for _, e := range slices.Concat(before, after) {
			senders[e.Sender()] = true
		}
		if c.ProfileInfo, err = s.profilesAt(ctx, last, senders); err != nil {
			return nil, nil, nil, err
		}
	}
	return c, before, after, nil
}

// profilesAt is the senders' profiles in the room's state after ev (spec:
// "historic profile information").
func (s *Server) profilesAt(ctx context.Context, ev *roomdag.StoredEvent, senders map[roomdag.UserID]bool) (map[roomdag.UserID]profileInfo, error) {
	place, err := s.store.EventPlace(ctx, ev.ID())
	if err != nil {
		return nil, err
	}
	ids, err := s.store.Snapshot(ctx, place.StateAfter)
	if err != nil {
		return nil, err
	}
	var members []roomdag.EventID
	for u := range senders {
		if id, ok := ids[roomdag.StateKey{Type: roomdag.TypeMember, StateKey: string(u)}]; ok {
			members = append(members, id)
		}
	}
	evs, err := s.store.Events(ctx, members)
	if err != nil {
		return nil, err
	}
	out := map[roomdag.UserID]profileInfo{}
	for _, m := range evs {
		var c struct {
			DisplayName any `json:"displayname"`
			AvatarURL   any `json:"avatar_url"`
		}
		_ = json.Unmarshal(m.Content(), &c)
		name, _ := c.DisplayName.(string)
		avatar, _ := c.AvatarURL.(string)
		out[roomdag.UserID(*m.StateKey())] = profileInfo{DisplayName: name, AvatarURL: avatar}
	}
	return out, nil
}

// highlights lists the words a client should highlight in the results
// (spec: "useful for stemming which may change the query terms"): the
// words searched for, and the words of the shown results that the index
// matched them with (longer words for prefixes, accented ones).
func (s *Server) highlights(ctx context.Context, phrases []storage.SearchPhrase, shown []storage.SearchHit) ([]string, error) {
	set := map[string]bool{}
	for _, p := range phrases {
		for _, w := range p.Words {
			set[w] = true
		}
	}
	positions := make([]roomdag.StreamPos, len(shown))
	for i, h := range shown {
		positions[i] = h.Pos
	}
	matched, err := s.store.SearchMatches(ctx, phrases, positions)
	if err != nil {
		return nil, err
	}
	for _, w := range matched {
		set[w] = true
	}
	out := make([]string, 0, len(set))
	for w := range set {
		out = append(out, w)
	}
	sort.Strings(out)
	return out, nil
}
