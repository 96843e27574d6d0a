package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/testserver"
)

// fedDo sends a federation request signed by from to to, and returns the
// answer's status and body.
func fedDo(t *testing.T, from, to *testserver.Server, method, path string, body []byte) (int, []byte) {
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
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := from.HS.Federation.Do(ctx, roomdag.ServerName(to.Name()), req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func errcode(b []byte) string {
	var e struct {
		Errcode string `json:"errcode"`
	}
	_ = json.Unmarshal(b, &e)
	return e.Errcode
}

// joinedMembers is the room's joined members as c's server sees them.
func joinedMembers(t *testing.T, c *testserver.Client, room string) []string {
	t.Helper()
	var out struct {
		Joined map[string]any `json:"joined"`
	}
	c.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/joined_members", nil, &out)
	var ids []string
	for id := range out.Joined {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// TestFederatedJoin: a user of B joins A's public room by ID (with
// server_name) and another by alias; both servers then see them joined,
// B holds the room's state (the backchat setting too) and its /sync shows
// the room.
func TestFederatedJoin(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice := a.Register("alice")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat", "name": "Lobby", "room_alias_name": "lobby"})
	alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/"+roomdag.TypeBackchat+"/", map[string]any{"limit": 7}, nil)
	alice.SendText(room, "before anyone came")

	bob := b.Register("bob")
	var joined struct {
		RoomID string `json:"room_id"`
	}
	bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?server_name="+url.QueryEscape(a.Name()), map[string]any{}, &joined)
	if joined.RoomID != room {
		t.Fatalf("join answered room %q, want %q", joined.RoomID, room)
	}
	want := []string{alice.UserID, bob.UserID}
	slices.Sort(want)
	if got := joinedMembers(t, alice, room); !slices.Equal(got, want) {
		t.Errorf("A's joined members: %v, want %v", got, want)
	}
	if got := joinedMembers(t, bob, room); !slices.Equal(got, want) {
		t.Errorf("B's joined members: %v, want %v", got, want)
	}
	var bc struct {
		Limit int `json:"limit"`
	}
	bob.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/"+roomdag.TypeBackchat+"/", nil, &bc)
	if bc.Limit != 7 {
		t.Errorf("backchat setting on B: %+v", bc)
	}

	// B's /sync has the room, with its state and the join.
	var s struct {
		Rooms struct {
			Join map[string]struct {
				State struct {
					Events []struct {
						Type     string          `json:"type"`
						StateKey string          `json:"state_key"`
						Content  json.RawMessage `json:"content"`
					} `json:"events"`
				} `json:"state"`
				Timeline struct {
					Events []struct {
						Type     string `json:"type"`
						StateKey string `json:"state_key"`
					} `json:"events"`
				} `json:"timeline"`
			} `json:"join"`
		} `json:"rooms"`
	}
	bob.MustDo("GET", "/_matrix/client/v3/sync?timeout=0", nil, &s)
	jr, ok := s.Rooms.Join[room]
	if !ok {
		t.Fatalf("B's /sync has no joined room %s: %+v", room, s.Rooms.Join)
	}
	types := map[string]bool{}
	for _, e := range jr.State.Events {
		types[e.Type] = true
	}
	for _, e := range jr.Timeline.Events {
		types[e.Type] = true
	}
	for _, typ := range []string{roomdag.TypeCreate, roomdag.TypeName, roomdag.TypeJoinRules, roomdag.TypeBackchat, roomdag.TypeMember} {
		if !types[typ] {
			t.Errorf("B's /sync of the room lacks %s (has %v)", typ, types)
		}
	}
	last := jr.Timeline.Events[len(jr.Timeline.Events)-1]
	if last.Type != roomdag.TypeMember || last.StateKey != bob.UserID {
		t.Errorf("B's timeline ends with %+v, want bob's join", last)
	}

	// By alias, to a room B is not in yet: B asks A's directory, then
	// joins through the servers it names.
	second := alice.CreateRoom(map[string]any{"preset": "public_chat", "room_alias_name": "second"})
	var alias struct {
		RoomID  string   `json:"room_id"`
		Servers []string `json:"servers"`
	}
	secondAlias := "#second:" + a.Name()
	bob.MustDo("GET", "/_matrix/client/v3/directory/room/"+url.PathEscape(secondAlias), nil, &alias)
	if alias.RoomID != second || !slices.Contains(alias.Servers, a.Name()) {
		t.Errorf("remote alias lookup: %+v", alias)
	}
	carol := b.Register("carol")
	carol.Join(secondAlias)
	if got := joinedMembers(t, alice, second); !slices.Contains(got, carol.UserID) {
		t.Errorf("A's joined members after the join by alias: %v", got)
	}
	// Joining again is a no-op; leaving is a local leave.
	carol.Join(secondAlias)
	carol.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(second)+"/leave", map[string]any{}, nil)
	var jr2 struct {
		Joined []string `json:"joined_rooms"`
	}
	carol.MustDo("GET", "/_matrix/client/v3/joined_rooms", nil, &jr2)
	if slices.Contains(jr2.Joined, second) {
		t.Errorf("carol still joined after her leave: %v", jr2.Joined)
	}
}

// TestFederatedJoinRefused: the resident server refuses joins the room
// does not allow, and B's client gets the refusal.
func TestFederatedJoinRefused(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice := a.Register("alice")
	dave := b.Register("dave")
	join := func(room string) *testserver.Response {
		return dave.Do("POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?via="+url.QueryEscape(a.Name()), map[string]any{})
	}

	banned := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	alice.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(banned)+"/ban", map[string]any{"user_id": dave.UserID}, nil)
	if r := join(banned); r.Status != http.StatusForbidden || r.Errcode() != "M_FORBIDDEN" {
		t.Errorf("banned: %d %s", r.Status, r.Body)
	}

	private := alice.CreateRoom(map[string]any{"preset": "private_chat"})
	if r := join(private); r.Status != http.StatusForbidden || r.Errcode() != "M_FORBIDDEN" {
		t.Errorf("invite-only: %d %s", r.Status, r.Body)
	}

	// The ACL names hosts without ports: both servers are 127.0.0.1, and
	// the ACL applies to other servers only.
	acl := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(acl)+"/state/m.room.server_acl/",
		map[string]any{"allow": []string{"*"}, "deny": []string{"127.0.0.1"}, "allow_ip_literals": true}, nil)
	if r := join(acl); r.Status != http.StatusForbidden || r.Errcode() != "M_FORBIDDEN" {
		t.Errorf("denied by the ACL: %d %s", r.Status, r.Body)
	}

	// A server that supports none of the room's versions.
	open := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	path := "/_matrix/federation/v1/make_join/" + url.PathEscape(open) + "/" + url.PathEscape(dave.UserID)
	status, body := fedDo(t, b, a, "GET", path+"?ver=1&ver=2", nil)
	if status != http.StatusBadRequest || errcode(body) != "M_INCOMPATIBLE_ROOM_VERSION" {
		t.Errorf("make_join with versions the room is not of: %d %s", status, body)
	}
	// Another server's user.
	status, body = fedDo(t, b, a, "GET", "/_matrix/federation/v1/make_join/"+url.PathEscape(open)+"/"+url.PathEscape(alice.UserID)+"?ver=12&ver=11&ver=10", nil)
	if status != http.StatusForbidden {
		t.Errorf("make_join for a user of the resident server: %d %s", status, body)
	}
	// A room A does not know.
	status, body = fedDo(t, b, a, "GET", "/_matrix/federation/v1/make_join/"+url.PathEscape("!nosuchroom:"+a.Name())+"/"+url.PathEscape(dave.UserID)+"?ver=10", nil)
	if status != http.StatusNotFound {
		t.Errorf("make_join of an unknown room: %d %s", status, body)
	}
	// Dave is in none of these rooms on either server.
	for _, room := range []string{banned, private, acl} {
		if got := joinedMembers(t, alice, room); slices.Contains(got, dave.UserID) {
			t.Errorf("dave joined %s on A after a refusal", room)
		}
	}
}

// TestFederatedJoinSkipsDownServer: a server of via that does not answer
// is skipped for the next.
func TestFederatedJoinSkipsDownServer(t *testing.T) {
	fed := testserver.Federation(t, 3, testserver.Options{})
	a, b, down := fed[0], fed[1], fed[2]
	down.Stop()
	alice := a.Register("alice")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	bob := b.Register("bob")
	bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?via="+url.QueryEscape(down.Name())+"&via="+url.QueryEscape(a.Name()), map[string]any{}, nil)
	if got := joinedMembers(t, alice, room); !slices.Contains(got, bob.UserID) {
		t.Errorf("A's joined members: %v", got)
	}
	// Only the down server (and a v12 room ID, which names no server):
	// the join fails with a gateway error, not 500.
	other := alice.CreateRoom(map[string]any{"preset": "public_chat", "room_version": "12"})
	r := bob.Do("POST", "/_matrix/client/v3/join/"+url.PathEscape(other)+"?via="+url.QueryEscape(down.Name()), map[string]any{})
	if r.Status != http.StatusBadGateway {
		t.Errorf("join through a down server only: %d %s", r.Status, r.Body)
	}
}

// TestSendJoinBadBodies: send_join refuses events that are not the
// joining server's own join with 400 or 403, never 500.
func TestSendJoinBadBodies(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice := a.Register("alice")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat", "room_version": "10"})
	v, _ := roomdag.LookupRoomVersion("10")
	mallory := roomdag.UserID("@mallory:" + b.Name())
	template := func(user roomdag.UserID) roomdag.EventTemplate {
		t.Helper()
		status, body := fedDo(t, b, a, "GET", "/_matrix/federation/v1/make_join/"+url.PathEscape(room)+"/"+url.PathEscape(string(mallory))+"?ver=10", nil)
		if status != http.StatusOK {
			t.Fatalf("make_join: %d %s", status, body)
		}
		var mj struct {
			RoomVersion string `json:"room_version"`
			Event       struct {
				PrevEvents []roomdag.EventID `json:"prev_events"`
				AuthEvents []roomdag.EventID `json:"auth_events"`
				Depth      int64             `json:"depth"`
			} `json:"event"`
		}
		if err := json.Unmarshal(body, &mj); err != nil || mj.RoomVersion != "10" {
			t.Fatalf("make_join answer %s: %v", body, err)
		}
		key := string(user)
		return roomdag.EventTemplate{RoomID: roomdag.RoomID(room), Sender: user, Type: roomdag.TypeMember, StateKey: &key,
			Content: json.RawMessage(`{"membership":"join"}`), PrevEvents: mj.Event.PrevEvents, AuthEvents: mj.Event.AuthEvents,
			Depth: mj.Event.Depth, OriginServerTS: time.Now().UnixMilli()}
	}
	// A key B never published: the signature cannot be checked.
	stranger, err := roomdag.GenerateSigningKey(roomdag.ServerName(b.Name()), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	stranger.KeyID = "ed25519:notpublished"
	badSig, err := roomdag.BuildEvent(v, stranger, template(mallory))
	if err != nil {
		t.Fatal(err)
	}
	other, err := roomdag.BuildEvent(v, stranger, template(roomdag.UserID("@eve:"+a.Name())))
	if err != nil {
		t.Fatal(err)
	}
	msgT := template(mallory)
	msgT.Type, msgT.StateKey = roomdag.TypeMessage, nil
	msg, err := roomdag.BuildEvent(v, stranger, msgT)
	if err != nil {
		t.Fatal(err)
	}
	sendJoin := func(id roomdag.EventID, body []byte) (int, []byte) {
		return fedDo(t, b, a, "PUT", "/_matrix/federation/v2/send_join/"+url.PathEscape(room)+"/"+url.PathEscape(string(id)), body)
	}
	for _, c := range []struct {
		name string
		id   roomdag.EventID
		body []byte
		want int
	}{
		{"wrong event ID", "$notthisone", badSig.JSON(), http.StatusBadRequest},
		{"not an event", badSig.ID(), []byte(`{"type":1}`), http.StatusBadRequest},
		{"not a member event", msg.ID(), msg.JSON(), http.StatusBadRequest},
		{"another server's user", other.ID(), other.JSON(), http.StatusForbidden},
		{"bad signature", badSig.ID(), badSig.JSON(), http.StatusForbidden},
	} {
		status, body := sendJoin(c.id, c.body)
		if status != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, status, body, c.want)
		}
	}
	// v1 the same way.
	status, body := fedDo(t, b, a, "PUT", "/_matrix/federation/v1/send_join/"+url.PathEscape(room)+"/"+url.PathEscape(string(badSig.ID())), badSig.JSON())
	if status != http.StatusForbidden {
		t.Errorf("v1 bad signature: %d %s", status, body)
	}
	if got := joinedMembers(t, alice, room); slices.Contains(got, string(mallory)) {
		t.Errorf("mallory joined: %v", got)
	}
}

// TestFederatedJoinRoomVersions: joins work in the event formats this
// server builds: v3 (event IDs in standard base64, with / and +), v9
// (restricted-join redaction rules) and v12 (room IDs without a server).
func TestFederatedJoinRoomVersions(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice := a.Register("alice")
	bob := b.Register("bob")
	for _, v := range []string{"3", "9", "12"} {
		room := alice.CreateRoom(map[string]any{"preset": "public_chat", "room_version": v})
		alice.SendText(room, "hello in v"+v)
		bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?via="+url.QueryEscape(a.Name()), map[string]any{}, nil)
		if got := joinedMembers(t, alice, room); !slices.Contains(got, bob.UserID) {
			t.Errorf("v%s: A's joined members: %v", v, got)
		}
		if got := joinedMembers(t, bob, room); !slices.Contains(got, alice.UserID) || !slices.Contains(got, bob.UserID) {
			t.Errorf("v%s: B's joined members: %v", v, got)
		}
	}
}

// TestFederatedJoinMessages: once B's user has joined over federation,
// messages go both ways through /send, a second user of B joins through
// B's own copy of the room (its join reaching A as a PDU), and a leave
// reaches A the same way.
func TestFederatedJoinMessages(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice := a.Register("alice")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	bob := b.Register("bob")
	bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?via="+url.QueryEscape(a.Name()), map[string]any{}, nil)
	onA, onB := watchTimeline(alice, room), watchTimeline(bob, room)

	onB.until(t, alice.SendText(room, "hello from A"))
	onA.until(t, bob.SendText(room, "hello from B"))

	carol := b.Register("carol")
	carol.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
	waitMember(t, alice, room, carol.UserID, "join")
	bob.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/leave", map[string]any{}, nil)
	waitMember(t, alice, room, bob.UserID, "leave")
}

// waitMember waits until c's server has user's membership in room.
func waitMember(t *testing.T, c *testserver.Client, room, user, membership string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		var m struct {
			Membership string `json:"membership"`
		}
		r := c.Do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.member/"+url.PathEscape(user), nil)
		if r.Status == http.StatusOK && r.JSON(&m) == nil && m.Membership == membership {
			return
		}
		last = string(r.Body)
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s's membership in %s on %s: %s, want %s", user, room, c.Base, last, membership)
}

// memberFromTemplate fills in a make_* answer as the asking server p:
// p's key signs it.
func memberFromTemplate(t *testing.T, p *playedServer, body []byte) (*roomdag.RoomVersion, *roomdag.Event) {
	t.Helper()
	var mk struct {
		RoomVersion string `json:"room_version"`
		Event       struct {
			RoomID     roomdag.RoomID    `json:"room_id"`
			Sender     roomdag.UserID    `json:"sender"`
			StateKey   string            `json:"state_key"`
			Content    json.RawMessage   `json:"content"`
			PrevEvents []roomdag.EventID `json:"prev_events"`
			AuthEvents []roomdag.EventID `json:"auth_events"`
			Depth      int64             `json:"depth"`
		} `json:"event"`
	}
	if err := json.Unmarshal(body, &mk); err != nil {
		t.Fatalf("template %s: %v", body, err)
	}
	v, ok := roomdag.LookupRoomVersion(mk.RoomVersion)
	if !ok {
		t.Fatalf("template of version %q", mk.RoomVersion)
	}
	e := mk.Event
	p.ts++
	ev, err := roomdag.BuildEvent(v, p.key, roomdag.EventTemplate{RoomID: e.RoomID, Sender: e.Sender, Type: roomdag.TypeMember,
		StateKey: &e.StateKey, Content: e.Content, PrevEvents: e.PrevEvents, AuthEvents: e.AuthEvents, Depth: e.Depth, OriginServerTS: p.ts})
	if err != nil {
		t.Fatal(err)
	}
	return v, ev
}

// TestFederatedKnockAndLeave: the resident server's make_knock and
// send_knock (v1), then make_leave and send_leave (v1 and v2), played by
// the knocking server.
func TestFederatedKnockAndLeave(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	pb := playServer(t, b)
	alice := a.Register("alice")
	room := alice.CreateRoom(map[string]any{"preset": "private_chat", "room_version": "11",
		"initial_state": []any{map[string]any{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "knock"}}}})
	kim := "@kim:" + b.Name()
	esc := url.PathEscape(room) + "/" + url.PathEscape(kim)

	status, body := fedDo(t, b, a, "GET", "/_matrix/federation/v1/make_knock/"+esc+"?ver=10", nil)
	if status != http.StatusBadRequest || errcode(body) != "M_INCOMPATIBLE_ROOM_VERSION" {
		t.Errorf("make_knock without the room's version: %d %s", status, body)
	}
	status, body = fedDo(t, b, a, "GET", "/_matrix/federation/v1/make_knock/"+esc+"?ver=11", nil)
	if status != http.StatusOK {
		t.Fatalf("make_knock: %d %s", status, body)
	}
	_, knock := memberFromTemplate(t, pb, body)
	if knock.Membership() != roomdag.MembershipKnock {
		t.Fatalf("knock template's membership: %q", knock.Membership())
	}
	status, body = fedDo(t, b, a, "PUT", "/_matrix/federation/v1/send_knock/"+url.PathEscape(room)+"/"+url.PathEscape(string(knock.ID())), knock.JSON())
	var knocked struct {
		State []struct {
			Type string `json:"type"`
		} `json:"knock_room_state"`
	}
	if status != http.StatusOK || json.Unmarshal(body, &knocked) != nil || len(knocked.State) == 0 {
		t.Fatalf("send_knock: %d %s", status, body)
	}
	waitMember(t, alice, room, kim, "knock")
	// A join is not what a knock room lets B's users make.
	status, body = fedDo(t, b, a, "GET", "/_matrix/federation/v1/make_join/"+esc+"?ver=11", nil)
	if status != http.StatusForbidden {
		t.Errorf("make_join of a knock room: %d %s", status, body)
	}

	// Withdrawing the knock: v2 send_leave answers {}, v1 [200, {}].
	status, body = fedDo(t, b, a, "GET", "/_matrix/federation/v1/make_leave/"+esc, nil)
	if status != http.StatusOK {
		t.Fatalf("make_leave: %d %s", status, body)
	}
	_, leave := memberFromTemplate(t, pb, body)
	status, body = fedDo(t, b, a, "PUT", "/_matrix/federation/v1/send_leave/"+url.PathEscape(room)+"/"+url.PathEscape(string(leave.ID())), leave.JSON())
	if status != http.StatusOK || string(body) != `[200,{}]` {
		t.Errorf("v1 send_leave: %d %s", status, body)
	}
	waitMember(t, alice, room, kim, "leave")
	// A leave sent as a join is refused.
	status, body = fedDo(t, b, a, "PUT", "/_matrix/federation/v2/send_join/"+url.PathEscape(room)+"/"+url.PathEscape(string(leave.ID())), leave.JSON())
	if status != http.StatusBadRequest {
		t.Errorf("a leave to send_join: %d %s", status, body)
	}
	status, body = fedDo(t, b, a, "PUT", "/_matrix/federation/v2/send_leave/"+url.PathEscape(room)+"/"+url.PathEscape(string(leave.ID())), leave.JSON())
	if status != http.StatusOK || string(body) != `{}` {
		t.Errorf("v2 send_leave of the same leave again: %d %s", status, body)
	}
}

// TestFederatedRestrictedJoin: a restricted room lets in B's user who is
// joined to the room its join rule allows: A names its own user as the
// authoriser in the template and co-signs the join, which B then checks.
// Without that membership, A cannot authorise the join.
func TestFederatedRestrictedJoin(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice := a.Register("alice")
	space := alice.CreateRoom(map[string]any{"preset": "public_chat", "room_version": "10"})
	room := alice.CreateRoom(map[string]any{"preset": "private_chat", "room_version": "10",
		"initial_state": []any{map[string]any{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{
			"join_rule": "restricted", "allow": []any{map[string]any{"type": "m.room_membership", "room_id": space}}}}}})
	bob := b.Register("bob")
	join := func(room string) *testserver.Response {
		return bob.Do("POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?via="+url.QueryEscape(a.Name()), map[string]any{})
	}
	if r := join(room); r.Status != http.StatusBadRequest || r.Errcode() != "M_UNABLE_TO_AUTHORISE_JOIN" {
		t.Errorf("restricted join before joining the space: %d %s", r.Status, r.Body)
	}
	// Nor does a join naming alice that skipped make_join: A does not
	// vouch for it.
	pb := playServer(t, b)
	st, err := a.HS.Rooms.State(context.Background(), roomdag.RoomID(room))
	if err != nil {
		t.Fatal(err)
	}
	sneaky := pb.build(st.Version, roomdag.RoomID(room), st.State, roomdag.UserID(bob.UserID), roomdag.TypeMember, sk(bob.UserID),
		`{"membership":"join","join_authorised_via_users_server":"`+alice.UserID+`"}`, st.Depth+1, st.Extremities...)
	status, body := fedDo(t, b, a, "PUT", "/_matrix/federation/v2/send_join/"+url.PathEscape(room)+"/"+url.PathEscape(string(sneaky.ID())), sneaky.JSON())
	if status != http.StatusBadRequest || errcode(body) != "M_UNABLE_TO_AUTHORISE_JOIN" {
		t.Errorf("send_join naming alice without make_join: %d %s", status, body)
	}
	if r := join(space); r.Status != http.StatusOK {
		t.Fatalf("joining the space: %d %s", r.Status, r.Body)
	}
	if r := join(room); r.Status != http.StatusOK {
		t.Fatalf("restricted join: %d %s", r.Status, r.Body)
	}
	var m map[string]any
	alice.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.member/"+url.PathEscape(bob.UserID), nil, &m)
	if m["membership"] != "join" || m["join_authorised_via_users_server"] != alice.UserID {
		t.Errorf("bob's join on A: %v", m)
	}
	if got := joinedMembers(t, bob, room); !slices.Contains(got, bob.UserID) {
		t.Errorf("B's joined members: %v", got)
	}
}

// TestFederatedJoinThroughJoinedServer: a server that itself joined over
// federation lets a third one join through it: its answer carries the
// state and auth chain it holds as outliers. The third server's join
// then reaches the first.
func TestFederatedJoinThroughJoinedServer(t *testing.T) {
	fed := testserver.Federation(t, 3, testserver.Options{})
	a, b, c := fed[0], fed[1], fed[2]
	alice := a.Register("alice")
	// v12: the room ID names no server C could fall back to.
	room := alice.CreateRoom(map[string]any{"preset": "public_chat", "name": "Three servers", "room_version": "12"})
	// A superseded power levels event, which only the auth chain holds:
	// the current one cites it.
	var pl map[string]any
	alice.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.power_levels/", nil, &pl)
	pl["state_default"] = 60
	alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.power_levels/", pl, nil)
	bob := b.Register("bob")
	bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?via="+url.QueryEscape(a.Name()), map[string]any{}, nil)
	carol := c.Register("carol")
	carol.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?via="+url.QueryEscape(b.Name()), map[string]any{}, nil)
	want := []string{alice.UserID, bob.UserID, carol.UserID}
	slices.Sort(want)
	if got := joinedMembers(t, carol, room); !slices.Equal(got, want) {
		t.Errorf("C's joined members: %v, want %v", got, want)
	}
	if got := joinedMembers(t, bob, room); !slices.Equal(got, want) {
		t.Errorf("B's joined members: %v, want %v", got, want)
	}
	waitMember(t, alice, room, carol.UserID, "join")
	var name struct {
		Name string `json:"name"`
	}
	carol.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.name/", nil, &name)
	if name.Name != "Three servers" {
		t.Errorf("C's room name: %+v", name)
	}
	carol.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.power_levels/", nil, &pl)
	if pl["state_default"] != float64(60) {
		t.Errorf("C's power levels: %v", pl)
	}
}

// TestSendJoinOmitMembers: send_join v2 with omit_members=true leaves the
// member events out of the state (but the heroes' in a room without a
// name), says so, and names the servers in the room; the auth chain
// keeps the members that authorise the rest.
func TestSendJoinOmitMembers(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	pb := playServer(t, b)
	alice := a.Register("alice")
	var others []*testserver.Client
	for range 6 {
		others = append(others, a.Register("member"))
	}
	named := alice.CreateRoom(map[string]any{"preset": "public_chat", "name": "Named"})
	unnamed := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	for _, c := range others {
		c.Join(named)
		c.Join(unnamed)
	}
	type answer struct {
		State []struct {
			Type     string `json:"type"`
			StateKey string `json:"state_key"`
		} `json:"state"`
		AuthChain []struct {
			Type     string `json:"type"`
			StateKey string `json:"state_key"`
		} `json:"auth_chain"`
		MembersOmitted bool     `json:"members_omitted"`
		ServersInRoom  []string `json:"servers_in_room"`
	}
	join := func(room string, user string) answer {
		t.Helper()
		status, body := fedDo(t, b, a, "GET", "/_matrix/federation/v1/make_join/"+url.PathEscape(room)+"/"+url.PathEscape(user)+"?ver=10&ver=11&ver=12", nil)
		if status != http.StatusOK {
			t.Fatalf("make_join: %d %s", status, body)
		}
		_, ev := memberFromTemplate(t, pb, body)
		status, body = fedDo(t, b, a, "PUT", "/_matrix/federation/v2/send_join/"+url.PathEscape(room)+"/"+url.PathEscape(string(ev.ID()))+"?omit_members=true", ev.JSON())
		var out answer
		if status != http.StatusOK || json.Unmarshal(body, &out) != nil {
			t.Fatalf("send_join: %d %s", status, body)
		}
		if !out.MembersOmitted || !slices.Equal(out.ServersInRoom, []string{a.Name(), b.Name()}) {
			t.Errorf("members_omitted %v, servers_in_room %v", out.MembersOmitted, out.ServersInRoom)
		}
		return out
	}
	members := func(evs []struct {
		Type     string `json:"type"`
		StateKey string `json:"state_key"`
	}) []string {
		var out []string
		for _, e := range evs {
			if e.Type == roomdag.TypeMember {
				out = append(out, e.StateKey)
			}
		}
		slices.Sort(out)
		return out
	}
	got := join(named, "@nina:"+b.Name())
	if m := members(got.State); len(m) != 0 {
		t.Errorf("named room: members in the state %v", m)
	}
	if m := members(got.AuthChain); !slices.Contains(m, alice.UserID) {
		t.Errorf("named room: the auth chain lacks the creator's join: %v", m)
	}
	got = join(unnamed, "@una:"+b.Name())
	all := []string{alice.UserID}
	for _, c := range others {
		all = append(all, c.UserID)
	}
	slices.Sort(all)
	if m := members(got.State); !slices.Equal(m, all[:5]) {
		t.Errorf("unnamed room: members in the state %v, want the heroes %v", m, all[:5])
	}
}

// TestFederatedJoinConcurrent: two users of B join the same room of A at
// once; both get in (the second's join waits for the first's).
func TestFederatedJoinConcurrent(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice := a.Register("alice")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	users := []*testserver.Client{b.Register("bob"), b.Register("carol")}
	status := make(chan *testserver.Response, len(users))
	for _, u := range users {
		go func() {
			status <- u.Do("POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?via="+url.QueryEscape(a.Name()), map[string]any{})
		}()
	}
	for range users {
		if r := <-status; r.Status != http.StatusOK {
			t.Errorf("concurrent join: %d %s", r.Status, r.Body)
		}
	}
	for _, u := range users {
		waitMember(t, alice, room, u.UserID, "join")
		if got := joinedMembers(t, u, room); !slices.Contains(got, u.UserID) {
			t.Errorf("B's joined members for %s: %v", u.UserID, got)
		}
	}
}
