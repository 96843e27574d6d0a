package appservice

import (
	"context"
	"encoding/json"
	"slices"
	gosync "sync"
	"time"

	"github.com/persistentchat/homeserver/roomdag"
)

// Ephemeral events for services with receive_ephemeral (spec v1.13,
// "Pushing EDUs"): typing, receipts and presence, fanned out by one
// goroutine to the senders of the services interested in the room (or,
// for presence, in the user). They are queued in memory only and ride in
// the next transaction; once in a stored transaction they are retried
// like events, but those still queued at a restart are gone, as
// ephemeral data may be.

type ephemeralKind int

const (
	kindTyping ephemeralKind = iota
	kindReceipt
	kindPresence
)

type ephemeralInput struct {
	kind ephemeralKind
	room roomdag.RoomID
	user roomdag.UserID
	// typing
	on      bool
	timeout time.Duration
	// receipt
	receiptType, thread string
	event               roomdag.EventID
	ts                  int64
	// presence
	content json.RawMessage
}

// maxTypingTimeout caps one typing notification, as sync does.
const maxTypingTimeout = 120 * time.Second

// ephemeralQueue bounds the inputs waiting for the fan-out goroutine;
// past it new ones are dropped with a warning rather than block a client.
const ephemeralQueue = 4096

type ephemeral struct {
	svc     *Service
	senders []*sender // those of services with receive_ephemeral
	in      chan ephemeralInput
	quit    chan struct{}
	done    chan struct{}
	running bool
	once    gosync.Once

	// Owned by run: who types where, and until when.
	typing map[roomdag.RoomID]map[roomdag.UserID]time.Time
}

func newEphemeral(svc *Service) *ephemeral {
	e := &ephemeral{svc: svc, in: make(chan ephemeralInput, ephemeralQueue),
		quit: make(chan struct{}), done: make(chan struct{}), typing: map[roomdag.RoomID]map[roomdag.UserID]time.Time{}}
	for _, snd := range svc.senders {
		if snd.reg.ReceiveEphemeral {
			e.senders = append(e.senders, snd)
		}
	}
	return e
}

func (e *ephemeral) start() {
	if len(e.senders) == 0 {
		return // nobody wants them: send drops them at once
	}
	e.running = true
	go e.run()
}

func (e *ephemeral) stop() {
	e.once.Do(func() { close(e.quit) })
	if e.running {
		<-e.done
	}
}

func (e *ephemeral) send(in ephemeralInput) {
	if len(e.senders) == 0 {
		return
	}
	select {
	case e.in <- in:
	default:
		e.svc.log.Warn("appservice ephemeral queue full; dropping", "room", in.room, "user", in.user)
	}
}

func (e *ephemeral) run() {
	defer close(e.done)
	var timer <-chan time.Time
	var timerAt time.Time
	for {
		if next, ok := e.nextExpiry(); !ok {
			timer, timerAt = nil, time.Time{}
		} else if !next.Equal(timerAt) {
			timer, timerAt = e.svc.clock.After(next.Sub(e.svc.clock.Now())), next
		}
		select {
		case <-e.quit:
			return
		case in := <-e.in:
			e.handle(in)
		case <-timer:
			timer, timerAt = nil, time.Time{}
			e.expire()
		}
	}
}

func (e *ephemeral) handle(in ephemeralInput) {
	switch in.kind {
	case kindTyping:
		users := e.typing[in.room]
		_, was := users[in.user]
		if in.on {
			if users == nil {
				users = map[roomdag.UserID]time.Time{}
				e.typing[in.room] = users
			}
			users[in.user] = e.svc.clock.Now().Add(min(max(in.timeout, 0), maxTypingTimeout))
		} else {
			delete(users, in.user)
		}
		if was != in.on {
			e.emitTyping(in.room)
		}
	case kindReceipt:
		receipt := map[string]any{"ts": in.ts}
		if in.thread != "" {
			receipt["thread_id"] = in.thread
		}
		ev, _ := json.Marshal(map[string]any{"type": "m.receipt", "room_id": in.room, "content": map[string]any{
			string(in.event): map[string]any{in.receiptType: map[string]any{string(in.user): receipt}}}})
		private := in.receiptType == "m.read.private"
		e.toRoom(in.room, ev, func(r *Registration) bool { return !private || r.OwnsUser(in.user) })
	case kindPresence:
		ev, _ := json.Marshal(map[string]any{"type": "m.presence", "sender": in.user, "content": in.content})
		e.toUser(in.user, ev)
	}
}

func (e *ephemeral) nextExpiry() (time.Time, bool) {
	var next time.Time
	for _, users := range e.typing {
		for _, until := range users {
			if next.IsZero() || until.Before(next) {
				next = until
			}
		}
	}
	return next, !next.IsZero()
}

func (e *ephemeral) expire() {
	now := e.svc.clock.Now()
	for room, users := range e.typing {
		changed := false
		for u, until := range users {
			if !until.After(now) {
				delete(users, u)
				changed = true
			}
		}
		if changed {
			e.emitTyping(room)
		}
		if len(users) == 0 {
			delete(e.typing, room)
		}
	}
}

func (e *ephemeral) emitTyping(room roomdag.RoomID) {
	ids := make([]string, 0, len(e.typing[room]))
	for u := range e.typing[room] {
		ids = append(ids, string(u))
	}
	slices.Sort(ids)
	ev, _ := json.Marshal(map[string]any{"type": "m.typing", "room_id": room, "content": map[string]any{"user_ids": ids}})
	e.toRoom(room, ev, nil)
}

// toRoom queues ev for each service interested in the room now (and
// accepted by filter, if given).
func (e *ephemeral) toRoom(room roomdag.RoomID, ev json.RawMessage, filter func(*Registration) bool) {
	ctx := context.Background()
	st, err := e.svc.rooms.State(ctx, room)
	if err != nil {
		e.svc.log.Warn("appservice ephemeral: reading room state", "room", room, "err", err)
		return
	}
	var aliases []string
	aliasesRead := false
	for _, snd := range e.senders {
		r := snd.reg
		if filter != nil && !filter(r) {
			continue
		}
		ok := r.InRoomNamespace(room) || hasMember(r, st)
		if !ok && len(r.Aliases) > 0 {
			if !aliasesRead {
				aliases, err = e.svc.store.RoomAliases(ctx, room)
				if err != nil {
					e.svc.log.Warn("appservice ephemeral: reading aliases", "room", room, "err", err)
				}
				aliasesRead = true
			}
			for _, a := range aliases {
				ok = ok || r.InAliasNamespace(roomdag.RoomAlias(a))
			}
		}
		if ok {
			snd.addEphemeral(ev)
		}
	}
}

// toUser queues a presence event for each service whose namespaces cover
// the user or that has a member in one of the user's rooms.
func (e *ephemeral) toUser(user roomdag.UserID, ev json.RawMessage) {
	ctx := context.Background()
	var rooms []*roomdag.RoomState
	roomsRead := false
	for _, snd := range e.senders {
		r := snd.reg
		ok := r.OwnsUser(user)
		if !ok && !roomsRead {
			roomsRead = true
			ids, err := e.svc.store.JoinedRooms(ctx, user)
			if err != nil {
				e.svc.log.Warn("appservice ephemeral: reading rooms", "user", user, "err", err)
			}
			for _, id := range ids {
				if st, err := e.svc.rooms.State(ctx, id); err == nil {
					rooms = append(rooms, st)
				}
			}
		}
		for _, st := range rooms {
			ok = ok || hasMember(r, st)
		}
		if ok {
			snd.addEphemeral(ev)
		}
	}
}

// hasMember reports whether one of the service's users is joined.
func hasMember(r *Registration, st *roomdag.RoomState) bool {
	for k, ev := range st.State {
		if k.Type == roomdag.TypeMember && ev.Membership() == roomdag.MembershipJoin && r.OwnsUser(roomdag.UserID(k.StateKey)) {
			return true
		}
	}
	return false
}
