package appservice

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"github.com/persistentchat/homeserver/streamworker"
)

// Store is what application service support reads and writes.
type Store interface {
	// The transaction queues (storage/sqlstore/appservice.go documents).
	AppServiceStream(ctx context.Context, id string) (storage.AppServiceStream, error)
	PutAppServiceTxn(ctx context.Context, id string, from roomdag.StreamPos, t storage.AppServiceTxn) error
	DeleteAppServiceTxn(ctx context.Context, id string, txnID int64) error
	SetAppServicePos(ctx context.Context, id string, from, to roomdag.StreamPos) error
	// StreamEvents returns up to limit committed events after pos, in order.
	StreamEvents(ctx context.Context, after roomdag.StreamPos, limit int) ([]storage.StreamEvent, error)
	StateEvents(ctx context.Context, snapshot int64) (roomdag.StateMap, error)
	RoomAliases(ctx context.Context, room roomdag.RoomID) ([]string, error)
	JoinedRooms(ctx context.Context, user roomdag.UserID) ([]roomdag.RoomID, error)
	CreateUser(ctx context.Context, u storage.User, createdMS int64) error
}

// RoomStates gives a room's current state (roomdag.Rooms implements it).
type RoomStates interface {
	State(ctx context.Context, id roomdag.RoomID) (*roomdag.RoomState, error)
}

// Service runs application service support for a homeserver: a sender per
// service with a URL, the ephemeral event fan-out, and the queries. Start
// it once after New; EventCommitted may be called at any time.
type Service struct {
	registry *Registry
	store    Store
	rooms    RoomStates
	client   *client
	clock    clock.Clock
	log      *slog.Logger
	holder   *streamworker.Holder
	senders  map[string]*sender
	eph      *ephemeral
}

// New builds the service support. httpClient makes the requests to the
// services (nil: a default client). The senders run while holder holds
// its lease ("appservices"); nil: always.
func New(registry *Registry, store Store, rooms RoomStates, clk clock.Clock, log *slog.Logger, httpClient *http.Client, holder *streamworker.Holder) *Service {
	s := &Service{registry: registry, store: store, rooms: rooms, client: newClient(httpClient), clock: clk, log: log,
		holder: holder, senders: map[string]*sender{}}
	for _, r := range registry.All() {
		if r.URL != "" {
			s.senders[r.ID] = newSender(s, r)
		}
	}
	s.eph = newEphemeral(s)
	return s
}

// Registry is the set of registered services.
func (s *Service) Registry() *Registry { return s.registry }

// Start creates each service's sender user if it does not exist yet (a
// service acts as it from its first request), then starts the senders
// from their stored positions.
func (s *Service) Start(ctx context.Context) error {
	for _, r := range s.registry.All() {
		err := s.store.CreateUser(ctx, storage.User{ID: r.Sender}, s.clock.Now().UnixMilli())
		if err != nil && !errors.Is(err, storage.ErrConflict) {
			return fmt.Errorf("appservice %s: creating its sender %s: %w", r.ID, r.Sender, err)
		}
	}
	for _, snd := range s.senders {
		if err := snd.start(ctx); err != nil {
			s.Stop()
			return fmt.Errorf("appservice %s: %w", snd.reg.ID, err)
		}
	}
	s.eph.start()
	return nil
}

// Stop stops the senders, cutting any request in flight (its transaction
// stays stored and is sent again, under its ID, at the next start).
// Idempotent; safe also when Start failed or never ran.
func (s *Service) Stop() {
	s.eph.stop()
	for _, snd := range s.senders {
		snd.stop()
	}
}

// EventCommitted implements roomdag.Listener. It runs on the storage
// writer's goroutine, so it only signals the senders; they read the event
// back from storage.
func (s *Service) EventCommitted(*roomdag.Event, roomdag.StreamPos) {
	for _, snd := range s.senders {
		snd.wake()
	}
}

// Delivered returns once the service has acknowledged every event up to
// pos that concerns it (and passed over the rest), or with ctx's error.
func (s *Service) Delivered(ctx context.Context, id string, pos roomdag.StreamPos) error {
	snd := s.senders[id]
	if snd == nil {
		return fmt.Errorf("appservice: no sender for %q", id)
	}
	return snd.waitFor(ctx, func() bool { return snd.delivered >= pos })
}

// Positions returns, for each service with a URL, the event stream
// position up to which it has acknowledged every event that concerns it
// (and been passed over the rest): its sender's progress, which the
// metrics report. A service whose transaction is still being retried is
// held at the events before it; after a restart with transactions still
// stored, at 0 until the first is acknowledged (the position before them
// is not stored). SenderStats' Pos, the stored position, runs ahead of
// it while a transaction waits to be acknowledged.
func (s *Service) Positions() map[string]roomdag.StreamPos {
	out := make(map[string]roomdag.StreamPos, len(s.senders))
	for id, snd := range s.senders {
		snd.mu.Lock()
		out[id] = snd.delivered
		snd.mu.Unlock()
	}
	return out
}

// SenderStats returns each sender's loop counters by service ID: its
// stored position, steps and failures, for operators.
func (s *Service) SenderStats() map[string]streamworker.Stats {
	out := make(map[string]streamworker.Stats, len(s.senders))
	for id, snd := range s.senders {
		out[id] = snd.loop.Stats()
	}
	return out
}

// Backoff returns, once the sender of service id has begun its n-th wait
// after a failed attempt (n counts from 1 since start), that wait's
// length. The timer is already set when it returns.
func (s *Service) Backoff(ctx context.Context, id string, n int) (time.Duration, error) {
	snd := s.senders[id]
	if snd == nil {
		return 0, fmt.Errorf("appservice: no sender for %q", id)
	}
	var d time.Duration
	err := snd.waitFor(ctx, func() bool {
		if len(snd.backoffs) >= n {
			d = snd.backoffs[n-1]
			return true
		}
		return false
	})
	return d, err
}

// QueryUser asks the services whose users namespaces cover u whether it
// exists (GET /users/{userId}); a service that says yes has created it
// through the client-server API before answering. It reports whether one
// said yes. The error is that of the last service that failed to answer,
// when none said yes.
func (s *Service) QueryUser(ctx context.Context, u roomdag.UserID) (bool, error) {
	var lastErr error
	for _, r := range s.registry.UserQueryTargets(u) {
		ok, err := s.client.queryUser(ctx, r, u)
		if ok {
			return true, nil
		}
		if err != nil {
			s.log.Warn("appservice user query", "appservice", r.ID, "user", u, "err", err)
			lastErr = err
		}
	}
	return false, lastErr
}

// QueryAlias is QueryUser for room aliases (GET /rooms/{roomAlias}).
func (s *Service) QueryAlias(ctx context.Context, a roomdag.RoomAlias) (bool, error) {
	var lastErr error
	for _, r := range s.registry.AliasQueryTargets(a) {
		ok, err := s.client.queryAlias(ctx, r, a)
		if ok {
			return true, nil
		}
		if err != nil {
			s.log.Warn("appservice alias query", "appservice", r.ID, "alias", a, "err", err)
			lastErr = err
		}
	}
	return false, lastErr
}

// Ping calls the service's /ping and returns how long it took. A good
// answer also ends the sender's back-off: the service is reachable again.
// Errors are ErrNoURL, a *StatusError, or the transport's (IsTimeout tells
// a timeout).
func (s *Service) Ping(ctx context.Context, r *Registration, txnID string) (time.Duration, error) {
	start := s.clock.Now()
	if err := s.client.ping(ctx, r, txnID); err != nil {
		return 0, err
	}
	if snd := s.senders[r.ID]; snd != nil {
		snd.retryNow()
	}
	return s.clock.Now().Sub(start), nil
}

// IsTimeout reports whether err is a request to a service that timed out.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// ThirdPartyResult is one service's answer to a third-party lookup.
type ThirdPartyResult struct {
	Service *Registration
	Body    json.RawMessage
}

// ThirdParty forwards a third-party lookup (path below
// /_matrix/app/v1/thirdparty/, such as "protocol/irc" or "user/irc") to
// each of regs and returns the answers of those that gave one; a service
// that fails is logged and left out, as one bridge being down must not
// hide the others.
func (s *Service) ThirdParty(ctx context.Context, regs []*Registration, path string, query url.Values) []ThirdPartyResult {
	var out []ThirdPartyResult
	for _, r := range regs {
		b, err := s.client.thirdParty(ctx, r, path, query)
		if err != nil {
			var se *StatusError
			if !errors.As(err, &se) || se.Status != http.StatusNotFound {
				s.log.Warn("appservice third-party lookup", "appservice", r.ID, "path", path, "err", err)
			}
			continue
		}
		out = append(out, ThirdPartyResult{Service: r, Body: b})
	}
	return out
}

// Typing tells the services that user started or stopped typing in room;
// the notification ends by itself after timeout.
func (s *Service) Typing(room roomdag.RoomID, user roomdag.UserID, typing bool, timeout time.Duration) {
	s.eph.send(ephemeralInput{kind: kindTyping, room: room, user: user, on: typing, timeout: timeout})
}

// Receipt tells the services of a read receipt. Private receipts
// (m.read.private) go only to services whose namespaces cover the user.
func (s *Service) Receipt(room roomdag.RoomID, user roomdag.UserID, typ, thread string, event roomdag.EventID, tsMS int64) {
	s.eph.send(ephemeralInput{kind: kindReceipt, room: room, user: user, receiptType: typ, thread: thread, event: event, ts: tsMS})
}

// PresenceChanged tells the services of a presence change (it
// implements sync.PresenceListener): content is the m.presence event
// content. It goes to the services whose namespaces cover the user or
// that share a room with it. It never blocks.
func (s *Service) PresenceChanged(user roomdag.UserID, content json.RawMessage) {
	s.eph.send(ephemeralInput{kind: kindPresence, user: user, content: content})
}

// Interface guard.
var _ roomdag.Listener = (*Service)(nil)

// RoomStatesFunc adapts a function to RoomStates.
type RoomStatesFunc func(ctx context.Context, id roomdag.RoomID) (*roomdag.RoomState, error)

// State calls f.
func (f RoomStatesFunc) State(ctx context.Context, id roomdag.RoomID) (*roomdag.RoomState, error) {
	return f(ctx, id)
}
