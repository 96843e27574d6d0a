package federation_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/server"
	"github.com/persistentchat/homeserver/testserver"
)

// strippedTypes lists the (type, state_key) of a room's invite_state
// events in a /sync response, and the invite event among them.
func inviteState(t *testing.T, sync map[string]any, room string) (map[string]map[string]any, bool) {
	t.Helper()
	rooms, _ := sync["rooms"].(map[string]any)
	inv, _ := rooms["invite"].(map[string]any)
	r, ok := inv[room].(map[string]any)
	if !ok {
		return nil, false
	}
	st, _ := r["invite_state"].(map[string]any)
	evs, _ := st["events"].([]any)
	out := map[string]map[string]any{}
	for _, e := range evs {
		ev, _ := e.(map[string]any)
		typ, _ := ev["type"].(string)
		sk, _ := ev["state_key"].(string)
		out[typ+"|"+sk] = ev
	}
	return out, true
}

// restart stops s and starts it again on its data directory, under its
// name and federation listener.
func restart(t *testing.T, s *testserver.Server) *testserver.Server {
	t.Helper()
	s.Stop()
	name, fed := s.Name(), *s.Config
	return testserver.Start(t, testserver.Options{DataDir: s.DataDir, Configure: func(c *configs.Config) {
		c.ServerName, c.FederationListen = name, name
		c.FederationVerifyCertificates = false
		c.IPRangeWhitelist = fed.IPRangeWhitelist
		c.FederationDomainWhitelist = fed.FederationDomainWhitelist
	}})
}

func memberEvent(t *testing.T, s *testserver.Server, room, user string) *roomdag.Event {
	t.Helper()
	st, err := s.HS.Rooms.State(context.Background(), roomdag.RoomID(room))
	if err != nil {
		t.Fatal(err)
	}
	return st.State.Get(roomdag.TypeMember, user)
}

// TestInviteAcrossServers: alice of A invites bob of B, over the real
// transport. A stores the invite only once B signed it: A's room state
// holds it signed by both servers. B's /sync lists the room under
// rooms.invite with the stripped state A sent (create, join rules, name,
// the inviter's membership) and the invite itself, bob gets a
// notification for it (.m.rule.invite_for_me), and it survives B's
// restart. With A down, bob rejects it: locally, as Synapse does, the
// room leaves his invites and lands in rooms.leave.
func TestInviteAcrossServers(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice, bob := a.Register("alice"), b.Register("bob")
	room := alice.CreateRoom(map[string]any{"preset": "private_chat", "name": "Across"})
	since := bob.Sync("timeout=0")["next_batch"].(string)

	alice.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/invite", map[string]any{"user_id": bob.UserID}, nil)

	ev := memberEvent(t, a, room, bob.UserID)
	if ev == nil || ev.Membership() != roomdag.MembershipInvite {
		t.Fatalf("A's state has no invite of bob: %v", ev)
	}
	bKey, err := server.LoadOrCreateKey(b.Config.SigningKeyPath(), roomdag.ServerName(b.Name()))
	if err != nil {
		t.Fatal(err)
	}
	if err := roomdag.VerifyEventSignature(ev.Version(), roomdag.ServerName(b.Name()), bKey.KeyID, bKey.Public(), ev.JSON()); err != nil {
		t.Fatalf("the stored invite does not carry B's signature: %v", err)
	}
	aKey, err := server.LoadOrCreateKey(a.Config.SigningKeyPath(), roomdag.ServerName(a.Name()))
	if err != nil {
		t.Fatal(err)
	}
	if err := roomdag.VerifyEventSignature(ev.Version(), roomdag.ServerName(a.Name()), aKey.KeyID, aKey.Public(), ev.JSON()); err != nil {
		t.Fatalf("the stored invite does not carry A's signature: %v", err)
	}

	checkInvite := func(b *testserver.Server, bob *testserver.Client, query string) {
		t.Helper()
		got, ok := inviteState(t, bob.Sync(query), room)
		if !ok {
			t.Fatalf("bob's /sync (%s) has no invite to %s", query, room)
		}
		for _, k := range []string{"m.room.create|", "m.room.join_rules|", "m.room.name|", "m.room.member|" + alice.UserID, "m.room.member|" + bob.UserID} {
			if got[k] == nil {
				t.Errorf("invite_state lacks %s: %v", k, got)
			}
		}
		if inv := got["m.room.member|"+bob.UserID]; inv != nil && (inv["event_id"] != string(ev.ID()) || inv["sender"] != alice.UserID) {
			t.Errorf("the invite in invite_state is %v, want %s from %s", inv, ev.ID(), alice.UserID)
		}
		if n := got["m.room.name|"]; n != nil && (n["content"].(map[string]any)["name"] != "Across" || n["signatures"] != nil) {
			t.Errorf("room name in invite_state (stripped, for clients): %v", n)
		}
	}
	checkInvite(b, bob, "timeout=0&since="+since)
	checkInvite(b, bob, "timeout=0")

	b.Settle()
	var notifs struct {
		Notifications []struct {
			Event map[string]any `json:"event"`
		} `json:"notifications"`
	}
	bob.MustDo("GET", "/_matrix/client/v3/notifications", nil, &notifs)
	if len(notifs.Notifications) != 1 || notifs.Notifications[0].Event["event_id"] != string(ev.ID()) {
		t.Fatalf("bob's notifications: %+v, want the invite %s", notifs.Notifications, ev.ID())
	}

	b = restart(t, b)
	bob = bob.On(b)
	checkInvite(b, bob, "timeout=0")
	since = bob.Sync("timeout=0")["next_batch"].(string)

	// Rejecting with A down: done here alone.
	a.Stop()
	bob.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/leave", map[string]any{}, nil)
	s := bob.Sync("timeout=0&since=" + since)
	if _, ok := inviteState(t, s, room); ok {
		t.Fatal("the rejected invite is still listed")
	}
	if left, _ := s["rooms"].(map[string]any)["leave"].(map[string]any); left[room] == nil {
		t.Fatalf("the rejected invite's room is not in rooms.leave: %v", s["rooms"])
	}
	if _, ok := inviteState(t, bob.Sync("timeout=0"), room); ok {
		t.Fatal("an initial sync still lists the rejected invite")
	}
	// Rejecting again is a no-op; forgetting works on such a room.
	bob.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/leave", map[string]any{}, nil)
	bob.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/forget", map[string]any{}, nil)
}

// TestInviteRemoteRefused: an invite B will not sign (no such user) fails
// with B's error, and one to a server that is down with 502; A stores
// neither.
func TestInviteRemoteRefused(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice := a.Register("alice")
	room := alice.CreateRoom(map[string]any{"preset": "private_chat"})
	before, err := a.HS.Rooms.State(context.Background(), roomdag.RoomID(room))
	if err != nil {
		t.Fatal(err)
	}
	path := "/_matrix/client/v3/rooms/" + url.PathEscape(room) + "/invite"
	nobody := "@nobody:" + b.Name()
	if resp := alice.Do("POST", path, map[string]any{"user_id": nobody}); resp.Status != http.StatusNotFound || resp.Errcode() != "M_NOT_FOUND" {
		t.Fatalf("invite of an unknown remote user: %d %s", resp.Status, resp.Body)
	}
	b.Stop()
	if resp := alice.Do("POST", path, map[string]any{"user_id": "@bob:" + b.Name()}); resp.Status != http.StatusBadGateway {
		t.Fatalf("invite to a server that is down: %d %s", resp.Status, resp.Body)
	}
	after, err := a.HS.Rooms.State(context.Background(), roomdag.RoomID(room))
	if err != nil {
		t.Fatal(err)
	}
	if after.LastPos != before.LastPos || memberEvent(t, a, room, nobody) != nil {
		t.Fatalf("a refused invite was stored: position %d, was %d", after.LastPos, before.LastPos)
	}
	// createRoom with a refused remote invitee fails too.
	if resp := alice.Do("POST", "/_matrix/client/v3/createRoom", map[string]any{"invite": []string{"@bob:" + b.Name()}}); resp.Status != http.StatusBadGateway {
		t.Fatalf("createRoom inviting a user of a server that is down: %d %s", resp.Status, resp.Body)
	}
}

// TestInboundInvite: invites B sends A over the real transport, signed
// by B's key unless the case says otherwise. A good one comes back signed
// by A too (v2; its retry is answered alike) and shows in the invitee's
// /sync; bad ones get the spec's 4xx and are not kept.
func TestInboundInvite(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice := a.Register("alice")
	bKey, err := server.LoadOrCreateKey(b.Config.SigningKeyPath(), roomdag.ServerName(b.Name()))
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := roomdag.GenerateSigningKey(roomdag.ServerName(b.Name()), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := roomdag.LookupRoomVersion("10")
	room := "!remote:" + b.Name()
	carol := roomdag.UserID("@carol:" + b.Name())
	now := time.Now().UnixMilli() // one timestamp: building an event twice gives one ID
	invite := func(key roomdag.SigningKey, sender roomdag.UserID, target, membership string) *roomdag.Event {
		ev, err := roomdag.BuildEvent(v, key, roomdag.EventTemplate{RoomID: roomdag.RoomID(room), Sender: sender,
			Type: roomdag.TypeMember, StateKey: &target, Content: json.RawMessage(`{"membership":"` + membership + `"}`),
			PrevEvents: []roomdag.EventID{"$prev"}, AuthEvents: []roomdag.EventID{"$create", "$carol"}, Depth: 3,
			OriginServerTS: now})
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	// invite_room_state as PDUs (MSC4311), and in the stripped form of
	// servers from before v1.16.
	pdu := func(key roomdag.SigningKey, room roomdag.RoomID, typ, content string) json.RawMessage {
		ev, err := roomdag.BuildEvent(v, key, roomdag.EventTemplate{RoomID: room, Sender: carol, Type: typ, StateKey: new(string),
			Content: json.RawMessage(content), Depth: 1, OriginServerTS: now})
		if err != nil {
			t.Fatal(err)
		}
		return ev.JSON()
	}
	stripped := []any{
		pdu(bKey, roomdag.RoomID(room), roomdag.TypeCreate, `{"room_version":"10","creator":"`+string(carol)+`"}`),
		pdu(bKey, roomdag.RoomID(room), roomdag.TypeName, `{"name":"Remote"}`),
		map[string]any{"type": "m.room.join_rules", "state_key": "", "sender": string(carol), "content": map[string]any{"join_rule": "invite"}},
	}
	put := func(path string, body any) txnAnswer {
		return txnPut(t, b, a.Name(), path, mustJSON(t, body))
	}
	v2 := func(ev *roomdag.Event) string {
		return "/_matrix/federation/v2/invite/" + url.PathEscape(room) + "/" + url.PathEscape(string(ev.ID()))
	}
	good := invite(bKey, carol, alice.UserID, "invite")
	for _, tc := range []struct {
		name   string
		path   string
		body   any
		status int
		code   string
	}{
		{"unsupported version", v2(good), map[string]any{"event": json.RawMessage(good.JSON()), "room_version": "999"}, 400, "M_INCOMPATIBLE_ROOM_VERSION"},
		{"no room_version", v2(good), map[string]any{"event": json.RawMessage(good.JSON())}, 400, "M_BAD_JSON"},
		{"event not an object", v2(good), map[string]any{"event": "x", "room_version": "10"}, 400, "M_BAD_JSON"},
		{"not an event", v2(good), map[string]any{"event": map[string]any{"type": 1}, "room_version": "10"}, 400, "M_BAD_JSON"},
		{"invite_room_state not a list", v2(good), map[string]any{"event": json.RawMessage(good.JSON()), "room_version": "10", "invite_room_state": "x"}, 400, "M_BAD_JSON"},
		{"another event ID", "/_matrix/federation/v2/invite/" + url.PathEscape(room) + "/$other", map[string]any{"event": json.RawMessage(good.JSON()), "room_version": "10"}, 400, "M_BAD_JSON"},
		{"another room", "/_matrix/federation/v2/invite/" + url.PathEscape("!other:"+b.Name()) + "/" + url.PathEscape(string(good.ID())), map[string]any{"event": json.RawMessage(good.JSON()), "room_version": "10"}, 400, "M_BAD_JSON"},
		{"not an invite", v2(invite(bKey, carol, alice.UserID, "join")), map[string]any{"event": json.RawMessage(invite(bKey, carol, alice.UserID, "join").JSON()), "room_version": "10"}, 400, "M_BAD_JSON"},
		{"sender of another server", v2(invite(bKey, "@mallory:127.0.0.1:1", alice.UserID, "invite")), map[string]any{"event": json.RawMessage(invite(bKey, "@mallory:127.0.0.1:1", alice.UserID, "invite").JSON()), "room_version": "10"}, 403, "M_FORBIDDEN"},
		{"bad signature", v2(invite(otherKey, carol, alice.UserID, "invite")), map[string]any{"event": json.RawMessage(invite(otherKey, carol, alice.UserID, "invite").JSON()), "room_version": "10"}, 403, "M_FORBIDDEN"},
		{"user of another server", v2(invite(bKey, carol, "@dave:"+b.Name(), "invite")), map[string]any{"event": json.RawMessage(invite(bKey, carol, "@dave:"+b.Name(), "invite").JSON()), "room_version": "10"}, 403, "M_FORBIDDEN"},
		{"unknown local user", v2(invite(bKey, carol, "@nobody:"+a.Name(), "invite")), map[string]any{"event": json.RawMessage(invite(bKey, carol, "@nobody:"+a.Name(), "invite").JSON()), "room_version": "10"}, 404, "M_NOT_FOUND"},
		{"stripped state of another room", v2(good), map[string]any{"event": json.RawMessage(good.JSON()), "room_version": "10",
			"invite_room_state": []any{pdu(bKey, "!other:"+roomdag.RoomID(b.Name()), roomdag.TypeCreate, `{}`)}}, 400, "M_MISSING_PARAM"},
		{"stripped state badly signed", v2(good), map[string]any{"event": json.RawMessage(good.JSON()), "room_version": "10",
			"invite_room_state": []any{pdu(otherKey, roomdag.RoomID(room), roomdag.TypeCreate, `{}`)}}, 400, "M_MISSING_PARAM"},
		{"stripped state not a PDU", v2(good), map[string]any{"event": json.RawMessage(good.JSON()), "room_version": "10",
			"invite_room_state": []any{map[string]any{"type": "m.room.create", "signatures": map[string]any{}}}}, 400, "M_MISSING_PARAM"},
		{"v1 with a v3+ event", "/_matrix/federation/v1/invite/" + url.PathEscape(room) + "/" + url.PathEscape(string(good.ID())), json.RawMessage(good.JSON()), 400, "M_BAD_JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := put(tc.path, tc.body)
			if resp.status != tc.status || resp.errcode() != tc.code {
				t.Fatalf("got %d %s, want %d %s", resp.status, resp.body, tc.status, tc.code)
			}
		})
	}
	// An invitee who blocks invites (v1.18): 403 M_INVITE_BLOCKED.
	blocker := a.Register("blocker")
	blocker.MustDo("PUT", "/_matrix/client/v3/user/"+url.PathEscape(blocker.UserID)+"/account_data/m.invite_permission_config",
		map[string]any{"default_action": "block"}, nil)
	blocked := invite(bKey, carol, blocker.UserID, "invite")
	if resp := put(v2(blocked), map[string]any{"event": json.RawMessage(blocked.JSON()), "room_version": "10"}); resp.status != http.StatusForbidden || resp.errcode() != "M_INVITE_BLOCKED" {
		t.Fatalf("invite of a user who blocks invites: %d %s", resp.status, resp.body)
	}
	if _, ok := inviteState(t, alice.Sync("timeout=0"), room); ok {
		t.Fatal("a refused invite reached alice's /sync")
	}

	// The good one, twice (a retry): signed by A and kept once.
	aKey, err := server.LoadOrCreateKey(a.Config.SigningKeyPath(), roomdag.ServerName(a.Name()))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		resp := put(v2(good), map[string]any{"event": json.RawMessage(good.JSON()), "room_version": "10", "invite_room_state": stripped})
		var out struct {
			Event json.RawMessage `json:"event"`
		}
		if resp.status != http.StatusOK || json.Unmarshal(resp.body, &out) != nil {
			t.Fatalf("good invite: %d %s", resp.status, resp.body)
		}
		signed, err := roomdag.NewEventFromJSON(v, out.Event)
		if err != nil || signed.ID() != good.ID() {
			t.Fatalf("the signed invite is not the invite sent: %v", err)
		}
		if err := roomdag.VerifyEventSignature(v, roomdag.ServerName(a.Name()), aKey.KeyID, aKey.Public(), signed.JSON()); err != nil {
			t.Fatalf("not signed by A: %v", err)
		}
		if err := roomdag.VerifyEventSignature(v, roomdag.ServerName(b.Name()), bKey.KeyID, bKey.Public(), signed.JSON()); err != nil {
			t.Fatalf("B's signature lost: %v", err)
		}
	}
	got, ok := inviteState(t, alice.Sync("timeout=0"), room)
	if !ok {
		t.Fatal("alice's /sync has no invite")
	}
	if got["m.room.create|"] == nil || got["m.room.name|"] == nil || got["m.room.join_rules|"] == nil || got["m.room.member|"+alice.UserID]["event_id"] != string(good.ID()) {
		t.Fatalf("alice's invite_state: %v", got)
	}
	if got["m.room.name|"]["signatures"] != nil || got["m.room.name|"]["content"].(map[string]any)["name"] != "Remote" {
		t.Fatalf("the room name a client sees: %v", got["m.room.name|"])
	}
	var rooms struct {
		Joined []string `json:"joined_rooms"`
	}
	alice.MustDo("GET", "/_matrix/client/v3/joined_rooms", nil, &rooms)
	if len(rooms.Joined) != 0 {
		t.Fatalf("an invite made alice joined: %v", rooms.Joined)
	}
	// A deactivated account's pending invites are rejected too.
	frank := a.Register("frank")
	franks := invite(bKey, carol, frank.UserID, "invite")
	if resp := put(v2(franks), map[string]any{"event": json.RawMessage(franks.JSON()), "room_version": "10"}); resp.status != http.StatusOK {
		t.Fatalf("invite of frank: %d %s", resp.status, resp.body)
	}
	frank.MustDo("POST", "/_matrix/client/v3/account/deactivate", map[string]any{"auth": map[string]any{
		"type": "m.login.password", "user": frank.UserID, "password": "correct horse battery"}}, nil)
	if m, err := a.HS.DB().UserMembership(context.Background(), roomdag.UserID(frank.UserID), roomdag.RoomID(room)); err != nil || m.Membership != roomdag.MembershipLeave {
		t.Fatalf("a deactivated account's invite: %+v, %v", m, err)
	}

	// Rejecting: B does not hold the room (make_leave: 404), so A
	// rejects locally.
	alice.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/leave", map[string]any{"reason": "no"}, nil)
	if _, ok := inviteState(t, alice.Sync("timeout=0"), room); ok {
		t.Fatal("the rejected invite is still listed")
	}
	if !strings.HasPrefix(room, "!") {
		t.Fatal(room)
	}
}

// TestInviteThenJoinOrReject: two users of B invited to A's invite-only
// room. One rejects: the leave goes through A (make_leave, send_leave),
// whose state then says so. The other accepts: the join goes through A
// (make_join, send_join), which lets him in on the invite it holds, and
// B, which knew the room by its invites only, now holds it.
func TestInviteThenJoinOrReject(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice, bob, carol := a.Register("alice"), b.Register("bob"), b.Register("carol")
	room := alice.CreateRoom(map[string]any{"preset": "private_chat", "name": "Accept or not"})
	for _, u := range []string{bob.UserID, carol.UserID} {
		alice.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/invite", map[string]any{"user_id": u}, nil)
	}

	carol.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/leave", map[string]any{"reason": "busy"}, nil)
	ev := memberEvent(t, a, room, carol.UserID)
	if ev == nil || ev.Membership() != roomdag.MembershipLeave || ev.Sender() != roomdag.UserID(carol.UserID) {
		t.Fatalf("A's state after carol rejected: %s", ev.JSON())
	}
	var c struct {
		Reason string `json:"reason"`
	}
	if json.Unmarshal(ev.Content(), &c); c.Reason != "busy" {
		t.Errorf("the rejection's reason: %s", ev.Content())
	}
	if _, ok := inviteState(t, carol.Sync("timeout=0"), room); ok {
		t.Fatal("carol's rejected invite is still listed")
	}

	bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
	if ev := memberEvent(t, a, room, bob.UserID); ev == nil || ev.Membership() != roomdag.MembershipJoin {
		t.Fatalf("A's state after bob accepted: %v", ev)
	}
	s := bob.Sync("timeout=0")
	if _, ok := inviteState(t, s, room); ok {
		t.Fatal("bob's accepted invite is still listed")
	}
	if joined, _ := s["rooms"].(map[string]any)["join"].(map[string]any); joined[room] == nil {
		t.Fatalf("bob's /sync does not list the room joined: %v", s["rooms"])
	}

	// createRoom's invite list, for a direct chat: signed by B too.
	dm := alice.CreateRoom(map[string]any{"preset": "trusted_private_chat", "is_direct": true, "invite": []string{carol.UserID}})
	got, ok := inviteState(t, carol.Sync("timeout=0"), dm)
	if !ok {
		t.Fatal("carol's /sync has no invite to the direct chat")
	}
	if inv := got["m.room.member|"+carol.UserID]; inv == nil || inv["content"].(map[string]any)["is_direct"] != true {
		t.Fatalf("the direct chat's invite: %v", inv)
	}
	if ev := memberEvent(t, a, dm, carol.UserID); ev == nil || ev.Membership() != roomdag.MembershipInvite {
		t.Fatalf("A's state of the direct chat: %v", ev)
	}
}

// waitForInvite long-polls c's /sync until it lists an invite to room.
func waitForInvite(t *testing.T, c *testserver.Client, room string) map[string]map[string]any {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	since := ""
	for time.Now().Before(deadline) {
		q := "timeout=5000"
		if since != "" {
			q += "&since=" + since
		}
		s := c.Sync(q)
		if got, ok := inviteState(t, s, room); ok {
			return got
		}
		since, _ = s["next_batch"].(string)
	}
	t.Fatalf("%s's /sync never listed an invite to %s", c.UserID, room)
	return nil
}

// TestInviteToARoomBothServersAreIn: once bob of B is in alice's room,
// alice's invite of dave, another user of B, is an event of a room B
// holds: B takes it into the room's DAG, and dave sees it with the
// stripped state B computes. The room's server ACL then denies B: A
// refuses B's invite of one of A's users (403), and B stores nothing.
func TestInviteToARoomBothServersAreIn(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice, erin := a.Register("alice"), a.Register("erin")
	bob, dave := b.Register("bob"), b.Register("dave")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat", "name": "Both"})
	bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?server_name="+url.QueryEscape(a.Name()), map[string]any{}, nil)

	alice.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/invite", map[string]any{"user_id": dave.UserID}, nil)
	got := waitForInvite(t, dave, room)
	if got["m.room.name|"] == nil || got["m.room.member|"+dave.UserID] == nil {
		t.Fatalf("dave's invite_state: %v", got)
	}
	if ev := memberEvent(t, b, room, dave.UserID); ev == nil || ev.Membership() != roomdag.MembershipInvite {
		t.Fatalf("B's state of the room has no invite of dave: %v", ev)
	}

	alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.server_acl/",
		map[string]any{"allow": []string{"*"}, "deny": []string{"127.0.0.1"}, "allow_ip_literals": true}, nil) // hosts without ports: A and B alike, but an ACL applies to other servers only
	resp := bob.Do("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/invite", map[string]any{"user_id": erin.UserID})
	if resp.Status != http.StatusForbidden || resp.Errcode() != "M_FORBIDDEN" || !strings.Contains(string(resp.Body), "server ACL") {
		t.Fatalf("an invite from a server the ACL denies: %d %s", resp.Status, resp.Body)
	}
	if ev := memberEvent(t, b, room, erin.UserID); ev != nil {
		t.Fatalf("B stored the refused invite: %s", ev.JSON())
	}
	if trail, err := b.HS.DB().MembershipChanges(context.Background(), roomdag.RoomID(room), roomdag.UserID(erin.UserID)); err != nil || len(trail) != 0 {
		t.Fatalf("B stored a membership of erin: %v %v", trail, err)
	}
}

// BenchmarkInvite: one invite, of a user of the same server and of a user
// of another (signed there first, over TLS on loopback), each a fresh
// invitee in one room.
func BenchmarkInvite(b *testing.B) {
	fed := testserver.Federation(b, 2, testserver.Options{})
	for _, bc := range []struct {
		name string
		on   *testserver.Server
	}{{"local", fed[0]}, {"remote", fed[1]}} {
		b.Run(bc.name, func(b *testing.B) {
			alice := fed[0].Register("alice")
			room := alice.CreateRoom(map[string]any{"preset": "private_chat"})
			path := "/_matrix/client/v3/rooms/" + url.PathEscape(room) + "/invite"
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				u := bc.on.Register("guest")
				b.StartTimer()
				alice.MustDo("POST", path, map[string]any{"user_id": u.UserID}, nil)
			}
		})
	}
}

// TestInviteRoomVersions: invites across servers in rooms of the first
// event format (v1: event IDs of the sending server), of v11, and of v12
// (room IDs without a server: the create event in invite_room_state is
// what B checks the room by). Each is rejected through A (v1's with a
// leave whose event ID B chose).
func TestInviteRoomVersions(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice := a.Register("alice")
	for _, ver := range []string{"1", "11", "12"} {
		t.Run("v"+ver, func(t *testing.T) {
			bob := b.Register("bob")
			room := alice.CreateRoom(map[string]any{"preset": "private_chat", "room_version": ver, "name": "v" + ver})
			alice.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/invite", map[string]any{"user_id": bob.UserID}, nil)
			got, ok := inviteState(t, bob.Sync("timeout=0"), room)
			if !ok || got["m.room.create|"] == nil || got["m.room.name|"] == nil || got["m.room.member|"+bob.UserID] == nil {
				t.Fatalf("bob's invite_state: %v (listed %v)", got, ok)
			}
			bob.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/leave", map[string]any{}, nil)
			if _, ok := inviteState(t, bob.Sync("timeout=0"), room); ok {
				t.Fatal("the rejected invite is still listed")
			}
			want := roomdag.MembershipLeave
			if ev := memberEvent(t, a, room, bob.UserID); ev == nil || ev.Membership() != want {
				t.Fatalf("A's state of bob after his rejection: %v, want %s", ev, want)
			}
		})
	}
}
