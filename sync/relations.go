package sync

import (
	"context"
	"encoding/json"

	"github.com/tidwall/gjson"

	"github.com/persistentchat/homeserver/roomdag"
)

// Bundle returns view with the bundled aggregations (unsigned
// "m.relations") of evs as view.UserID sees them (spec: client-server
// API, "Aggregations of child events"):
//
//   - m.thread on thread roots: the latest event of the thread (itself
//     with its bundled aggregations), how many events the thread holds and
//     whether the viewer took part, leaving out ignored users;
//   - m.replace on edited events: the most recent valid edit, whole (spec
//     v1.7, MSC3925, as Synapse does). The original's content is left as
//     it is; clients apply the edit. Redacted events get none;
//   - m.reference: the events that reference it, leaving out ignored users.
//
// m.annotation is not aggregated (spec: "Server-side aggregation of
// m.annotation relationships"). State events get nothing, and neither do
// edits and annotations, which may not be related to. A redacted child
// has lost its relationship and counts for nothing.
//
// The cost is a few grouped queries for the whole list, so callers bundle
// a page or a timeline at once, never event by event.
func Bundle(ctx context.Context, store Store, view roomdag.ClientView, ignored Ignored, evs []*roomdag.StoredEvent) (roomdag.ClientView, error) {
	byID := map[roomdag.EventID]*roomdag.StoredEvent{}
	var parents []roomdag.EventID
	for _, ev := range evs {
		if ev.IsState() || byID[ev.ID()] != nil {
			continue
		}
		if rel, ok := ev.Relation(); ok && (rel.RelType == roomdag.RelReplace || rel.RelType == roomdag.RelAnnotation) {
			continue
		}
		byID[ev.ID()] = ev
		parents = append(parents, ev.ID())
	}
	if len(parents) == 0 {
		return view, nil
	}
	agg, err := store.RelationAggregates(ctx, parents, view.UserID, ignored.List())
	if err != nil {
		return view, err
	}
	// A thread starts only from an event without a relationship (spec:
	// "Threading"); the latest event of each thread is bundled too.
	threads := map[roomdag.EventID]roomdag.EventID{} // root -> latest
	var latest []roomdag.EventID
	for root, t := range agg.Threads {
		if _, ok := byID[root].Relation(); ok {
			continue
		}
		threads[root] = t.Latest
		if byID[t.Latest] == nil {
			latest = append(latest, t.Latest)
		}
	}
	if len(latest) > 0 {
		evs, err := store.Events(ctx, latest)
		if err != nil {
			return view, err
		}
		for _, ev := range evs {
			byID[ev.ID()] = ev
		}
	}
	edits, err := latestEdits(ctx, store, byID, agg.Edits, ignored)
	if err != nil {
		return view, err
	}
	bundles := map[roomdag.EventID]map[string]any{}
	add := func(id roomdag.EventID, relType string, v any) {
		if bundles[id] == nil {
			bundles[id] = map[string]any{}
		}
		bundles[id][relType] = v
	}
	for id, edit := range edits {
		add(id, roomdag.RelReplace, edit.ClientJSON(view))
	}
	for id, refs := range agg.References {
		chunk := make([]map[string]roomdag.EventID, len(refs))
		for i, r := range refs {
			chunk[i] = map[string]roomdag.EventID{"event_id": r}
		}
		add(id, roomdag.RelReference, map[string]any{"chunk": chunk})
	}
	// Threads last: their latest events are rendered with the bundles of
	// the latest events (edits, references) already in the view.
	view.Relations = render(bundles)
	for root, latestID := range threads {
		last := byID[latestID]
		if last == nil {
			continue // not stored (any more): no summary, as Synapse does
		}
		t := agg.Threads[root]
		add(root, roomdag.RelThread, map[string]any{
			"latest_event": last.ClientJSON(view), "count": t.Count,
			"current_user_participated": t.Participated || byID[root].Sender() == view.UserID,
		})
	}
	view.Relations = render(bundles)
	return view, nil
}

func render(bundles map[roomdag.EventID]map[string]any) map[roomdag.EventID]json.RawMessage {
	out := make(map[roomdag.EventID]json.RawMessage, len(bundles))
	for id, b := range bundles {
		out[id], _ = json.Marshal(b)
	}
	return out
}

// maxEditRounds bounds how many invalid edits (without m.new_content) per
// event latestEdits skips before it gives up on finding a valid one.
const maxEditRounds = 4

// latestEdits picks, for each event of byID with edit candidates, the
// newest valid one (spec: "Validity of replacement events"). Candidates
// come newest first, already from the original's sender and of its type;
// the rest of the rules need the events, loaded a round at a time. The
// events of ignored users get no edit: they are hidden, or shown redacted
// (/threads), and must stay so.
func latestEdits(ctx context.Context, store Store, byID map[roomdag.EventID]*roomdag.StoredEvent, candidates map[roomdag.EventID][]roomdag.EventID, ignored Ignored) (map[roomdag.EventID]*roomdag.StoredEvent, error) {
	out := map[roomdag.EventID]*roomdag.StoredEvent{}
	next := map[roomdag.EventID]int{} // original -> index of the candidate to try
	for id, c := range candidates {
		// spec: "If the original event is redacted, any m.replace
		// relationship should not be bundled with it".
		if orig := byID[id]; orig != nil && len(c) > 0 && !Redacted(orig) && !ignored[orig.Sender()] {
			next[id] = 0
		}
	}
	for round := 0; round < maxEditRounds && len(next) > 0; round++ {
		ids := make([]roomdag.EventID, 0, len(next))
		for id, i := range next {
			ids = append(ids, candidates[id][i])
		}
		evs, err := store.Events(ctx, ids)
		if err != nil {
			return nil, err
		}
		loaded := make(map[roomdag.EventID]*roomdag.StoredEvent, len(evs))
		for _, ev := range evs {
			loaded[ev.ID()] = ev
		}
		for id, i := range next {
			if edit := loaded[candidates[id][i]]; edit != nil && roomdag.ValidReplacement(byID[id].Event, edit.Event) {
				out[id] = edit
				delete(next, id)
			} else if i+1 < len(candidates[id]) {
				next[id] = i + 1
			} else {
				delete(next, id)
			}
		}
	}
	return out, nil
}

// Redacted reports whether a stored event has been redacted.
func Redacted(ev *roomdag.StoredEvent) bool {
	return gjson.GetBytes(ev.Unsigned, "redacted_because").Exists()
}
