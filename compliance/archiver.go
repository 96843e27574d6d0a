package compliance

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	gosync "sync"
	"sync/atomic"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"github.com/persistentchat/homeserver/streamworker"
)

// Store is what the archive reads and writes (storage/sqlstore).
type Store interface {
	CompliancePos(ctx context.Context) (roomdag.StreamPos, error)
	// ComplianceHead is the chain's last record and the newest
	// checkpoint (zero values when there is none).
	ComplianceHead(ctx context.Context) (seq int64, hash string, cp storage.ComplianceCheckpoint, err error)
	ComplianceEvents(ctx context.Context, after roomdag.StreamPos, limit int) ([]storage.ComplianceEvent, error)
	// ComplianceBackfillPos and ComplianceBackfill are the same for
	// backfilled events, at negative positions, read going down.
	ComplianceBackfillPos(ctx context.Context) (roomdag.StreamPos, error)
	ComplianceBackfill(ctx context.Context, below roomdag.StreamPos, limit int) ([]storage.ComplianceEvent, error)
	// ComplianceReceived is the received events outside the timeline
	// (outliers, rejected, soft-failed) not archived yet; AppendCompliance
	// marks those a batch names.
	ComplianceReceived(ctx context.Context, limit int) ([]storage.ComplianceReceived, error)
	// ComplianceOriginal is a redacted event's original JSON, or
	// storage.ErrNotFound.
	ComplianceOriginal(ctx context.Context, id roomdag.EventID) ([]byte, error)
	QueueCompliance(ctx context.Context, e storage.ComplianceEntry) error
	ComplianceQueued(ctx context.Context, limit int) ([]storage.ComplianceEntry, error)
	// AppendCompliance commits a step, or fails storing nothing when the
	// position or head moved.
	AppendCompliance(ctx context.Context, b storage.ComplianceBatch) error
	ScanCompliance(ctx context.Context, f storage.ComplianceFilter, fn func(storage.ComplianceRecord) error) error
	ComplianceCheckpoints(ctx context.Context, from int64, fn func(storage.ComplianceCheckpoint) error) error
	ComplianceCheckpointCovering(ctx context.Context, seq int64, last bool) (*storage.ComplianceCheckpoint, error)
	ComplianceDistinct(ctx context.Context, column string, f storage.ComplianceFilter) ([]string, error)
	ComplianceStats(ctx context.Context) (storage.ComplianceStats, error)
	EncryptedRooms(ctx context.Context) ([]roomdag.RoomID, error)
	// JoinedRooms is the rooms the server has user joined to (export
	// falls back on it where the archive holds no join).
	JoinedRooms(ctx context.Context, user roomdag.UserID) ([]roomdag.RoomID, error)
}

// Options configure the archiver.
type Options struct {
	// CheckpointRecords: a step that leaves at least this many records
	// after the last checkpoint makes one. 0: 1000.
	CheckpointRecords int64
	// CheckpointInterval: the first step this long after the last
	// checkpoint makes one, and a timer of this period seals the records
	// appended since the last checkpoint on a quiet server, where no
	// step would otherwise run: every record is sealed within about one
	// interval of its append. 0: one minute.
	CheckpointInterval time.Duration
	// Batch bounds the events and the queued entries one step reads.
	// 0: 256.
	Batch int
}

// Archiver appends every committed event and every queued entry to the
// chain, after commit, on a streamworker loop: it resumes from its stored
// position after a crash or restart, and with several processes runs in
// the one holding the "compliance" lease.
type Archiver struct {
	store Store
	key   roomdag.SigningKey
	clock clock.Clock
	opts  Options
	loop  *streamworker.Loop

	// sealDue is set by the checkpoint timer: the next step seals the
	// head if records follow the last checkpoint.
	sealDue atomic.Bool
	quit    chan struct{}
	stop    gosync.Once
	wg      gosync.WaitGroup

	// known is the head after the last append, nil when unknown: read
	// and written by the loop's goroutine only.
	known *chainHead

	mu      gosync.Mutex
	timers  int           // checkpoint timers set so far
	changed chan struct{} // closed and replaced when timers changes
}

// NewArchiver makes the archiver; holder is its lease (nil: always).
func NewArchiver(store Store, key roomdag.SigningKey, clk clock.Clock, log *slog.Logger, holder *streamworker.Holder, opts Options) *Archiver {
	if opts.CheckpointRecords <= 0 {
		opts.CheckpointRecords = 1000
	}
	if opts.CheckpointInterval <= 0 {
		opts.CheckpointInterval = time.Minute
	}
	if opts.Batch <= 0 {
		opts.Batch = 256
	}
	a := &Archiver{store: store, key: key, clock: clk, opts: opts, quit: make(chan struct{}), changed: make(chan struct{})}
	a.loop = streamworker.New((*steps)(a), streamworker.Options{Name: "compliance archiver", Clock: clk, Log: log,
		Coalesce: 20 * time.Millisecond, Retry: time.Second, Holder: holder})
	return a
}

// EventCommitted implements roomdag.Listener: a wake-up signal only.
func (a *Archiver) EventCommitted(*roomdag.Event, roomdag.StreamPos) { a.loop.Notify() }

// Notify wakes the archiver (an entry was queued).
func (a *Archiver) Notify() { a.loop.Notify() }

// Start reads the stored position and starts the loop and the
// checkpoint timer.
func (a *Archiver) Start(ctx context.Context) error {
	if err := a.loop.Start(ctx); err != nil {
		return err
	}
	a.wg.Add(1)
	go a.tick()
	return nil
}

// Stop stops the timer, then the loop after its step in progress.
// Idempotent.
func (a *Archiver) Stop() {
	a.stop.Do(func() { close(a.quit) })
	a.wg.Wait()
	a.loop.Stop()
}

// tick wakes the loop to seal every CheckpointInterval on the clock. In
// a process without the lease the wake-up waits, harmless, for the
// lease.
func (a *Archiver) tick() {
	defer a.wg.Done()
	for {
		timer := a.clock.After(a.opts.CheckpointInterval)
		a.mu.Lock()
		a.timers++
		close(a.changed)
		a.changed = make(chan struct{})
		a.mu.Unlock()
		select {
		case <-a.quit:
			return
		case <-timer:
		}
		a.sealDue.Store(true)
		a.loop.Notify()
	}
}

// WaitTimers returns once the checkpoint timer has been set n times (a
// test may then move a fake clock by CheckpointInterval to fire the
// n-th), or with ctx's error.
func (a *Archiver) WaitTimers(ctx context.Context, n int) error {
	for {
		a.mu.Lock()
		ok, ch := a.timers >= n, a.changed
		a.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Pos is the event stream position archived and committed.
func (a *Archiver) Pos() roomdag.StreamPos { return a.loop.Pos() }

// Wait returns once every event up to pos is archived.
func (a *Archiver) Wait(ctx context.Context, pos roomdag.StreamPos) error {
	return a.loop.Wait(ctx, pos)
}

// Loop is the archiver's loop, for tests (WaitStats) and StepOnce.
func (a *Archiver) Loop() *streamworker.Loop { return a.loop }

type steps Archiver

// Resume implements streamworker.Stepper.
func (s *steps) Resume(ctx context.Context) (roomdag.StreamPos, error) {
	s.known = nil // another process may have appended while we did not hold the lease
	return s.store.CompliancePos(ctx)
}

// chainHead is the chain's last record and last checkpoint as the
// archiver's own last append left them.
type chainHead struct {
	seq      int64
	hash     string
	cp       storage.ComplianceCheckpoint
	backfill roomdag.StreamPos
}

// head is the chain head: as the last append left it, or read. Only the
// loop's goroutine calls it. A head that another process moved since is
// harmless: AppendCompliance refuses a batch not built on the stored
// head, and the failed step reads it afresh.
func (a *Archiver) head(ctx context.Context) (int64, string, storage.ComplianceCheckpoint, error) {
	if k := a.known; k != nil {
		return k.seq, k.hash, k.cp, nil
	}
	return a.store.ComplianceHead(ctx)
}

// backfillPos is the position among backfilled events: as the last
// append left it, or read.
func (a *Archiver) backfillPos(ctx context.Context) (roomdag.StreamPos, error) {
	if k := a.known; k != nil {
		return k.backfill, nil
	}
	return a.store.ComplianceBackfillPos(ctx)
}

// Step implements streamworker.Stepper: the queued entries, then the
// events after from, then the backfilled events below the backfill
// position, appended after the stored head and committed with the new
// positions; a checkpoint when due, also alone when the timer fired and
// records follow the last checkpoint.
func (s *steps) Step(ctx context.Context, from roomdag.StreamPos) (_ roomdag.StreamPos, _ bool, err error) {
	a := (*Archiver)(s)
	ctx = context.WithoutCancel(ctx)
	due := a.sealDue.Swap(false)
	defer func() {
		if err != nil && due {
			a.sealDue.Store(true) // the retry seals
		}
	}()
	queued, err := a.store.ComplianceQueued(ctx, a.opts.Batch)
	if err != nil {
		return from, false, err
	}
	evs, err := a.store.ComplianceEvents(ctx, from, a.opts.Batch)
	if err != nil {
		return from, false, err
	}
	below, err := a.backfillPos(ctx)
	if err != nil {
		return from, false, err
	}
	backfilled, err := a.store.ComplianceBackfill(ctx, below, a.opts.Batch)
	if err != nil {
		return from, false, err
	}
	received, err := a.store.ComplianceReceived(ctx, a.opts.Batch)
	if err != nil {
		return from, false, err
	}
	if len(queued) == 0 && len(evs) == 0 && len(backfilled) == 0 && len(received) == 0 && !due {
		return from, false, nil
	}
	seq, head, cp, err := a.head(ctx)
	if err != nil {
		return from, false, err
	}
	if len(queued) == 0 && len(evs) == 0 && len(backfilled) == 0 && len(received) == 0 && seq <= cp.Seq {
		return from, false, nil // all sealed already
	}
	if head == "" {
		head = zeroHash
	}
	b := storage.ComplianceBatch{From: from, To: from, BackfillFrom: below, BackfillTo: below}
	add := func(r storage.ComplianceRecord) error {
		seq++
		r.Seq = seq
		if err := seal(&r, head); err != nil {
			return err
		}
		head = r.Hash
		b.Records = append(b.Records, r)
		return nil
	}
	for _, q := range queued {
		b.Drained = append(b.Drained, q.ID)
		p, err := roomdag.CanonicalJSON([]byte(q.Payload)) // as the Recorder wrote it, unless stored otherwise
		if err != nil {
			return from, false, err
		}
		if err := add(storage.ComplianceRecord{TS: q.TS, Kind: q.Kind, Actor: q.Actor, Room: q.Room, Payload: string(p)}); err != nil {
			return from, false, err
		}
	}
	for _, e := range evs {
		payload, err := a.eventPayload(ctx, e)
		if err != nil {
			return from, false, err
		}
		if err := add(storage.ComplianceRecord{TS: e.TS, Kind: KindEvent, Actor: string(e.Sender), Room: string(e.Room), Payload: payload}); err != nil {
			return from, false, err
		}
		b.To = e.Pos
	}
	for _, e := range backfilled {
		payload, err := a.eventPayload(ctx, e)
		if err != nil {
			return from, false, err
		}
		if err := add(storage.ComplianceRecord{TS: e.TS, Kind: KindEvent, Actor: string(e.Sender), Room: string(e.Room), Payload: payload}); err != nil {
			return from, false, err
		}
		b.BackfillTo = e.Pos
	}
	for _, e := range received {
		r, err := receivedRecord(e)
		if err != nil {
			return from, false, err
		}
		if err := add(r); err != nil {
			return from, false, err
		}
		b.Received = append(b.Received, e.ID)
	}
	now := a.clock.Now()
	if due || seq-cp.Seq >= a.opts.CheckpointRecords || now.Sub(time.UnixMilli(cp.TS)) >= a.opts.CheckpointInterval {
		c, err := SignCheckpoint(a.key, seq, head, now.UnixMilli())
		if err != nil {
			return from, false, err
		}
		b.Checkpoint = &c
	}
	a.known = nil // until the append is known to have committed
	if err := a.store.AppendCompliance(ctx, b); err != nil {
		return from, false, err
	}
	a.known = &chainHead{seq: seq, hash: head, cp: cp, backfill: b.BackfillTo}
	if b.Checkpoint != nil {
		a.known.cp = *b.Checkpoint
	}
	return b.To, len(queued) == a.opts.Batch || len(evs) == a.opts.Batch || len(backfilled) == a.opts.Batch ||
		len(received) == a.opts.Batch, nil
}

// eventPayload is an event record's payload: {"event_id", "type",
// "event": the event as first stored (its original when a redaction
// has since overwritten it), "redacted": whether it has been}, and for a
// redaction "removed": the original of the event it redacted. It is
// written in canonical form directly (keys in order, the events made
// canonical), so that sealing needs no further pass over it.
func (a *Archiver) eventPayload(ctx context.Context, e storage.ComplianceEvent) (string, error) {
	ev := e.JSON
	if e.Redacted && e.Original != nil {
		ev = e.Original
	}
	cev, err := roomdag.CanonicalJSON(ev)
	if err != nil {
		return "", err
	}
	var redacts string
	var removed []byte
	if e.Type == roomdag.TypeRedaction {
		if redacts = redactsOf(ev); redacts != "" {
			orig, err := a.store.ComplianceOriginal(ctx, roomdag.EventID(redacts))
			switch {
			case err == nil:
				if removed, err = roomdag.CanonicalJSON(orig); err != nil {
					return "", err
				}
			case !errors.Is(err, storage.ErrNotFound):
				return "", err
			}
		}
	}
	b := make([]byte, 0, len(cev)+len(removed)+len(e.ID)+len(e.Type)+96)
	b = append(b, `{"event":`...)
	b = append(b, cev...)
	b = append(b, `,"event_id":`...)
	if b, err = appendString(b, string(e.ID)); err != nil {
		return "", err
	}
	if e.Redacted && e.Original == nil {
		b = append(b, `,"original_lost":true`...) // redacted while compliance was off
	}
	b = append(b, `,"redacted":`...)
	b = strconv.AppendBool(b, e.Redacted)
	if redacts != "" {
		b = append(b, `,"redacts":`...)
		if b, err = appendString(b, redacts); err != nil {
			return "", err
		}
	}
	if removed != nil {
		b = append(b, `,"removed":`...)
		b = append(b, removed...)
	}
	b = append(b, `,"type":`...)
	if b, err = appendString(b, e.Type); err != nil {
		return "", err
	}
	return string(append(b, '}')), nil
}

// receivedRecord is the record of an event received from another server
// and kept outside the timeline: kind KindReceived, payload {"event",
// "event_id", "type", "status": outlier (a room's state or auth chain
// received without its history, as a join's answer brings it),
// rejected or soft_failed, "reason" for a rejected one}. Its own kind
// keeps it out of what export follows as membership: a rejected or
// soft-failed join never made anyone a member, and the state of a room
// joined is its members as received, not as changed then.
func receivedRecord(e storage.ComplianceReceived) (storage.ComplianceRecord, error) {
	var ev struct {
		Type   string `json:"type"`
		Sender string `json:"sender"`
		TS     int64  `json:"origin_server_ts"`
	}
	if err := json.Unmarshal(e.JSON, &ev); err != nil {
		return storage.ComplianceRecord{}, err
	}
	cev, err := roomdag.CanonicalJSON(e.JSON)
	if err != nil {
		return storage.ComplianceRecord{}, err
	}
	p := struct {
		Event   json.RawMessage `json:"event"`
		EventID string          `json:"event_id"`
		Type    string          `json:"type"`
		Status  string          `json:"status"`
		Reason  string          `json:"reason,omitempty"`
	}{cev, string(e.ID), ev.Type, e.Status, e.Reason}
	b, err := json.Marshal(p)
	if err != nil {
		return storage.ComplianceRecord{}, err
	}
	if b, err = roomdag.CanonicalJSON(b); err != nil {
		return storage.ComplianceRecord{}, err
	}
	return storage.ComplianceRecord{TS: ev.TS, Kind: KindReceived, Actor: ev.Sender, Room: string(e.Room), Payload: string(b)}, nil
}

// redactsOf is a redaction's target: top-level "redacts" (room versions
// 1 to 10) or content.redacts (11 on).
func redactsOf(ev []byte) string {
	var r struct {
		Redacts string `json:"redacts"`
		Content struct {
			Redacts string `json:"redacts"`
		} `json:"content"`
	}
	if json.Unmarshal(ev, &r) != nil {
		return ""
	}
	if r.Content.Redacts != "" {
		return r.Content.Redacts
	}
	return r.Redacts
}

// Recorder queues the records that are not events, in the request's
// path: the entry is durable when Record returns, and the archiver
// appends it to the chain. A nil *Recorder records nothing (compliance
// off).
type Recorder struct {
	store Store
	clock clock.Clock
	wake  func()
}

// NewRecorder makes a recorder whose entries wake (may be nil) announces.
func NewRecorder(store Store, clk clock.Clock, wake func()) *Recorder {
	return &Recorder{store: store, clock: clk, wake: wake}
}

// Record queues one record; payload is marshalled to canonical JSON.
func (r *Recorder) Record(ctx context.Context, kind string, actor roomdag.UserID, room roomdag.RoomID, payload any) error {
	if r == nil {
		return nil
	}
	b, err := json.Marshal(payload)
	if err != nil {
		return err
	}
	c, err := roomdag.CanonicalJSON(b)
	if err != nil {
		return err
	}
	if err := r.store.QueueCompliance(ctx, storage.ComplianceEntry{TS: r.clock.Now().UnixMilli(), Kind: kind,
		Actor: string(actor), Room: string(room), Payload: string(c)}); err != nil {
		return err
	}
	if r.wake != nil {
		r.wake()
	}
	return nil
}

var _ streamworker.Stepper = (*steps)(nil)
