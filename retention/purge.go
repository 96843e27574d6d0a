package retention

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	gosync "sync"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/media"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"github.com/persistentchat/homeserver/streamworker"
)

// Store is what the purge jobs need of storage
// (storage/sqlstore/retention.go documents each).
type Store interface {
	HoldStore
	// RetentionRooms lists every room with its m.room.retention content.
	RetentionRooms(ctx context.Context) ([]storage.RetentionRoom, error)
	// PurgeHistory deletes up to limit events of room sent before
	// beforeMS, never state, the newest event, nor events by keep.
	PurgeHistory(ctx context.Context, room roomdag.RoomID, beforeMS int64, keep []roomdag.UserID, limit int) (storage.PurgeResult, error)
	// PurgeMedia deletes the local media among ids nothing refers to and
	// no user in keep uploaded, returning them and the content files no
	// record uses.
	PurgeMedia(ctx context.Context, server roomdag.ServerName, ids []media.ID, keep []roomdag.UserID) ([]media.ID, []string, error)
}

// ArchivePurger purges the compliance archive's records of a room (the
// compliance package implements it): PurgeBefore drops the content of its
// records of room from before before, except those of held users, which
// it keeps record by record (it reads the holds itself, at the purge), and
// returns how many it dropped. The purge job calls it after purging the
// room's history, never for a held room.
type ArchivePurger interface {
	PurgeBefore(ctx context.Context, room roomdag.RoomID, before time.Time) (int, error)
}

// ContentRemover deletes media content files (media.Repository).
type ContentRemover interface {
	RemoveContent(sha256 string) error
}

// batchSize bounds the events one write transaction of a purge deletes,
// so that the single writer is never held long.
const batchSize = 500

// Purger runs the purge jobs.
type Purger struct {
	store   Store
	holds   *Holds
	policy  Policy
	jobs    []Job
	server  roomdag.ServerName
	files   ContentRemover // nil: no media repository
	archive ArchivePurger  // nil: no archive
	clock   clock.Clock
	log     *slog.Logger
	lease   *streamworker.Holder

	ctx    context.Context // ends at Stop
	cancel context.CancelFunc
	wg     gosync.WaitGroup

	mu      gosync.Mutex
	stats   Stats
	changed chan struct{}
}

// Stats count the purge jobs' work, for tests and operators.
type Stats struct {
	// Waits counts the timers the jobs set, each before waiting on it:
	// once it grows past a count, a test may move a fake clock.
	Waits int
	// Runs counts the job runs that ended, Failures those that failed.
	Runs, Failures int
	// Events and Media count what was purged.
	Events, Media int
}

// PurgerConfig is what the purge jobs are given.
type PurgerConfig struct {
	Policy Policy
	Jobs   []Job
	Server roomdag.ServerName
	// Files deletes media content; nil when there is no media repository.
	Files ContentRemover
	// Archive purges the compliance archive; nil when there is none.
	Archive ArchivePurger
	// Lease is the "retention" lease the jobs run under; nil runs them
	// in this process regardless (a process alone on its database).
	Lease *streamworker.Holder
}

// NewPurger makes the purge jobs; Start runs them.
func NewPurger(cfg PurgerConfig, store Store, holds *Holds, clk clock.Clock, log *slog.Logger) *Purger {
	ctx, cancel := context.WithCancel(context.Background())
	return &Purger{ctx: ctx, cancel: cancel, store: store, holds: holds, policy: cfg.Policy, jobs: cfg.Jobs, server: cfg.Server,
		files: cfg.Files, archive: cfg.Archive, clock: clk, log: log.With("worker", "retention"), lease: cfg.Lease,
		changed: make(chan struct{})}
}

// Start runs each job on a goroutine of its own: it waits its interval
// on the clock, then purges if this process holds the lease. Start the
// lease's holder first; Stop the purger before it.
func (p *Purger) Start() {
	for _, j := range p.jobs {
		p.wg.Add(1)
		go p.run(j)
	}
}

// Stop ends the jobs after the purge in progress. Idempotent.
func (p *Purger) Stop() {
	p.cancel()
	p.wg.Wait()
}

func (p *Purger) run(j Job) {
	defer p.wg.Done()
	for {
		timer := p.clock.After(j.Interval)
		p.update(func(s *Stats) { s.Waits++ })
		select {
		case <-p.ctx.Done():
			return
		case <-timer:
		}
		held := p.ctx // no lease: the only process
		if p.lease != nil {
			if !p.lease.Holding() {
				continue // another process runs the jobs
			}
			var err error
			if held, _, err = p.lease.Held(p.ctx); err != nil {
				continue
			}
		}
		ctx, cancel := context.WithCancel(held)
		stop := context.AfterFunc(p.ctx, cancel)
		err := p.RunJob(ctx, j)
		stop()
		cancel()
		p.update(func(s *Stats) {
			s.Runs++
			if err != nil {
				s.Failures++
			}
		})
		if err != nil && ctx.Err() == nil {
			p.log.Error("retention purge", "err", err)
		}
	}
}

// RunJob purges, once, every room job covers: the events sent before now
// less the room's effective max_lifetime, except what holds keep.
func (p *Purger) RunJob(ctx context.Context, j Job) error {
	rooms, err := p.store.RetentionRooms(ctx)
	if err != nil {
		return err
	}
	held, err := p.holds.active(ctx)
	if err != nil {
		return err
	}
	keep := held.userList()
	now := p.clock.Now()
	var errs []error
	for _, r := range rooms {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		l := p.policy.Effective(r.Content)
		if !j.covers(l.Max) || held.rooms[r.Room] {
			continue
		}
		if err := p.purgeRoom(ctx, r.Room, now.Add(-l.Max), keep); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// purgeRoom purges room's history from before before.
func (p *Purger) purgeRoom(ctx context.Context, room roomdag.RoomID, before time.Time, keep []roomdag.UserID) error {
	total := 0
	var uris []string
	for {
		res, err := p.store.PurgeHistory(ctx, room, before.UnixMilli(), keep, batchSize)
		if err != nil {
			return err
		}
		total += res.Events
		uris = append(uris, res.MediaURIs...)
		if !res.More {
			break
		}
	}
	if err := p.purgeMedia(ctx, uris, keep); err != nil {
		return err
	}
	if total > 0 {
		p.log.Info("retention purged history", "room", room, "before", before.UTC().Format(time.RFC3339), "events", total)
		p.update(func(s *Stats) { s.Events += total })
		p.holds.record(ctx, AdminAction{Action: "retention.purge", Room: room, Before: before, Events: total, AtMS: p.clock.Now().UnixMilli()})
	}
	if p.archive == nil {
		return nil
	}
	n, err := p.archive.PurgeBefore(ctx, room, before)
	if err != nil {
		return err
	}
	if n > 0 {
		p.log.Info("retention purged archive records", "room", room, "before", before.UTC().Format(time.RFC3339), "records", n)
		p.holds.record(ctx, AdminAction{Action: "retention.archive_purge", Room: room, Before: before, Records: n, AtMS: p.clock.Now().UnixMilli()})
	}
	return nil
}

// purgeMedia deletes the local media of uris that nothing refers to now
// and that no held user (keep) uploaded.
func (p *Purger) purgeMedia(ctx context.Context, uris []string, keep []roomdag.UserID) error {
	prefix := "mxc://" + string(p.server) + "/"
	seen := map[media.ID]bool{}
	var ids []media.ID
	for _, u := range uris {
		id, ok := strings.CutPrefix(u, prefix)
		if !ok || id == "" || strings.ContainsAny(id, "/?#") || seen[media.ID(id)] {
			continue // remote media, or not a media ID
		}
		seen[media.ID(id)] = true
		ids = append(ids, media.ID(id))
	}
	for len(ids) > 0 {
		n := min(len(ids), batchSize)
		deleted, files, err := p.store.PurgeMedia(ctx, p.server, ids[:n], keep)
		if err != nil {
			return err
		}
		ids = ids[n:]
		p.update(func(s *Stats) { s.Media += len(deleted) })
		if p.files == nil {
			continue
		}
		for _, sum := range files {
			if err := p.files.RemoveContent(sum); err != nil {
				p.log.Warn("removing purged media content", "sha256", sum, "err", err)
			}
		}
	}
	return nil
}

// Stats returns the counters.
func (p *Purger) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// WaitStats returns once cond holds for the counters, or with ctx's
// error.
func (p *Purger) WaitStats(ctx context.Context, cond func(Stats) bool) error {
	for {
		p.mu.Lock()
		ok, ch := cond(p.stats), p.changed
		p.mu.Unlock()
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

func (p *Purger) update(f func(*Stats)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(&p.stats)
	close(p.changed)
	p.changed = make(chan struct{})
}
