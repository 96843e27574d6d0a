package server_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/testserver"
)

// Knocking on a room of another server (issue 11): the knock goes through
// make_knock/send_knock, is kept out of band on the knocker's server, and
// is accepted by an invite, rescinded by a leave, or refused with the
// resident server's error.

// knockSync is the part of /sync a knock shows in.
type knockSync struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Knock map[string]struct {
			KnockState struct {
				Events []syncEvent `json:"events"`
			} `json:"knock_state"`
		} `json:"knock"`
		Invite map[string]json.RawMessage `json:"invite"`
		Join   map[string]json.RawMessage `json:"join"`
		Leave  map[string]json.RawMessage `json:"leave"`
	} `json:"rooms"`
}

// knockSyncUntil long-polls c's /sync until cond holds for a response.
func knockSyncUntil(t *testing.T, c *testserver.Client, since, what string, cond func(*knockSync) bool) *knockSync {
	t.Helper()
	for range 30 {
		var s knockSync
		q := "timeout=2000"
		if since != "" {
			q += "&since=" + url.QueryEscape(since)
		}
		c.MustDo("GET", "/_matrix/client/v3/sync?"+q, nil, &s)
		since = s.NextBatch
		if cond(&s) {
			return &s
		}
	}
	t.Fatalf("%s: no /sync of %s", c.UserID, what)
	return nil
}

func knockVia(c *testserver.Client, room string, via *testserver.Server, reason string) *testserver.Response {
	return c.Do("POST", "/_matrix/client/v3/knock/"+url.PathEscape(room)+"?via="+url.QueryEscape(via.Name()), map[string]any{"reason": reason})
}

func TestFederatedKnock(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice := a.Register("alice")
	bob, carol := b.Register("bob"), b.Register("carol")
	knockRule := []any{map[string]any{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "knock"}}}
	room := alice.CreateRoom(map[string]any{"preset": "private_chat", "room_version": "11", "name": "Knock here", "initial_state": knockRule})

	if r := knockVia(bob, room, a, "let me in"); r.Status != http.StatusOK {
		t.Fatalf("bob's knock: %d %s", r.Status, r.Body)
	}
	// B's /sync lists the room under rooms.knock, with the room's state
	// (its name, its join rule) and the knock itself.
	knockSyncUntil(t, bob, "", "the knock", func(s *knockSync) bool {
		k, ok := s.Rooms.Knock[room]
		if !ok {
			return false
		}
		var name, knock bool
		for _, e := range k.KnockState.Events {
			name = name || e.Type == "m.room.name"
			knock = knock || e.Type == roomdag.TypeMember && e.StateKey != nil && *e.StateKey == bob.UserID && e.membership() == roomdag.MembershipKnock
		}
		if !name || !knock {
			t.Errorf("knock_state: %+v", k.KnockState.Events)
		}
		return true
	})
	// A's admin sees the knock, with its reason.
	waitMember(t, alice, room, bob.UserID, roomdag.MembershipKnock)
	var m struct {
		Reason string `json:"reason"`
	}
	alice.MustDo("GET", roomPath(room, "state/m.room.member/"+url.PathEscape(bob.UserID)), nil, &m)
	if m.Reason != "let me in" {
		t.Errorf("the knock's reason on A: %q", m.Reason)
	}

	// Accepted: A invites, the invite reaches B over /invite, bob joins.
	alice.MustDo("POST", roomPath(room, "invite"), map[string]any{"user_id": bob.UserID}, nil)
	knockSyncUntil(t, bob, "", "the invite", func(s *knockSync) bool { _, ok := s.Rooms.Invite[room]; return ok })
	bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
	waitMember(t, alice, room, bob.UserID, roomdag.MembershipJoin)
	onA := watchTimeline(alice, room)
	onA.until(t, bob.SendText(room, "thanks for letting me in"))

	// Rescinded: carol knocks on a second room, then leaves it: the leave
	// goes to A through make_leave/send_leave.
	other := alice.CreateRoom(map[string]any{"preset": "private_chat", "room_version": "10", "initial_state": knockRule})
	if r := knockVia(carol, other, a, ""); r.Status != http.StatusOK {
		t.Fatalf("carol's knock: %d %s", r.Status, r.Body)
	}
	waitMember(t, alice, other, carol.UserID, roomdag.MembershipKnock)
	since := nextBatch(t, carol)
	carol.MustDo("POST", roomPath(other, "leave"), map[string]any{}, nil)
	waitMember(t, alice, other, carol.UserID, roomdag.MembershipLeave)
	knockSyncUntil(t, carol, since, "the rescinded knock", func(s *knockSync) bool {
		_, knocked := s.Rooms.Knock[other]
		_, left := s.Rooms.Leave[other]
		return !knocked && left
	})
	// She may knock again.
	if r := knockVia(carol, other, a, "again"); r.Status != http.StatusOK {
		t.Errorf("carol's second knock: %d %s", r.Status, r.Body)
	}
	waitMember(t, alice, other, carol.UserID, roomdag.MembershipKnock)
}

// TestFederatedKnockRefused: A's refusals reach B's client as A's Matrix
// errors, and leave no knock on either server.
func TestFederatedKnockRefused(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice := a.Register("alice")
	dave := b.Register("dave")
	invite := alice.CreateRoom(map[string]any{"preset": "private_chat", "room_version": "11"})
	knockRule := []any{map[string]any{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "knock"}}}
	banned := alice.CreateRoom(map[string]any{"preset": "private_chat", "room_version": "11", "initial_state": knockRule})
	alice.MustDo("POST", roomPath(banned, "ban"), map[string]any{"user_id": dave.UserID}, nil)
	old := alice.CreateRoom(map[string]any{"preset": "private_chat", "room_version": "6", "initial_state": knockRule})

	for _, tc := range []struct {
		name, room string
		status     int
		code       string
	}{
		{"join rule invite", invite, http.StatusForbidden, "M_FORBIDDEN"},
		{"banned", banned, http.StatusForbidden, "M_FORBIDDEN"},
		{"room version 6", old, http.StatusBadRequest, "M_INCOMPATIBLE_ROOM_VERSION"},
	} {
		r := knockVia(dave, tc.room, a, "")
		if r.Status != tc.status || r.Errcode() != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.name, r.Status, r.Body, tc.status, tc.code)
		}
		if r := alice.Do("GET", roomPath(tc.room, "state/m.room.member/"+url.PathEscape(dave.UserID)), nil); r.Status == http.StatusOK {
			var m struct {
				Membership string `json:"membership"`
			}
			r.JSON(&m)
			if m.Membership == roomdag.MembershipKnock {
				t.Errorf("%s: A holds a knock", tc.name)
			}
		}
	}
	s := dave.Sync("timeout=0")
	if rooms, _ := s["rooms"].(map[string]any); rooms != nil && rooms["knock"] != nil {
		if k, _ := rooms["knock"].(map[string]any); len(k) > 0 {
			t.Errorf("B lists knocks after refusals: %v", k)
		}
	}
}

// TestFederatedJoinV1Room: rooms v1 and v2, whose event IDs are the
// sender's server's "$opaque:server" and whose events cite others as [id,
// hashes] pairs, are joined, talked in and left across servers.
func TestFederatedJoinV1Room(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice := a.Register("alice")
	bob := b.Register("bob")
	for _, v := range []string{"1", "2"} {
		room := alice.CreateRoom(map[string]any{"preset": "public_chat", "room_version": v})
		alice.SendText(room, "hello in v"+v)
		joinVia(t, bob, room, a)
		waitMember(t, alice, room, bob.UserID, roomdag.MembershipJoin)
		onA, onB := watchTimeline(alice, room), watchTimeline(bob, room)
		onB.until(t, alice.SendText(room, "from A in v"+v))
		mine := bob.SendText(room, "from B in v"+v)
		if !strings.HasSuffix(mine, ":"+b.Name()) {
			t.Errorf("v%s: B's event ID %s does not name B", v, mine)
		}
		onA.until(t, mine)
		bob.MustDo("POST", roomPath(room, "leave"), map[string]any{}, nil)
		waitMember(t, alice, room, bob.UserID, roomdag.MembershipLeave)
	}
}
