package roomdag

import (
	"fmt"
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
