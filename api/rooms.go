package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/retention"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"github.com/tidwall/gjson"
)

func (s *Server) roomRoutes() []route {
	return []route{
		{"POST", v3 + "/createRoom", s.createRoom, authRequired, rateMessage},
		{"POST", v3 + "/join/{roomIdOrAlias}", s.joinByIDOrAlias, authRequired, rateMessage},
		{"POST", v3 + "/rooms/{roomId}/join", s.joinRoom, authRequired, rateMessage},
		{"POST", v3 + "/knock/{roomIdOrAlias}", s.knock, authRequired, rateMessage},
		{"POST", v3 + "/rooms/{roomId}/invite", s.membershipOf(roomdag.MembershipInvite), authRequired, rateMessage},
		{"POST", v3 + "/rooms/{roomId}/leave", s.leave, authRequired, rateMessage},
		{"POST", v3 + "/rooms/{roomId}/kick", s.membershipOf(roomdag.MembershipLeave), authRequired, rateMessage},
		{"POST", v3 + "/rooms/{roomId}/ban", s.membershipOf(roomdag.MembershipBan), authRequired, rateMessage},
		{"POST", v3 + "/rooms/{roomId}/unban", s.unban, authRequired, rateMessage},
		{"POST", v3 + "/rooms/{roomId}/forget", s.forget, authRequired, rateNone},
		{"GET", v3 + "/joined_rooms", s.joinedRooms, authRequired, rateNone},
		{"PUT", v3 + "/rooms/{roomId}/send/{eventType}/{txnId}", s.sendMessage, authRequired, rateMessage},
		{"PUT", v3 + "/rooms/{roomId}/state/{eventType}", s.putState, authRequired, rateMessage},
		{"PUT", v3 + "/rooms/{roomId}/state/{eventType}/", s.putState, authRequired, rateMessage},
		{"PUT", v3 + "/rooms/{roomId}/state/{eventType}/{stateKey}", s.putState, authRequired, rateMessage},
		{"PUT", v3 + "/rooms/{roomId}/redact/{eventId}/{txnId}", s.redact, authRequired, rateMessage},
		{"POST", v3 + "/rooms/{roomId}/upgrade", s.upgradeRoom, authRequired, rateMessage},
	}
}

// roomParam parses the {roomId} path parameter.
func roomParam(r *http.Request) (roomdag.RoomID, error) {
	id, err := roomdag.ParseRoomID(httpapi.PathParam(r, "roomId"))
	if err != nil {
		return "", httpapi.InvalidParam("malformed room ID")
	}
	return id, nil
}

// eventParam reads {eventId}.
func eventParam(r *http.Request) (roomdag.EventID, error) {
	id, err := roomdag.ParseEventID(httpapi.PathParam(r, "eventId"))
	if err != nil {
		return "", httpapi.InvalidParam("malformed event ID")
	}
	return id, nil
}

// memberContent is the content of a membership event.
type memberContent struct {
	Membership  string  `json:"membership"`
	DisplayName *string `json:"displayname,omitempty"`
	AvatarURL   *string `json:"avatar_url,omitempty"`
	Reason      string  `json:"reason,omitempty"`
	IsDirect    bool    `json:"is_direct,omitempty"`
}

// memberEvent makes a membership event; joins, invites and knocks carry
// the target's profile (Synapse includes it in joins and knocks, so those
// in the room see who is knocking).
func (s *Server) memberEvent(ctx context.Context, sender, target roomdag.UserID, membership, reason string) (roomdag.ProtoEvent, error) {
	c := memberContent{Membership: membership, Reason: reason}
	if membership == roomdag.MembershipJoin || membership == roomdag.MembershipInvite || membership == roomdag.MembershipKnock {
		u, err := s.store.User(ctx, target)
		if err == nil {
			c.DisplayName, c.AvatarURL = u.DisplayName, u.AvatarURL
		} else if !errors.Is(err, storage.ErrNotFound) {
			return roomdag.ProtoEvent{}, err
		}
	}
	b, _ := json.Marshal(c)
	key := string(target)
	return roomdag.ProtoEvent{Type: roomdag.TypeMember, StateKey: &key, Sender: sender, Content: b}, nil
}

func (s *Server) appendMember(r *http.Request, room roomdag.RoomID, target roomdag.UserID, membership, reason string) (*roomdag.Event, error) {
	p, err := s.memberEvent(r.Context(), requester(r).UserID, target, membership, reason)
	if err != nil {
		return nil, err
	}
	ev, _, err := s.rooms.Append(r.Context(), room, p)
	return ev, err
}

// roomIDOrAlias resolves the {roomIdOrAlias} path parameter to a room ID,
// and for an alias, the servers its lookup says are in the room.
func (s *Server) roomIDOrAlias(r *http.Request) (roomdag.RoomID, []roomdag.ServerName, error) {
	target := httpapi.PathParam(r, "roomIdOrAlias")
	switch {
	case strings.HasPrefix(target, "#"):
		alias, err := roomdag.ParseRoomAlias(target)
		if err != nil {
			return "", nil, httpapi.InvalidParam("malformed room alias")
		}
		return s.resolveAlias(r.Context(), alias)
	case strings.HasPrefix(target, "!"):
		id, err := roomdag.ParseRoomID(target)
		if err != nil {
			return "", nil, httpapi.InvalidParam("malformed room ID")
		}
		return id, nil, nil
	}
	return "", nil, httpapi.InvalidParam("expected a room ID or alias")
}

func (s *Server) joinByIDOrAlias(r *http.Request) (any, error) {
	room, servers, err := s.roomIDOrAlias(r)
	if err != nil {
		return nil, err
	}
	return s.join(r, room, servers)
}

func (s *Server) joinRoom(r *http.Request) (any, error) {
	room, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	return s.join(r, room, nil)
}

// join joins the requester to room: here, when a user of this server is
// in it, else through a server that is (aliasServers, from the alias
// lookup, and those joinServers adds).
func (s *Server) join(r *http.Request, room roomdag.RoomID, aliasServers []roomdag.ServerName) (any, error) {
	// Other fields of the body go into the join event's content, as
	// Synapse does ("POST /join/:room_id can join a room with custom
	// content"); membership is always "join".
	var body map[string]json.RawMessage
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	var reason string
	if raw, ok := body["reason"]; ok && json.Unmarshal(raw, &reason) != nil {
		return nil, httpapi.BadJSON("reason must be a string")
	}
	st, err := s.rooms.State(r.Context(), room)
	if errors.Is(err, roomdag.ErrUnknownRoom) {
		st, err = nil, nil
	}
	if err != nil {
		return nil, err
	}
	user := requester(r).UserID
	if st == nil || st.Create() == nil || !s.inRoom(st) {
		if st == nil || st.Create() == nil {
			// Accepting an invite from another server: join through it.
			aliasServers = append(aliasServers, s.inviteServers(r.Context(), room, user)...)
		}
		servers := s.joinServers(r, room, aliasServers, st)
		if s.cfg.RemoteJoins != nil && len(servers) > 0 {
			return s.joinRemote(r, room, servers, body, reason)
		}
		if st == nil || st.Create() == nil {
			return nil, httpapi.NotFound("no known room %s on this server", room)
		}
	}
	// Joining again is a no-op, as in Synapse: no new event.
	if st.Membership(user) == roomdag.MembershipJoin {
		return map[string]any{"room_id": room}, nil
	}
	p, err := s.memberEvent(r.Context(), user, user, roomdag.MembershipJoin, reason)
	if err != nil {
		return nil, err
	}
	var content map[string]json.RawMessage
	_ = json.Unmarshal(p.Content, &content)
	for k, v := range body {
		if k != "membership" {
			content[k] = v
		}
	}
	// A restricted room's join names the member who authorises it.
	if err := s.ownMemberContent(r.Context(), st, user, content); err != nil {
		return nil, err
	}
	p.Content, _ = json.Marshal(content)
	if _, _, err := s.rooms.Append(r.Context(), room, p); err != nil {
		return nil, err
	}
	s.upgrades.joined(r.Context(), requester(r).UserID, room, st)
	return map[string]any{"room_id": room}, nil
}

// joinRemote joins the requester to a room through other servers.
func (s *Server) joinRemote(r *http.Request, room roomdag.RoomID, servers []roomdag.ServerName, body map[string]json.RawMessage, reason string) (any, error) {
	user := requester(r).UserID
	p, err := s.memberEvent(r.Context(), user, user, roomdag.MembershipJoin, reason)
	if err != nil {
		return nil, err
	}
	var content map[string]json.RawMessage
	_ = json.Unmarshal(p.Content, &content)
	for k, v := range body {
		if k != "membership" && k != keyAuthorisedVia {
			content[k] = v
		}
	}
	join, err := s.cfg.RemoteJoins.Join(r.Context(), room, user, servers, content)
	if err != nil {
		return nil, err
	}
	s.backfillBackchat(r.Context(), room, join)
	return map[string]any{"room_id": room}, nil
}

// backfillBackchat fetches the history just before a remote join, so that
// the joiner's first /sync holds the room's backchat (the room's setting,
// at least minBackfill) although this server held none of the room. A
// failure leaves the history to /messages, which backfills too.
func (s *Server) backfillBackchat(ctx context.Context, room roomdag.RoomID, join *roomdag.Event) {
	if s.cfg.Backfill == nil || join == nil {
		return
	}
	n := minBackfill
	if st, err := s.rooms.State(ctx, room); err == nil {
		if ev := st.State.Get(roomdag.TypeBackchat, ""); ev != nil {
			var c struct {
				Limit int `json:"limit"`
			}
			if json.Unmarshal(ev.Content(), &c) == nil {
				n = max(n, c.Limit)
			}
		}
	}
	if _, err := s.cfg.Backfill.Backfill(ctx, room, []*roomdag.Event{join}, min(n, maxPageLimit)); err != nil {
		s.log.Info("backfilling the backchat after a remote join", "room", room, "err", err)
	}
}

type targetRequest struct {
	UserID string `json:"user_id"`
	Reason string `json:"reason"`
}

func (s *Server) readTarget(r *http.Request) (roomdag.RoomID, roomdag.UserID, string, error) {
	room, err := roomParam(r)
	if err != nil {
		return "", "", "", err
	}
	var req targetRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return "", "", "", err
	}
	if req.UserID == "" {
		return "", "", "", httpapi.MissingParam("user_id is required")
	}
	user, err := roomdag.ParseUserID(req.UserID)
	if err != nil {
		return "", "", "", httpapi.InvalidParam("malformed user_id")
	}
	return room, user, req.Reason, nil
}

// membershipOf handles invite, kick (leave of another user) and ban.
func (s *Server) membershipOf(membership string) httpapi.Func {
	return func(r *http.Request) (any, error) {
		room, target, reason, err := s.readTarget(r)
		if err != nil {
			return nil, err
		}
		st, err := s.rooms.State(r.Context(), room)
		if err != nil {
			return nil, err
		}
		if st.Membership(requester(r).UserID) != roomdag.MembershipJoin {
			return nil, httpapi.Forbidden("you are not joined to this room")
		}
		if membership == roomdag.MembershipInvite && target.Server() != s.cfg.ServerName {
			switch st.Membership(target) {
			case roomdag.MembershipJoin:
				return nil, httpapi.Forbidden("%s is already in the room", target)
			case roomdag.MembershipBan:
				return nil, httpapi.Forbidden("%s is banned from the room", target)
			}
			if err := s.inviteRemote(r.Context(), room, requester(r).UserID, target, reason, false); err != nil {
				return nil, err
			}
			return struct{}{}, nil
		}
		if membership == roomdag.MembershipInvite {
			// An application service may host an unknown user: it is
			// asked, and may create it (spec: "Querying").
			if ok, err := s.localUserExists(r.Context(), target); err != nil {
				return nil, err
			} else if !ok {
				return nil, httpapi.NotFound("unknown user %s", target)
			}
			switch st.Membership(target) {
			case roomdag.MembershipJoin:
				return nil, httpapi.Forbidden("%s is already in the room", target)
			case roomdag.MembershipBan:
				return nil, httpapi.Forbidden("%s is banned from the room", target)
			}
			if err := s.checkInviteAllowed(r.Context(), target); err != nil {
				return nil, err
			}
		}
		if membership == roomdag.MembershipLeave {
			switch st.Membership(target) {
			case roomdag.MembershipJoin, roomdag.MembershipInvite, roomdag.MembershipKnock:
			default:
				return nil, httpapi.Forbidden("%s is not in the room", target)
			}
		}
		if _, err := s.appendMember(r, room, target, membership, reason); err != nil {
			return nil, err
		}
		return struct{}{}, nil
	}
}

func (s *Server) unban(r *http.Request) (any, error) {
	room, target, reason, err := s.readTarget(r)
	if err != nil {
		return nil, err
	}
	st, err := s.rooms.State(r.Context(), room)
	if err != nil {
		return nil, err
	}
	if st.Membership(target) != roomdag.MembershipBan {
		return nil, httpapi.Forbidden("%s is not banned", target)
	}
	if _, err := s.appendMember(r, room, target, roomdag.MembershipLeave, reason); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func (s *Server) leave(r *http.Request) (any, error) {
	room, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	var req struct {
		Reason string `json:"reason"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	st, err := s.rooms.State(r.Context(), room)
	if errors.Is(err, roomdag.ErrUnknownRoom) || err == nil && st.Create() == nil {
		// A room known only by an invite from another server.
		if handled, err := s.leaveOutOfBand(r.Context(), room, requester(r).UserID, req.Reason); err != nil {
			return nil, err
		} else if handled {
			return struct{}{}, nil
		}
		return nil, httpapi.NotFound("unknown room")
	}
	if err != nil {
		return nil, err
	}
	switch st.Membership(requester(r).UserID) {
	case roomdag.MembershipJoin, roomdag.MembershipInvite, roomdag.MembershipKnock:
	case roomdag.MembershipLeave:
		return struct{}{}, nil // already left: nothing to do
	default:
		return nil, httpapi.Forbidden("you are not in this room")
	}
	if err := s.checkNoticeRoomLeave(st, requester(r).UserID); err != nil {
		return nil, err
	}
	if _, err := s.appendMember(r, room, requester(r).UserID, roomdag.MembershipLeave, req.Reason); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func (s *Server) forget(r *http.Request) (any, error) {
	room, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	st, err := s.rooms.State(r.Context(), room)
	if err != nil {
		return nil, err
	}
	membership := st.Membership(requester(r).UserID)
	if st.Create() == nil {
		// A room known only by an invite from another server (and its
		// rejection): the membership is out of band.
		m, err := s.store.UserMembership(r.Context(), requester(r).UserID, room)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return nil, err
		}
		membership = m.Membership
	}
	switch membership {
	case roomdag.MembershipJoin, roomdag.MembershipInvite, roomdag.MembershipKnock:
		return nil, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeUnknown, "leave the room before forgetting it")
	case "":
		return nil, httpapi.NotFound("you were never in this room")
	}
	return struct{}{}, s.store.Forget(r.Context(), requester(r).UserID, room)
}

func (s *Server) joinedRooms(r *http.Request) (any, error) {
	rooms, err := s.store.JoinedRooms(r.Context(), requester(r).UserID)
	if err != nil {
		return nil, err
	}
	if rooms == nil {
		rooms = []roomdag.RoomID{}
	}
	return map[string]any{"joined_rooms": rooms}, nil
}

// checkEventType enforces the spec's size limit on event types.
func checkEventType(t string) error {
	if t == "" || len(t) > roomdag.MaxFieldBytes {
		return httpapi.InvalidParam("event type must be 1 to %d bytes", roomdag.MaxFieldBytes)
	}
	return nil
}

// txn is a client transaction: scoped, like Synapse's transaction cache,
// to the device and the request path without the transaction ID.
func txn(rq *Requester, scope, id string) *roomdag.Txn {
	return &roomdag.Txn{DeviceID: rq.DeviceID, Scope: scope, TxnID: id}
}

// sendOnce appends the event of a client transaction unless it was sent
// already, and answers with its event ID either way.
func (s *Server) sendOnce(r *http.Request, room roomdag.RoomID, p roomdag.ProtoEvent) (any, error) {
	if id, err := s.store.TxnEvent(r.Context(), p.Sender, *p.Txn); err == nil {
		return map[string]any{"event_id": id}, nil
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	ev, _, err := s.rooms.Append(r.Context(), room, p)
	if errors.Is(err, storage.ErrConflict) {
		// The same transaction raced itself: answer with the winner.
		if id, err := s.store.TxnEvent(r.Context(), p.Sender, *p.Txn); err == nil {
			return map[string]any{"event_id": id}, nil
		}
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"event_id": ev.ID()}, nil
}

func (s *Server) sendMessage(r *http.Request) (any, error) {
	room, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	evType, txnID := httpapi.PathParam(r, "eventType"), httpapi.PathParam(r, "txnId")
	if err := checkEventType(evType); err != nil {
		return nil, err
	}
	rq := requester(r)
	t := txn(rq, "send/"+string(room)+"/"+evType, txnID)
	if id, err := s.store.TxnEvent(r.Context(), rq.UserID, *t); err == nil {
		return map[string]any{"event_id": id}, nil // retried: the body may differ, the answer may not
	}
	content, err := httpapi.ReadObject(r)
	if err != nil {
		return nil, err
	}
	ts, err := massagedTS(r)
	if err != nil {
		return nil, err
	}
	p := roomdag.ProtoEvent{Type: evType, Sender: rq.UserID, Content: content, Txn: t, TS: ts}
	if evType == roomdag.TypeTombstone {
		if err := checkTombstone(room, nil, content); err != nil {
			return nil, err
		}
	}
	if evType == roomdag.TypeRedaction {
		// v1.18 (MSC4169): redactions may be sent like any event.
		target, err := roomdag.ParseEventID(gjson.GetBytes(content, "redacts").String())
		if err != nil {
			return nil, httpapi.BadJSON("content.redacts must be an event ID")
		}
		return s.sendRedaction(r, room, target, p)
	}
	if err := s.checkRelation(r.Context(), room, rq.UserID, evType, content); err != nil {
		return nil, err
	}
	return s.sendOnce(r, room, p)
}

func (s *Server) putState(r *http.Request) (any, error) {
	room, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	evType, stateKey := httpapi.PathParam(r, "eventType"), httpapi.PathParam(r, "stateKey")
	if err := checkEventType(evType); err != nil {
		return nil, err
	}
	if err := s.checkRoomEncryption(evType); err != nil {
		return nil, err
	}
	if len(stateKey) > roomdag.MaxFieldBytes {
		return nil, httpapi.InvalidParam("state key is longer than %d bytes", roomdag.MaxFieldBytes)
	}
	content, err := httpapi.ReadObject(r)
	if err != nil {
		return nil, err
	}
	rq := requester(r)
	st, err := s.rooms.State(r.Context(), room)
	if err != nil {
		return nil, err
	}
	if evType == roomdag.TypeMember {
		if content, err = s.memberStateContent(r.Context(), st, rq.UserID, stateKey, content); err != nil {
			return nil, err
		}
	}
	// A room has one m.room.create, its first event: another is a bad
	// request whatever the sender's power (Synapse; Complement's
	// TestMSC4291RoomIDAsHashOfCreateEvent_CannotSendCreateEvent).
	if evType == roomdag.TypeCreate {
		return nil, httpapi.BadJSON("m.room.create is only the first event of a room; it cannot be sent again")
	}
	// Setting state to what it already is makes no new event (as Synapse
	// and Dendrite do), so clients can retry freely.
	if cur := st.State.Get(evType, stateKey); cur != nil && cur.Sender() == rq.UserID && jsonEqual(cur.Content(), content) {
		return map[string]any{"event_id": cur.ID()}, nil
	}
	if evType == retention.EventType && stateKey == "" {
		if err := retention.ValidateContent(content); err != nil {
			return nil, err
		}
	}
	if evType == roomdag.TypeTombstone {
		if err := checkTombstone(room, &stateKey, content); err != nil {
			return nil, err
		}
	}
	if evType == roomdag.TypeMember && gjson.GetBytes(content, "membership").String() == roomdag.MembershipInvite {
		if invitee, err := roomdag.ParseUserID(stateKey); err == nil { // else the auth rules refuse it
			if err := s.checkInviteAllowed(r.Context(), invitee); err != nil {
				return nil, err
			}
		}
	}
	if evType == roomdag.TypeAliases && st.Membership(rq.UserID) != roomdag.MembershipJoin {
		// v1-v5 rule 4 lets a server set its aliases from outside the
		// room; like Synapse (require_membership_for_aliases), local
		// users must be joined to send them.
		return nil, httpapi.Forbidden("you must be in the room to set its aliases")
	}
	if evType == roomdag.TypeCanonicalAlias {
		if err := s.checkCanonicalAliasClaim(r, content); err != nil {
			return nil, err
		}
		if err := s.checkCanonicalAlias(r.Context(), room, content); err != nil {
			return nil, err
		}
	}
	ts, err := massagedTS(r)
	if err != nil {
		return nil, err
	}
	p := roomdag.ProtoEvent{Type: evType, StateKey: &stateKey, Sender: rq.UserID, Content: content, TS: ts}
	ev, _, err := s.rooms.Append(r.Context(), room, p)
	if err != nil {
		return nil, err
	}
	return map[string]any{"event_id": ev.ID()}, nil
}

// memberStateContent prepares the content of an m.room.member event sent
// with PUT /state: join_authorised_via_users_server is the server's to set
// (ownMemberContent), in anyone's membership event.
func (s *Server) memberStateContent(ctx context.Context, st *roomdag.RoomState, sender roomdag.UserID, stateKey string, content []byte) ([]byte, error) {
	var c map[string]json.RawMessage
	if err := json.Unmarshal(content, &c); err != nil {
		return nil, httpapi.BadJSON("content must be a JSON object")
	}
	if _, ok := c[keyAuthorisedVia]; !ok && stateKey != string(sender) {
		return content, nil
	}
	delete(c, keyAuthorisedVia)
	if stateKey == string(sender) {
		if err := s.ownMemberContent(ctx, st, sender, c); err != nil {
			return nil, err
		}
	}
	return json.Marshal(c)
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return string(xa) == string(ya)
}

func (s *Server) redact(r *http.Request) (any, error) {
	room, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	target, err := eventParam(r)
	if err != nil {
		return nil, err
	}
	rq := requester(r)
	t := txn(rq, "redact/"+string(room)+"/"+string(target), httpapi.PathParam(r, "txnId"))
	if id, err := s.store.TxnEvent(r.Context(), rq.UserID, *t); err == nil {
		return map[string]any{"event_id": id}, nil
	}
	var req struct {
		Reason string `json:"reason,omitempty"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	content, _ := json.Marshal(req)
	p := roomdag.ProtoEvent{Type: roomdag.TypeRedaction, Sender: rq.UserID, Content: content, Txn: t}
	return s.sendRedaction(r, room, target, p)
}

// sendRedaction checks that the sender may redact the target, then
// appends the redaction; the write path redacts the stored copy in the same
// transaction. Since room v3 the auth rules cannot see the target, so the
// server checks here (spec: "Redactions").
func (s *Server) sendRedaction(r *http.Request, room roomdag.RoomID, target roomdag.EventID, p roomdag.ProtoEvent) (any, error) {
	p.Redacts = target
	st, err := s.rooms.State(r.Context(), room)
	if err != nil {
		return nil, err
	}
	orig, err := s.store.Event(r.Context(), target)
	if errors.Is(err, storage.ErrNotFound) || err == nil && orig.RoomID() != room {
		return nil, httpapi.NotFound("unknown event")
	}
	if err != nil {
		return nil, err
	}
	if orig.Sender() != p.Sender {
		if rq := requester(r); rq != nil && rq.Suspended {
			return nil, httpapi.Errorf(http.StatusForbidden, httpapi.CodeUserSuspended, "You can only redact your own events while suspended.")
		}
		pl, err := roomdag.PowerLevelsFromState(st.State)
		if err != nil {
			return nil, err
		}
		if roomdag.UserLevelIn(st.Version, pl, st.Create(), p.Sender) < pl.Redact {
			return nil, httpapi.Forbidden("you may not redact other users' events")
		}
	}
	p.RedactTarget = orig.Event
	return s.sendOnce(r, room, p)
}
