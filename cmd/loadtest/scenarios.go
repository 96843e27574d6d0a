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
	defaultInitialN  = 50
)

const (
	// syncTimeout is the long-poll timeout of the sync scenario; an event
	// not delivered within it counts as an error.
	syncTimeout = 30 * time.Second
	// setupParallelism bounds concurrent registrations, so that setup does
	// not itself become a load test of password hashing.
	setupParallelism = 4
	// initialHistory is how many messages each of initialsync's rooms
	// holds: more than a default timeline (10 on Synapse), so that the
	// server has to cut each room's timeline.
	initialHistory = 20
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
	{"initialsync", runInitialSync},
}

// runner holds what the scenarios of one run share.
type runner struct {
	cfg      config
	hs       []*homeserver // the processes of the homeserver; at least one
	log      *slog.Logger
	runID    string   // random; part of every username and transaction ID
	password secret   // of every test user
	admin    *session // Synapse admin lifting rate limits; nil if unavailable
	users    atomic.Int64
}

// newUser registers a fresh test user, loadtest_<runID>_<n>, on process
// n modulo the number of processes: consecutive users land on different
// processes. The session then talks only to that process.
func (r *runner) newUser(ctx context.Context) (*session, error) {
	n := r.users.Add(1)
	return r.register(ctx, n, r.hs[int((n-1)%int64(len(r.hs)))])
}

// newUserOn registers a fresh test user on process hs.
func (r *runner) newUserOn(ctx context.Context, hs *homeserver) (*session, error) {
	return r.register(ctx, r.users.Add(1), hs)
}

// register registers user loadtest_<runID>_<n> on hs.
func (r *runner) register(ctx context.Context, n int64, hs *homeserver) (*session, error) {
	name := fmt.Sprintf("loadtest_%s_%d", r.runID, n)
	txnPrefix := "lt" + r.runID
	var s *session
	err := withRetry(ctx, func() error {
		var err error
		if r.cfg.SharedSecret.isZero() {
			s, err = hs.register(ctx, name, r.password, r.cfg.RegistrationToken, txnPrefix)
		} else {
			s, err = hs.registerShared(ctx, r.cfg.SharedSecret, name, r.password, false, txnPrefix)
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
	users := make([]*session, k)
	err := parallel(ctx, k, func(i int) error {
		s, err := r.newUser(ctx)
		users[i] = s
		return err
	})
	if err != nil {
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

// sendConcurrently has every sender send messages as fast as it can, sender
// i to the rooms of rooms[i] in turn, until total sends have been
// attempted, ctx ends or the recorder is exhausted. It returns the
// recorder, the wall-clock time taken and, if collect is set, the event IDs
// of the messages sent.
func (r *runner) sendConcurrently(ctx context.Context, rooms [][]roomID, senders []*session, total int, collect bool) (*recorder, time.Duration, []eventID) {
	rec := newRecorder(total, r.cfg.MaxErrors)
	var claimed atomic.Int64
	ids := make([][]eventID, len(senders)) // one slice per sender: no locking
	start := time.Now()
	var wg sync.WaitGroup
	for i, s := range senders {
		wg.Go(func() {
			for k := 0; ; k++ {
				n := claimed.Add(1)
				if n > int64(total) || ctx.Err() != nil || rec.exhausted() {
					return
				}
				room := rooms[i][k%len(rooms[i])]
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

// senderRooms returns the rooms, numbered 0 to nRooms-1, that sender i of
// nSenders sends to. With at least as many rooms as senders, each room has
// one sender and sender i has rooms i, i+nSenders, ...; with fewer, each
// room has every nRooms-th sender and sender i has room i mod nRooms.
// Either way room j's senders include sender j mod nSenders, its creator.
func senderRooms(i, nSenders, nRooms int) []int {
	if nRooms < nSenders {
		return []int{i % nRooms}
	}
	var out []int
	for j := i; j < nRooms; j += nSenders {
		out = append(out, j)
	}
	return out
}

// parallel calls f(0) to f(k-1), setupParallelism at a time, and returns
// the first error; after one, the calls not yet started are skipped.
func parallel(ctx context.Context, k int, f func(i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sem := make(chan struct{}, setupParallelism)
	var wg sync.WaitGroup
	for i := range k {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if ctx.Err() != nil {
				return
			}
			if err := f(i); err != nil {
				cancel(err) // the first cause wins
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
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

// runConcurrent measures -senders users sending at once to -rooms rooms
// (see senderRooms for who sends where).
func runConcurrent(ctx context.Context, r *runner) ([]*result, error) {
	nSenders, nRooms := r.cfg.Senders, r.cfg.Rooms
	senders, err := r.newUsers(ctx, nSenders)
	if err != nil {
		return nil, err
	}
	if nRooms > 1 {
		r.log.Info("creating rooms", "scenario", "concurrent", "rooms", nRooms)
	}
	// Room j is created by sender j mod nSenders, who is one of its
	// senders; the room's other senders join it.
	rooms := make([]roomID, nRooms)
	err = parallel(ctx, nRooms, func(j int) error {
		room, err := createRoom(ctx, senders[j%nSenders], fmt.Sprintf("loadtest concurrent %d", j))
		rooms[j] = room
		return err
	})
	if err != nil {
		return nil, err
	}
	targets := make([][]roomID, nSenders)
	err = parallel(ctx, nSenders, func(i int) error {
		for _, j := range senderRooms(i, nSenders, nRooms) {
			targets[i] = append(targets[i], rooms[j])
			if j%nSenders == i {
				continue // the creator
			}
			if err := withRetry(ctx, func() error { _, err := senders[i].join(ctx, rooms[j]); return err }); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	r.log.Info("sending", "scenario", "concurrent", "messages", r.cfg.Messages, "senders", nSenders, "rooms", nRooms)
	rec, elapsed, _ := r.sendConcurrently(ctx, targets, senders, r.cfg.Messages, false)
	res := newResult("concurrent", rec, elapsed)
	if nRooms == 1 {
		res.note("%d senders in one room", nSenders)
	} else {
		res.note("%d senders in %d rooms", nSenders, nRooms)
	}
	if len(r.hs) > 1 {
		res.note("senders spread over %d processes", len(r.hs))
	}
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
//
// With several processes the sender talks to the first and the receiver to
// the second, so the figure is the wake-up across processes.
func runSync(ctx context.Context, r *runner) ([]*result, error) {
	a, err := r.newUserOn(ctx, r.hs[0])
	if err != nil {
		return nil, err
	}
	b, err := r.newUserOn(ctx, r.hs[1%len(r.hs)])
	if err != nil {
		return nil, err
	}
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
	if a.hs != b.hs {
		res.note("across processes: sender on %s, receiver on %s", a.hs.base, b.hs.base)
	}
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
	targets := make([][]roomID, len(senders))
	for i := range targets {
		targets[i] = []roomID{room}
	}
	fillRec, fillElapsed, sent := r.sendConcurrently(ctx, targets, senders, r.cfg.History, true)
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

// runInitialSync measures a full initial /sync, without since or filter, of
// a user in -initial-rooms rooms, -n times. Another user creates each room
// and, after the measured user has joined, sends initialHistory messages to
// it; each sync must hold every room, with its newest message last in the
// room's timeline.
func runInitialSync(ctx context.Context, r *runner) ([]*result, error) {
	users, err := r.newUsers(ctx, 2)
	if err != nil {
		return nil, err
	}
	owner, u := users[0], users[1]
	k := r.cfg.InitialRooms
	r.log.Info("building rooms", "scenario", "initialsync", "rooms", k, "messages per room", initialHistory)
	newest := make(map[roomID]eventID, k)
	var mu sync.Mutex
	err = parallel(ctx, k, func(j int) error {
		room, err := createRoom(ctx, owner, fmt.Sprintf("loadtest initialsync %d", j))
		if err != nil {
			return err
		}
		if err := withRetry(ctx, func() error { _, err := u.join(ctx, room); return err }); err != nil {
			return err
		}
		var last eventID
		for i := range initialHistory {
			err := withRetry(ctx, func() error {
				var err error
				last, _, err = owner.sendText(ctx, room, fmt.Sprintf("loadtest history %d", i))
				return err
			})
			if err != nil {
				return fmt.Errorf("building history: %w", err)
			}
		}
		mu.Lock()
		newest[room] = last
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, err
	}

	n := r.cfg.iterations(defaultInitialN)
	rec := newRecorder(n, r.cfg.MaxErrors)
	res := &result{Scenario: "initialsync"}
	var measured time.Duration
	for range n {
		if ctx.Err() != nil || rec.exhausted() {
			break
		}
		sr, resp, err := u.sync(ctx, syncParams{})
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			rec.fail(err)
			continue
		}
		rec.ok(resp.took)
		measured += resp.took
		for _, p := range checkInitialSync(sr, newest) {
			res.fail("%s", p)
		}
	}
	// Building the rooms is not measured: throughput is syncs per second
	// of sync time.
	res.Summary = rec.summary(measured)
	res.addErrors(rec)
	res.note("full initial sync (no filter) of a user in %d rooms of %d messages each", k, initialHistory)
	return []*result{res}, nil
}

// checkInitialSync checks that an initial sync holds every room of newest
// among its joined rooms, each with its newest event last in the timeline,
// and returns what is wrong (at most one problem per room).
func checkInitialSync(sr *syncResponse, newest map[roomID]eventID) []string {
	var problems []string
	for _, room := range slices.Sorted(maps.Keys(newest)) {
		jr, ok := sr.Rooms.Join[room]
		switch evs := jr.Timeline.Events; {
		case !ok:
			problems = append(problems, fmt.Sprintf("room %s missing from the initial sync", room))
		case len(evs) == 0:
			problems = append(problems, fmt.Sprintf("room %s: empty timeline", room))
		case evs[len(evs)-1].EventID != newest[room]:
			problems = append(problems, fmt.Sprintf("room %s: timeline ends with %s, want the newest message %s", room, evs[len(evs)-1].EventID, newest[room]))
		}
	}
	return problems
}
