package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Default iteration counts when -n is not given.
const (
	defaultSendN     = 2000
	defaultSyncN     = 500
	defaultBackchatN = 200
)

const (
	// syncTimeout is the long-poll timeout of the sync scenario; an event
	// not delivered within it counts as an error.
	syncTimeout = 30 * time.Second
	// setupParallelism bounds concurrent registrations, so that setup does
	// not itself become a load test of password hashing.
	setupParallelism = 4
)

// scenario is one independent measurement. run creates its own users and
// rooms, so scenarios can run in any order and be repeated; it returns one
// result row per measured phase. An error means setup failed; rows
// measured before that are still returned.
type scenario struct {
	name string
	run  func(ctx context.Context, r *runner) ([]*result, error)
}

// scenarios lists every scenario in the order "all" runs them.
var scenarios = []scenario{
	{"send", runSend},
	{"concurrent", runConcurrent},
	{"sync", runSync},
	{"backchat", runBackchat},
	{"paginate", runPaginate},
}

// runner holds what the scenarios of one run share.
type runner struct {
	cfg      config
	hs       *homeserver
	log      *slog.Logger
	runID    string   // random; part of every username and transaction ID
	password secret   // of every test user
	admin    *session // Synapse admin lifting rate limits; nil if unavailable
	users    atomic.Int64
}

// newUser registers a fresh test user, loadtest_<runID>_<n>.
func (r *runner) newUser(ctx context.Context) (*session, error) {
	name := fmt.Sprintf("loadtest_%s_%d", r.runID, r.users.Add(1))
	txnPrefix := "lt" + r.runID
	var s *session
	err := withRetry(ctx, func() error {
		var err error
		if r.cfg.SharedSecret.isZero() {
			s, err = r.hs.register(ctx, name, r.password, r.cfg.RegistrationToken, txnPrefix)
		} else {
			s, err = r.hs.registerShared(ctx, r.cfg.SharedSecret, name, r.password, false, txnPrefix)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if r.admin != nil {
		if err := withRetry(ctx, func() error { return r.admin.overrideRatelimit(ctx, s.user) }); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// newUsers registers k fresh users, a few at a time.
func (r *runner) newUsers(ctx context.Context, k int) ([]*session, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	users := make([]*session, k)
	sem := make(chan struct{}, setupParallelism)
	var wg sync.WaitGroup
	for i := range users {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if ctx.Err() != nil {
				return
			}
			s, err := r.newUser(ctx)
			if err != nil {
				cancel(err) // the first cause wins
				return
			}
			users[i] = s
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, fmt.Errorf("registering %d users: %w", k, err)
	}
	return users, nil
}

// roomWithSenders registers k users; the first creates a room, the others
// join it.
func (r *runner) roomWithSenders(ctx context.Context, name string, k int) (roomID, []*session, error) {
	users, err := r.newUsers(ctx, k)
	if err != nil {
		return "", nil, err
	}
	room, err := createRoom(ctx, users[0], name)
	if err != nil {
		return "", nil, err
	}
	for _, u := range users[1:] {
		if err := withRetry(ctx, func() error { _, err := u.join(ctx, room); return err }); err != nil {
			return "", nil, err
		}
	}
	return room, users, nil
}

func createRoom(ctx context.Context, s *session, name string) (roomID, error) {
	var room roomID
	err := withRetry(ctx, func() error {
		var err error
		room, err = s.createRoom(ctx, name)
		return err
	})
	return room, err
}

// sendConcurrently has every sender send messages to room as fast as it
// can, until total sends have been attempted, ctx ends or the recorder is
// exhausted. It returns the recorder, the wall-clock time taken and, if
// collect is set, the event IDs of the messages sent.
func (r *runner) sendConcurrently(ctx context.Context, room roomID, senders []*session, total int, collect bool) (*recorder, time.Duration, []eventID) {
	rec := newRecorder(total, r.cfg.MaxErrors)
	var claimed atomic.Int64
	ids := make([][]eventID, len(senders)) // one slice per sender: no locking
	start := time.Now()
	var wg sync.WaitGroup
	for i, s := range senders {
		wg.Go(func() {
			for {
				n := claimed.Add(1)
				if n > int64(total) || ctx.Err() != nil || rec.exhausted() {
					return
				}
				id, resp, err := s.sendText(ctx, room, fmt.Sprintf("loadtest message %d", n))
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					rec.fail(err)
					continue
				}
				rec.ok(resp.took)
				if collect {
					ids[i] = append(ids[i], id)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []eventID
	for _, s := range ids {
		all = append(all, s...)
	}
	return rec, elapsed, all
}

// runSend measures sequential sends by one user.
func runSend(ctx context.Context, r *runner) ([]*result, error) {
	u, err := r.newUser(ctx)
	if err != nil {
		return nil, err
	}
	room, err := createRoom(ctx, u, "loadtest send")
	if err != nil {
		return nil, err
	}
	n := r.cfg.iterations(defaultSendN)
	rec := newRecorder(n, r.cfg.MaxErrors)
	start := time.Now()
	for i := range n {
		if ctx.Err() != nil || rec.exhausted() {
			break
		}
		_, resp, err := u.sendText(ctx, room, fmt.Sprintf("loadtest message %d", i))
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			rec.fail(err)
			continue
		}
		rec.ok(resp.took)
	}
	return []*result{newResult("send", rec, time.Since(start))}, nil
}

// runConcurrent measures -senders users sending to one room at once.
func runConcurrent(ctx context.Context, r *runner) ([]*result, error) {
	room, senders, err := r.roomWithSenders(ctx, "loadtest concurrent", r.cfg.Senders)
	if err != nil {
		return nil, err
	}
	r.log.Info("sending", "scenario", "concurrent", "messages", r.cfg.Messages, "senders", len(senders))
	rec, elapsed, _ := r.sendConcurrently(ctx, room, senders, r.cfg.Messages, false)
	res := newResult("concurrent", rec, elapsed)
	res.note("%d senders in one room", len(senders))
	return []*result{res}, nil
}

// runSync measures how long an event takes to reach another user's pending
// sync long-poll, counted from the moment the sender's PUT returned.
//
// Before each send the receiver's long-poll is issued and given
// -sync-park (2 ms by default) to reach the server and park. No API
// tells a client that its request is parked, so a short wait stands in:
// on a local network a request arrives well within it. Without the wait
// the send could overtake the long-poll, which would then find the event
// already there and return at once, measuring request handling instead of
// the wake-up path every idle client depends on. The wait does not
// inflate the result, since the delay is measured from the send's
// response, not from issuing the long-poll.
func runSync(ctx context.Context, r *runner) ([]*result, error) {
	users, err := r.newUsers(ctx, 2)
	if err != nil {
		return nil, err
	}
	a, b := users[0], users[1]
	room, err := createRoom(ctx, a, "loadtest sync")
	if err != nil {
		return nil, err
	}
	if err := withRetry(ctx, func() error { _, err := b.join(ctx, room); return err }); err != nil {
		return nil, err
	}
	filter := roomTimelineFilter(room, 10)
	var since string
	err = withRetry(ctx, func() error {
		sr, _, err := b.sync(ctx, syncParams{filter: filter})
		if err == nil {
			since = sr.NextBatch
		}
		return err
	})
	if err != nil {
		return nil, err
	}

	n := r.cfg.iterations(defaultSyncN)
	rec := newRecorder(n, r.cfg.MaxErrors)
	endToEnd := newRecorder(n, 0)
	early := 0
	start := time.Now()
	for i := range n {
		if ctx.Err() != nil || rec.exhausted() {
			break
		}
		var d delivery
		d, since, err = deliver(ctx, a, b, room, filter, since, r.cfg.SyncPark, i)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			rec.fail(err)
			continue
		}
		if d.afterResponse < 0 {
			early++
			d.afterResponse = 0
		}
		rec.ok(d.afterResponse)
		endToEnd.ok(d.afterRequest)
	}
	res := newResult("sync", rec, time.Since(start))
	res.note("delay from the send's response to the receiver's sync response; long-poll parked %s before each send", r.cfg.SyncPark)
	if early > 0 {
		res.note("%d of %d deliveries arrived before the send's response (counted as 0 ms)", early, res.Summary.Count)
	}
	e := endToEnd.summary(0)
	res.note("from the send's request instead (end to end): p50 %s ms, p95 %s ms, p99 %s ms, max %s ms", ms(e.P50), ms(e.P95), ms(e.P99), ms(e.Max))
	return []*result{res}, nil
}

// delivery is how long an event took to reach the receiver's sync.
type delivery struct {
	afterResponse time.Duration // from the send's response; negative if the sync response came first
	afterRequest  time.Duration // from the start of the send request
}

type syncResult struct {
	sr   *syncResponse
	resp response
	err  error
}

// deliver is one iteration of the sync scenario: b long-polls from since, a
// sends after park, and deliver waits until b's sync returns the event. It
// returns how long that took and the since token to use next.
func deliver(ctx context.Context, a, b *session, room roomID, filter, since string, park time.Duration, seq int) (delivery, string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	poll := func(since string) <-chan syncResult {
		ch := make(chan syncResult, 1) // buffered: the goroutine never blocks
		go func() {
			sr, resp, err := b.sync(ctx, syncParams{since: since, filter: filter, timeout: syncTimeout})
			ch <- syncResult{sr, resp, err}
		}()
		return ch
	}
	pending := poll(since)
	if err := sleep(ctx, park); err != nil {
		return delivery{}, since, err
	}
	id, sent, err := a.sendText(ctx, room, fmt.Sprintf("loadtest sync %d", seq))
	if err != nil {
		cancel()
		if p := <-pending; p.err == nil {
			since = p.sr.NextBatch
		}
		return delivery{}, since, err
	}
	deadline := sent.done.Add(syncTimeout)
	for {
		p := <-pending
		if p.err != nil {
			return delivery{}, since, p.err
		}
		since = p.sr.NextBatch
		if p.sr.hasEvent(room, id) {
			sentAt := sent.done.Add(-sent.took)
			return delivery{afterResponse: p.resp.done.Sub(sent.done), afterRequest: p.resp.done.Sub(sentAt)}, since, nil
		}
		// Something else woke the long-poll (or it timed out): poll again.
		if time.Now().After(deadline) {
			return delivery{}, since, fmt.Errorf("event %s not in the receiver's sync within %s of being sent", id, syncTimeout)
		}
		pending = poll(since)
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// runBackchat measures a fresh user's first sync after joining a room with
// history, and checks that its timeline holds exactly the most recent
// events.
//
// Every fresh user's join adds a membership event to the room, so after a
// few joins the most recent events would all be joins. The scenario
// therefore starts a new room, with -backchat+10 messages, every
// -backchat/5 users; joins are then at most a fifth of the timeline. The
// check knows every event of the room since its messages: the messages in
// the order they were sent (sequentially) and each earlier user's join,
// learned from that user's own first sync.
func runBackchat(ctx context.Context, r *runner) ([]*result, error) {
	n := r.cfg.iterations(defaultBackchatN)
	k := r.cfg.Backchat
	perRoom := max(1, k/5)
	r.log.Info("registering users", "scenario", "backchat", "users", n+1)
	users, err := r.newUsers(ctx, n+1)
	if err != nil {
		return nil, err
	}
	creator, fresh := users[0], users[1:]
	want, filter := 0, ""
	if r.cfg.BackchatFilter {
		want, filter = k, timelineLimitFilter(k)
	}

	rec := newRecorder(n, r.cfg.MaxErrors)
	joins := newRecorder(n, 0)
	res := &result{Scenario: "backchat"}
	lengths := map[int]int{} // timeline length → how many first syncs had it
	var (
		room     roomID
		history  []eventID // event IDs of room since its messages, in order
		measured time.Duration
	)
	for i, u := range fresh {
		if ctx.Err() != nil || rec.exhausted() {
			break
		}
		if i%perRoom == 0 {
			room, history, err = buildHistory(ctx, creator, k+10, fmt.Sprintf("loadtest backchat %d", i/perRoom))
			if err != nil {
				return nil, err
			}
		}
		var jr response
		err = withRetry(ctx, func() error {
			var err error
			jr, err = u.join(ctx, room)
			return err
		})
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			rec.fail(err)
			continue
		}
		joins.ok(jr.took)
		sr, resp, err := u.sync(ctx, syncParams{filter: filter})
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			rec.fail(err)
			continue
		}
		rec.ok(resp.took)
		measured += resp.took
		jroom, ok := sr.Rooms.Join[room]
		if !ok {
			res.fail("%s: room %s missing from its first sync after joining", u.user, room)
			continue
		}
		lengths[len(jroom.Timeline.Events)]++
		joinID, problems := checkBackchat(jroom.Timeline, history, want, u.user)
		for _, p := range problems {
			res.fail("%s: %s", u.user, p)
		}
		if joinID != "" {
			history = append(history, joinID)
		}
	}
	// The loop also joins users and builds rooms, which are not measured:
	// throughput is first syncs per second of first-sync time.
	res.Summary = rec.summary(measured)
	res.addErrors(rec)
	js := joins.summary(0)
	res.note("throughput is first syncs per second of first-sync time; joins and room building are not counted")
	res.note("join (not in the figures above): p50 %s ms, p95 %s ms, max %s ms", ms(js.P50), ms(js.P95), ms(js.Max))
	if r.cfg.BackchatFilter {
		res.note("first sync with timeline limit %d; a new room every %d users", k, perRoom)
	} else {
		var seen []string
		for _, l := range slices.Sorted(maps.Keys(lengths)) {
			seen = append(seen, fmt.Sprintf("%d events ×%d", l, lengths[l]))
		}
		res.note("first sync without filter (server default); timelines had %s", strings.Join(seen, ", "))
	}
	return []*result{res}, nil
}

// buildHistory creates a room and has s send count messages to it, one
// after another so that their order is known. It returns the room and the
// message event IDs in order.
func buildHistory(ctx context.Context, s *session, count int, name string) (roomID, []eventID, error) {
	room, err := createRoom(ctx, s, name)
	if err != nil {
		return "", nil, err
	}
	ids := make([]eventID, 0, count)
	for i := range count {
		var id eventID
		err := withRetry(ctx, func() error {
			var err error
			id, _, err = s.sendText(ctx, room, fmt.Sprintf("loadtest history %d", i))
			return err
		})
		if err != nil {
			return "", nil, fmt.Errorf("building history: %w", err)
		}
		ids = append(ids, id)
	}
	return room, ids, nil
}

// checkBackchat checks the timeline of a joiner's first sync. history lists
// the room's events before the join, oldest first (the newest ones at
// least); want is the expected timeline length, 0 if unknown. The timeline
// must end with the joiner's own join event, preceded by the most recent
// events of history in order. It returns the join event's ID, if found,
// and what is wrong.
func checkBackchat(tl timeline, history []eventID, want int, joiner userID) (eventID, []string) {
	var problems []string
	evs := tl.Events
	if len(evs) == 0 {
		return "", []string{"timeline is empty"}
	}
	var joinID eventID
	last := evs[len(evs)-1]
	if last.Type == "m.room.member" && last.StateKey != nil && *last.StateKey == string(joiner) {
		joinID = last.EventID
		evs = evs[:len(evs)-1]
	} else {
		problems = append(problems, fmt.Sprintf("last timeline event is %s %s, want the user's own join", last.Type, last.EventID))
	}
	if want > 0 {
		if len(tl.Events) != want {
			problems = append(problems, fmt.Sprintf("timeline has %d events, want %d", len(tl.Events), want))
		}
		if !tl.Limited {
			problems = append(problems, "timeline.limited is false although the room has older events")
		}
	}
	n := min(len(evs), len(history))
	got, exp := evs[len(evs)-n:], history[len(history)-n:]
	for i := range got {
		if got[i].EventID != exp[i] {
			problems = append(problems, fmt.Sprintf("timeline event %d of %d is %s, want %s: not the most recent events in order",
				len(evs)-n+i+1, len(tl.Events), got[i].EventID, exp[i]))
			break
		}
	}
	return joinID, problems
}

// runPaginate fills a room with -history messages from -senders users at
// once, then pages back through it with /messages and checks that every
// message comes back exactly once.
func runPaginate(ctx context.Context, r *runner) ([]*result, error) {
	room, senders, err := r.roomWithSenders(ctx, "loadtest paginate", r.cfg.Senders)
	if err != nil {
		return nil, err
	}
	r.log.Info("filling room", "scenario", "paginate", "messages", r.cfg.History, "senders", len(senders))
	fillRec, fillElapsed, sent := r.sendConcurrently(ctx, room, senders, r.cfg.History, true)
	fill := newResult("paginate-fill", fillRec, fillElapsed)
	fill.note("%d messages from %d senders", len(sent), len(senders))
	rows := []*result{fill}
	if ctx.Err() != nil {
		return rows, nil
	}

	reader := senders[0]
	seen := make(map[eventID]int, len(sent)+16)
	from := ""
	start := time.Now()
	if r.cfg.PaginateFrom == "sync" {
		sr, _, err := reader.sync(ctx, syncParams{filter: roomTimelineFilter(room, 1)})
		if err != nil {
			return rows, fmt.Errorf("sync for prev_batch: %w", err)
		}
		tl := sr.Rooms.Join[room].Timeline
		if tl.PrevBatch == "" {
			return rows, errors.New("sync timeline of the paginate room has no prev_batch")
		}
		for _, e := range tl.Events {
			seen[e.EventID]++
		}
		from = tl.PrevBatch
	}

	res := &result{Scenario: "paginate"}
	rows = append(rows, res)
	maxPages := r.cfg.History/r.cfg.Page*2 + 100
	rec := newRecorder(maxPages, r.cfg.MaxErrors)
	events, reachedStart := 0, false
	for attempt := 0; ; attempt++ {
		if ctx.Err() != nil || rec.exhausted() {
			break
		}
		if attempt == maxPages {
			res.fail("not at the start of the room after %d requests", attempt)
			break
		}
		mr, resp, err := reader.messages(ctx, room, from, r.cfg.Page)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			rec.fail(err) // and retry the same page
			continue
		}
		rec.ok(resp.took)
		for _, e := range mr.Chunk {
			seen[e.EventID]++
		}
		events += len(mr.Chunk)
		if mr.End == "" {
			reachedStart = true
			break
		}
		if len(mr.Chunk) == 0 && mr.End == from {
			res.fail("empty page whose end token equals from %q: paging would never end", from)
			break
		}
		from = mr.End
	}
	elapsed := time.Since(start)
	res.Summary = rec.summary(elapsed)
	res.addErrors(rec)
	res.note("%d events in %d pages of up to %d in %.2f s (%.0f events/s); from: %s",
		events, res.Summary.Count, r.cfg.Page, elapsed.Seconds(), float64(events)/elapsed.Seconds(), r.cfg.PaginateFrom)
	if !reachedStart {
		res.note("did not reach the start of the room: duplicates and missing not checked")
		return rows, nil
	}
	dups, missing := paginationCheck(seen, sent)
	if dups > 0 {
		res.fail("%d event IDs returned more than once", dups)
	}
	if missing > 0 {
		res.fail("%d of %d sent messages never returned", missing, len(sent))
	}
	if dups == 0 && missing == 0 {
		res.note("all %d sent messages returned exactly once", len(sent))
	}
	return rows, nil
}

// paginationCheck counts event IDs seen more than once and sent events
// never seen.
func paginationCheck(seen map[eventID]int, sent []eventID) (dups, missing int) {
	for _, c := range seen {
		if c > 1 {
			dups++
		}
	}
	for _, id := range sent {
		if seen[id] == 0 {
			missing++
		}
	}
	return dups, missing
}
