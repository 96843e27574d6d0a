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

// Knocking on a room of other servers (server-server API, "Knocking upon
// a room", the knocking server's side): make_knock on a server in the
// room, the template filled in, hashed and signed here, then send_knock,
// whose answer is the room's stripped state for the knocker. The knock
// is then kept here out of band (roomdag.Rooms.StoreOutOfBand), as an
// invite from another server is: this server holds none of the room.

// Knock knocks on room as user, with reason, through the first of
// servers that takes the knock. It returns the knock event and the
// knock_room_state the server answered (a JSON array). As for joins, a
// server's refusal (a 4xx other than 404 and 429) ends the attempt with
// its Matrix error; unreachable or failing servers are skipped.
func (ri *RemoteInviter) Knock(ctx context.Context, room roomdag.RoomID, user roomdag.UserID, servers []roomdag.ServerName, reason string) (*roomdag.Event, json.RawMessage, error) {
	if len(servers) == 0 {
		return nil, nil, httpapi.NotFound("no server to knock on %s through is known", room)
	}
	var last error
	for _, s := range servers {
		if s == ri.Server {
			continue
		}
		ev, state, err := ri.knockVia(ctx, s, room, user, reason)
		if err == nil {
			return ev, state, nil
		}
		ri.Log.Info("remote knock failed", "room", room, "user", user, "server", s, "err", err)
		last = err
		var re *remoteError
		if errors.As(err, &re) && re.status >= 400 && re.status < 500 && re.status != http.StatusNotFound && re.status != http.StatusTooManyRequests {
			return nil, nil, re.matrix()
		}
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
	}
	var re *remoteError
	if errors.As(last, &re) {
		return nil, nil, re.matrix()
	}
	return nil, nil, httpapi.Errorf(http.StatusBadGateway, httpapi.CodeUnknown, "no server in the room could be knocked through: %v", last)
}

func (ri *RemoteInviter) knockVia(ctx context.Context, server roomdag.ServerName, room roomdag.RoomID, user roomdag.UserID, reason string) (*roomdag.Event, json.RawMessage, error) {
	q := url.Values{}
	for _, v := range roomdag.RoomVersions() {
		if v.Knock {
			q.Add("ver", v.ID)
		}
	}
	var mk makeJoinAnswer
	path := "/_matrix/federation/v1/make_knock/" + url.PathEscape(string(room)) + "/" + url.PathEscape(string(user)) + "?" + q.Encode()
	if err := ri.call(ctx, server, http.MethodGet, path, nil, &mk); err != nil {
		return nil, nil, err
	}
	v, ok := roomdag.LookupRoomVersion(mk.RoomVersion)
	if !ok || !v.Knock {
		return nil, nil, fmt.Errorf("%s offers a knock on a room of version %q, which cannot be knocked on", server, mk.RoomVersion)
	}
	t := mk.Event
	if t.RoomID != room || t.Sender != user || t.Type != roomdag.TypeMember || t.StateKey == nil || *t.StateKey != string(user) {
		return nil, nil, fmt.Errorf("%s answered make_knock with a template that is not %s's knock on %s", server, user, room)
	}
	content := map[string]string{"membership": roomdag.MembershipKnock}
	if reason != "" {
		content["reason"] = reason
	}
	c, _ := json.Marshal(content)
	knock, err := roomdag.BuildEvent(v, ri.Key, roomdag.EventTemplate{RoomID: room, Sender: user, Type: roomdag.TypeMember,
		StateKey: t.StateKey, Content: c, PrevRefs: t.PrevEvents, AuthRefs: t.AuthEvents, Depth: t.Depth,
		OriginServerTS: ri.Clock.Now().UnixMilli()})
	if err != nil {
		return nil, nil, fmt.Errorf("building the knock from %s's template: %w", server, err)
	}
	var answer struct {
		State []json.RawMessage `json:"knock_room_state"`
	}
	path = "/_matrix/federation/v1/send_knock/" + url.PathEscape(string(room)) + "/" + url.PathEscape(string(knock.ID()))
	if err := ri.call(ctx, server, http.MethodPut, path, knock.JSON(), &answer); err != nil {
		return nil, nil, err
	}
	// Only objects are kept: the state is shown to the knocker's clients
	// as it came.
	state := make([]json.RawMessage, 0, len(answer.State))
	for _, e := range answer.State {
		var obj map[string]json.RawMessage
		if json.Unmarshal(e, &obj) == nil && obj != nil {
			state = append(state, e)
		}
	}
	b, _ := json.Marshal(state)
	return knock, b, nil
}
