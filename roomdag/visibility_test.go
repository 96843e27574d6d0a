package roomdag

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func testEvent(t *testing.T, typ string, stateKey *string, sender, content string) *Event {
	t.Helper()
	v, _ := LookupRoomVersion("11")
	sk := ""
	if stateKey != nil {
		sk = fmt.Sprintf(`"state_key":%q,`, *stateKey)
	}
	ev, err := NewEventFromJSON(v, []byte(fmt.Sprintf(`{"type":%q,%s"sender":%q,"room_id":"!r:x","content":%s,"prev_events":[],"auth_events":[],"depth":5,"origin_server_ts":1}`,
		typ, sk, sender, content)))
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func TestCanSee(t *testing.T) {
	bob := "@bob:x"
	str := func(s string) *string { return &s }
	msg := testEvent(t, TypeMessage, nil, "@alice:x", `{"body":"hi"}`)
	state := func(vis, bobMembership string) StateMap {
		m := StateMap{}
		if vis != "" {
			m = m.With(testEvent(t, TypeHistoryVisibility, str(""), "@alice:x", fmt.Sprintf(`{"history_visibility":%q}`, vis)))
		}
		if bobMembership != "" {
			m = m.With(testEvent(t, TypeMember, str(bob), bob, fmt.Sprintf(`{"membership":%q}`, bobMembership)))
		}
		return m
	}
	for _, tc := range []struct {
		name    string
		ev      *Event
		before  StateMap
		current string
		want    bool
	}{
		{"world readable, stranger", msg, state("world_readable", ""), "", true},
		{"shared, joined at event", msg, state("shared", "join"), "leave", true},
		{"shared, joined now only", msg, state("shared", ""), "join", true},
		{"shared, never joined", msg, state("shared", ""), "", false},
		{"shared, left before, not joined now", msg, state("shared", "leave"), "leave", false},
		{"default is shared", msg, state("", ""), "join", true},
		{"invited, invited at event", msg, state("invited", "invite"), "join", true},
		{"invited, not yet invited", msg, state("invited", ""), "join", false},
		{"joined, joined at event", msg, state("joined", "join"), "join", true},
		{"joined, before the join", msg, state("joined", ""), "join", false},
		{"joined, own join", testEvent(t, TypeMember, str(bob), bob, `{"membership":"join"}`), state("joined", "invite"), "join", true},
		{"joined, own leave", testEvent(t, TypeMember, str(bob), bob, `{"membership":"leave"}`), state("joined", "join"), "leave", true},
		{"joined, own invite rejected", testEvent(t, TypeMember, str(bob), bob, `{"membership":"leave"}`), state("joined", "invite"), "leave", true},
		{"joined, own invite withdrawn", testEvent(t, TypeMember, str(bob), "@alice:x", `{"membership":"leave"}`), state("joined", "invite"), "leave", true},
		{"joined, own knock refused", testEvent(t, TypeMember, str(bob), "@alice:x", `{"membership":"leave"}`), state("joined", "knock"), "leave", true},
		{"shared, own knock withdrawn", testEvent(t, TypeMember, str(bob), bob, `{"membership":"leave"}`), state("shared", "knock"), "leave", true},
		{"shared, a message while knocking", msg, state("shared", "knock"), "leave", false},
		{"joined, own ban after leaving", testEvent(t, TypeMember, str(bob), "@alice:x", `{"membership":"ban"}`), state("joined", "leave"), "ban", false},
		{"visibility change seen by the less restrictive side",
			testEvent(t, TypeHistoryVisibility, str(""), "@alice:x", `{"history_visibility":"world_readable"}`), state("joined", ""), "", true},
	} {
		if got := CanSee(tc.ev, tc.before, UserID(bob), tc.current); got != tc.want {
			t.Errorf("%s: CanSee = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestMembershipTrailAt(t *testing.T) {
	trail := MembershipTrail{{Pos: 10, Membership: MembershipInvite}, {Pos: 20, Membership: MembershipJoin}, {Pos: 30, Membership: MembershipLeave}, {Pos: 40, Membership: MembershipJoin}}
	for _, tc := range []struct {
		pos  StreamPos
		want string
	}{{1, MembershipLeave}, {9, MembershipLeave}, {10, MembershipInvite}, {19, MembershipInvite}, {20, MembershipJoin},
		{29, MembershipJoin}, {30, MembershipLeave}, {39, MembershipLeave}, {40, MembershipJoin}, {1000, MembershipJoin}} {
		if got := trail.At(tc.pos); got != tc.want {
			t.Errorf("At(%d) = %s, want %s", tc.pos, got, tc.want)
		}
	}
	if got := MembershipTrail(nil).At(5); got != MembershipLeave {
		t.Errorf("empty trail At = %s, want leave (never a member)", got)
	}
}

// TestClientJSONErasedSender: an erased sender's event is served redacted
// to a viewer not joined at it, as Synapse's _check_membership says
// "joined" (the viewer's own membership events: the more joined of old and
// new, and a leave ending a join or an invite is not joined); whole to the
// others, and whole where the viewer's trail is unknown (state sections).
func TestClientJSONErasedSender(t *testing.T) {
	bob := "@bob:x"
	str := func(s string) *string { return &s }
	at := func(ev *Event, pos StreamPos, unsigned string) *StoredEvent {
		return &StoredEvent{Event: ev, Pos: pos, Unsigned: []byte(unsigned)}
	}
	msg := testEvent(t, TypeMessage, nil, "@alice:x", `{"body":"hi"}`)
	member := func(m string) *Event {
		return testEvent(t, TypeMember, str(bob), "@alice:x", fmt.Sprintf(`{"membership":%q,"reason":"secret"}`, m))
	}
	prev := func(m string) string {
		return fmt.Sprintf(`{"prev_content":{"membership":%q},"replaces_state":"$old"}`, m)
	}
	joinedFrom20 := MembershipTrail{{Pos: 20, Membership: MembershipJoin}}
	for _, tc := range []struct {
		name   string
		ev     *StoredEvent
		trail  MembershipTrail
		noView bool
		whole  bool
	}{
		{"message before the viewer joined", at(msg, 10, ""), joinedFrom20, false, false},
		{"message while joined", at(msg, 30, ""), joinedFrom20, false, true},
		{"never a member", at(msg, 30, ""), nil, false, false},
		{"no trail: a state section", at(msg, 10, ""), nil, true, true},
		{"viewer invited by the erased sender", at(member(MembershipInvite), 20, ""), MembershipTrail{{20, MembershipInvite}}, false, false},
		{"viewer kicked by the erased sender", at(member(MembershipLeave), 30, prev(MembershipJoin)), MembershipTrail{{20, MembershipJoin}, {30, MembershipLeave}}, false, false},
		{"invite withdrawn by the erased sender", at(member(MembershipLeave), 30, prev(MembershipInvite)), MembershipTrail{{20, MembershipInvite}, {30, MembershipLeave}}, false, false},
		{"viewer banned by the erased sender while joined", at(member(MembershipBan), 30, prev(MembershipJoin)), MembershipTrail{{30, MembershipBan}}, false, true},
		{"viewer banned by the erased sender after leaving", at(member(MembershipBan), 30, prev(MembershipLeave)), MembershipTrail{{30, MembershipBan}}, false, false},
	} {
		v := ClientView{NowMS: 5, UserID: UserID(bob), Erased: map[UserID]bool{"@alice:x": true}}
		if !tc.noView {
			v.Memberships = map[RoomID]MembershipTrail{"!r:x": tc.trail}
		}
		var got clientEvent
		if err := json.Unmarshal(tc.ev.ClientJSON(v), &got); err != nil {
			t.Fatal(err)
		}
		whole := string(got.Content) == string(tc.ev.Content())
		if whole != tc.whole {
			t.Errorf("%s: content %s, want whole %v", tc.name, got.Content, tc.whole)
		}
		if !whole && tc.ev.Type() == TypeMember && tc.ev.Membership() != exactString(got.Content, "membership") {
			t.Errorf("%s: redacted member content %s lost its membership", tc.name, got.Content)
		}
		if _, ok := got.Unsigned["prev_content"]; ok && !whole {
			t.Errorf("%s: redacted copy keeps prev_content", tc.name)
		}
		if want := len(tc.ev.Unsigned) > 0; want && got.Unsigned["replaces_state"] != "$old" {
			t.Errorf("%s: replaces_state %v, want it kept", tc.name, got.Unsigned["replaces_state"])
		}
		// Nobody erased: always whole.
		v.Erased = nil
		if b := tc.ev.ClientJSON(v); !json.Valid(b) || !strings.Contains(string(b), string(tc.ev.Content())) {
			t.Errorf("%s: without erasure %s", tc.name, b)
		}
	}
}

// TestServerCanSee: which servers may be sent an event over federation.
// Alice is on a.org (the room's server), bob on b.org, carol on c.org.
func TestServerCanSee(t *testing.T) {
	str := func(s string) *string { return &s }
	member := func(user, m string) *Event {
		return testEvent(t, TypeMember, str(user), user, fmt.Sprintf(`{"membership":%q}`, m))
	}
	vis := func(v string) *Event {
		return testEvent(t, TypeHistoryVisibility, str(""), "@alice:a.org", fmt.Sprintf(`{"history_visibility":%q}`, v))
	}
	msg := testEvent(t, TypeMessage, nil, "@alice:a.org", `{"body":"hi"}`)
	st := func(evs ...*Event) StateMap { return NewStateMap(evs...) }
	alice := member("@alice:a.org", "join")
	for _, tc := range []struct {
		name            string
		ev              *Event
		before, current StateMap
		server          ServerName
		want            bool
	}{
		{"world readable, server never in the room", msg, st(vis("world_readable"), alice), st(vis("world_readable"), alice), "c.org", true},
		{"shared, server joined at the event", msg, st(vis("shared"), alice, member("@bob:b.org", "join")), st(vis("shared"), alice), "b.org", true},
		{"shared, server joined later and still in", msg, st(vis("shared"), alice), st(vis("shared"), alice, member("@bob:b.org", "join")), "b.org", true},
		{"shared, server never in the room", msg, st(vis("shared"), alice), st(vis("shared"), alice), "c.org", false},
		{"shared, server left before the event", msg, st(vis("shared"), alice, member("@bob:b.org", "leave")), st(vis("shared"), alice, member("@bob:b.org", "leave")), "b.org", false},
		{"default visibility is shared", msg, st(alice), st(alice, member("@bob:b.org", "join")), "b.org", true},
		{"joined, server joined later", msg, st(vis("joined"), alice), st(vis("joined"), alice, member("@bob:b.org", "join")), "b.org", false},
		{"joined, server joined at the event, left since", msg, st(vis("joined"), alice, member("@bob:b.org", "join")), st(vis("joined"), alice, member("@bob:b.org", "leave")), "b.org", true},
		{"joined, one of several users joined", msg, st(vis("joined"), alice, member("@bob:b.org", "leave"), member("@bo:b.org", "join")), st(vis("joined"), alice), "b.org", true},
		{"invited, server's user invited at the event", msg, st(vis("invited"), alice, member("@bob:b.org", "invite")), st(vis("invited"), alice), "b.org", true},
		{"joined, invited is not enough", msg, st(vis("joined"), alice, member("@bob:b.org", "invite")), st(vis("joined"), alice), "b.org", false},
		{"joined, the server's own join", member("@bob:b.org", "join"), st(vis("joined"), alice), st(vis("joined"), alice, member("@bob:b.org", "join")), "b.org", true},
		{"joined, another server's join", member("@bob:b.org", "join"), st(vis("joined"), alice), st(vis("joined"), alice, member("@bob:b.org", "join")), "c.org", false},
		{"a user of the same name elsewhere does not count", msg, st(vis("joined"), alice, member("@bob:b.org.evil", "join")), st(vis("joined"), alice), "b.org", false},
		{"a change to world_readable is public", vis("world_readable"), st(vis("joined"), alice), st(vis("world_readable"), alice), "c.org", true},
		{"a change away from world_readable is still public", vis("joined"), st(vis("world_readable"), alice), st(vis("joined"), alice), "c.org", true},
	} {
		if got := ServerCanSee(tc.ev, tc.before, tc.current, tc.server); got != tc.want {
			t.Errorf("%s: ServerCanSee(%s) = %v, want %v", tc.name, tc.server, got, tc.want)
		}
	}
}

// TestServerMayAsk: servers in the room now may ask about its whole
// history (and get what they may not see redacted); others only about
// what they may see.
func TestServerMayAsk(t *testing.T) {
	str := func(s string) *string { return &s }
	member := func(user, m string) *Event {
		return testEvent(t, TypeMember, str(user), user, fmt.Sprintf(`{"membership":%q}`, m))
	}
	vis := func(v string) *Event {
		return testEvent(t, TypeHistoryVisibility, str(""), "@alice:a.org", fmt.Sprintf(`{"history_visibility":%q}`, v))
	}
	msg := testEvent(t, TypeMessage, nil, "@alice:a.org", `{"body":"hi"}`)
	st := func(evs ...*Event) StateMap { return NewStateMap(evs...) }
	alice := member("@alice:a.org", "join")
	for _, tc := range []struct {
		name            string
		before, current StateMap
		server          ServerName
		want            bool
	}{
		{"joined now, not at the event", st(vis("joined"), alice), st(vis("joined"), alice, member("@bob:b.org", "join")), "b.org", true},
		{"invited now only", st(vis("joined"), alice), st(vis("joined"), alice, member("@bob:b.org", "invite")), "b.org", false},
		{"left since, joined at the event", st(vis("joined"), alice, member("@bob:b.org", "join")), st(vis("joined"), alice, member("@bob:b.org", "leave")), "b.org", true},
		{"left since, not joined at the event", st(vis("joined"), alice), st(vis("joined"), alice, member("@bob:b.org", "leave")), "b.org", false},
		{"world readable now", st(vis("joined"), alice), st(vis("world_readable"), alice), "c.org", true},
		{"never in a private room", st(vis("joined"), alice), st(vis("joined"), alice), "c.org", false},
	} {
		if got := ServerMayAsk(msg, tc.before, tc.current, tc.server); got != tc.want {
			t.Errorf("%s: ServerMayAsk(%s) = %v, want %v", tc.name, tc.server, got, tc.want)
		}
	}
	// The invitee's server asks about the invite (its /event_auth) in a
	// shared room it has never been in, as Dendrite does; another server
	// may not.
	invite := testEvent(t, TypeMember, str("@bob:b.org"), "@alice:a.org", `{"membership":"invite"}`)
	before, current := st(vis("shared"), alice), st(vis("shared"), alice, invite)
	if !ServerMayAsk(invite, before, current, "b.org") {
		t.Error("the invitee's server may not ask about the invite")
	}
	if ServerMayAsk(invite, before, current, "c.org") {
		t.Error("a server with no user in the room may ask about an invite of another server's user")
	}
}
