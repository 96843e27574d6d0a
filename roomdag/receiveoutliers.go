package roomdag

import (
	"context"
	"errors"
	"fmt"
)

// OutlierResult is what ReceiveOutliers made of one event: Result for an
// event stored (or stored before), Err for one refused as it is (a
// signature or format error, or a *MissingEventsError for auth events
// neither stored nor earlier in the batch).
type OutlierResult struct {
	Result *ReceiveResult
	Err    error
}

// ReceiveOutliers receives evs, all of one room, as Receive receives
// outliers (KindOutlier: each checked against its own auth events only),
// in one go: the state and auth chain of a send_join answer, thousands of
// events. Each event's auth events must be stored or come before it in
// evs. The events are read in one batch, checked in order under the room
// lock, and queued for storage together, so that they share commits;
// ReceiveOutliers returns once all are durable, with one result per
// event. The error is the store's (nothing more is stored then). Signatures
// are checked with verifier one event at a time: a caller with many
// events checks them first, concurrently, and passes a verifier that
// knows the outcome.
func (rs *Rooms) ReceiveOutliers(ctx context.Context, evs []*Event, verifier SignatureVerifier) ([]OutlierResult, error) {
	if verifier == nil {
		return nil, ErrNoVerifier
	}
	out := make([]OutlierResult, len(evs))
	if len(evs) == 0 {
		return out, nil
	}
	room, v := evs[0].RoomID(), evs[0].Version()
	createID := EventID("")
	if v.DomainlessRoomIDs {
		createID = EventID("$" + string(room)[1:])
	}
	want := make([]EventID, 0, 4*len(evs)+1)
	for _, ev := range evs {
		want = append(want, ev.ID())
		want = append(want, ev.AuthEvents()...)
	}
	if createID != "" {
		want = append(want, createID)
	}
	want = dedupeIDs(want)
	known, err := rs.store.DAGEvents(ctx, want)
	if err != nil {
		return nil, err
	}
	// Format, hashes and signatures need no lock.
	checked := make([]*Event, len(evs))
	for i, ev := range evs {
		if ev.RoomID() != room || ev.Version().ID != v.ID {
			out[i].Err = fmt.Errorf("%w: event %s is not of room %s", ErrEventFormat, ev.ID(), room)
			continue
		}
		if d := known[ev.ID()]; d != nil {
			out[i].Result = &ReceiveResult{Event: d.Event, Status: d.Status, Rejection: reasonErr(d.Reason)}
			continue
		}
		redacted := false
		if err := CheckContentHash(v, ev.JSON()); err != nil {
			raw, rerr := Redact(v, ev.JSON())
			if rerr == nil {
				ev, rerr = NewEventFromJSON(v, raw)
			}
			if rerr != nil {
				out[i].Err = rerr
				continue
			}
			redacted = true
		}
		if err := verifier.VerifyEventSignatures(ctx, ev, ev.OriginServerTS()); err != nil {
			out[i].Err = err
			continue
		}
		checked[i] = ev
		out[i].Result = &ReceiveResult{Event: ev, Redacted: redacted}
	}
	first := checked0(checked)
	if first == nil {
		return out, nil // nothing new to store
	}
	for attempt := 0; ; attempt++ {
		err := rs.receiveOutliersOnce(ctx, room, checked, known, createID, out)
		// ErrEventExists: another path stored one of the events since it
		// was read; read back, it is known.
		if errors.Is(err, ErrStale) || errors.Is(err, ErrRoomChanged) || errors.Is(err, ErrEventExists) {
			if attempt < staleRetries {
				// What was stored is stored: read it back, and go on.
				if known, err = rs.store.DAGEvents(ctx, want); err != nil {
					return nil, err
				}
				continue
			}
			return nil, fmt.Errorf("room %s: gave up after %d attempts: %w (%w)", room, attempt+1, ErrRoomBusy, err)
		}
		return out, err
	}
}

// receiveOutliersOnce authorises the checked events in order and queues
// them, each seeing the ones before it, then waits for all.
func (rs *Rooms) receiveOutliersOnce(ctx context.Context, room RoomID, checked []*Event, known map[EventID]*DAGEvent, createID EventID, out []OutlierResult) error {
	r := rs.cache.acquire(room)
	defer rs.cache.release(r)
	r.mu.Lock()
	head, err := rs.headLocked(ctx, r)
	newRoom := false
	if errors.Is(err, ErrUnknownRoom) {
		// The first events this server holds of the room (Receive's case).
		head, err, newRoom = &RoomState{Version: checked0(checked).Version(), State: StateMap{}}, nil, true
	}
	if err != nil {
		r.mu.Unlock()
		return err
	}
	// Another Receive may have stored some since they were read.
	ids := make([]EventID, 0, len(checked))
	for _, ev := range checked {
		if ev != nil && known[ev.ID()] == nil {
			ids = append(ids, ev.ID())
		}
	}
	fresh, err := rs.store.DAGEvents(ctx, ids)
	if err != nil {
		r.mu.Unlock()
		return err
	}
	for id, d := range fresh {
		known[id] = d
	}
	type pending struct {
		i int
		q *queuedEvent
	}
	var queued []pending
	for i, ev := range checked {
		if ev == nil {
			continue
		}
		if d := known[ev.ID()]; d != nil {
			// Stored by an earlier attempt, or twice in the batch.
			out[i].Result, out[i].Err = &ReceiveResult{Event: d.Event, Status: d.Status, Rejection: reasonErr(d.Reason)}, nil
			continue
		}
		if head.Version.ID != ev.Version().ID {
			out[i].Result, out[i].Err = nil, fmt.Errorf("%w: event of room version %s in a room of version %s", ErrEventFormat, ev.Version().ID, head.Version.ID)
			continue
		}
		cid := createID
		if ev.IsCreate() {
			cid = ""
		}
		missing, why, err := checkOwnAuth(ev, known, cid, nil)
		if err != nil {
			r.mu.Unlock()
			return err
		}
		if len(missing) > 0 {
			out[i].Result, out[i].Err = nil, &MissingEventsError{Event: ev.ID(), Auth: missing}
			continue
		}
		per := &Persist{Event: ev, Received: true, Kind: KindOutlier, KeepExtremities: true, ExtremitiesBefore: head.Extremities,
			Status: StatusOutlier, NewRoom: newRoom}
		res := out[i].Result
		if res == nil {
			// An earlier attempt found it wanting (an auth event then
			// missing, since stored by another path).
			res = &ReceiveResult{Event: ev}
			out[i].Result = res
		}
		out[i].Err = nil
		res.Status = StatusOutlier
		if why != nil {
			res.Status, res.Rejection = StatusRejected, why
			per.Status, per.Reason = StatusRejected, why.Error()
		}
		queued = append(queued, pending{i, rs.enqueueReceived(r, &prepared{per: per, next: head}, false)})
		newRoom = false
		known[ev.ID()] = &DAGEvent{Event: ev, Status: res.Status, Reason: per.Reason}
	}
	r.mu.Unlock()
	var first error
	for _, p := range queued {
		if _, _, err := p.q.wait(r); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func checked0(evs []*Event) *Event {
	for _, ev := range evs {
		if ev != nil {
			return ev
		}
	}
	return nil
}

// dedupeIDs drops repeated IDs, keeping the first of each.
func dedupeIDs(ids []EventID) []EventID {
	seen := make(map[EventID]bool, len(ids))
	out := ids[:0]
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}
