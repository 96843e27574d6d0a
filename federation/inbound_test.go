package federation_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/federation"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/server"
	"github.com/persistentchat/homeserver/testserver"
)

// fedResponse is an answer to a federation request.
type fedResponse struct {
	status int
	body   []byte
}

func (r fedResponse) errcode() string {
	var e struct {
		Errcode string `json:"errcode"`
	}
	json.Unmarshal(r.body, &e)
	return e.Errcode
}

// signedGet sends a GET signed by from's own transport (its key, its
// name as origin) to server to.
func signedGet(t *testing.T, from *testserver.Server, to, path string) fedResponse {
	t.Helper()
	return signedDo(t, from, to, http.MethodGet, path, nil)
}

func signedDo(t *testing.T, from *testserver.Server, to, method, path string, body []byte) fedResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, path, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := from.HS.Federation.Do(ctx, roomdag.ServerName(to), req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fedResponse{resp.StatusCode, b}
}

// rawGet sends a GET to to's federation listener with the Authorization
// header given (none if empty).
func rawGet(t *testing.T, to *testserver.Server, path, authorization string) fedResponse {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	defer c.CloseIdleConnections()
	req, err := http.NewRequest(http.MethodGet, "https://"+to.Name()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return fedResponse{resp.StatusCode, b}
}

func stateEvent(typ string, content map[string]any) map[string]any {
	return map[string]any{"type": typ, "state_key": "", "content": content}
}

// TestInboundReads: server B asks server A, over the real federation
// transport, for events, state, history and directory entries of rooms
// on A; what B may see is served, the rest refused with the spec's codes.
func TestInboundReads(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice := a.Register("alice")
	alice.MustDo("PUT", "/_matrix/client/v3/profile/"+url.PathEscape(alice.UserID)+"/displayname", map[string]any{"displayname": "Alice A"}, nil)

	world := alice.CreateRoom(map[string]any{"preset": "public_chat", "visibility": "public", "room_alias_name": "world", "name": "World",
		"initial_state": []any{stateEvent("m.room.history_visibility", map[string]any{"history_visibility": "world_readable"})}})
	var worldMsgs []string
	for i := 0; i < 5; i++ {
		worldMsgs = append(worldMsgs, alice.SendText(world, "hello world"))
	}
	private := alice.CreateRoom(map[string]any{"preset": "private_chat",
		"initial_state": []any{stateEvent("m.room.history_visibility", map[string]any{"history_visibility": "joined"})}})
	privateMsg := alice.SendText(private, "secret")
	// Denies B (and every server on 127.0.0.1: ports do not count), a
	// room B could otherwise read.
	denied := alice.CreateRoom(map[string]any{"preset": "public_chat", "initial_state": []any{
		stateEvent("m.room.history_visibility", map[string]any{"history_visibility": "world_readable"}),
		stateEvent("m.room.server_acl", map[string]any{"allow": []string{"*"}, "deny": []string{"127.0.0.1"}}),
	}})
	deniedMsg := alice.SendText(denied, "not for B")
	// History that became world readable only later: what came before
	// stays hidden from B, and backfill sends it redacted.
	later := alice.CreateRoom(map[string]any{"preset": "public_chat",
		"initial_state": []any{stateEvent("m.room.history_visibility", map[string]any{"history_visibility": "joined"})}})
	earlyMsg := alice.SendText(later, "early secret")
	alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(later)+"/state/m.room.history_visibility/", map[string]any{"history_visibility": "world_readable"}, nil)
	lateMsg := alice.SendText(later, "now public")
	// A space with a public child, a private one and one A does not know.
	publicChild := alice.CreateRoom(map[string]any{"preset": "public_chat", "name": "Public child"})
	space := alice.CreateRoom(map[string]any{"preset": "public_chat", "name": "Space", "creation_content": map[string]any{"type": "m.space"}})
	for _, child := range []string{publicChild, private, "!unknown:" + a.Name()} {
		alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(space)+"/state/m.space.child/"+url.PathEscape(child),
			map[string]any{"via": []string{a.Name()}}, nil)
	}
	esc := url.PathEscape
	q := url.QueryEscape

	type check func(t *testing.T, r fedResponse)
	wantCode := func(status int, code string) check {
		return func(t *testing.T, r fedResponse) {
			if r.status != status || r.errcode() != code {
				t.Fatalf("status %d %s, want %d %s: %s", r.status, r.errcode(), status, code, r.body)
			}
		}
	}
	decode := func(t *testing.T, r fedResponse, v any) {
		t.Helper()
		if r.status != http.StatusOK {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		if err := json.Unmarshal(r.body, v); err != nil {
			t.Fatalf("decoding %s: %v", r.body, err)
		}
	}
	for _, tc := range []struct {
		name  string
		path  string
		check check
	}{
		{"event of a world-readable room", "/_matrix/federation/v1/event/" + esc(worldMsgs[0]), func(t *testing.T, r fedResponse) {
			var out struct {
				Origin string            `json:"origin"`
				PDUs   []json.RawMessage `json:"pdus"`
			}
			decode(t, r, &out)
			if out.Origin != a.Name() || len(out.PDUs) != 1 || !bytes.Contains(out.PDUs[0], []byte("hello world")) {
				t.Fatalf("got %s", r.body)
			}
		}},
		{"state_ids of a world-readable room", "/_matrix/federation/v1/state_ids/" + esc(world) + "?event_id=" + q(worldMsgs[0]), func(t *testing.T, r fedResponse) {
			var out struct {
				PDUIDs  []string `json:"pdu_ids"`
				AuthIDs []string `json:"auth_chain_ids"`
			}
			decode(t, r, &out)
			// create, alice's join, power levels, join rules, history
			// visibility, name, canonical alias at least.
			if len(out.PDUIDs) < 6 || len(out.AuthIDs) < 2 {
				t.Fatalf("state %d events, auth chain %d: %s", len(out.PDUIDs), len(out.AuthIDs), r.body)
			}
		}},
		{"state of a world-readable room", "/_matrix/federation/v1/state/" + esc(world) + "?event_id=" + q(worldMsgs[0]), func(t *testing.T, r fedResponse) {
			var out struct {
				PDUs []struct {
					Type string `json:"type"`
				} `json:"pdus"`
				AuthChain []json.RawMessage `json:"auth_chain"`
			}
			decode(t, r, &out)
			types := map[string]bool{}
			for _, p := range out.PDUs {
				types[p.Type] = true
			}
			for _, want := range []string{"m.room.create", "m.room.member", "m.room.power_levels", "m.room.history_visibility", "m.room.name"} {
				if !types[want] {
					t.Errorf("state lacks %s: %s", want, r.body)
				}
			}
			if len(out.AuthChain) == 0 {
				t.Error("no auth chain")
			}
		}},
		{"event_auth", "/_matrix/federation/v1/event_auth/" + esc(world) + "/" + esc(worldMsgs[1]), func(t *testing.T, r fedResponse) {
			var out struct {
				AuthChain []struct {
					Type string `json:"type"`
				} `json:"auth_chain"`
			}
			decode(t, r, &out)
			if len(out.AuthChain) < 3 || out.AuthChain[0].Type != "m.room.create" {
				t.Fatalf("auth chain %s", r.body)
			}
		}},
		{"backfill from the newest message", "/_matrix/federation/v1/backfill/" + esc(world) + "?v=" + q(worldMsgs[4]) + "&limit=3", func(t *testing.T, r fedResponse) {
			var out struct {
				PDUs []json.RawMessage `json:"pdus"`
			}
			decode(t, r, &out)
			if len(out.PDUs) != 3 {
				t.Fatalf("%d PDUs, want 3: %s", len(out.PDUs), r.body)
			}
			// The newest first, then its predecessors, each signed by A.
			for _, p := range out.PDUs {
				if !bytes.Contains(p, []byte("hello world")) || !bytes.Contains(p, []byte(a.Name())) {
					t.Fatalf("unexpected PDU %s", p)
				}
			}
		}},
		{"backfill reaches the room's creation", "/_matrix/federation/v1/backfill/" + esc(world) + "?v=" + q(worldMsgs[4]) + "&limit=100", func(t *testing.T, r fedResponse) {
			var out struct {
				PDUs []struct {
					Type string `json:"type"`
				} `json:"pdus"`
			}
			decode(t, r, &out)
			if n := len(out.PDUs); n < 10 || out.PDUs[n-1].Type != "m.room.create" {
				t.Fatalf("%d PDUs, the last not the create event: %s", n, r.body)
			}
		}},
		{"timestamp_to_event", "/_matrix/federation/v1/timestamp_to_event/" + esc(world) + "?ts=0&dir=f", func(t *testing.T, r fedResponse) {
			var out struct {
				EventID string `json:"event_id"`
				TS      int64  `json:"origin_server_ts"`
			}
			decode(t, r, &out)
			if out.EventID == "" || out.TS == 0 {
				t.Fatalf("got %s", r.body)
			}
		}},
		{"event from before history became world readable", "/_matrix/federation/v1/event/" + esc(earlyMsg), func(t *testing.T, r fedResponse) {
			// B may ask (the room is world readable now) but not see it:
			// it gets the event redacted.
			var out struct {
				PDUs []struct {
					Type    string         `json:"type"`
					Content map[string]any `json:"content"`
				} `json:"pdus"`
			}
			decode(t, r, &out)
			if len(out.PDUs) != 1 || out.PDUs[0].Type != "m.room.message" || len(out.PDUs[0].Content) != 0 {
				t.Fatalf("got %s", r.body)
			}
		}},
		{"event after history became world readable", "/_matrix/federation/v1/event/" + esc(lateMsg), func(t *testing.T, r fedResponse) {
			if r.status != 200 || !bytes.Contains(r.body, []byte("now public")) {
				t.Fatalf("%d %s", r.status, r.body)
			}
		}},
		{"backfill redacts what B may not see", "/_matrix/federation/v1/backfill/" + esc(later) + "?v=" + q(lateMsg) + "&limit=3", func(t *testing.T, r fedResponse) {
			var out struct {
				PDUs []json.RawMessage `json:"pdus"`
			}
			decode(t, r, &out)
			if len(out.PDUs) != 3 {
				t.Fatalf("%d PDUs, want 3: %s", len(out.PDUs), r.body)
			}
			// The late message, the visibility change, the early message.
			if !bytes.Contains(out.PDUs[0], []byte("now public")) || bytes.Contains(r.body, []byte("early secret")) {
				t.Fatalf("got %s", r.body)
			}
			var early struct {
				Type    string         `json:"type"`
				Content map[string]any `json:"content"`
			}
			if err := json.Unmarshal(out.PDUs[2], &early); err != nil || early.Type != "m.room.message" || len(early.Content) != 0 {
				t.Fatalf("the early message is not sent redacted: %s", out.PDUs[2])
			}
		}},
		{"hierarchy of a space", "/_matrix/federation/v1/hierarchy/" + esc(space), func(t *testing.T, r fedResponse) {
			var out struct {
				Room struct {
					RoomID        string            `json:"room_id"`
					RoomType      string            `json:"room_type"`
					ChildrenState []json.RawMessage `json:"children_state"`
				} `json:"room"`
				Children []struct {
					RoomID string `json:"room_id"`
					Name   string `json:"name"`
				} `json:"children"`
				Inaccessible []string `json:"inaccessible_children"`
			}
			decode(t, r, &out)
			if out.Room.RoomID != space || out.Room.RoomType != "m.space" || len(out.Room.ChildrenState) != 3 {
				t.Fatalf("room %s", r.body)
			}
			if len(out.Children) != 1 || out.Children[0].RoomID != publicChild || out.Children[0].Name != "Public child" {
				t.Fatalf("children %s", r.body)
			}
			if len(out.Inaccessible) != 1 || out.Inaccessible[0] != private {
				t.Fatalf("inaccessible children %s", r.body)
			}
		}},
		{"hierarchy suggested only", "/_matrix/federation/v1/hierarchy/" + esc(space) + "?suggested_only=true", func(t *testing.T, r fedResponse) {
			var out struct {
				Room struct {
					ChildrenState []json.RawMessage `json:"children_state"`
				} `json:"room"`
				Children []json.RawMessage `json:"children"`
			}
			decode(t, r, &out)
			if len(out.Room.ChildrenState) != 0 || len(out.Children) != 0 {
				t.Fatalf("got %s", r.body)
			}
		}},
		{"hierarchy with a bad suggested_only", "/_matrix/federation/v1/hierarchy/" + esc(space) + "?suggested_only=yes", wantCode(400, "M_INVALID_PARAM")},
		{"event of a private room", "/_matrix/federation/v1/event/" + esc(privateMsg), wantCode(403, "M_FORBIDDEN")},
		{"state of a private room", "/_matrix/federation/v1/state/" + esc(private) + "?event_id=" + q(privateMsg), wantCode(403, "M_FORBIDDEN")},
		{"backfill of a private room", "/_matrix/federation/v1/backfill/" + esc(private) + "?v=" + q(privateMsg) + "&limit=10", wantCode(403, "M_FORBIDDEN")},
		{"event_auth of a private room", "/_matrix/federation/v1/event_auth/" + esc(private) + "/" + esc(privateMsg), wantCode(403, "M_FORBIDDEN")},
		{"timestamp_to_event of a private room", "/_matrix/federation/v1/timestamp_to_event/" + esc(private) + "?ts=0&dir=f", wantCode(403, "M_FORBIDDEN")},
		{"hierarchy of a private room", "/_matrix/federation/v1/hierarchy/" + esc(private), wantCode(404, "M_NOT_FOUND")},
		{"state_ids of an ACL-denied room", "/_matrix/federation/v1/state_ids/" + esc(denied) + "?event_id=" + q(deniedMsg), wantCode(403, "M_FORBIDDEN")},
		{"backfill of an ACL-denied room", "/_matrix/federation/v1/backfill/" + esc(denied) + "?v=" + q(deniedMsg) + "&limit=10", wantCode(403, "M_FORBIDDEN")},
		{"event of an ACL-denied room", "/_matrix/federation/v1/event/" + esc(deniedMsg), wantCode(403, "M_FORBIDDEN")},
		{"hierarchy of an ACL-denied room", "/_matrix/federation/v1/hierarchy/" + esc(denied), wantCode(403, "M_FORBIDDEN")},
		{"unknown event", "/_matrix/federation/v1/event/" + esc("$nope"), wantCode(404, "M_NOT_FOUND")},
		{"unknown room", "/_matrix/federation/v1/state_ids/" + esc("!nope:"+a.Name()) + "?event_id=" + q(worldMsgs[0]), wantCode(404, "M_NOT_FOUND")},
		{"event of another room", "/_matrix/federation/v1/state_ids/" + esc(world) + "?event_id=" + q(privateMsg), wantCode(404, "M_NOT_FOUND")},
		{"state_ids without event_id", "/_matrix/federation/v1/state_ids/" + esc(world), wantCode(400, "M_MISSING_PARAM")},
		{"backfill without limit", "/_matrix/federation/v1/backfill/" + esc(world) + "?v=" + q(worldMsgs[0]), wantCode(400, "M_MISSING_PARAM")},
		{"backfill with a bad limit", "/_matrix/federation/v1/backfill/" + esc(world) + "?v=" + q(worldMsgs[0]) + "&limit=x", wantCode(400, "M_INVALID_PARAM")},
		{"timestamp_to_event with a bad dir", "/_matrix/federation/v1/timestamp_to_event/" + esc(world) + "?ts=0&dir=x", wantCode(400, "M_INVALID_PARAM")},
		{"directory query", "/_matrix/federation/v1/query/directory?room_alias=" + q("#world:"+a.Name()), func(t *testing.T, r fedResponse) {
			var out struct {
				RoomID  string   `json:"room_id"`
				Servers []string `json:"servers"`
			}
			decode(t, r, &out)
			if out.RoomID != world || len(out.Servers) != 1 || out.Servers[0] != a.Name() {
				t.Fatalf("got %s", r.body)
			}
		}},
		{"directory query for an unknown alias", "/_matrix/federation/v1/query/directory?room_alias=" + q("#nope:"+a.Name()), wantCode(404, "M_NOT_FOUND")},
		{"directory query for another server's alias", "/_matrix/federation/v1/query/directory?room_alias=" + q("#world:"+b.Name()), wantCode(404, "M_NOT_FOUND")},
		{"profile query", "/_matrix/federation/v1/query/profile?user_id=" + q(alice.UserID), func(t *testing.T, r fedResponse) {
			var out map[string]any
			decode(t, r, &out)
			if out["displayname"] != "Alice A" {
				t.Fatalf("got %s", r.body)
			}
		}},
		{"profile query for one field", "/_matrix/federation/v1/query/profile?user_id=" + q(alice.UserID) + "&field=displayname", func(t *testing.T, r fedResponse) {
			var out map[string]any
			decode(t, r, &out)
			if len(out) != 1 || out["displayname"] != "Alice A" {
				t.Fatalf("got %s", r.body)
			}
		}},
		{"profile query for an unset field", "/_matrix/federation/v1/query/profile?user_id=" + q(alice.UserID) + "&field=avatar_url", wantCode(404, "M_NOT_FOUND")},
		{"profile query for an unknown user", "/_matrix/federation/v1/query/profile?user_id=" + q("@nobody:"+a.Name()), wantCode(404, "M_NOT_FOUND")},
		{"profile query for a user elsewhere", "/_matrix/federation/v1/query/profile?user_id=" + q("@x:"+b.Name()), wantCode(400, "M_INVALID_PARAM")},
		{"public rooms", "/_matrix/federation/v1/publicRooms?limit=10", func(t *testing.T, r fedResponse) {
			var out struct {
				Chunk []struct {
					RoomID string `json:"room_id"`
					Name   string `json:"name"`
				} `json:"chunk"`
			}
			decode(t, r, &out)
			if len(out.Chunk) != 1 || out.Chunk[0].RoomID != world || out.Chunk[0].Name != "World" { // the only one published
				t.Fatalf("got %s", r.body)
			}
		}},
		{"hierarchy of a public room", "/_matrix/federation/v1/hierarchy/" + esc(world), func(t *testing.T, r fedResponse) {
			var out struct {
				Room struct {
					RoomID string `json:"room_id"`
				} `json:"room"`
				Children     []json.RawMessage `json:"children"`
				Inaccessible []string          `json:"inaccessible_children"`
			}
			decode(t, r, &out)
			if out.Room.RoomID != world || out.Children == nil || out.Inaccessible == nil {
				t.Fatalf("got %s", r.body)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.check(t, signedGet(t, b, a.Name(), tc.path)) })
	}

	gme := "/_matrix/federation/v1/get_missing_events/"
	for _, tc := range []struct {
		name  string
		room  string
		body  string
		check check
	}{
		{"get_missing_events between two events", world,
			fmt.Sprintf(`{"latest_events":[%q],"earliest_events":[%q],"limit":10}`, worldMsgs[4], worldMsgs[1]),
			func(t *testing.T, r fedResponse) {
				var out struct {
					Events []json.RawMessage `json:"events"`
				}
				decode(t, r, &out)
				if len(out.Events) != 2 {
					t.Fatalf("%d events, want the 2 between: %s", len(out.Events), r.body)
				}
				for i, want := range worldMsgs[2:4] {
					if id := eventID(t, a, out.Events[i]); id != want {
						t.Errorf("event %d is %s, want %s (oldest first)", i, id, want)
					}
				}
			}},
		{"get_missing_events with a limit", world,
			fmt.Sprintf(`{"latest_events":[%q],"earliest_events":[],"limit":1}`, worldMsgs[4]),
			func(t *testing.T, r fedResponse) {
				var out struct {
					Events []json.RawMessage `json:"events"`
				}
				decode(t, r, &out)
				if len(out.Events) != 1 || eventID(t, a, out.Events[0]) != worldMsgs[3] {
					t.Fatalf("got %s", r.body)
				}
			}},
		{"get_missing_events of a private room", private, fmt.Sprintf(`{"latest_events":[%q],"earliest_events":[]}`, privateMsg), wantCode(403, "M_FORBIDDEN")},
		{"get_missing_events of an ACL-denied room", denied, fmt.Sprintf(`{"latest_events":[%q],"earliest_events":[]}`, deniedMsg), wantCode(403, "M_FORBIDDEN")},
		{"get_missing_events without latest_events", world, `{"earliest_events":[]}`, wantCode(400, "M_BAD_JSON")},
		{"get_missing_events with a negative limit", world, fmt.Sprintf(`{"latest_events":[%q],"earliest_events":[],"limit":-1}`, worldMsgs[4]), wantCode(400, "M_BAD_JSON")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.check(t, signedDo(t, b, a.Name(), http.MethodPost, gme+esc(tc.room), []byte(tc.body)))
		})
	}

	t.Run("public rooms by POST with a filter", func(t *testing.T) {
		r := signedDo(t, b, a.Name(), http.MethodPost, "/_matrix/federation/v1/publicRooms", []byte(`{"filter":{"generic_search_term":"nothing like it"}}`))
		var out struct {
			Chunk []json.RawMessage `json:"chunk"`
		}
		decode(t, r, &out)
		if len(out.Chunk) != 0 {
			t.Fatalf("got %s", r.body)
		}
	})

	// Requests not signed by their origin are refused before anything is
	// read, on every endpoint.
	bKey, err := server.LoadOrCreateKey(b.Config.SigningKeyPath(), roomdag.ServerName(b.Name()))
	if err != nil {
		t.Fatal(err)
	}
	// B's key claiming to be A: A does not publish it.
	posing, err := server.LoadOrCreateKey(b.Config.SigningKeyPath(), roomdag.ServerName(a.Name()))
	if err != nil {
		t.Fatal(err)
	}
	other, err := server.LoadOrCreateKey(t.TempDir()+"/other.key", roomdag.ServerName(b.Name()))
	if err != nil {
		t.Fatal(err)
	}
	sign := func(key roomdag.SigningKey, dest, path string) string {
		x, err := federation.SignRequest(key, roomdag.ServerName(dest), http.MethodGet, path, nil)
		if err != nil {
			t.Fatal(err)
		}
		return x.String()
	}
	eventPath := "/_matrix/federation/v1/event/" + esc(worldMsgs[0])
	for _, path := range []string{
		eventPath,
		"/_matrix/federation/v1/state_ids/" + esc(world) + "?event_id=" + q(worldMsgs[0]),
		"/_matrix/federation/v1/backfill/" + esc(world) + "?v=" + q(worldMsgs[0]) + "&limit=1",
		"/_matrix/federation/v1/query/profile?user_id=" + q(alice.UserID),
		"/_matrix/federation/v1/publicRooms",
		"/_matrix/federation/v1/hierarchy/" + esc(world),
		"/_matrix/federation/v1/media/download/abc",
	} {
		for _, tc := range []struct {
			name, auth string
		}{
			{"unsigned", ""},
			{"not X-Matrix", "Bearer abc"},
			{"wrong origin", sign(posing, a.Name(), path)},
			{"bad signature", strings.Replace(sign(other, a.Name(), path), other.KeyID, bKey.KeyID, 1)},
			{"signed for another path", sign(bKey, a.Name(), path+"x")},
			{"signed for another destination", sign(bKey, b.Name(), path)},
		} {
			t.Run(tc.name+" "+path, func(t *testing.T) {
				wantCode(401, "M_UNAUTHORIZED")(t, rawGet(t, a, path, tc.auth))
			})
		}
	}
	// The same request, rightly signed, is served.
	if r := rawGet(t, a, eventPath, sign(bKey, a.Name(), eventPath)); r.status != 200 {
		t.Fatalf("rightly signed: %d %s", r.status, r.body)
	}
}

// signedRaw is signedGet with the response left to the caller.
func signedRaw(t *testing.T, from *testserver.Server, to, path string) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := from.HS.Federation.Do(ctx, roomdag.ServerName(to), req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp
}

// eventID is the ID of a PDU of a room on server s (room version 3 and
// later: its reference hash).
func eventID(t *testing.T, s *testserver.Server, pdu json.RawMessage) string {
	t.Helper()
	v, ok := roomdag.LookupRoomVersion(s.Config.DefaultRoomVersion)
	if !ok {
		t.Fatalf("room version %s", s.Config.DefaultRoomVersion)
	}
	ev, err := roomdag.NewEventFromJSON(v, pdu)
	if err != nil {
		t.Fatalf("PDU %s: %v", pdu, err)
	}
	return string(ev.ID())
}
