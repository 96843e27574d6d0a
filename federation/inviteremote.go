package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
)

// A local user's invites of other servers' users (server-server API,
// "Inviting to a room": PUT /v2/invite, /v1/invite before), and leaves of
// rooms this server is not in, which is how an invite received over
// federation is rejected ("Leaving Rooms (Rejecting Invites)": GET
// /v1/make_leave, PUT /v2/send_leave). They go over the RemoteJoiner's
// transport.

// ServerSignatures checks one server's signatures on an event
// (Keyring.VerifyServerSignature).
type ServerSignatures interface {
	VerifyServerSignature(ctx context.Context, ev *roomdag.Event, server roomdag.ServerName, atTS int64) error
}

// RemoteInviter sends a local user's invites and invite rejections to
// other servers.
type RemoteInviter struct {
	*RemoteJoiner
	// Signatures checks the invitee's server's signature on an invite.
	Signatures ServerSignatures
}

// Invite asks the invitee's server to sign ev, an invite of one of its
// users built here (roomdag.Rooms.Build), with inviteState the stripped
// state shown to the invitee. It returns ev with that server's signature
// added (and verified); a refusal is the remote's Matrix error (its
// status and errcode), an unreachable server a 502. The v1 endpoint is
// tried, for rooms v1 and v2, when the server does not serve v2.
func (ri *RemoteInviter) Invite(ctx context.Context, ev *roomdag.Event, inviteState json.RawMessage) (*roomdag.Event, error) {
	signed, err := ri.invite(ctx, ev, inviteState)
	var re *remoteError
	if errors.As(err, &re) && !(re.status == http.StatusBadRequest && re.code == httpapi.CodeMissingParam) {
		return nil, re.matrix()
	}
	// (400 M_MISSING_PARAM: the invitee's server found our
	// invite_room_state wanting, which the client cannot mend: MSC4311
	// asks for a 5xx.)
	if err != nil {
		ri.Log.Info("remote invite failed", "room", ev.RoomID(), "event", ev.ID(), "err", err)
		return nil, httpapi.Errorf(http.StatusBadGateway, httpapi.CodeUnknown, "the invitee's server did not sign the invite: %v", err)
	}
	return signed, nil
}

func (ri *RemoteInviter) invite(ctx context.Context, ev *roomdag.Event, inviteState json.RawMessage) (*roomdag.Event, error) {
	if ev.StateKey() == nil {
		return nil, fmt.Errorf("%w: %s is not an invite", roomdag.ErrEventFormat, ev.ID())
	}
	invitee, err := roomdag.ParseUserID(*ev.StateKey())
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not an invite", roomdag.ErrEventFormat, ev.ID())
	}
	dest := invitee.Server()
	if len(inviteState) == 0 {
		inviteState = json.RawMessage("[]")
	}
	v := ev.Version()
	tail := url.PathEscape(string(ev.RoomID())) + "/" + url.PathEscape(string(ev.ID()))
	body, _ := json.Marshal(map[string]any{"event": json.RawMessage(ev.JSON()), "invite_room_state": inviteState, "room_version": v.ID})
	var answer struct {
		Event json.RawMessage `json:"event"`
	}
	err = ri.call(ctx, dest, http.MethodPut, "/_matrix/federation/v2/invite/"+tail, body, &answer)
	var re *remoteError
	if errors.As(err, &re) && (re.code == httpapi.CodeUnrecognized || re.code == "" && re.status == http.StatusNotFound) && v.EventFormat == roomdag.EventFormatV1 {
		// v1 carries the stripped state in the event's unsigned.
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(ev.JSON(), &obj); err != nil {
			return nil, err
		}
		obj["unsigned"], _ = json.Marshal(map[string]json.RawMessage{"invite_room_state": inviteState})
		body, _ = json.Marshal(obj)
		var pair [2]json.RawMessage
		if err := ri.call(ctx, dest, http.MethodPut, "/_matrix/federation/v1/invite/"+tail, body, &pair); err != nil {
			return nil, err
		}
		if err := json.Unmarshal(pair[1], &answer); err != nil {
			return nil, fmt.Errorf("%s's answer to the v1 invite: %w", dest, err)
		}
	} else if err != nil {
		return nil, err
	}
	if len(answer.Event) == 0 {
		return nil, fmt.Errorf("%s's answer to the invite has no event", dest)
	}
	signed, err := roomdag.WithSignatures(ev, dest, answer.Event)
	if err != nil {
		return nil, fmt.Errorf("%s's signed invite: %w", dest, err)
	}
	if err := ri.Signatures.VerifyServerSignature(ctx, signed, dest, signed.OriginServerTS()); err != nil {
		return nil, fmt.Errorf("%s's signature on the invite: %w", dest, err)
	}
	return signed, nil
}

// Leave makes user leave room (of version v) through server: make_leave
// there, the template hashed and signed here, then send_leave (v2). It
// returns the leave event server accepted; any failure is an error and
// nothing was left.
func (ri *RemoteInviter) Leave(ctx context.Context, server roomdag.ServerName, room roomdag.RoomID, user roomdag.UserID, v *roomdag.RoomVersion, reason string) (*roomdag.Event, error) {
	var mk struct {
		RoomVersion string `json:"room_version"`
		Event       struct {
			RoomID     roomdag.RoomID  `json:"room_id"`
			Sender     roomdag.UserID  `json:"sender"`
			Type       string          `json:"type"`
			StateKey   *string         `json:"state_key"`
			PrevEvents json.RawMessage `json:"prev_events"`
			AuthEvents json.RawMessage `json:"auth_events"`
			Depth      int64           `json:"depth"`
		} `json:"event"`
	}
	path := "/_matrix/federation/v1/make_leave/" + url.PathEscape(string(room)) + "/" + url.PathEscape(string(user))
	if err := ri.call(ctx, server, http.MethodGet, path, nil, &mk); err != nil {
		return nil, err
	}
	if mk.RoomVersion != "" && mk.RoomVersion != v.ID {
		return nil, fmt.Errorf("%s says room %s is of version %s, not %s", server, room, mk.RoomVersion, v.ID)
	}
	t := mk.Event
	if t.RoomID != room || t.Sender != user || t.Type != roomdag.TypeMember || t.StateKey == nil || *t.StateKey != string(user) {
		return nil, fmt.Errorf("%s answered make_leave with a template that is not %s's leave of %s", server, user, room)
	}
	content := map[string]string{"membership": roomdag.MembershipLeave}
	if reason != "" {
		content["reason"] = reason
	}
	c, _ := json.Marshal(content)
	leave, err := roomdag.BuildEvent(v, ri.Key, roomdag.EventTemplate{RoomID: room, Sender: user, Type: roomdag.TypeMember,
		EventID: newEventID(v, ri.Server), StateKey: t.StateKey, Content: c, PrevRefs: t.PrevEvents, AuthRefs: t.AuthEvents, Depth: t.Depth,
		OriginServerTS: ri.Clock.Now().UnixMilli()})
	if err != nil {
		return nil, fmt.Errorf("building the leave from %s's template: %w", server, err)
	}
	var ok json.RawMessage
	path = "/_matrix/federation/v2/send_leave/" + url.PathEscape(string(room)) + "/" + url.PathEscape(string(leave.ID()))
	if err := ri.call(ctx, server, http.MethodPut, path, leave.JSON(), &ok); err != nil {
		return nil, err
	}
	return leave, nil
}
