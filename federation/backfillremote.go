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
	"time"

	"github.com/persistentchat/homeserver/roomdag"
)

// Outbound backfill (server-server API, "Backfilling and retrieving
// missing events"): a server that joined a room late holds its history
// only from the join on. When a client pages back past the oldest event
// held, the servers in the room are asked for what came before it
// (GET /backfill from its prev_events), and the events are received
// oldest first as backfill: they take their place in /messages by depth
// and never reach /sync as new. The oldest of a batch, whose prev_events
// are still missing, is accepted with the state before it from the
// server's /state_ids, as a /send PDU with a gap is.

const (
	// backfillLimit is the limit of one /backfill request.
	backfillLimit = 50
	// backfillTimeout bounds one backfill, all servers tried: a client
	// waits for it.
	backfillTimeout = 30 * time.Second
	// maxBackfillServers bounds the servers tried in turn.
	maxBackfillServers = 5
)

// Backfill fetches the history of room before oldest, its oldest event
// in the timeline here, from another server in the room, and returns how
// many events joined the timeline. 0 and no error: there is nothing
// before oldest (the create event), or nothing held is missing.
func (p *RoomPDUs) Backfill(ctx context.Context, room roomdag.RoomID, oldest roomdag.EventID) (int, error) {
	held, err := p.Store.DAGEvents(ctx, []roomdag.EventID{oldest})
	if err != nil {
		return 0, err
	}
	d := held[oldest]
	if d == nil {
		return 0, fmt.Errorf("%w %s", roomdag.ErrUnknownEvent, oldest)
	}
	prevs, err := p.missingPrevs(ctx, d.Event)
	if err != nil || len(prevs) == 0 {
		return 0, err
	}
	st, err := p.Rooms.State(ctx, room)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, backfillTimeout)
	defer cancel()
	var errs []error
	servers := joinedServers(st.State, p.Server)[1:] // not this one
	if len(servers) > maxBackfillServers {
		servers = servers[:maxBackfillServers]
	}
	for _, server := range servers {
		n, err := p.backfillFrom(ctx, server, room, st.Version, prevs)
		if err == nil && n > 0 {
			return n, nil
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", server, err))
		}
	}
	return 0, errors.Join(errs...)
}

// missingPrevs are ev's prev_events not in the timeline here (unknown,
// or held only as outliers).
func (p *RoomPDUs) missingPrevs(ctx context.Context, ev *roomdag.Event) ([]roomdag.EventID, error) {
	known, err := p.Store.DAGEvents(ctx, ev.PrevEvents())
	if err != nil {
		return nil, err
	}
	var out []roomdag.EventID
	for _, id := range ev.PrevEvents() {
		if d := known[id]; d == nil || d.Status == roomdag.StatusOutlier {
			out = append(out, id)
		}
	}
	return out, nil
}

// backfillFrom asks server for the events before prevs (prevs
// included) and receives them oldest first.
func (p *RoomPDUs) backfillFrom(ctx context.Context, server roomdag.ServerName, room roomdag.RoomID, v *roomdag.RoomVersion, prevs []roomdag.EventID) (int, error) {
	w := &pduWork{p: p, origin: server, room: room, v: v, kind: roomdag.KindBackfill}
	q := url.Values{"limit": {fmt.Sprint(backfillLimit)}}
	for _, id := range prevs {
		q.Add("v", string(id))
	}
	var out struct {
		PDUs []json.RawMessage `json:"pdus"`
	}
	if err := w.do(ctx, http.MethodGet, "/_matrix/federation/v1/backfill/"+url.PathEscape(string(room))+"?"+q.Encode(), nil, &out); err != nil {
		return 0, err
	}
	evs := w.parse(out.PDUs, backfillLimit)
	slices.SortStableFunc(evs, func(a, b *roomdag.Event) int { return cmp.Compare(a.Depth(), b.Depth()) })
	ids := make([]roomdag.EventID, len(evs))
	for i, ev := range evs {
		ids[i] = ev.ID()
	}
	held, err := p.Store.DAGEvents(ctx, ids)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, ev := range evs {
		if d := held[ev.ID()]; d != nil && d.Status != roomdag.StatusOutlier {
			continue // in the timeline already (or rejected): nothing new
		}
		res, err := w.receive(ctx, ev, false)
		if err != nil {
			p.Log.Info("federation: backfilled event not received", "server", server, "room", room, "event", ev.ID(), "err", err)
			continue
		}
		if res.Status == roomdag.StatusTimeline {
			n++
		}
	}
	return n, nil
}
