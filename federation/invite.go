package federation

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// Inbound invites (server-server API, "Inviting to a room": PUT
// /_matrix/federation/v2/invite/{roomId}/{eventId}, and the older v1): a
// server whose user invites one of ours asks us to sign the invite. We
// check it, sign it and keep it, so that the invitee sees it in /sync.

// InviteRooms is what the invite endpoints need of the write path
// (roomdag.Rooms).
type InviteRooms interface {
	State(ctx context.Context, id roomdag.RoomID) (*roomdag.RoomState, error)
	StoreOutOfBand(ctx context.Context, ev *roomdag.Event, inviteState json.RawMessage) (roomdag.StreamPos, error)
	Receive(ctx context.Context, ev *roomdag.Event, opts roomdag.ReceiveOptions) (*roomdag.ReceiveResult, error)
}

// InviteUsers finds local accounts.
type InviteUsers interface {
	// User returns a local account, or storage.ErrNotFound.
	User(ctx context.Context, id roomdag.UserID) (*storage.User, error)
}

// Invites serves the inbound invite endpoints.
type Invites struct {
	InviteOptions
}

// InviteOptions are what Invites serves from.
type InviteOptions struct {
	// Key signs the invites this server accepts.
	Key   roomdag.SigningKey
	Rooms InviteRooms
	Users InviteUsers
	// Verifier checks the signatures of the inviting server (Keyring).
	Verifier roomdag.SignatureVerifier
	// InvitesBlocked reports whether a local user refuses every invite
	// (m.invite_permission_config, sync.InvitesBlocked); nil: nobody
	// does.
	InvitesBlocked func(ctx context.Context, user roomdag.UserID) (bool, error)
	// Auth authenticates every request.
	Auth *Authenticator
	Log  *slog.Logger
}

// NewInvites serves o.
func NewInvites(o InviteOptions) *Invites { return &Invites{o} }

// maxInviteState bounds the invite_room_state kept with an invite: a
// handful of state events, full PDUs since v1.16.
const maxInviteState = 256 << 10

// Routes are the invite endpoints, each behind the Authenticator.
func (in *Invites) Routes() []Endpoint {
	return []Endpoint{
		{http.MethodPut, "/_matrix/federation/v2/invite/{roomId}/{eventId}", in.Auth.Wrap(in.inviteV2)},
		{http.MethodPut, "/_matrix/federation/v1/invite/{roomId}/{eventId}", in.Auth.Wrap(in.inviteV1)},
	}
}

func (in *Invites) inviteV2(r *http.Request) (any, error) {
	var body struct {
		Event       json.RawMessage `json:"event"`
		InviteState json.RawMessage `json:"invite_room_state"`
		RoomVersion *string         `json:"room_version"`
	}
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.RoomVersion == nil {
		return nil, httpapi.BadJSON("room_version is required")
	}
	if len(body.Event) == 0 {
		return nil, httpapi.BadJSON("event is required")
	}
	ev, err := in.invite(r, *body.RoomVersion, body.Event, body.InviteState)
	if err != nil {
		return nil, err
	}
	return map[string]json.RawMessage{"event": ev.JSON()}, nil
}

// inviteV1 is the v1 endpoint: the body is the event, with the stripped
// state in its unsigned.invite_room_state, the room version is 1 or 2
// (servers that know later ones use v2), and the answer is the
// [200, {"event": ...}] pair the v1 API answers with.
func (in *Invites) inviteV1(r *http.Request) (any, error) {
	raw, err := httpapi.ReadObject(r)
	if err != nil {
		return nil, err
	}
	var parts struct {
		Unsigned struct {
			InviteState json.RawMessage `json:"invite_room_state"`
		} `json:"unsigned"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return nil, httpapi.BadJSON("unsigned must be an object")
	}
	version := "1"
	if room, err := roomdag.ParseRoomID(httpapi.PathParam(r, "roomId")); err == nil {
		if st, err := in.Rooms.State(r.Context(), room); err == nil {
			version = st.Version.ID
		}
	}
	ev, err := in.invite(r, version, raw, parts.Unsigned.InviteState)
	if err != nil {
		return nil, err
	}
	return []any{http.StatusOK, map[string]json.RawMessage{"event": ev.JSON()}}, nil
}

// invite checks an invite sent to us, signs it and keeps it; it returns
// the event with our signature.
func (in *Invites) invite(r *http.Request, versionID string, raw, inviteState json.RawMessage) (*roomdag.Event, error) {
	ctx := r.Context()
	origin := Origin(ctx)
	room, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	id, err := roomdag.ParseEventID(httpapi.PathParam(r, "eventId"))
	if err != nil {
		return nil, httpapi.InvalidParam("%q is not an event ID", httpapi.PathParam(r, "eventId"))
	}
	v, ok := roomdag.LookupRoomVersion(versionID)
	if !ok {
		// Spec: 400 M_INCOMPATIBLE_ROOM_VERSION, naming the version.
		e := httpapi.Errorf(http.StatusBadRequest, httpapi.CodeIncompatibleRoomVersion, "room version %q is not supported", versionID)
		e.Extra = map[string]any{"room_version": versionID}
		return nil, e
	}
	if len(inviteState) > maxInviteState {
		return nil, httpapi.Errorf(http.StatusRequestEntityTooLarge, httpapi.CodeTooLarge, "invite_room_state is over %d bytes", maxInviteState)
	}
	var stripped []json.RawMessage
	if len(inviteState) > 0 && string(inviteState) != "null" {
		if err := json.Unmarshal(inviteState, &stripped); err != nil {
			return nil, httpapi.BadJSON("invite_room_state must be a list of events")
		}
		for _, e := range stripped {
			if len(e) == 0 || e[0] != '{' {
				return nil, httpapi.BadJSON("invite_room_state must be a list of events")
			}
		}
	}
	ev, err := roomdag.NewEventFromJSON(v, raw)
	if err != nil {
		return nil, httpapi.BadJSON("the invite is not an event of room version %s: %v", v.ID, err)
	}
	switch {
	case ev.ID() != id:
		return nil, httpapi.BadJSON("the event's ID is %s, not %s", ev.ID(), id)
	case ev.RoomID() != room:
		return nil, httpapi.BadJSON("the event is of room %s, not %s", ev.RoomID(), room)
	case ev.Type() != roomdag.TypeMember || ev.Membership() != roomdag.MembershipInvite || ev.StateKey() == nil:
		return nil, httpapi.BadJSON("the event is not an invite (m.room.member, membership invite)")
	case ev.Sender().Server() != origin:
		return nil, httpapi.Forbidden("the invite's sender %s is not of %s, which sent it", ev.Sender(), origin)
	}
	invitee, err := roomdag.ParseUserID(*ev.StateKey())
	if err != nil {
		return nil, httpapi.BadJSON("the invite's state_key is not a user ID")
	}
	if invitee.Server() != in.Key.ServerName {
		return nil, httpapi.Forbidden("%s is not a user of this server", invitee)
	}
	if _, err := in.Users.User(ctx, invitee); errors.Is(err, storage.ErrNotFound) {
		return nil, httpapi.NotFound("no user %s here", invitee)
	} else if err != nil {
		return nil, err
	}
	if in.InvitesBlocked != nil {
		// Spec (v1.18, invite blocking): the invitee's server refuses
		// with 403 M_INVITE_BLOCKED.
		if blocked, err := in.InvitesBlocked(ctx, invitee); err != nil {
			return nil, err
		} else if blocked {
			return nil, httpapi.Errorf(http.StatusForbidden, httpapi.CodeInviteBlocked, "%s does not accept invites", invitee)
		}
	}
	if err := roomdag.CheckContentHash(v, ev.JSON()); err != nil {
		return nil, httpapi.BadJSON("the invite's content hash does not match: %v", err)
	}
	if err := in.Verifier.VerifyEventSignatures(ctx, ev, ev.OriginServerTS()); err != nil {
		if errors.Is(err, roomdag.ErrSignature) || errors.Is(err, ErrUnknownKey) {
			return nil, httpapi.Forbidden("the invite's signatures do not verify: %v", err)
		}
		return nil, err
	}
	if inviteState, err = in.strippedState(ctx, v, room, stripped); err != nil {
		return nil, err
	}
	st, err := in.Rooms.State(ctx, room)
	here := err == nil && st.Create() != nil
	if err != nil && !errors.Is(err, roomdag.ErrUnknownRoom) {
		return nil, err
	}
	if here {
		if st.Version.ID != v.ID {
			return nil, httpapi.BadJSON("room %s is of version %s, not %s", room, st.Version.ID, v.ID)
		}
		if !roomdag.ServerAllowed(st.State, origin) {
			return nil, httpapi.Forbidden("server %s is denied by the room's server ACL", origin)
		}
		if m := st.Membership(invitee); m == roomdag.MembershipJoin || m == roomdag.MembershipBan {
			return nil, httpapi.Forbidden("%s is %s in the room", invitee, m)
		}
	}
	signed, err := roomdag.SignEvent(v, in.Key, ev.JSON())
	if err != nil {
		return nil, err
	}
	if ev, err = roomdag.NewEventFromJSON(v, signed); err != nil {
		return nil, err
	}
	if here {
		// We are in the room: the invite is an event of its DAG, which
		// the inviting server also sends in a transaction. Taken now if
		// it can be placed; if not, that transaction brings it with
		// what it misses.
		if _, err := in.Rooms.Receive(ctx, ev, roomdag.ReceiveOptions{Kind: roomdag.KindLive, Verifier: in.Verifier}); err != nil {
			in.Log.Info("invite to a room we are in, left to its transaction", "room", room, "event", ev.ID(), "err", err)
		}
		return ev, nil
	}
	if _, err := in.Rooms.StoreOutOfBand(ctx, ev, inviteState); err != nil && !errors.Is(err, roomdag.ErrRoomHere) {
		return nil, err
	}
	// (ErrRoomHere: a join of ours made the room here meanwhile; the
	// transaction that brings the invite into its DAG follows.)
	return ev, nil
}

// strippedState checks an invite's invite_room_state and returns it as
// the invitee's clients see it (roomdag.StrippedEvents). Since v1.16
// (MSC4311) its events are PDUs of the room, the m.room.create event among
// them: one that is not of the room, or whose hashes or signatures do not
// check, fails the invite with 400 M_MISSING_PARAM. As MSC4311's
// migration asks, stripped events (of servers from before v1.16) and a
// missing create event are taken with a warning for now.
func (in *Invites) strippedState(ctx context.Context, v *roomdag.RoomVersion, room roomdag.RoomID, raw []json.RawMessage) (json.RawMessage, error) {
	bad := func(format string, a ...any) error {
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeMissingParam, "invite_room_state: "+format, a...)
	}
	out := make([]json.RawMessage, 0, len(raw))
	legacy, create := 0, false
	for _, e := range raw {
		var probe struct {
			Signatures json.RawMessage `json:"signatures"`
		}
		if json.Unmarshal(e, &probe) != nil || probe.Signatures == nil {
			legacy++
			out = append(out, e)
			continue
		}
		ev, err := roomdag.NewEventFromJSON(v, e)
		if err != nil {
			return nil, bad("not a PDU of room version %s: %v", v.ID, err)
		}
		if ev.RoomID() != room || !ev.IsState() {
			return nil, bad("%s is not a state event of %s", ev.ID(), room)
		}
		if err := roomdag.CheckContentHash(v, ev.JSON()); err != nil {
			return nil, bad("%s: %v", ev.ID(), err)
		}
		if err := in.Verifier.VerifyEventSignatures(ctx, ev, ev.OriginServerTS()); err != nil {
			if errors.Is(err, roomdag.ErrSignature) || errors.Is(err, ErrUnknownKey) {
				return nil, bad("%s: %v", ev.ID(), err)
			}
			return nil, err
		}
		create = create || ev.IsCreate()
		var one []json.RawMessage
		_ = json.Unmarshal(roomdag.StrippedEvents([]*roomdag.Event{ev}), &one)
		out = append(out, one...)
	}
	if legacy > 0 || !create {
		in.Log.Warn("invite_room_state without PDUs or without the room's create event (MSC4311)", "room", room,
			"stripped_events", legacy, "create", create)
	}
	if len(out) == 0 {
		return nil, nil
	}
	b, _ := json.Marshal(out)
	return b, nil
}
