package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	gosync "sync"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// Inbound transactions: PUT /_matrix/federation/v1/send/{txnId}
// (server-server API, "Transactions"). A transaction carries at most 50
// PDUs and 100 EDUs; its ID makes it idempotent per origin, so a replay
// is answered with the stored response and changes nothing. Each room's
// PDUs are handed, in order, to a PDUHandler on a queue of the room's
// own, so that a slow room holds up only transactions that have PDUs of
// that room.

// Transaction limits ("Transactions": "at most 50 PDUs and 100 EDUs").
const (
	MaxTxnPDUs = 50
	MaxTxnEDUs = 100
)

// maxActiveRooms bounds how many rooms' PDUs are handled at once; a room
// waiting for a slot holds up no other room beyond that bound.
const maxActiveRooms = 16

// keepTxnResponses is how long a transaction's response is kept for its
// replays: senders retry for minutes to hours, and Synapse keeps a day.
const keepTxnResponses = 24 * time.Hour

// remoteTypingTimeout is how long a remote user's typing notice lasts: an
// m.typing EDU has no timeout, and the origin sends another while the
// user keeps typing (Synapse's FEDERATION_TIMEOUT is 60 s).
const remoteTypingTimeout = 60 * time.Second

// PDUHandler takes the PDUs a remote server sends. RoomPDUs (pdus.go)
// receives them into the DAG; NoRoomsPDUs, the default, refuses each.
type PDUHandler interface {
	// HandlePDU receives one PDU of room, whose version is v, from
	// origin; id is the PDU's event ID for v. It returns nil when the
	// PDU was accepted (stored, possibly as rejected or soft-failed, as
	// the spec says such PDUs still count as processed) and an error
	// whose text the response reports otherwise. The caller calls it for
	// one room at a time, in the order of the transaction.
	HandlePDU(ctx context.Context, origin roomdag.ServerName, room roomdag.RoomID, v *roomdag.RoomVersion, id roomdag.EventID, pdu json.RawMessage) error
}

// NoRoomsPDUs is the PDUHandler of a server that takes part in no
// rooms built elsewhere (tests of the transaction layer): every PDU is
// answered with an error that says it was not accepted, never a fake
// success, so the origin knows the PDU did not land.
type NoRoomsPDUs struct{}

// HandlePDU implements PDUHandler.
func (NoRoomsPDUs) HandlePDU(context.Context, roomdag.ServerName, roomdag.RoomID, *roomdag.RoomVersion, roomdag.EventID, json.RawMessage) error {
	return errors.New("this server is not joined to the room and does not take remote events yet")
}

// EDUHandler takes one EDU of a type the Transactions do not handle
// themselves. The E2EE work plugs m.device_list_update,
// m.signing_key_update and m.direct_to_device in here
// (TxnOptions.EDUs). content is the EDU's content; origin signed the
// request. Errors are logged: EDUs get no result in the response.
type EDUHandler func(ctx context.Context, origin roomdag.ServerName, content json.RawMessage) error

// TxnStore is what inbound transactions need from storage.
type TxnStore interface {
	// FederationInboundTxn is the stored response to origin's txnID, or
	// storage.ErrNotFound.
	FederationInboundTxn(ctx context.Context, origin roomdag.ServerName, txnID string) ([]byte, error)
	// PutFederationInboundTxn stores it; the first stored stays.
	PutFederationInboundTxn(ctx context.Context, origin roomdag.ServerName, txnID string, response []byte, nowMS int64) error
	// PruneFederationInboundTxns forgets responses stored before beforeMS.
	PruneFederationInboundTxns(ctx context.Context, beforeMS int64) error
	// Event returns a stored event, or storage.ErrNotFound.
	Event(ctx context.Context, id roomdag.EventID) (*roomdag.StoredEvent, error)
	// PutReceipt records a receipt (sqlstore.DB.PutReceipt); its commit
	// hook wakes the room's syncs.
	PutReceipt(ctx context.Context, room roomdag.RoomID, typ string, user roomdag.UserID, thread string,
		event roomdag.EventID, eventPos roomdag.StreamPos, tsMS int64) (int64, error)
}

// StateSource gives a room's current state (roomdag.Rooms.State), or
// roomdag.ErrUnknownRoom.
type StateSource interface {
	State(ctx context.Context, id roomdag.RoomID) (*roomdag.RoomState, error)
}

// Ephemeral is where remote typing and presence land, for local clients'
// /sync (sync.Syncer).
type Ephemeral interface {
	SetTyping(ctx context.Context, room roomdag.RoomID, user roomdag.UserID, on bool, timeout time.Duration) error
	// RemotePresence sets a remote user's presence as their server
	// reports it; it does nothing when presence is off.
	RemotePresence(ctx context.Context, user roomdag.UserID, state, statusMsg string, lastActiveMS int64) error
}

// TxnOptions configure NewTransactions.
type TxnOptions struct {
	Server    roomdag.ServerName
	Auth      *Authenticator
	Store     TxnStore
	Rooms     StateSource
	PDUs      PDUHandler
	Ephemeral Ephemeral
	// EDUs handles the EDU types Transactions do not, by type; EDUs of
	// other types are ignored, as the spec lets a server do with EDUs
	// it does not understand.
	EDUs map[string]EDUHandler
	// ServerAllowed, unless nil, is the room's server ACL (the fedread
	// work's roomdag.ServerAllowed): PDUs and EDUs of a denied origin are
	// refused (spec: "Server Access Control Lists", EDUs since v1.13).
	ServerAllowed func(state roomdag.StateMap, server roomdag.ServerName) bool
	// OriginUp, unless nil, hears of every authenticated transaction's
	// origin: a server that sends is up (Sender.ServerUp).
	OriginUp func(roomdag.ServerName)
	Clock    clock.Clock
	Log      *slog.Logger
}

// TxnStats count what inbound transactions did, for tests.
type TxnStats struct {
	// Processed counts transactions processed, Replayed those answered
	// from the stored response.
	Processed, Replayed int
	// PDUs counts PDUs handed to the PDUHandler, EDUs EDUs applied.
	PDUs, EDUs int
}

// Transactions serves PUT /send/{txnId}.
type Transactions struct {
	o     TxnOptions
	rooms *roomQueues

	mu        gosync.Mutex
	inflight  map[txnKey]*inflightTxn
	stats     TxnStats
	lastPrune time.Time
}

type txnKey struct {
	origin roomdag.ServerName
	id     string
}

type inflightTxn struct {
	done chan struct{}
	resp []byte
	err  error
}

// NewTransactions serves o.
func NewTransactions(o TxnOptions) *Transactions {
	if o.PDUs == nil {
		o.PDUs = NoRoomsPDUs{}
	}
	return &Transactions{o: o, rooms: newRoomQueues(maxActiveRooms), inflight: map[txnKey]*inflightTxn{}}
}

// Routes is the /send endpoint, behind the Authenticator.
func (t *Transactions) Routes() []Endpoint {
	return []Endpoint{{http.MethodPut, "/_matrix/federation/v1/send/{txnId}", t.o.Auth.Wrap(t.send)}}
}

// Stats returns the counts so far.
func (t *Transactions) Stats() TxnStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stats
}

// txnBody is a transaction as sent.
type txnBody struct {
	Origin         *string           `json:"origin"`
	OriginServerTS *int64            `json:"origin_server_ts"`
	PDUs           []json.RawMessage `json:"pdus"`
	EDUs           []json.RawMessage `json:"edus"`
}

type txnEDU struct {
	Type    string          `json:"edu_type"`
	Content json.RawMessage `json:"content"`
}

// rawJSON is a response already encoded.
type rawJSON []byte

func (b rawJSON) MarshalJSON() ([]byte, error) { return b, nil }

func (t *Transactions) send(r *http.Request) (any, error) {
	origin := Origin(r.Context())
	if t.o.OriginUp != nil {
		t.o.OriginUp(origin)
	}
	txnID := httpapi.PathParam(r, "txnId")
	var body txnBody
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	switch {
	case body.Origin == nil:
		return nil, httpapi.BadJSON("origin is required")
	case body.OriginServerTS == nil:
		return nil, httpapi.BadJSON("origin_server_ts is required")
	case body.PDUs == nil:
		return nil, httpapi.BadJSON("pdus is required")
	case len(body.PDUs) > MaxTxnPDUs:
		return nil, httpapi.BadJSON("a transaction carries at most %d PDUs, not %d", MaxTxnPDUs, len(body.PDUs))
	case len(body.EDUs) > MaxTxnEDUs:
		return nil, httpapi.BadJSON("a transaction carries at most %d EDUs, not %d", MaxTxnEDUs, len(body.EDUs))
	}
	for _, p := range body.PDUs {
		if len(p) == 0 || p[0] != '{' {
			return nil, httpapi.BadJSON("every PDU must be an object")
		}
	}
	edus := make([]txnEDU, len(body.EDUs))
	for i, raw := range body.EDUs {
		if err := json.Unmarshal(raw, &edus[i]); err != nil || edus[i].Type == "" {
			return nil, httpapi.BadJSON("every EDU must be an object with an edu_type")
		}
	}
	// The work must finish once started, whether or not the origin waits
	// for the answer: the response is stored for its retry.
	ctx := context.WithoutCancel(r.Context())
	resp, err := t.once(ctx, txnKey{origin, txnID}, func() ([]byte, error) {
		return t.process(ctx, origin, body.PDUs, edus)
	})
	if err != nil {
		return nil, err
	}
	return rawJSON(resp), nil
}

// once runs process for a transaction not seen before and stores its
// response; a transaction stored, or in progress here, is answered with
// that response. (Two processes sharing a database may both take one
// that arrives at both at once; the PDU handler and EDUs are idempotent,
// so that costs work, not correctness.)
func (t *Transactions) once(ctx context.Context, key txnKey, process func() ([]byte, error)) ([]byte, error) {
	t.mu.Lock()
	if in := t.inflight[key]; in != nil {
		t.stats.Replayed++
		t.mu.Unlock()
		<-in.done
		return in.resp, in.err
	}
	in := &inflightTxn{done: make(chan struct{})}
	t.inflight[key] = in
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		delete(t.inflight, key)
		t.mu.Unlock()
		close(in.done)
	}()
	stored, err := t.o.Store.FederationInboundTxn(ctx, key.origin, key.id)
	if err == nil {
		t.mu.Lock()
		t.stats.Replayed++
		t.mu.Unlock()
		in.resp = stored
		return stored, nil
	}
	if !errors.Is(err, storage.ErrNotFound) {
		in.err = err
		return nil, err
	}
	in.resp, in.err = process()
	if in.err == nil {
		in.err = t.o.Store.PutFederationInboundTxn(ctx, key.origin, key.id, in.resp, t.o.Clock.Now().UnixMilli())
	}
	if in.err == nil {
		now := t.o.Clock.Now()
		t.mu.Lock()
		t.stats.Processed++
		prune := now.Sub(t.lastPrune) >= time.Hour
		if prune {
			t.lastPrune = now
		}
		t.mu.Unlock()
		if prune {
			if err := t.o.Store.PruneFederationInboundTxns(ctx, now.Add(-keepTxnResponses).UnixMilli()); err != nil {
				t.o.Log.Error("federation: pruning transaction responses", "err", err)
			}
		}
	}
	return in.resp, in.err
}

// pduResult is one PDU's entry in the response ("PDU Processing Result").
type pduResult struct {
	Error string `json:"error,omitempty"`
}

// process handles a transaction's PDUs, room by room on the rooms'
// queues, and its EDUs meanwhile, and returns the response.
func (t *Transactions) process(ctx context.Context, origin roomdag.ServerName, pdus []json.RawMessage, edus []txnEDU) ([]byte, error) {
	results := map[roomdag.EventID]pduResult{}
	var mu gosync.Mutex
	set := func(id roomdag.EventID, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			results[id] = pduResult{Error: err.Error()}
		} else {
			results[id] = pduResult{}
		}
	}
	byRoom := map[roomdag.RoomID][]json.RawMessage{}
	var order []roomdag.RoomID
	for _, raw := range pdus {
		var head struct {
			RoomID  string `json:"room_id"`
			EventID string `json:"event_id"`
		}
		_ = json.Unmarshal(raw, &head) // checked an object above; wrong types leave fields empty
		room, err := roomdag.ParseRoomID(head.RoomID)
		if err != nil {
			// Without a room there is no version, so no event ID to report
			// the PDU under, unless it carries one (v1, v2); a v12 create
			// event, which has no room_id, starts a room this server is
			// not in. Such PDUs are skipped, as Synapse does.
			if id, err := roomdag.ParseEventID(head.EventID); err == nil {
				set(id, errors.New("PDU has no valid room_id"))
			} else {
				t.o.Log.Info("federation: PDU without room_id or event_id skipped", "origin", origin)
			}
			continue
		}
		if _, ok := byRoom[room]; !ok {
			order = append(order, room)
		}
		byRoom[room] = append(byRoom[room], raw)
	}
	var wg gosync.WaitGroup
	for _, room := range order {
		list := byRoom[room]
		wg.Add(1)
		t.rooms.run(room, func() {
			defer wg.Done()
			t.roomPDUs(ctx, origin, room, list, set)
		})
	}
	for _, e := range edus {
		t.edu(ctx, origin, e)
	}
	wg.Wait()
	out := map[string]any{"pdus": results}
	return json.Marshal(out)
}

// unknownRoomVersion computes event IDs in rooms this server does not
// know: the ID format of every version from v4 on.
var unknownRoomVersion, _ = roomdag.LookupRoomVersion("11")

// roomPDUs hands one room's PDUs to the handler, in order; it runs on the
// room's queue.
func (t *Transactions) roomPDUs(ctx context.Context, origin roomdag.ServerName, room roomdag.RoomID, pdus []json.RawMessage, set func(roomdag.EventID, error)) {
	st, err := t.o.Rooms.State(ctx, room)
	if err != nil && !errors.Is(err, roomdag.ErrUnknownRoom) {
		t.o.Log.Error("federation: room state", "room", room, "err", err)
	}
	for _, raw := range pdus {
		if st == nil {
			// Unknown room: no version to check the PDU with. Its ID is
			// computed as the versions from v4 on do, or taken from the
			// PDU (v1, v2 carry it).
			id, idErr := roomdag.EventIDFromJSON(unknownRoomVersion, raw)
			var head struct {
				EventID string `json:"event_id"`
			}
			if json.Unmarshal(raw, &head) == nil {
				if given, err := roomdag.ParseEventID(head.EventID); err == nil {
					id, idErr = given, nil
				}
			}
			if idErr != nil {
				t.o.Log.Info("federation: PDU of an unknown room without an event ID skipped", "origin", origin, "room", room)
				continue
			}
			if err == nil {
				err = roomdag.ErrUnknownRoom
			}
			set(id, fmt.Errorf("room %s: %w", room, err))
			continue
		}
		id, err := roomdag.EventIDFromJSON(st.Version, raw)
		if err != nil {
			t.o.Log.Info("federation: malformed PDU skipped", "origin", origin, "room", room, "err", err)
			continue
		}
		if t.o.ServerAllowed != nil && !t.o.ServerAllowed(st.State, origin) {
			set(id, fmt.Errorf("server %s is denied by the room's server ACL", origin))
			continue
		}
		err = t.o.PDUs.HandlePDU(ctx, origin, room, st.Version, id, raw)
		t.mu.Lock()
		t.stats.PDUs++
		t.mu.Unlock()
		set(id, err)
	}
}

// edu applies one EDU; what it ignores or fails at is logged, as EDUs
// have no result.
func (t *Transactions) edu(ctx context.Context, origin roomdag.ServerName, e txnEDU) {
	var err error
	var applied bool
	switch e.Type {
	case "m.typing":
		applied, err = t.typing(ctx, origin, e.Content)
	case "m.receipt":
		applied, err = t.receipts(ctx, origin, e.Content)
	case "m.presence":
		applied, err = t.presence(ctx, origin, e.Content)
	default:
		h := t.o.EDUs[e.Type]
		if h == nil {
			return
		}
		err = h(ctx, origin, e.Content)
		applied = err == nil
	}
	if err != nil {
		t.o.Log.Info("federation: EDU not applied", "origin", origin, "type", e.Type, "err", err)
	}
	if applied {
		t.mu.Lock()
		t.stats.EDUs++
		t.mu.Unlock()
	}
}

// roomOfOrigin is the state of a room in which origin has a joined
// member and which its ACL lets origin into; nil otherwise. Typing and
// receipts are shared only with the servers in the room.
func (t *Transactions) roomOfOrigin(ctx context.Context, origin roomdag.ServerName, room roomdag.RoomID) (*roomdag.RoomState, error) {
	st, err := t.o.Rooms.State(ctx, room)
	if errors.Is(err, roomdag.ErrUnknownRoom) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if t.o.ServerAllowed != nil && !t.o.ServerAllowed(st.State, origin) {
		return nil, nil
	}
	if !HasJoinedMember(st.State, origin) {
		return nil, nil
	}
	return st, nil
}

// HasJoinedMember reports whether server has a user joined in state.
func HasJoinedMember(state roomdag.StateMap, server roomdag.ServerName) bool {
	for k, ev := range state {
		if k.Type == roomdag.TypeMember && ev.Membership() == roomdag.MembershipJoin &&
			roomdag.UserID(k.StateKey).Server() == server {
			return true
		}
	}
	return false
}

// remoteUser parses a user ID that must belong to origin ("Reject EDUs
// claiming users of another origin").
func remoteUser(raw string, origin roomdag.ServerName) (roomdag.UserID, error) {
	u, err := roomdag.ParseUserID(raw)
	if err != nil {
		return "", fmt.Errorf("%q is not a user ID", raw)
	}
	if u.Server() != origin {
		return "", fmt.Errorf("user %s is not of origin %s", u, origin)
	}
	return u, nil
}

// typing applies m.typing: {room_id, user_id, typing}.
func (t *Transactions) typing(ctx context.Context, origin roomdag.ServerName, content json.RawMessage) (bool, error) {
	var c struct {
		RoomID string `json:"room_id"`
		UserID string `json:"user_id"`
		Typing bool   `json:"typing"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return false, err
	}
	user, err := remoteUser(c.UserID, origin)
	if err != nil {
		return false, err
	}
	room, err := roomdag.ParseRoomID(c.RoomID)
	if err != nil {
		return false, fmt.Errorf("%q is not a room ID", c.RoomID)
	}
	st, err := t.roomOfOrigin(ctx, origin, room)
	if err != nil || st == nil {
		return false, err
	}
	if st.Membership(user) != roomdag.MembershipJoin {
		return false, fmt.Errorf("%s is not joined to %s", user, room)
	}
	return true, t.o.Ephemeral.SetTyping(ctx, room, user, c.Typing, remoteTypingTimeout)
}

// receipts applies m.receipt: {room_id: {m.read: {user_id: {event_ids,
// data: {ts, thread_id}}}}}. Only public read receipts travel
// (m.read.private never leaves its server); one for an event this
// server does not hold is skipped.
func (t *Transactions) receipts(ctx context.Context, origin roomdag.ServerName, content json.RawMessage) (bool, error) {
	var c map[string]map[string]map[string]struct {
		EventIDs []string `json:"event_ids"`
		Data     struct {
			TS       int64  `json:"ts"`
			ThreadID string `json:"thread_id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return false, err
	}
	applied := false
	var errs []error
	for rawRoom, types := range c {
		room, err := roomdag.ParseRoomID(rawRoom)
		if err != nil {
			errs = append(errs, fmt.Errorf("%q is not a room ID", rawRoom))
			continue
		}
		st, err := t.roomOfOrigin(ctx, origin, room)
		if err != nil {
			return applied, err
		}
		if st == nil {
			continue
		}
		for rawUser, r := range types["m.read"] {
			user, err := remoteUser(rawUser, origin)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if len(r.EventIDs) == 0 {
				continue
			}
			id, err := roomdag.ParseEventID(r.EventIDs[len(r.EventIDs)-1])
			if err != nil {
				errs = append(errs, err)
				continue
			}
			ev, err := t.o.Store.Event(ctx, id)
			if errors.Is(err, storage.ErrNotFound) || err == nil && ev.RoomID() != room {
				continue
			}
			if err != nil {
				return applied, err
			}
			thread := r.Data.ThreadID
			if thread != "" && thread != "main" {
				if _, err := roomdag.ParseEventID(thread); err != nil {
					thread = ""
				}
			}
			if _, err := t.o.Store.PutReceipt(ctx, room, "m.read", user, thread, ev.ID(), ev.Pos, r.Data.TS); err != nil {
				return applied, err
			}
			applied = true
		}
	}
	return applied, errors.Join(errs...)
}

// presence applies m.presence: {push: [{user_id, presence, status_msg,
// last_active_ago, currently_active}]}.
func (t *Transactions) presence(ctx context.Context, origin roomdag.ServerName, content json.RawMessage) (bool, error) {
	var c struct {
		Push []struct {
			UserID        string  `json:"user_id"`
			Presence      string  `json:"presence"`
			StatusMsg     *string `json:"status_msg"`
			LastActiveAgo int64   `json:"last_active_ago"`
		} `json:"push"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return false, err
	}
	applied := false
	var errs []error
	now := t.o.Clock.Now().UnixMilli()
	for _, p := range c.Push {
		user, err := remoteUser(p.UserID, origin)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		switch p.Presence {
		case "online", "unavailable", "offline":
		default:
			errs = append(errs, fmt.Errorf("presence %q of %s", p.Presence, user))
			continue
		}
		msg := ""
		if p.StatusMsg != nil {
			msg = *p.StatusMsg
		}
		if err := t.o.Ephemeral.RemotePresence(ctx, user, p.Presence, msg, now-max(p.LastActiveAgo, 0)); err != nil {
			return applied, err
		}
		applied = true
	}
	return applied, errors.Join(errs...)
}

// roomQueues runs each room's work in order, one piece at a time, with
// at most a bounded number of rooms at work at once.
type roomQueues struct {
	slots chan struct{}
	mu    gosync.Mutex
	rooms map[roomdag.RoomID][]func()
}

func newRoomQueues(n int) *roomQueues {
	return &roomQueues{slots: make(chan struct{}, n), rooms: map[roomdag.RoomID][]func(){}}
}

// run queues fn behind the room's earlier work.
func (q *roomQueues) run(room roomdag.RoomID, fn func()) {
	q.mu.Lock()
	pending, busy := q.rooms[room]
	q.rooms[room] = append(pending, fn)
	q.mu.Unlock()
	if !busy {
		go q.drain(room)
	}
}

// drain runs the room's queue until it is empty.
func (q *roomQueues) drain(room roomdag.RoomID) {
	q.slots <- struct{}{}
	defer func() { <-q.slots }()
	for {
		q.mu.Lock()
		list := q.rooms[room]
		if len(list) == 0 {
			delete(q.rooms, room)
			q.mu.Unlock()
			return
		}
		fn := list[0]
		q.rooms[room] = list[1:]
		q.mu.Unlock()
		fn()
	}
}
