package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
)

// Outbound membership requests of a local user to other servers
// (server-server API): invites of their users ("Inviting to a room":
// PUT /v2/invite, /v1/invite before), and leaves of rooms this server is
// not in, which is how an invite received over federation is rejected
// ("Leaving Rooms (Rejecting Invites)": GET /v1/make_leave, PUT
// /v2/send_leave).

// TemplateSigner completes an event template another server prepared
// (roomdag.Rooms.SignTemplate).
type TemplateSigner interface {
	SignTemplate(v *roomdag.RoomVersion, template json.RawMessage) (*roomdag.Event, error)
}

// ServerSignatures checks one server's signatures on an event
// (Keyring.VerifyServerSignature).
type ServerSignatures interface {
	VerifyServerSignature(ctx context.Context, ev *roomdag.Event, server roomdag.ServerName, atTS int64) error
}

// Memberships sends a local user's membership requests to other servers.
type Memberships struct {
	Client     Client
	Signatures ServerSignatures
	Templates  TemplateSigner
}

// maxMembershipResponse bounds an answer to invite, make_leave or
// send_leave: one event and little else.
const maxMembershipResponse = 1 << 20

// RemoteError is another server's error answer to a request, passed on
// to the client as it is when it is a client error (4xx): the remote
// server decides whether its user may be invited.
type RemoteError struct {
	Server  roomdag.ServerName
	Status  int
	Code    string
	Message string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("%s answered %d %s: %s", e.Server, e.Status, e.Code, e.Message)
}

// MatrixError is the error a client sees: the remote's own for a 4xx,
// else 502 (httpapi.MatrixErrorer).
func (e *RemoteError) MatrixError() *httpapi.Error {
	if e.Status >= 400 && e.Status < 500 && e.Code != "" {
		return httpapi.Errorf(e.Status, e.Code, "%s: %s", e.Server, e.Message)
	}
	return httpapi.Errorf(http.StatusBadGateway, httpapi.CodeUnknown, "%s answered %d %s", e.Server, e.Status, e.Code)
}

// unrecognized reports an answer of a server that does not serve the
// endpoint (a v2 one, from a server that knows v1 only).
func (e *RemoteError) unrecognized() bool {
	return e.Code == httpapi.CodeUnrecognized ||
		e.Code == "" && (e.Status == http.StatusNotFound || e.Status == http.StatusMethodNotAllowed)
}

// call sends a request with a JSON body (nil: none) to dest and decodes
// a 200 answer into out; any other answer is a *RemoteError.
func (m Memberships) call(ctx context.Context, dest roomdag.ServerName, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, path, rd)
	if err != nil {
		return err
	}
	resp, err := m.Client.Do(ctx, dest, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxMembershipResponse+1))
	if err != nil {
		return fmt.Errorf("reading %s's answer: %w", dest, err)
	}
	if len(b) > maxMembershipResponse {
		return fmt.Errorf("%s's answer is over %d bytes", dest, maxMembershipResponse)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Errcode string `json:"errcode"`
			Error   string `json:"error"`
		}
		_ = json.Unmarshal(b, &e)
		return &RemoteError{Server: dest, Status: resp.StatusCode, Code: e.Errcode, Message: e.Error}
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s's answer to %s: %w", dest, path, err)
	}
	return nil
}

// Invite asks the invitee's server to sign ev, an invite of one of its
// users built here (roomdag.Rooms.Build), with inviteState the stripped
// state shown to the invitee. It returns ev with that server's signature
// added (and verified); a refusal is a *RemoteError. The v1 endpoint is
// tried, for rooms v1 and v2, when the server does not know v2.
func (m Memberships) Invite(ctx context.Context, ev *roomdag.Event, inviteState json.RawMessage) (*roomdag.Event, error) {
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
	path := "/" + url.PathEscape(string(ev.RoomID())) + "/" + url.PathEscape(string(ev.ID()))
	var answer struct {
		Event json.RawMessage `json:"event"`
	}
	err = m.call(ctx, dest, http.MethodPut, "/_matrix/federation/v2/invite"+path,
		map[string]any{"event": json.RawMessage(ev.JSON()), "invite_room_state": inviteState, "room_version": v.ID}, &answer)
	var re *RemoteError
	if errors.As(err, &re) && re.unrecognized() && (v.ID == "1" || v.ID == "2") {
		// v1 carries the stripped state in the event's unsigned.
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(ev.JSON(), &obj); err != nil {
			return nil, err
		}
		obj["unsigned"], _ = json.Marshal(map[string]json.RawMessage{"invite_room_state": inviteState})
		var pair []json.RawMessage
		if err = m.call(ctx, dest, http.MethodPut, "/_matrix/federation/v1/invite"+path, obj, &pair); err != nil {
			return nil, err
		}
		if len(pair) != 2 || json.Unmarshal(pair[1], &answer) != nil {
			return nil, fmt.Errorf("%s's answer to v1 invite is not [200, {\"event\": ...}]", dest)
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
	if err := m.Signatures.VerifyServerSignature(ctx, signed, dest, signed.OriginServerTS()); err != nil {
		return nil, fmt.Errorf("%s's signature on the invite: %w", dest, err)
	}
	return signed, nil
}

// Leave makes user leave room through server: make_leave there, then the
// signed leave back with send_leave (v2). It returns the leave event,
// which server accepted; any failure is an error and nothing was left.
func (m Memberships) Leave(ctx context.Context, server roomdag.ServerName, room roomdag.RoomID, user roomdag.UserID, v *roomdag.RoomVersion, reason string) (*roomdag.Event, error) {
	var tmpl struct {
		Event       json.RawMessage `json:"event"`
		RoomVersion string          `json:"room_version"`
	}
	if err := m.call(ctx, server, http.MethodGet, "/_matrix/federation/v1/make_leave/"+url.PathEscape(string(room))+"/"+url.PathEscape(string(user)), nil, &tmpl); err != nil {
		return nil, err
	}
	if tmpl.RoomVersion != "" && tmpl.RoomVersion != v.ID {
		return nil, fmt.Errorf("%s says room %s is of version %s, not %s", server, room, tmpl.RoomVersion, v.ID)
	}
	var t map[string]json.RawMessage
	if err := json.Unmarshal(tmpl.Event, &t); err != nil || t == nil {
		return nil, fmt.Errorf("%s's make_leave answer has no event template", server)
	}
	if reason != "" {
		t["content"], _ = json.Marshal(map[string]string{"membership": roomdag.MembershipLeave, "reason": reason})
	}
	raw, _ := json.Marshal(t)
	ev, err := m.Templates.SignTemplate(v, raw)
	if err != nil {
		return nil, fmt.Errorf("%s's leave template: %w", server, err)
	}
	if ev.Type() != roomdag.TypeMember || !ev.StateKeyIs(string(user)) || ev.Sender() != user ||
		ev.Membership() != roomdag.MembershipLeave || ev.RoomID() != room {
		return nil, fmt.Errorf("%s's template is not a leave of %s in %s", server, user, room)
	}
	var ok json.RawMessage
	if err := m.call(ctx, server, http.MethodPut, "/_matrix/federation/v2/send_leave/"+url.PathEscape(string(room))+"/"+url.PathEscape(string(ev.ID())), json.RawMessage(ev.JSON()), &ok); err != nil {
		return nil, err
	}
	return ev, nil
}
