package api

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"github.com/persistentchat/homeserver/sync"
	"net/http"
)

// Relations and threads (spec: client-server API, "Relationships API" and
// "Threading"). Bundled aggregations are sync.Bundle's.
func (s *Server) relationRoutes() []route {
	return []route{
		{"GET", v1 + "/rooms/{roomId}/relations/{eventId}", s.getRelations, authRequired, rateNone},
		{"GET", v1 + "/rooms/{roomId}/relations/{eventId}/{relType}", s.getRelations, authRequired, rateNone},
		{"GET", v1 + "/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}", s.getRelations, authRequired, rateNone},
		{"GET", v1 + "/rooms/{roomId}/threads", s.getThreads, authRequired, rateNone},
	}
}

// Default page sizes, as Synapse's.
const (
	defaultRelationsLimit = 5
	defaultThreadsLimit   = 5
)

func (s *Server) getRelations(r *http.Request) (any, error) {
	room, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	parentID, err := eventParam(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	dir := q.Get("dir")
	if dir == "" {
		dir = "b"
	}
	if dir != "b" && dir != "f" {
		return nil, httpapi.InvalidParam("dir must be b or f")
	}
	limit, err := queryLimit(r, defaultRelationsLimit)
	if err != nil {
		return nil, err
	}
	var recurse bool
	switch q.Get("recurse") {
	case "", "false":
	case "true":
		recurse = true
	default:
		return nil, httpapi.InvalidParam("recurse must be true or false")
	}
	ctx := r.Context()
	user := requester(r).UserID
	// spec: 404 "The parent event was not found or the user does not have
	// permission to read this event".
	a, err := s.access(ctx, room, user)
	if err != nil {
		return nil, hideForbidden(err)
	}
	ignored, err := sync.IgnoredUsers(ctx, s.store, user)
	if err != nil {
		return nil, err
	}
	parent, err := s.shownEvent(r, a, room, parentID, ignored)
	if err != nil {
		return nil, err
	}
	query := storage.RelationsQuery{Room: room, Parent: parentID, RelType: httpapi.PathParam(r, "relType"),
		EventType: httpapi.PathParam(r, "eventType"), Recurse: recurse, NoEdits: sync.Redacted(parent),
		Backwards: dir == "b", Limit: max(limit, 1)}
	// Tokens are /messages tokens (ours, or a sync next_batch), so a
	// client may bound the relations by what it has seen in the timeline.
	for _, b := range []struct {
		param string
		dst   **storage.TopoPos
	}{{"from", &query.From}, {"to", &query.To}} {
		if tok := q.Get(b.param); tok != "" {
			t, err := s.topoFrom(ctx, room, tok)
			if err != nil {
				return nil, err
			}
			*b.dst = &t
		}
	}
	rows, more, err := s.store.Relations(ctx, query)
	if err != nil {
		return nil, err
	}
	ids := make([]roomdag.EventID, len(rows))
	for i, row := range rows {
		ids[i] = row.EventID
	}
	evs, err := s.eventsInOrder(ctx, ids)
	if err != nil {
		return nil, err
	}
	evs, err = sync.FilterVisible(ctx, s.store, user, a.membership, ignored.Drop(evs))
	if err != nil {
		return nil, err
	}
	chunk, err := s.clientEvents(r, ignored, evs)
	if err != nil {
		return nil, err
	}
	resp := map[string]any{"chunk": chunk}
	if more {
		// The place after the last row read: just before it backwards,
		// just after it forwards (see messages).
		next := rows[len(rows)-1].Place
		if !query.Backwards {
			next.Pos++
		}
		resp["next_batch"] = topoString(next)
	}
	if from := q.Get("from"); from != "" {
		resp["prev_batch"] = from
	}
	if q.Has("recurse") {
		// spec: mandatory when the client sent recurse, absent otherwise.
		depth := 1
		if recurse {
			depth = storage.MaxRelationDepth
		}
		resp["recursion_depth"] = depth
	}
	return resp, nil
}

// eventsInOrder loads events, in the order of ids; unknown ones are
// skipped.
func (s *Server) eventsInOrder(ctx context.Context, ids []roomdag.EventID) ([]*roomdag.StoredEvent, error) {
	evs, err := s.store.Events(ctx, ids)
	if err != nil {
		return nil, err
	}
	byID := make(map[roomdag.EventID]*roomdag.StoredEvent, len(evs))
	for _, ev := range evs {
		byID[ev.ID()] = ev
	}
	out := make([]*roomdag.StoredEvent, 0, len(ids))
	for _, id := range ids {
		if ev := byID[id]; ev != nil {
			out = append(out, ev)
		}
	}
	return out, nil
}

func (s *Server) getThreads(r *http.Request) (any, error) {
	room, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	include := q.Get("include")
	if include != "" && include != "all" && include != "participated" {
		return nil, httpapi.InvalidParam("include must be all or participated")
	}
	limit, err := queryLimit(r, defaultThreadsLimit)
	if err != nil {
		return nil, err
	}
	if limit == 0 {
		return nil, httpapi.InvalidParam("limit must be greater than zero")
	}
	var before *storage.TopoPos
	if from := q.Get("from"); from != "" {
		t, err := sync.ParseTopoToken(from)
		if err != nil {
			return nil, httpapi.InvalidParam("unknown pagination token")
		}
		before = &storage.TopoPos{Depth: t.Depth, Pos: t.Pos}
	}
	ctx := r.Context()
	user := requester(r).UserID
	a, err := s.access(ctx, room, user)
	if err != nil {
		return nil, err
	}
	var participant roomdag.UserID
	if include == "participated" {
		participant = user
	}
	roots, more, err := s.store.Threads(ctx, room, participant, before, limit)
	if err != nil {
		return nil, err
	}
	ids := make([]roomdag.EventID, len(roots))
	for i, t := range roots {
		ids[i] = t.Root
	}
	evs, err := s.eventsInOrder(ctx, ids)
	if err != nil {
		return nil, err
	}
	kept := evs[:0]
	for _, ev := range evs {
		// No thread is rooted in another room, or at an event that has a
		// relationship itself (spec: "Threading"), whatever arrived.
		if _, related := ev.Relation(); ev.RoomID() == room && !related {
			kept = append(kept, ev)
		}
	}
	evs, err = sync.FilterVisible(ctx, s.store, user, a.membership, kept)
	if err != nil {
		return nil, err
	}
	ignored, err := sync.IgnoredUsers(ctx, s.store, user)
	if err != nil {
		return nil, err
	}
	for i, ev := range evs {
		// spec: "If the thread root event was sent by an ignored user, the
		// event is returned redacted to the caller."
		if ignored.Hides(ev.Event) {
			if evs[i], err = redactedCopy(ev); err != nil {
				return nil, err
			}
		}
	}
	chunk, err := s.clientEvents(r, ignored, evs)
	if err != nil {
		return nil, err
	}
	resp := map[string]any{"chunk": chunk}
	if more {
		last := roots[len(roots)-1].Latest
		resp["next_batch"] = sync.TopoToken{Depth: last.Depth, Pos: last.Pos}.String()
	}
	return resp, nil
}

// redactedCopy is ev as its redaction would leave it, for this response
// only: the stored event is untouched.
func redactedCopy(ev *roomdag.StoredEvent) (*roomdag.StoredEvent, error) {
	raw, err := roomdag.Redact(ev.Version(), ev.JSON())
	if err != nil {
		return nil, err
	}
	e, err := roomdag.EventFromTrustedJSON(ev.Version(), ev.ID(), raw)
	if err != nil {
		return nil, err
	}
	return &roomdag.StoredEvent{Event: e, Pos: ev.Pos, StateBefore: ev.StateBefore}, nil
}

// checkRelation applies the send-time rules on an event's relationship:
// a thread may not start from an event that has a relationship itself
// (spec: "Validation of m.thread relationships", 400 M_UNKNOWN), and a
// user may not annotate an event twice with the same type and key (spec:
// "Avoiding duplicate annotations", 400 M_DUPLICATE_ANNOTATION).
func (s *Server) checkRelation(ctx context.Context, room roomdag.RoomID, sender roomdag.UserID, evType string, content json.RawMessage) error {
	rel, ok := roomdag.ParseRelation(content)
	if !ok {
		return nil
	}
	switch rel.RelType {
	case roomdag.RelThread:
		parent, err := s.store.Event(ctx, rel.Parent)
		if errors.Is(err, storage.ErrNotFound) {
			return nil // unknown to us: nothing to check it against
		}
		if err != nil {
			return err
		}
		if _, has := parent.Relation(); has && parent.RoomID() == room {
			return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeUnknown, "cannot start a thread from an event with a relation")
		}
	case roomdag.RelAnnotation:
		if rel.Key == "" {
			return nil
		}
		dup, err := s.store.HasAnnotation(ctx, rel.Parent, sender, evType, rel.Key)
		if err != nil {
			return err
		}
		if dup {
			return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeDuplicateAnnotation, "you already sent this annotation")
		}
	}
	return nil
}
