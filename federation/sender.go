package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	gosync "sync"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"github.com/persistentchat/homeserver/streamworker"
)

// Outbound transactions (server-server API, "Transactions"): every local
// event goes to the servers of the room's joined members, in
// transactions of at most 50 PDUs and 100 EDUs, one queue per
// destination, kept in the database. A worker on the event stream
// (streamworker, lease "federation_sender") puts each committed event in
// its destinations' queues, committing the queue entries with its
// position; each destination is then sent its queue in order, one
// transaction at a time. A destination that fails is retried with
// exponential back-off, persisted, while the others go on; one that was
// down for longer than CatchUpAfter is sent only each room's latest
// events (its forward extremities), as it fetches the history between
// with /get_missing_events.

// Destinations says which servers a local event goes to.
type Destinations interface {
	// Servers are the destinations of ev, this server excluded.
	Servers(ctx context.Context, ev *roomdag.StoredEvent) ([]roomdag.ServerName, error)
	// RoomServers are the servers an EDU about room goes to, this
	// server excluded.
	RoomServers(ctx context.Context, room roomdag.RoomID) ([]roomdag.ServerName, error)
}

// JoinedServers are the destinations the spec gives: the servers with a
// user joined to the room now, and for a kick, ban or rescinded invite
// the server of its target too (a server whose last user goes still
// hears of it). Not for an invite: the invitee's server had it over
// /invite, and the same event again over /send, in a room it does not
// hold, makes Dendrite fetch the room's history as it joins, racing the
// join into a broken room (as Synapse, which adds only leaves).
type JoinedServers struct {
	Server roomdag.ServerName
	Rooms  StateSource
	// ServerAllowed, unless nil, is the room's server ACL: denied servers
	// are not sent the room's events (fedread's roomdag.ServerAllowed).
	ServerAllowed func(state roomdag.StateMap, server roomdag.ServerName) bool
}

// Servers implements Destinations.
func (j JoinedServers) Servers(ctx context.Context, ev *roomdag.StoredEvent) ([]roomdag.ServerName, error) {
	out, err := j.RoomServers(ctx, ev.RoomID())
	if err != nil {
		return nil, err
	}
	if m := ev.Membership(); ev.Type() == roomdag.TypeMember && ev.StateKey() != nil && (m == roomdag.MembershipLeave || m == roomdag.MembershipBan) {
		if s := roomdag.UserID(*ev.StateKey()).Server(); s != j.Server && s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out, nil
}

// RoomServers implements Destinations.
func (j JoinedServers) RoomServers(ctx context.Context, room roomdag.RoomID) ([]roomdag.ServerName, error) {
	st, err := j.Rooms.State(ctx, room)
	if errors.Is(err, roomdag.ErrUnknownRoom) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	seen := map[roomdag.ServerName]bool{}
	var out []roomdag.ServerName
	for k, ev := range st.State {
		if k.Type != roomdag.TypeMember || ev.Membership() != roomdag.MembershipJoin {
			continue
		}
		s := roomdag.UserID(k.StateKey).Server()
		if s == j.Server || s == "" || seen[s] {
			continue
		}
		if j.ServerAllowed != nil && !j.ServerAllowed(st.State, s) {
			continue
		}
		seen[s] = true
		out = append(out, s)
	}
	slices.Sort(out)
	return out, nil
}

// StateSourceFunc is a StateSource as a function.
type StateSourceFunc func(ctx context.Context, id roomdag.RoomID) (*roomdag.RoomState, error)

// State implements StateSource.
func (f StateSourceFunc) State(ctx context.Context, id roomdag.RoomID) (*roomdag.RoomState, error) {
	return f(ctx, id)
}

// SenderStore is what the sender needs from storage (sqlstore.DB).
type SenderStore interface {
	FederationSenderPos(ctx context.Context) (roomdag.StreamPos, error)
	StreamEvents(ctx context.Context, after roomdag.StreamPos, limit int) ([]storage.StreamEvent, error)
	QueueFederationPDUs(ctx context.Context, from, to roomdag.StreamPos, items map[roomdag.ServerName][]storage.FederationItem, nowMS int64) error
	QueueFederationEDUs(ctx context.Context, items map[roomdag.ServerName][]storage.FederationItem, nowMS int64) error
	FederationDestinations(ctx context.Context) ([]storage.FederationDestination, error)
	FederationDestination(ctx context.Context, dest roomdag.ServerName) (storage.FederationDestination, error)
	FederationQueue(ctx context.Context, dest roomdag.ServerName, limit int) ([]storage.FederationItem, error)
	StartFederationTxn(ctx context.Context, dest roomdag.ServerName, seqs []int64) (int64, error)
	FederationTxnDone(ctx context.Context, dest roomdag.ServerName, txn int64) error
	FederationTxnFailed(ctx context.Context, d storage.FederationDestination) error
	DropFederationItems(ctx context.Context, dest roomdag.ServerName, seqs []int64) error
	Event(ctx context.Context, id roomdag.EventID) (*roomdag.StoredEvent, error)
	// JoinedRooms lists the rooms a local user is joined to.
	JoinedRooms(ctx context.Context, user roomdag.UserID) ([]roomdag.RoomID, error)
}

// SenderOptions configure NewSender.
type SenderOptions struct {
	Server       roomdag.ServerName
	Store        SenderStore
	Client       Client
	Destinations Destinations
	// Rooms gives the rooms' forward extremities for catch-up.
	Rooms StateSource
	// Holder is the "federation_sender" lease: only its holder sends.
	// Nil: always (one process).
	Holder *streamworker.Holder
	// Backoff is the wait after a destination's failures in a row:
	// Initial after the first, doubling to Max. Default 10 s to 1 h.
	Backoff streamworker.Backoff
	// CatchUpAfter: a destination failing for longer than this is sent
	// only the rooms' latest events when it comes back. Default 1 h.
	CatchUpAfter time.Duration
	// Presence sends local users' presence (presence.federate); off, it
	// stays local.
	Presence bool
	Clock    clock.Clock
	Log      *slog.Logger
}

// SenderStats count what the sender did, for tests.
type SenderStats struct {
	// Sent counts transactions a destination accepted, Failed attempts
	// that failed, Dropped queued PDUs left to catch-up.
	Sent, Failed, Dropped int
	// Waiting counts destinations waiting out a back-off now.
	Waiting int
}

// Sender sends local events and EDUs to other servers.
type Sender struct {
	o    SenderOptions
	loop *streamworker.Loop
	quit chan struct{}
	done chan struct{}

	// presence holds local presence changes for the goroutine that
	// queues them (PresenceChanged must not block).
	presence   chan presenceChange
	presenceWG gosync.WaitGroup

	mu      gosync.Mutex
	held    context.Context // nil while the lease is not held
	running map[roomdag.ServerName]chan struct{}
	// waiting are the destinations whose delivery waits out a back-off.
	waiting map[roomdag.ServerName]bool
	wg      gosync.WaitGroup
	stats   SenderStats
	changed chan struct{}
}

// NewSender makes the sender of o; Start runs it.
func NewSender(o SenderOptions) *Sender {
	if o.Backoff.Initial <= 0 {
		o.Backoff = streamworker.Backoff{Initial: 10 * time.Second, Max: time.Hour}
	}
	if o.CatchUpAfter <= 0 {
		o.CatchUpAfter = time.Hour
	}
	s := &Sender{o: o, quit: make(chan struct{}), done: make(chan struct{}),
		running: map[roomdag.ServerName]chan struct{}{}, waiting: map[roomdag.ServerName]bool{}, changed: make(chan struct{}),
		presence: make(chan presenceChange, presenceBuffer)}
	s.loop = streamworker.New(s, streamworker.Options{Name: "federation sender", Clock: o.Clock, Log: o.Log, Holder: o.Holder})
	return s
}

// Start resumes the event stream worker and starts delivering.
func (s *Sender) Start(ctx context.Context) error {
	if err := s.loop.Start(ctx); err != nil {
		return err
	}
	go s.hold()
	if s.o.Presence {
		s.presenceWG.Add(1)
		go s.queuePresence()
	}
	return nil
}

// presenceBuffer bounds the presence changes waiting to be queued; past
// it changes are dropped (presence is best effort: the next change, or
// the remote server's own timeout, corrects it).
const presenceBuffer = 1024

type presenceChange struct {
	user    roomdag.UserID
	content json.RawMessage
}

// PresenceChanged implements sync.PresenceListener: with Presence on, a
// local user's change goes, as an m.presence EDU, to every server that
// shares a room with them.
func (s *Sender) PresenceChanged(user roomdag.UserID, content json.RawMessage) {
	if !s.o.Presence || user.Server() != s.o.Server {
		return
	}
	select {
	case s.presence <- presenceChange{user, content}:
	default:
		s.o.Log.Warn("federation sender: presence change dropped, queue full", "user", user)
	}
}

// queuePresence queues the presence changes, in order.
func (s *Sender) queuePresence() {
	defer s.presenceWG.Done()
	for {
		select {
		case <-s.quit:
			return
		case c := <-s.presence:
			if err := s.queuePresenceChange(context.Background(), c); err != nil {
				s.o.Log.Error("federation sender: queueing presence", "user", c.user, "err", err)
			}
		}
	}
}

func (s *Sender) queuePresenceChange(ctx context.Context, c presenceChange) error {
	var p map[string]any
	if err := json.Unmarshal(c.content, &p); err != nil {
		return err
	}
	p["user_id"] = c.user
	b, err := json.Marshal(map[string]any{"edu_type": "m.presence", "content": map[string]any{"push": []any{p}}})
	if err != nil {
		return err
	}
	dests, err := UserServers(ctx, s.o.Store, s.o.Destinations, c.user)
	if err != nil {
		return err
	}
	items := map[roomdag.ServerName][]storage.FederationItem{}
	for _, d := range dests {
		items[d] = []storage.FederationItem{{EDU: b}}
	}
	if len(items) == 0 {
		return nil
	}
	if err := s.o.Store.QueueFederationEDUs(ctx, items, s.o.Clock.Now().UnixMilli()); err != nil {
		return err
	}
	for d := range items {
		s.wake(d)
	}
	return nil
}

// Stop stops the worker and every delivery, after the request in
// progress; what is queued stays queued.
func (s *Sender) Stop() {
	select {
	case <-s.quit:
	default:
		close(s.quit)
	}
	s.loop.Stop()
	<-s.done
	s.wg.Wait()
	s.presenceWG.Wait()
}

// EventCommitted implements roomdag.Listener: the worker reads the
// event back from the stream, so this is only a wake-up.
func (s *Sender) EventCommitted(*roomdag.Event, roomdag.StreamPos) { s.loop.Notify() }

// Loop is the event stream worker, for tests (Wait).
func (s *Sender) Loop() *streamworker.Loop { return s.loop }

// Stats returns the counts so far.
func (s *Sender) Stats() SenderStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// WaitStats waits until cond holds of the stats, or ctx ends.
func (s *Sender) WaitStats(ctx context.Context, cond func(SenderStats) bool) error {
	for {
		s.mu.Lock()
		st, ch := s.stats, s.changed
		s.mu.Unlock()
		if cond(st) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("sender stats %+v: %w", st, ctx.Err())
		}
	}
}

func (s *Sender) update(f func(*SenderStats)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.stats)
	close(s.changed)
	s.changed = make(chan struct{})
}

// hold runs the deliveries while the lease is held: at each hold it
// starts every destination with a queue.
func (s *Sender) hold() {
	defer close(s.done)
	stop, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-s.quit
		cancel()
	}()
	for {
		held := stop
		if s.o.Holder != nil {
			h, _, err := s.o.Holder.Held(stop)
			if err != nil {
				return
			}
			held = h
		}
		ctx, end := context.WithCancel(held)
		s.mu.Lock()
		s.held = ctx
		s.mu.Unlock()
		// EDUs may be queued by any process sharing the database (typing
		// is set wherever the client is): the holder looks for queues it
		// was not told of every rescanEvery.
		for rescan := true; rescan; {
			if dests, err := s.o.Store.FederationDestinations(ctx); err != nil {
				s.o.Log.Error("federation sender: listing destinations", "err", err)
			} else {
				for _, d := range dests {
					s.wake(d.Server)
				}
			}
			select {
			case <-held.Done():
				rescan = false
			case <-s.quit:
				rescan = false
			case <-s.o.Clock.After(rescanEvery):
			}
		}
		s.mu.Lock()
		s.held = nil
		s.mu.Unlock()
		end()
		s.wg.Wait()
		select {
		case <-s.quit:
			return
		default:
		}
		if s.o.Holder == nil {
			return
		}
	}
}

// wake starts dest's delivery unless it runs, or tells it to look again.
func (s *Sender) wake(dest roomdag.ServerName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held == nil {
		return // the next holder starts it
	}
	if ch, ok := s.running[dest]; ok {
		select {
		case ch <- struct{}{}:
		default:
		}
		return
	}
	ch := make(chan struct{}, 1)
	s.running[dest] = ch
	ctx := s.held
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.deliver(ctx, dest, ch)
	}()
}

// ServerUp tells the sender that dest was heard from (it sent a
// transaction): if its delivery waits out a back-off, it is tried now
// rather than at the back-off's end, as Synapse does on an inbound
// request. Its failures stay counted, for catch-up.
func (s *Sender) ServerUp(dest roomdag.ServerName) {
	s.mu.Lock()
	waiting := s.waiting[dest]
	s.mu.Unlock()
	if !waiting {
		return
	}
	ctx := context.Background()
	d, err := s.o.Store.FederationDestination(ctx, dest)
	if err != nil || d.RetryAtMS == 0 {
		return
	}
	d.RetryAtMS = 0
	if err := s.o.Store.FederationTxnFailed(ctx, d); err != nil {
		s.o.Log.Error("federation sender: destination up", "dest", dest, "err", err)
		return
	}
	s.wake(dest)
}

// Resume implements streamworker.Stepper.
func (s *Sender) Resume(ctx context.Context) (roomdag.StreamPos, error) {
	return s.o.Store.FederationSenderPos(ctx)
}

// rescanEvery is how often the holder looks for queues of destinations
// it was not woken for.
const rescanEvery = 5 * time.Second

// stepEvents bounds the events one step queues.
const stepEvents = 200

// Step implements streamworker.Stepper: it queues the local events after
// from for their destinations, with the new position.
func (s *Sender) Step(ctx context.Context, from roomdag.StreamPos) (roomdag.StreamPos, bool, error) {
	evs, err := s.o.Store.StreamEvents(ctx, from, stepEvents)
	if err != nil || len(evs) == 0 {
		return from, false, err
	}
	items := map[roomdag.ServerName][]storage.FederationItem{}
	to := from
	for _, ev := range evs {
		to = ev.Pos
		// Only this server's events: others' came from their servers,
		// which send them themselves.
		if ev.Sender().Server() != s.o.Server {
			continue
		}
		dests, err := s.o.Destinations.Servers(ctx, ev.StoredEvent)
		if err != nil {
			return from, false, err
		}
		for _, d := range dests {
			items[d] = append(items[d], storage.FederationItem{Room: ev.RoomID(), Event: ev.ID()})
		}
	}
	if err := s.o.Store.QueueFederationPDUs(context.WithoutCancel(ctx), from, to, items, s.o.Clock.Now().UnixMilli()); err != nil {
		return from, false, err
	}
	for d := range items {
		s.wake(d)
	}
	return to, len(evs) == stepEvents, nil
}

// Forward queues ev, another server's event this server took into a
// room through a membership handshake (send_join, send_leave,
// send_knock), for the room's other servers: the origin knows only this
// server, so the others would not hear of it (Synapse sends such events
// "on behalf of" the origin). The origin is not sent its own event back.
// Events received over /send are not forwarded: their origin sends them.
func (s *Sender) Forward(ctx context.Context, ev *roomdag.Event, origin roomdag.ServerName) error {
	dests, err := s.o.Destinations.Servers(ctx, &roomdag.StoredEvent{Event: ev})
	if err != nil {
		return err
	}
	items := map[roomdag.ServerName][]storage.FederationItem{}
	for _, d := range dests {
		if d != origin && d != s.o.Server {
			items[d] = []storage.FederationItem{{Room: ev.RoomID(), Event: ev.ID()}}
		}
	}
	if len(items) == 0 {
		return nil
	}
	if err := s.o.Store.QueueFederationEDUs(context.WithoutCancel(ctx), items, s.o.Clock.Now().UnixMilli()); err != nil {
		return err
	}
	for d := range items {
		s.wake(d)
	}
	return nil
}

// QueueEDU sends an EDU about room to the room's other servers. Typing
// and receipts come here from the client API, after their change is
// made.
func (s *Sender) QueueEDU(ctx context.Context, room roomdag.RoomID, eduType string, content any) error {
	dests, err := s.o.Destinations.RoomServers(ctx, room)
	if err != nil || len(dests) == 0 {
		return err
	}
	b, err := json.Marshal(map[string]any{"edu_type": eduType, "content": content})
	if err != nil {
		return err
	}
	items := map[roomdag.ServerName][]storage.FederationItem{}
	for _, d := range dests {
		items[d] = []storage.FederationItem{{Room: room, EDU: b}}
	}
	if err := s.o.Store.QueueFederationEDUs(ctx, items, s.o.Clock.Now().UnixMilli()); err != nil {
		return err
	}
	for _, d := range dests {
		s.wake(d)
	}
	return nil
}

// Typing queues an m.typing EDU (api.AppServices' Typing signature, so
// server can hand the client API both).
func (s *Sender) Typing(room roomdag.RoomID, user roomdag.UserID, typing bool, _ time.Duration) {
	if user.Server() != s.o.Server {
		return
	}
	err := s.QueueEDU(context.Background(), room, "m.typing", map[string]any{"room_id": room, "user_id": user, "typing": typing})
	if err != nil {
		s.o.Log.Error("federation sender: queueing typing", "room", room, "err", err)
	}
}

// Receipt queues an m.receipt EDU for a public read receipt.
func (s *Sender) Receipt(room roomdag.RoomID, user roomdag.UserID, typ, thread string, event roomdag.EventID, tsMS int64) {
	if user.Server() != s.o.Server || typ != "m.read" {
		return
	}
	data := map[string]any{"ts": tsMS}
	if thread != "" {
		data["thread_id"] = thread
	}
	content := map[string]any{string(room): map[string]any{"m.read": map[string]any{
		string(user): map[string]any{"event_ids": []roomdag.EventID{event}, "data": data}}}}
	if err := s.QueueEDU(context.Background(), room, "m.receipt", content); err != nil {
		s.o.Log.Error("federation sender: queueing receipt", "room", room, "err", err)
	}
}

// deliver sends dest its queue until it is empty, waiting out back-offs;
// it ends with the hold (ctx) or an empty queue.
func (s *Sender) deliver(ctx context.Context, dest roomdag.ServerName, wake chan struct{}) {
	defer func() {
		s.mu.Lock()
		if s.running[dest] == wake {
			delete(s.running, dest)
		}
		s.mu.Unlock()
	}()
	for ctx.Err() == nil {
		d, err := s.o.Store.FederationDestination(ctx, dest)
		if err != nil {
			s.o.Log.Error("federation sender: destination", "dest", dest, "err", err)
			return
		}
		if wait := time.Duration(d.RetryAtMS-s.o.Clock.Now().UnixMilli()) * time.Millisecond; wait > 0 {
			timer := s.o.Clock.After(wait) // set before the stats say so: a test advances its clock on them
			s.mu.Lock()
			s.waiting[dest] = true
			s.mu.Unlock()
			s.update(func(st *SenderStats) { st.Waiting++ })
			select {
			case <-timer:
			case <-wake: // ServerUp, or more queued: look again
			case <-ctx.Done():
			}
			s.mu.Lock()
			delete(s.waiting, dest)
			s.mu.Unlock()
			s.update(func(st *SenderStats) { st.Waiting-- })
			continue
		}
		items, err := s.o.Store.FederationQueue(ctx, dest, 4*MaxTxnEDUs)
		if err != nil {
			s.o.Log.Error("federation sender: queue", "dest", dest, "err", err)
			return
		}
		if len(items) == 0 {
			// Anything queued after this read woke us through wake's
			// channel, which is checked before the delivery ends.
			s.mu.Lock()
			select {
			case <-wake:
				s.mu.Unlock()
				continue
			default:
			}
			delete(s.running, dest)
			s.mu.Unlock()
			return
		}
		if d.Failures > 0 && d.DownSinceMS > 0 &&
			s.o.Clock.Now().Sub(time.UnixMilli(d.DownSinceMS)) >= s.o.CatchUpAfter {
			if dropped, err := s.catchUp(ctx, dest, items); err != nil {
				s.o.Log.Error("federation sender: catch-up", "dest", dest, "err", err)
				return
			} else if dropped {
				continue // read the queue again
			}
		}
		if err := s.sendOne(ctx, dest, d, items); err != nil && ctx.Err() == nil {
			s.o.Log.Info("federation sender: transaction failed", "dest", dest, "err", err)
		}
	}
}

// catchUp drops the queued PDUs of dest that are not their room's
// latest: of each room's PDUs not already in a transaction it keeps
// those that are forward extremities of the room now, or else the last
// one. It reports whether it dropped any.
func (s *Sender) catchUp(ctx context.Context, dest roomdag.ServerName, items []storage.FederationItem) (bool, error) {
	byRoom := map[roomdag.RoomID][]storage.FederationItem{}
	for _, it := range items {
		if it.Event != "" && it.Txn == 0 {
			byRoom[it.Room] = append(byRoom[it.Room], it)
		}
	}
	var drop []int64
	for room, list := range byRoom {
		if len(list) < 2 {
			continue
		}
		var ext []roomdag.EventID
		if st, err := s.o.Rooms.State(ctx, room); err == nil {
			ext = st.Extremities
		} else if !errors.Is(err, roomdag.ErrUnknownRoom) {
			return false, err
		}
		keep := map[int64]bool{}
		for _, it := range list {
			if slices.Contains(ext, it.Event) {
				keep[it.Seq] = true
			}
		}
		if len(keep) == 0 {
			keep[list[len(list)-1].Seq] = true
		}
		for _, it := range list {
			if !keep[it.Seq] {
				drop = append(drop, it.Seq)
			}
		}
	}
	if len(drop) == 0 {
		return false, nil
	}
	if err := s.o.Store.DropFederationItems(ctx, dest, drop); err != nil {
		return false, err
	}
	s.update(func(st *SenderStats) { st.Dropped += len(drop) })
	s.o.Log.Info("federation sender: catching up with the rooms' latest events", "dest", dest, "dropped", len(drop))
	return true, nil
}

// MaxTxnEDUBytes bounds the bytes of a new transaction's EDUs (the
// first EDU excepted): the spec bounds only their number, and servers
// refuse requests past their own size limit (1 MiB by default here).
const MaxTxnEDUBytes = 512 << 10

// sendOne sends dest one transaction: the one in progress if a failed
// attempt left one, else a new one of the first items (at most 50 PDUs
// and 100 EDUs of MaxTxnEDUBytes, in queue order).
func (s *Sender) sendOne(ctx context.Context, dest roomdag.ServerName, d storage.FederationDestination, items []storage.FederationItem) error {
	var txn int64
	var batch []storage.FederationItem
	if items[0].Txn != 0 {
		txn = items[0].Txn
		for _, it := range items {
			if it.Txn == txn {
				batch = append(batch, it)
			}
		}
	} else {
		pdus, edus, eduBytes := 0, 0, 0
		var seqs []int64
		for _, it := range items {
			if it.Txn != 0 {
				break
			}
			if it.Event != "" {
				if pdus == MaxTxnPDUs {
					break
				}
				pdus++
			} else {
				// The byte bound keeps a transaction of large EDUs (to-device
				// messages) under the receivers' request size limits; an EDU
				// larger than it goes alone.
				if edus == MaxTxnEDUs || edus > 0 && eduBytes+len(it.EDU) > MaxTxnEDUBytes {
					break
				}
				edus++
				eduBytes += len(it.EDU)
			}
			batch = append(batch, it)
			seqs = append(seqs, it.Seq)
		}
		var err error
		if txn, err = s.o.Store.StartFederationTxn(ctx, dest, seqs); err != nil {
			return err
		}
	}
	body := struct {
		Origin         roomdag.ServerName `json:"origin"`
		OriginServerTS int64              `json:"origin_server_ts"`
		PDUs           []json.RawMessage  `json:"pdus"`
		EDUs           []json.RawMessage  `json:"edus,omitempty"`
	}{Origin: s.o.Server, OriginServerTS: s.o.Clock.Now().UnixMilli(), PDUs: []json.RawMessage{}}
	for _, it := range batch {
		if it.Event == "" {
			body.EDUs = append(body.EDUs, it.EDU)
			continue
		}
		ev, err := s.o.Store.Event(ctx, it.Event)
		if errors.Is(err, storage.ErrNotFound) {
			continue // gone (purged): nothing to send
		}
		if err != nil {
			return err
		}
		body.PDUs = append(body.PDUs, ev.JSON())
	}
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	err = s.put(ctx, dest, txn, b)
	if err == nil {
		if err := s.o.Store.FederationTxnDone(context.WithoutCancel(ctx), dest, txn); err != nil {
			return err
		}
		s.update(func(st *SenderStats) { st.Sent++ })
		return nil
	}
	if ctx.Err() != nil {
		return err // stopped or lost the lease: not the destination's failure
	}
	now := s.o.Clock.Now().UnixMilli()
	d.Failures++
	if d.DownSinceMS == 0 {
		d.DownSinceMS = now
	}
	d.RetryAtMS = now + s.backoff(d.Failures).Milliseconds()
	if ferr := s.o.Store.FederationTxnFailed(context.WithoutCancel(ctx), d); ferr != nil {
		return errors.Join(err, ferr)
	}
	s.update(func(st *SenderStats) { st.Failed++ })
	return err
}

func (s *Sender) backoff(failures int) time.Duration {
	b := s.o.Backoff
	d := b.Initial
	for i := 1; i < failures && d < b.Max; i++ {
		d *= 2
	}
	return min(d, max(b.Max, b.Initial))
}

// put sends one transaction; any answer but 200 is a failure, retried.
func (s *Sender) put(ctx context.Context, dest roomdag.ServerName, txn int64, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "/_matrix/federation/v1/send/"+strconv.FormatInt(txn, 10), bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := s.o.Client.Do(ctx, dest, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered transaction %d with %d: %s", dest, txn, resp.StatusCode, b)
	}
	var out struct {
		PDUs map[string]struct {
			Error string `json:"error"`
		} `json:"pdus"`
	}
	if json.Unmarshal(b, &out) == nil {
		for id, r := range out.PDUs {
			if r.Error != "" {
				s.o.Log.Info("federation sender: PDU refused", "dest", dest, "event", id, "error", r.Error)
			}
		}
	}
	return nil
}

var _ streamworker.Stepper = (*Sender)(nil)
