package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
)

// Membership handshakes for servers joining, leaving or knocking on a room
// this server is in (server-server API, "Joining Rooms", "Leaving Rooms
// (Rejecting Invites)", "Knocking upon a room"): make_* hands the asking
// server a template of the member event, built on this server's view of
// the room; send_* takes the event it built and signed into the room
// (roomdag.Rooms.Receive, live) and answers with what the new member needs.

// HandshakeRooms is what the handshakes need of the write path
// (roomdag.Rooms).
type HandshakeRooms interface {
	RoomStates
	Receive(ctx context.Context, ev *roomdag.Event, opts roomdag.ReceiveOptions) (*roomdag.ReceiveResult, error)
}

// Handshakes serves make_join/send_join, make_leave/send_leave and
// make_knock/send_knock.
type Handshakes struct {
	in       *Inbound
	rooms    HandshakeRooms
	key      roomdag.SigningKey
	verifier roomdag.SignatureVerifier
	// Forward, unless nil, queues an event taken in for the room's other
	// servers (Sender.Forward).
	Forward func(ctx context.Context, ev *roomdag.Event, origin roomdag.ServerName) error
}

// NewHandshakes serves the handshakes from in's store, taking events
// into rooms, checking their signatures with verifier and co-signing
// restricted joins this server authorises with key.
func NewHandshakes(in *Inbound, rooms HandshakeRooms, key roomdag.SigningKey, verifier roomdag.SignatureVerifier) *Handshakes {
	return &Handshakes{in: in, rooms: rooms, key: key, verifier: verifier}
}

// Routes are the handshake endpoints, each behind the Authenticator.
func (m *Handshakes) Routes() []Endpoint {
	const v1, v2 = "/_matrix/federation/v1", "/_matrix/federation/v2"
	routes := []Endpoint{
		{http.MethodGet, v1 + "/make_join/{roomId}/{userId}", m.make(roomdag.MembershipJoin)},
		{http.MethodPut, v1 + "/send_join/{roomId}/{eventId}", m.send(roomdag.MembershipJoin, true)},
		{http.MethodPut, v2 + "/send_join/{roomId}/{eventId}", m.send(roomdag.MembershipJoin, false)},
		{http.MethodGet, v1 + "/make_leave/{roomId}/{userId}", m.make(roomdag.MembershipLeave)},
		{http.MethodPut, v1 + "/send_leave/{roomId}/{eventId}", m.send(roomdag.MembershipLeave, true)},
		{http.MethodPut, v2 + "/send_leave/{roomId}/{eventId}", m.send(roomdag.MembershipLeave, false)},
		{http.MethodGet, v1 + "/make_knock/{roomId}/{userId}", m.make(roomdag.MembershipKnock)},
		{http.MethodPut, v1 + "/send_knock/{roomId}/{eventId}", m.send(roomdag.MembershipKnock, false)},
	}
	for i := range routes {
		routes[i].Handler = m.in.Auth.Wrap(routes[i].Handler)
	}
	return routes
}

// Error codes of the handshakes (server-server API, joins-v2.yaml).
const (
	codeIncompatibleRoomVersion = "M_INCOMPATIBLE_ROOM_VERSION"
	codeUnableToAuthoriseJoin   = "M_UNABLE_TO_AUTHORISE_JOIN"
)

// keyAuthorisedVia names a restricted join's authorising user in the
// member content.
const keyAuthorisedVia = "join_authorised_via_users_server"

// memberTemplate is the unsigned event make_* answers with: what the
// asking server fills in (origin_server_ts), hashes and signs.
type memberTemplate struct {
	RoomID         roomdag.RoomID             `json:"room_id"`
	Sender         roomdag.UserID             `json:"sender"`
	Type           string                     `json:"type"`
	StateKey       string                     `json:"state_key"`
	Content        map[string]json.RawMessage `json:"content"`
	PrevEvents     json.RawMessage            `json:"prev_events"`
	AuthEvents     json.RawMessage            `json:"auth_events"`
	Depth          int64                      `json:"depth"`
	Origin         roomdag.ServerName         `json:"origin,omitempty"`
	OriginServerTS int64                      `json:"origin_server_ts"`
}

// maxTemplatePrev caps a template's prev_events, as roomdag caps a local
// event's.
const maxTemplatePrev = 10

// GET /_matrix/federation/v1/make_{join,leave,knock}/{roomId}/{userId}?ver=
func (m *Handshakes) make(membership string) httpapi.Func {
	return func(r *http.Request) (any, error) {
		room, err := roomParam(r)
		if err != nil {
			return nil, err
		}
		raw := httpapi.PathParam(r, "userId")
		user, err := roomdag.ParseUserID(raw)
		if err != nil {
			return nil, httpapi.InvalidParam("%q is not a user ID", raw)
		}
		if origin := Origin(r.Context()); user.Server() != origin {
			return nil, httpapi.Forbidden("%s may not ask for a member event of %s", origin, user)
		}
		st, err := m.in.room(r, room)
		if err != nil {
			return nil, err
		}
		v := st.Version
		if membership != roomdag.MembershipLeave {
			// "ver": the versions the asking server supports; absent, 1.
			vers := r.URL.Query()["ver"]
			if len(vers) == 0 {
				vers = []string{"1"}
			}
			if !slices.Contains(vers, v.ID) {
				e := httpapi.Errorf(http.StatusBadRequest, codeIncompatibleRoomVersion,
					"the room is of version %s, which your server does not support", v.ID)
				e.Extra = map[string]any{"room_version": v.ID}
				return nil, e
			}
		}
		if membership == roomdag.MembershipKnock && !v.Knock {
			e := httpapi.Errorf(http.StatusBadRequest, codeIncompatibleRoomVersion, "rooms of version %s cannot be knocked on", v.ID)
			e.Extra = map[string]any{"room_version": v.ID}
			return nil, e
		}
		content := map[string]json.RawMessage{"membership": jsonString(membership)}
		if membership == roomdag.MembershipJoin {
			via, err := m.joinAuthoriser(r.Context(), st, user)
			if err != nil {
				return nil, err
			}
			if via != "" {
				content[keyAuthorisedVia] = jsonString(string(via))
			}
		}
		t, err := m.template(st, user, content)
		if err != nil {
			return nil, err
		}
		return map[string]any{"event": t, "room_version": v.ID}, nil
	}
}

func jsonString(s string) json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}

// template is the member event of user with content on top of st, once
// the auth rules would allow it there (else 403).
func (m *Handshakes) template(st *roomdag.RoomState, user roomdag.UserID, content map[string]json.RawMessage) (*memberTemplate, error) {
	v := st.Version
	key := string(user)
	rawContent, _ := json.Marshal(content)
	var authEvs []*roomdag.Event
	for _, k := range roomdag.AuthEventTuples(v, roomdag.TypeMember, &key, user, rawContent) {
		if ev := st.State[k]; ev != nil {
			authEvs = append(authEvs, ev)
		}
	}
	slices.SortFunc(authEvs, func(a, b *roomdag.Event) int { return strings.Compare(string(a.ID()), string(b.ID())) })
	prev := slices.Clone(st.Extremities)
	if len(prev) > maxTemplatePrev {
		prev = prev[:maxTemplatePrev]
	}
	// Rooms v1 and v2 cite events with their hashes: the extremities'
	// events, which the room's state holds for them.
	prevRefs, _ := json.Marshal(prev)
	if v.EventFormat == roomdag.EventFormatV1 {
		var prevEvs []*roomdag.Event
		for _, id := range prev {
			i := slices.IndexFunc(st.ExtremityEvents, func(ev *roomdag.Event) bool { return ev.ID() == id })
			if i < 0 {
				return nil, fmt.Errorf("federation: forward extremity %s of a v%s room was not loaded", id, v.ID)
			}
			prevEvs = append(prevEvs, st.ExtremityEvents[i])
		}
		var err error
		if prevRefs, err = roomdag.CiteEvents(v, prevEvs); err != nil {
			return nil, err
		}
	}
	authRefs, err := roomdag.CiteEvents(v, authEvs)
	if err != nil {
		return nil, err
	}
	t := &memberTemplate{RoomID: st.Create().RoomID(), Sender: user, Type: roomdag.TypeMember, StateKey: key,
		Content: content, PrevEvents: prevRefs, AuthEvents: authRefs, Depth: st.Depth + 1,
		Origin: user.Server(), OriginServerTS: m.in.Clock.Now().UnixMilli()}
	if t.RoomID == "" {
		return nil, errors.New("federation: room state without a create event")
	}
	// Would the auth rules take it? The event is built (signed with this
	// server's key, which the rules do not read) only to ask them.
	probe, err := roomdag.BuildEvent(v, m.key, roomdag.EventTemplate{RoomID: t.RoomID, Sender: user, Type: t.Type,
		EventID:  roomdag.EventID("$template:" + string(user.Server())),
		StateKey: &key, Content: rawContent, PrevRefs: prevRefs, AuthRefs: authRefs, Depth: t.Depth, OriginServerTS: t.OriginServerTS})
	if err != nil {
		return nil, err
	}
	if err := roomdag.Authorise(probe, st.State); err != nil {
		return nil, httpapi.Forbidden("%v", err)
	}
	return t, nil
}

// joinAuthoriser is the local user to name in a restricted join of user
// (rule 4.3.5.2 in v8-v11), "" when the join needs none: the join rule is
// not restricted, or the user is invited or joined. A user this server
// cannot see in an allowed room gets M_UNABLE_TO_AUTHORISE_JOIN; with no
// local user who may invite, M_UNABLE_TO_GRANT_JOIN.
func (m *Handshakes) joinAuthoriser(ctx context.Context, st *roomdag.RoomState, user roomdag.UserID) (roomdag.UserID, error) {
	v := st.Version
	rule := ""
	if jr := st.State.Get(roomdag.TypeJoinRules, ""); jr != nil {
		var c struct {
			JoinRule string `json:"join_rule"`
		}
		_ = json.Unmarshal(jr.Content(), &c)
		rule = c.JoinRule
	}
	if !(rule == "restricted" && v.RestrictedJoins || rule == "knock_restricted" && v.KnockRestricted) {
		return "", nil
	}
	switch st.Membership(user) {
	case roomdag.MembershipJoin, roomdag.MembershipInvite:
		return "", nil
	case roomdag.MembershipBan:
		return "", httpapi.Forbidden("%s is banned from the room", user)
	}
	allowed := false
	for _, id := range roomdag.AllowedRooms(st.State) {
		other, err := roomdag.ParseRoomID(id)
		if err != nil {
			continue
		}
		ost, err := m.rooms.State(ctx, other)
		if errors.Is(err, roomdag.ErrUnknownRoom) {
			continue
		}
		if err != nil {
			return "", err
		}
		if ost.Membership(user) == roomdag.MembershipJoin {
			allowed = true
			break
		}
	}
	if !allowed {
		return "", httpapi.Errorf(http.StatusBadRequest, codeUnableToAuthoriseJoin,
			"this server cannot see %s joined to a room the join rule allows", user)
	}
	best, err := roomdag.JoinAuthoriser(st.State, m.in.Server)
	if err != nil {
		return "", err
	}
	if best == "" {
		return "", httpapi.Errorf(http.StatusBadRequest, httpapi.CodeUnableToGrantJoin,
			"no user of this server who may invite is in the room")
	}
	return best, nil
}

// PUT /_matrix/federation/v{1,2}/send_{join,leave,knock}/{roomId}/{eventId}
//
// v1 answers [200, body], as the old endpoints did.
func (m *Handshakes) send(membership string, v1 bool) httpapi.Func {
	return func(r *http.Request) (any, error) {
		out, err := m.sendMember(r, membership)
		if err != nil || !v1 {
			return out, err
		}
		return []any{http.StatusOK, out}, nil
	}
}

func (m *Handshakes) sendMember(r *http.Request, membership string) (any, error) {
	ctx := r.Context()
	room, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	rawID := httpapi.PathParam(r, "eventId")
	id, err := roomdag.ParseEventID(rawID)
	if err != nil {
		return nil, httpapi.InvalidParam("%q is not an event ID", rawID)
	}
	st, err := m.in.room(r, room)
	if err != nil {
		return nil, err
	}
	body, err := httpapi.ReadObject(r)
	if err != nil {
		return nil, err
	}
	v := st.Version
	ev, err := roomdag.NewEventFromJSON(v, body)
	if err != nil {
		return nil, httpapi.BadJSON("%v", err)
	}
	origin := Origin(ctx)
	switch {
	case ev.ID() != id:
		return nil, httpapi.BadJSON("the event's ID is %s, not %s", ev.ID(), id)
	case ev.RoomID() != room:
		return nil, httpapi.BadJSON("the event is of room %s, not %s", ev.RoomID(), room)
	case ev.Type() != roomdag.TypeMember || ev.StateKey() == nil || *ev.StateKey() != string(ev.Sender()):
		return nil, httpapi.BadJSON("the event is not a member event of its sender")
	case ev.Membership() != membership:
		return nil, httpapi.BadJSON("the event's membership is %q, not %q", ev.Membership(), membership)
	case ev.Sender().Server() != origin:
		return nil, httpapi.Forbidden("%s may not send a member event of %s", origin, ev.Sender())
	}
	if err := roomdag.CheckContentHash(v, ev.JSON()); err != nil {
		return nil, httpapi.BadJSON("%v", err)
	}
	if via := authorisedVia(ev); membership == roomdag.MembershipJoin && v.RestrictedJoins && via != "" {
		if via.Server() != m.in.Server {
			return nil, httpapi.Forbidden("the join is authorised by %s, not by a user of this server", via)
		}
		// Only what make_join would have authorised: send_join may come
		// without it.
		if _, err := m.joinAuthoriser(ctx, st, ev.Sender()); err != nil {
			return nil, err
		}
		// This server vouches for the join it authorised with its
		// signature (rule 4.3.5.2 reads join_authorised_via_users_server,
		// and the signature check requires that server's signature).
		signed, err := roomdag.SignEvent(v, m.key, ev.JSON())
		if err != nil {
			return nil, err
		}
		if ev, err = roomdag.NewEventFromJSON(v, signed); err != nil {
			return nil, err
		}
	}
	res, err := m.rooms.Receive(ctx, ev, roomdag.ReceiveOptions{Kind: roomdag.KindLive, Verifier: m.verifier, ExpectedID: id})
	var missing *roomdag.MissingEventsError
	switch {
	case errors.As(err, &missing):
		return nil, httpapi.BadJSON("%v", err)
	case errors.Is(err, roomdag.ErrSignature), errors.Is(err, ErrUnknownKey):
		return nil, httpapi.Forbidden("%v", err)
	case err != nil:
		return nil, err
	}
	switch res.Status {
	case roomdag.StatusRejected, roomdag.StatusSoftFailed:
		return nil, httpapi.Forbidden("the event is not allowed: %v", res.Rejection)
	}
	if m.Forward != nil {
		if err := m.Forward(ctx, res.Event, origin); err != nil {
			return nil, err
		}
	}
	switch membership {
	case roomdag.MembershipLeave:
		return struct{}{}, nil
	case roomdag.MembershipKnock:
		after, err := m.rooms.State(ctx, room)
		if err != nil {
			return nil, err
		}
		return map[string]any{"knock_room_state": roomdag.StrippedState(after.State, res.Event)}, nil
	}
	// omit_members (v2, MSC3706 "faster joins"): the joining server
	// takes the state without its member events.
	omit := r.URL.Query().Get("omit_members") == "true" && strings.Contains(r.URL.Path, "/v2/")
	return m.joinAnswer(ctx, res.Event, omit)
}

// joinAnswer is send_join's answer: the state before the join, its auth
// chain (and the join's), and the join as this server holds it
// (co-signed, for a restricted join). With omit, the state leaves out
// member events but those of the room's heroes when it has neither name
// nor canonical alias (server-server API, send_join v2 omit_members);
// the auth chain still holds what authorises the rest and the join.
func (m *Handshakes) joinAnswer(ctx context.Context, join *roomdag.Event, omit bool) (any, error) {
	stored, err := m.in.Store.Events(ctx, []roomdag.EventID{join.ID()})
	if err != nil {
		return nil, err
	}
	if len(stored) == 0 {
		return nil, errors.New("federation: the join just received is not stored")
	}
	state, err := m.in.Store.StateEvents(ctx, stored[0].StateBefore)
	if err != nil {
		return nil, err
	}
	if omit {
		state = withoutMembers(state, join.Sender())
	}
	starts := make([]*roomdag.Event, 0, len(state)+1)
	for _, e := range state {
		starts = append(starts, e)
	}
	chain, err := m.in.authChain(ctx, append(starts, join))
	if err != nil {
		return nil, err
	}
	pdus, auth := eventsJSON(sortedState(state)), eventsJSON(chain)
	cur, err := m.rooms.State(ctx, join.RoomID())
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"origin": m.in.Server, "event": json.RawMessage(join.JSON()),
		"state": pdus, "auth_chain": auth,
		"members_omitted": omit, "servers_in_room": joinedServers(cur.State, m.in.Server),
	}, nil
}

// maxHeroes is how many members name a room without a name (client-server
// API, m.heroes).
const maxHeroes = 5

// withoutMembers is state without its member events, but for those of the
// heroes (joined or invited members other than joiner, the first five by
// user ID) when the room has neither name nor canonical alias.
func withoutMembers(state roomdag.StateMap, joiner roomdag.UserID) roomdag.StateMap {
	out := make(roomdag.StateMap, len(state))
	var heroes []string
	for k, ev := range state {
		if k.Type != roomdag.TypeMember {
			out[k] = ev
			continue
		}
		if m := ev.Membership(); (m == roomdag.MembershipJoin || m == roomdag.MembershipInvite) && k.StateKey != string(joiner) {
			heroes = append(heroes, k.StateKey)
		}
	}
	if state.Get(roomdag.TypeName, "") != nil || state.Get(roomdag.TypeCanonicalAlias, "") != nil {
		return out
	}
	slices.Sort(heroes)
	for _, h := range heroes[:min(len(heroes), maxHeroes)] {
		k := roomdag.StateKey{Type: roomdag.TypeMember, StateKey: h}
		out[k] = state[k]
	}
	return out
}
