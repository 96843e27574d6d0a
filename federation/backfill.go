package federation

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"github.com/persistentchat/homeserver/roomdag"
)

// Backfill (server-server API, "Backfilling and retrieving missing
// events"): when a client pages back to the oldest event this server
// holds of a room and that event's prev_events are unknown here, the
// servers in the room are asked for the history before it with
// /backfill. What comes back is received as KindBackfill: it takes its
// place in /messages by depth and changes nothing of the present; the
// oldest of it, whose own prev_events are older still, with the state
// before it from /state_ids.

const (
	// maxBackfillServers bounds how many servers one call asks.
	maxBackfillServers = 3
	// maxBackfillLimit bounds what one call asks for.
	maxBackfillLimit = 100
)

// Backfiller fetches a room's history from the other servers in it.
type Backfiller struct {
	PDUs *RoomPDUs
}

// Backfill implements api.Backfiller: for the first of evs whose
// prev_events are not held in the timeline, it fetches up to limit events
// before it and returns how many it stored in the timeline. The room's
// other servers are asked in turn (the event's own server first) until
// one gives events.
func (b Backfiller) Backfill(ctx context.Context, room roomdag.RoomID, evs []*roomdag.Event, limit int) (int, error) {
	p := b.PDUs
	var prevs []roomdag.EventID
	for _, ev := range evs {
		prevs = append(prevs, ev.PrevEvents()...)
	}
	if len(prevs) == 0 {
		return 0, nil
	}
	known, err := p.Store.DAGEvents(ctx, prevs)
	if err != nil {
		return 0, err
	}
	var edge *roomdag.Event
	var missing []roomdag.EventID
	for _, ev := range evs {
		for _, id := range ev.PrevEvents() {
			if d := known[id]; d == nil || d.Status == roomdag.StatusOutlier {
				missing = append(missing, id)
			}
		}
		if len(missing) > 0 {
			edge = ev
			break
		}
	}
	if edge == nil {
		return 0, nil
	}
	st, err := p.Rooms.State(ctx, room)
	if err != nil {
		return 0, err
	}
	servers := joinedServers(st.State, p.Server)[1:] // not this one
	// The edge's own server first: it holds what its events cite.
	if s := edge.Sender().Server(); s != p.Server && slices.Contains(servers, s) {
		servers = append([]roomdag.ServerName{s}, slices.DeleteFunc(servers, func(x roomdag.ServerName) bool { return x == s })...)
	}
	limit = min(max(limit, 1), maxBackfillLimit)
	var errs []error
	for i, server := range servers {
		if i == maxBackfillServers {
			break
		}
		if !roomdag.ServerAllowed(st.State, server) {
			continue
		}
		n, err := b.from(ctx, server, room, st.Version, missing, limit)
		if err == nil && n > 0 {
			return n, nil
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", server, err))
		}
	}
	return 0, errors.Join(errs...)
}

// from asks one server.
func (b Backfiller) from(ctx context.Context, server roomdag.ServerName, room roomdag.RoomID, v *roomdag.RoomVersion, from []roomdag.EventID, limit int) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, pduTimeout)
	defer cancel()
	w := &pduWork{p: b.PDUs, origin: server, room: room, v: v, kind: roomdag.KindBackfill}
	q := url.Values{"limit": {strconv.Itoa(limit)}}
	for _, id := range from {
		q.Add("v", string(id))
	}
	var txn struct {
		PDUs []json.RawMessage `json:"pdus"`
	}
	if err := w.do(ctx, http.MethodGet, "/_matrix/federation/v1/backfill/"+url.PathEscape(string(room))+"?"+q.Encode(), nil, &txn); err != nil {
		return 0, err
	}
	evs := w.parse(txn.PDUs, limit)
	slices.SortStableFunc(evs, func(a, b *roomdag.Event) int { return cmp.Compare(a.Depth(), b.Depth()) })
	stored := 0
	for _, e := range evs {
		res, err := w.receive(ctx, e, false)
		if err != nil {
			b.PDUs.Log.Info("federation: backfilled event not received", "server", server, "room", room, "event", e.ID(), "err", err)
			continue
		}
		if res.Status == roomdag.StatusTimeline && res.Pos < 0 {
			stored++
		}
	}
	return stored, nil
}
