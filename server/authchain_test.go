package server_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/persistentchat/homeserver/testserver"
)

// TestAuthChainHasCreateEvent: the auth chains served (/event_auth,
// /state_ids, and so send_join's, which the same walk makes) hold the
// room's create event in every room version, v12 included, where no
// event lists it among its auth_events. Dendrite refuses to join a room
// whose send_join auth_chain lacks it.
func TestAuthChainHasCreateEvent(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice := a.Register("alice")
	for _, ver := range []string{"11", "12"} {
		room := alice.CreateRoom(map[string]any{"preset": "public_chat", "room_version": ver, "initial_state": []any{
			map[string]any{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "world_readable"}}}})
		var create struct {
			EventID string `json:"event_id"`
		}
		alice.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.create/?format=event", nil, &create)
		if create.EventID == "" {
			t.Fatalf("v%s: no create event ID", ver)
		}
		msg := alice.SendText(room, "hello")

		status, body := fedDo(t, b, a, "GET", "/_matrix/federation/v1/event_auth/"+url.PathEscape(room)+"/"+url.PathEscape(msg), nil)
		var ea struct {
			AuthChain []struct {
				Type string `json:"type"`
			} `json:"auth_chain"`
		}
		if status != http.StatusOK || json.Unmarshal(body, &ea) != nil {
			t.Fatalf("v%s: event_auth: %d %s", ver, status, body)
		}
		if !slices.ContainsFunc(ea.AuthChain, func(e struct {
			Type string `json:"type"`
		}) bool {
			return e.Type == "m.room.create"
		}) {
			t.Errorf("v%s: event_auth's chain lacks the create event: %s", ver, body)
		}

		status, body = fedDo(t, b, a, "GET", "/_matrix/federation/v1/state_ids/"+url.PathEscape(room)+"?event_id="+url.QueryEscape(msg), nil)
		var ids struct {
			AuthChainIDs []string `json:"auth_chain_ids"`
		}
		if status != http.StatusOK || json.Unmarshal(body, &ids) != nil {
			t.Fatalf("v%s: state_ids: %d %s", ver, status, body)
		}
		if !slices.Contains(ids.AuthChainIDs, create.EventID) {
			t.Errorf("v%s: state_ids' auth_chain_ids lack the create event %s: %s", ver, create.EventID, body)
		}
	}
}
