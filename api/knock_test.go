package api_test

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/testserver"
)

// membershipSync is the part of a /sync response the knock and restricted
// join tests read.
type membershipSync struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline struct {
				Events []clientEvent `json:"events"`
			} `json:"timeline"`
			State struct {
				Events []clientEvent `json:"events"`
			} `json:"state"`
			Summary map[string]any `json:"summary"`
		} `json:"join"`
		Invite map[string]struct {
			InviteState struct {
				Events []clientEvent `json:"events"`
			} `json:"invite_state"`
		} `json:"invite"`
		Knock map[string]struct {
			KnockState *struct {
				Events []clientEvent `json:"events"`
			} `json:"knock_state"`
		} `json:"knock"`
		Leave map[string]struct {
			Timeline struct {
				Events []clientEvent `json:"events"`
			} `json:"timeline"`
		} `json:"leave"`
	} `json:"rooms"`
}

// syncMemberships is /sync?timeout=0, incremental when since is set.
func syncMemberships(t testing.TB, c *testserver.Client, since string) membershipSync {
	t.Helper()
	q := "timeout=0"
	if since != "" {
		q += "&since=" + url.QueryEscape(since)
	}
	var out membershipSync
	wantOK(t, c.Do("GET", csAPI+"/sync?"+q, nil), &out)
	return out
}

// memberIn finds user's m.room.member event in a list.
func memberIn(evs []clientEvent, user string) *clientEvent {
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Type == "m.room.member" && evs[i].StateKey != nil && *evs[i].StateKey == user {
			return &evs[i]
		}
	}
	return nil
}

func knockOn(c *testserver.Client, roomOrAlias string, query string, body any) *testserver.Response {
	p := csAPI + "/knock/" + url.PathEscape(roomOrAlias)
	if query != "" {
		p += "?" + query
	}
	return c.Do("POST", p, body)
}

func mustKnock(t testing.TB, c *testserver.Client, roomOrAlias, reason string) string {
	t.Helper()
	body := map[string]any{}
	if reason != "" {
		body["reason"] = reason
	}
	var out struct {
		RoomID string `json:"room_id"`
	}
	wantOK(t, knockOn(c, roomOrAlias, "", body), &out)
	if out.RoomID == "" {
		t.Fatal("knock answered no room_id")
	}
	return out.RoomID
}

// TestKnockLifecycle follows Complement's knockingBetweenTwoUsersTest on
// one server: a knock is refused until the join rule allows it, shows in
// the knocker's rooms.knock and in the members' timeline, and moves to
// rooms.leave when refused or withdrawn and to rooms.invite when accepted.
func TestKnockLifecycle(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	wantOK(t, bob.Do("PUT", csAPI+"/profile/"+url.PathEscape(bob.UserID)+"/displayname", map[string]any{"displayname": "Bobby"}), nil)
	room := createRoom(t, alice, map[string]any{"preset": "private_chat", "room_version": "7", "name": "Knock knock",
		"room_alias_name": "knockers"})

	// Join rule invite: no knocking, no joining.
	wantErr(t, knockOn(bob, room, "", map[string]any{"reason": "may I?"}), http.StatusForbidden, "M_FORBIDDEN")
	putState(t, alice, room, "m.room.join_rules", "", map[string]any{"join_rule": "knock"})
	wantErr(t, bob.Do("POST", csAPI+"/join/"+url.PathEscape(room), map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")

	aliceSince := syncMemberships(t, alice, "").NextBatch
	bobSince := syncMemberships(t, bob, "").NextBatch

	// Knocking by alias, with a reason and via: answers the room ID.
	var out struct {
		RoomID string `json:"room_id"`
	}
	wantOK(t, knockOn(bob, "#knockers:localhost", "via=localhost", map[string]any{"reason": "let me in"}), &out)
	if out.RoomID != room {
		t.Fatalf("knock answered room_id %q, want %s", out.RoomID, room)
	}

	// The knocker's rooms.knock: the stripped state and the knock.
	s := syncMemberships(t, bob, bobSince)
	kr, ok := s.Rooms.Knock[room]
	if !ok || kr.KnockState == nil {
		t.Fatalf("no rooms.knock.%s.knock_state in %+v", room, s.Rooms)
	}
	if _, ok := s.Rooms.Join[room]; ok {
		t.Errorf("knocked room also in rooms.join")
	}
	evs := kr.KnockState.Events
	for _, typ := range []string{"m.room.create", "m.room.join_rules", "m.room.name"} {
		if stateEvent(evs, typ, "") == nil {
			t.Errorf("knock_state lacks %s: %v", typ, evs)
		}
	}
	k := memberIn(evs, bob.UserID)
	if k == nil || k.membership() != "knock" || k.Content["reason"] != "let me in" || k.Sender != bob.UserID {
		t.Fatalf("knock_state's knock = %+v", k)
	}
	n := 0
	for _, ev := range evs {
		if ev.Type == "m.room.member" && ev.StateKey != nil && *ev.StateKey == bob.UserID {
			n++
		}
	}
	if n != 1 {
		t.Errorf("knock_state holds %d member events of the knocker, want 1: %v", n, evs)
	}
	if jr := stateEvent(evs, "m.room.join_rules", ""); jr == nil || jr.Content["join_rule"] != "knock" {
		t.Errorf("knock_state join rule = %+v", jr)
	}
	bobSince = s.NextBatch

	// The members see the knock, with the knocker's profile and reason.
	as := syncMemberships(t, alice, aliceSince)
	seen := memberIn(as.Rooms.Join[room].Timeline.Events, bob.UserID)
	if seen == nil || seen.membership() != "knock" || seen.Content["reason"] != "let me in" || seen.Content["displayname"] != "Bobby" {
		t.Fatalf("alice's timeline shows bob's knock as %+v", seen)
	}
	// Knockers are neither joined nor invited: the room summary counts
	// them in neither, nor makes them heroes (spec: m.heroes).
	sum := as.Rooms.Join[room].Summary
	if heroes, ok := sum["m.heroes"].([]any); !ok || len(heroes) != 0 || sum["m.joined_member_count"] != 1.0 || sum["m.invited_member_count"] != 0.0 {
		t.Errorf("alice's room summary with bob knocking = %v", sum)
	}
	var members struct {
		Chunk []clientEvent `json:"chunk"`
	}
	wantOK(t, alice.Do("GET", roomPath(room, "members")+"?membership=knock", nil), &members)
	if len(members.Chunk) != 1 || *members.Chunk[0].StateKey != bob.UserID {
		t.Errorf("members?membership=knock = %v", members.Chunk)
	}
	var summary struct {
		Membership string `json:"membership"`
		JoinRule   string `json:"join_rule"`
	}
	wantOK(t, bob.Do("GET", "/_matrix/client/v1/room_summary/"+url.PathEscape(room), nil), &summary)
	if summary.Membership != "knock" || summary.JoinRule != "knock" {
		t.Errorf("knocker's room summary = %+v", summary)
	}

	// Knocking again makes a new knock.
	mustKnock(t, bob, room, "really, let me in")
	if c := stateContent(t, alice, room, "m.room.member", bob.UserID); c["reason"] != "really, let me in" {
		t.Errorf("second knock's content = %v", c)
	}

	// Refused (kicked): the knock moves to rooms.leave.
	wantOK(t, alice.Do("POST", roomPath(room, "kick"), map[string]any{"user_id": bob.UserID, "reason": "no"}), nil)
	s = syncMemberships(t, bob, bobSince)
	if _, ok := s.Rooms.Knock[room]; ok {
		t.Errorf("refused knock still in rooms.knock")
	}
	if l := memberIn(s.Rooms.Leave[room].Timeline.Events, bob.UserID); l == nil || l.membership() != "leave" || l.Sender != alice.UserID {
		t.Fatalf("after the kick, bob's rooms.leave timeline = %v", s.Rooms.Leave[room].Timeline.Events)
	}

	// Withdrawn (left): rooms.leave too.
	mustKnock(t, bob, room, "")
	bobSince = syncMemberships(t, bob, "").NextBatch
	leaveRoom(t, bob, room)
	s = syncMemberships(t, bob, bobSince)
	if l := memberIn(s.Rooms.Leave[room].Timeline.Events, bob.UserID); l == nil || l.membership() != "leave" || l.Sender != bob.UserID {
		t.Fatalf("after withdrawing, bob's rooms.leave timeline = %v", s.Rooms.Leave[room].Timeline.Events)
	}

	// Accepted (invited): rooms.invite, and then bob may join.
	mustKnock(t, bob, room, "third time lucky")
	bobSince = syncMemberships(t, bob, "").NextBatch
	inviteUser(t, alice, room, bob.UserID)
	s = syncMemberships(t, bob, bobSince)
	if inv := memberIn(s.Rooms.Invite[room].InviteState.Events, bob.UserID); inv == nil || inv.membership() != "invite" {
		t.Fatalf("after the invite, bob's rooms.invite = %+v", s.Rooms.Invite)
	}
	if _, ok := s.Rooms.Knock[room]; ok {
		t.Errorf("accepted knock still in rooms.knock")
	}
	wantErr(t, knockOn(bob, room, "", map[string]any{}), http.StatusForbidden, "M_FORBIDDEN") // invited
	joinRoom(t, bob, room)
	wantErr(t, knockOn(bob, room, "", map[string]any{}), http.StatusForbidden, "M_FORBIDDEN") // joined
	wantOK(t, alice.Do("POST", roomPath(room, "ban"), map[string]any{"user_id": bob.UserID}), nil)
	wantErr(t, knockOn(bob, room, "", map[string]any{}), http.StatusForbidden, "M_FORBIDDEN") // banned
}

// TestKnockRefused: the errors of POST /knock.
func TestKnockRefused(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	knockRule := []map[string]any{{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "knock"}}}
	knockRestricted := []map[string]any{{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "knock_restricted"}}}
	v6 := createRoom(t, alice, map[string]any{"room_version": "6", "initial_state": knockRule})
	v8 := createRoom(t, alice, map[string]any{"room_version": "8", "initial_state": knockRestricted})
	public := createRoom(t, alice, map[string]any{"room_version": "10", "preset": "public_chat"})
	open := createRoom(t, alice, map[string]any{"room_version": "7", "initial_state": knockRule})
	for _, tc := range []struct {
		name, room, query string
		body              any
		status            int
		code              string
	}{
		{"room version without knocking", v6, "", map[string]any{}, 403, "M_FORBIDDEN"},
		{"knock_restricted before v10", v8, "", map[string]any{}, 403, "M_FORBIDDEN"},
		{"public room", public, "", map[string]any{}, 403, "M_FORBIDDEN"},
		{"unknown room", "!nowhere:localhost", "", map[string]any{}, 404, "M_NOT_FOUND"},
		{"room of an unreachable server", "!elsewhere:127.0.0.1:1", "server_name=127.0.0.1:1", map[string]any{}, 502, "M_UNKNOWN"},
		{"unknown alias", "#nobody:localhost", "", map[string]any{}, 404, "M_NOT_FOUND"},
		{"neither ID nor alias", "knock-knock", "", map[string]any{}, 400, "M_INVALID_PARAM"},
		{"malformed room ID", "!", "", map[string]any{}, 400, "M_INVALID_PARAM"},
		{"reason not a string", open, "", map[string]any{"reason": 42}, 400, "M_BAD_JSON"},
		{"body not JSON", open, "", "{knock", 400, "M_NOT_JSON"},
		{"body not an object", open, "", []int{1}, 400, "M_BAD_JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, knockOn(bob, tc.room, tc.query, tc.body), tc.status, tc.code)
		})
	}
	wantErr(t, knockOn(srv.Anonymous(), open, "", map[string]any{}), http.StatusUnauthorized, "M_MISSING_TOKEN")
	// None of the refusals made an event.
	for _, room := range []string{v6, v8, public, open} {
		if st := stateEvent(roomState(t, alice, room), "m.room.member", bob.UserID); st != nil {
			t.Errorf("%s: a refused knock left %v", room, st)
		}
	}
}

// TestKnockRestricted: a knock_restricted room (v10+) takes knocks, and a
// v12 knock_state carries the whole m.room.create event (MSC4311).
func TestKnockRestricted(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	for _, v := range []string{"10", "11", "12"} {
		t.Run("v"+v, func(t *testing.T) {
			room := createRoom(t, alice, map[string]any{"room_version": v, "initial_state": []map[string]any{{
				"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "knock_restricted", "allow": []any{}},
			}}})
			since := syncMemberships(t, bob, "").NextBatch
			mustKnock(t, bob, room, "hello")
			s := syncMemberships(t, bob, since)
			kr := s.Rooms.Knock[room]
			if kr.KnockState == nil {
				t.Fatalf("no knock_state for %s: %+v", room, s.Rooms)
			}
			create := stateEvent(kr.KnockState.Events, "m.room.create", "")
			if create == nil {
				t.Fatalf("knock_state lacks m.room.create: %v", kr.KnockState.Events)
			}
			if full := create.OriginServerTS != 0; full != (v == "12") {
				t.Errorf("v%s: m.room.create in knock_state is the full event: %v", v, full)
			}
		})
	}
}

// TestKnockWakesLongPoll: a knock alone ends the knocker's long-poll.
func TestKnockWakesLongPoll(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	room := createRoom(t, alice, map[string]any{"room_version": "7", "initial_state": []map[string]any{{
		"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "knock"},
	}}})
	other := loginAgain(t, srv, bob)
	srv.Settle()
	since := syncMemberships(t, bob, "").NextBatch
	got := make(chan membershipSync, 1)
	go func() {
		var s membershipSync
		r := bob.Do("GET", csAPI+"/sync?timeout=600000&since="+url.QueryEscape(since), nil)
		_ = r.JSON(&s)
		got <- s
	}()
	waitParked(srv, got)
	mustKnock(t, other, room, "")
	select {
	case s := <-got:
		if s.Rooms.Knock[room].KnockState == nil {
			t.Fatalf("long-poll answered without the knock: %+v", s.Rooms)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the knock did not end the long-poll")
	}
}

// TestKnockRoomInPublicDirectory: Complement's
// TestKnockRoomsInPublicRoomsDirectory.
func TestKnockRoomInPublicDirectory(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	for _, tc := range []struct{ version, rule string }{{"7", "knock"}, {"10", "knock_restricted"}} {
		room := createRoom(t, alice, map[string]any{"preset": "private_chat", "room_version": tc.version})
		putState(t, alice, room, "m.room.join_rules", "", map[string]any{"join_rule": tc.rule})
		wantOK(t, alice.Do("PUT", csAPI+"/directory/list/room/"+url.PathEscape(room), map[string]any{"visibility": "public"}), nil)
		var out struct {
			Chunk []struct {
				RoomID   string `json:"room_id"`
				JoinRule string `json:"join_rule"`
			} `json:"chunk"`
		}
		wantOK(t, alice.Do("GET", csAPI+"/publicRooms", nil), &out)
		found := false
		for _, c := range out.Chunk {
			if c.RoomID == room {
				found = true
				if c.JoinRule != tc.rule {
					t.Errorf("%s: directory join_rule %q", tc.rule, c.JoinRule)
				}
			}
		}
		if !found {
			t.Errorf("%s room not in the directory: %+v", tc.rule, out.Chunk)
		}
	}
}
