package api_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/persistentchat/homeserver/testserver"
)

const authorisedVia = "join_authorised_via_users_server"

func restrictedRule(rule string, allowed ...any) []map[string]any {
	return []map[string]any{{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": rule, "allow": allowed}}}
}

func allowRoom(room string) map[string]any {
	return map[string]any{"type": "m.room_membership", "room_id": room, "via": []string{"localhost"}}
}

// TestRestrictedJoin follows Complement's checkRestrictedRoom on one
// server, for each room version and join rule that has restricted joins.
func TestRestrictedJoin(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	for _, tc := range []struct{ version, rule string }{
		{"8", "restricted"}, {"9", "restricted"}, {"10", "knock_restricted"}, {"11", "restricted"}, {"12", "restricted"}, {"12", "knock_restricted"},
	} {
		t.Run("v"+tc.version+" "+tc.rule, func(t *testing.T) {
			t.Parallel()
			alice, bob := srv.Register("alice"), srv.Register("bob")
			allowed := createRoom(t, alice, map[string]any{"preset": "public_chat"})
			room := createRoom(t, alice, map[string]any{"preset": "public_chat", "room_version": tc.version,
				"initial_state": restrictedRule(tc.rule, allowRoom(allowed))})

			// Not in the allowed room: refused.
			wantErr(t, bob.Do("POST", csAPI+"/join/"+url.PathEscape(room), map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")

			// In the allowed room: the join names alice, who may invite.
			// A client's own join_authorised_via_users_server is ignored.
			joinRoom(t, bob, allowed)
			wantOK(t, bob.Do("POST", csAPI+"/join/"+url.PathEscape(room), map[string]any{authorisedVia: bob.UserID}), nil)
			if c := stateContent(t, alice, room, "m.room.member", bob.UserID); c["membership"] != "join" || c[authorisedVia] != alice.UserID {
				t.Fatalf("bob's restricted join = %v, want it authorised via %s", c, alice.UserID)
			}

			// Joining again to change one's name needs no authoriser, and
			// one the client sends is dropped (Complement sends "unused").
			putState(t, bob, room, "m.room.member", bob.UserID, map[string]any{"membership": "join", "displayname": "Bobby", authorisedVia: "unused"})
			if c := stateContent(t, alice, room, "m.room.member", bob.UserID); c["displayname"] != "Bobby" || c[authorisedVia] != nil {
				t.Errorf("after the name change bob's member content = %v", c)
			}

			// Left the allowed room: refused again.
			leaveRoom(t, bob, room)
			leaveRoom(t, bob, allowed)
			wantErr(t, bob.Do("POST", roomPath(room, "join"), map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")

			// Invited: joins without an authoriser.
			inviteUser(t, alice, room, bob.UserID)
			wantOK(t, bob.Do("POST", roomPath(room, "join"), map[string]any{}), nil)
			if c := stateContent(t, alice, room, "m.room.member", bob.UserID); c["membership"] != "join" || c[authorisedVia] != nil {
				t.Errorf("bob's invited join = %v, want no authoriser", c)
			}
			leaveRoom(t, bob, room)
			joinRoom(t, bob, allowed)

			// Mangled allow lists allow nobody.
			for _, allow := range []any{[]any{"invalid"}, "invalid", []any{map[string]any{"type": "m.room_membership", "room_id": 42}}} {
				putState(t, alice, room, "m.room.join_rules", "", map[string]any{"join_rule": tc.rule, "allow": allow})
				wantErr(t, bob.Do("POST", csAPI+"/join/"+url.PathEscape(room), map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")
			}
			// A bad entry beside a good one does not spoil the good one.
			putState(t, alice, room, "m.room.join_rules", "", map[string]any{"join_rule": tc.rule, "allow": []any{"invalid", allowRoom(allowed)}})
			joinRoom(t, bob, room)

			// Banned: refused though in the allowed room.
			wantOK(t, alice.Do("POST", roomPath(room, "ban"), map[string]any{"user_id": bob.UserID}), nil)
			wantErr(t, bob.Do("POST", roomPath(room, "join"), map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")
		})
	}
}

// TestRestrictedJoinAuthoriser: the authorising user is the local member
// with the highest power level who may invite (v12 creators first), then
// the lowest user ID; with nobody able to invite the join cannot be
// granted.
func TestRestrictedJoinAuthoriser(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob, carol, dave, erin := srv.Register("alice"), srv.Register("bob"), srv.Register("carol"), srv.Register("dave"), srv.Register("erin")
	allowed := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	for _, c := range []*testserver.Client{bob, carol, dave, erin} {
		joinRoom(t, c, allowed)
	}
	// authoriser joins c to room and returns the authoriser, as a member
	// of the room (reader) sees the join.
	authoriser := func(room string, c, reader *testserver.Client) any {
		t.Helper()
		joinRoom(t, c, room)
		a := stateContent(t, reader, room, "m.room.member", c.UserID)[authorisedVia]
		leaveRoom(t, c, room)
		return a
	}
	lower := func(a, b string) string {
		if a < b {
			return a
		}
		return b
	}

	// v11: alice (100) until she leaves; then the lower user ID of the
	// two moderators; then, with only dave (who may not invite) left,
	// nobody.
	room := createRoom(t, alice, map[string]any{"room_version": "11", "initial_state": restrictedRule("restricted", allowRoom(allowed)),
		"power_level_content_override": map[string]any{"invite": 50, "users": map[string]any{alice.UserID: 100, bob.UserID: 50, carol.UserID: 50}}})
	for _, c := range []*testserver.Client{bob, carol, dave} {
		inviteUser(t, alice, room, c.UserID)
		joinRoom(t, c, room)
	}
	if got := authoriser(room, erin, dave); got != alice.UserID {
		t.Errorf("authoriser %v, want alice %s", got, alice.UserID)
	}
	leaveRoom(t, alice, room)
	if got, want := authoriser(room, erin, dave), lower(bob.UserID, carol.UserID); got != want {
		t.Errorf("authoriser %v, want %s", got, want)
	}
	leaveRoom(t, bob, room)
	leaveRoom(t, carol, room)
	wantErr(t, erin.Do("POST", roomPath(room, "join"), map[string]any{}), http.StatusBadRequest, "M_UNABLE_TO_GRANT_JOIN")

	// v12: a creator, whose power is above any level, comes first.
	room = createRoom(t, alice, map[string]any{"room_version": "12", "initial_state": restrictedRule("restricted", allowRoom(allowed)),
		"power_level_content_override": map[string]any{"invite": 50, "users": map[string]any{bob.UserID: 100}}})
	inviteUser(t, alice, room, bob.UserID)
	joinRoom(t, bob, room)
	if got := authoriser(room, erin, bob); got != alice.UserID {
		t.Errorf("v12 authoriser %v, want the creator %s", got, alice.UserID)
	}
	leaveRoom(t, alice, room)
	if got := authoriser(room, erin, bob); got != bob.UserID {
		t.Errorf("v12 authoriser %v, want %s", got, bob.UserID)
	}
}

// TestRestrictedJoinOtherPaths: a restricted join sent as PUT
// /state/m.room.member is authorised like one through /join; invites to
// restricted rooms work; in a knock_restricted room a user in no allowed
// room may knock; elsewhere a client's join_authorised_via_users_server is
// dropped.
func TestRestrictedJoinOtherPaths(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob, carol := srv.Register("alice"), srv.Register("bob"), srv.Register("carol")
	allowed := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, bob, allowed)
	room := createRoom(t, alice, map[string]any{"room_version": "10", "initial_state": restrictedRule("knock_restricted", allowRoom(allowed))})

	putState(t, bob, room, "m.room.member", bob.UserID, map[string]any{"membership": "join"})
	if c := stateContent(t, alice, room, "m.room.member", bob.UserID); c["membership"] != "join" || c[authorisedVia] != alice.UserID {
		t.Errorf("bob's join by PUT state = %v", c)
	}
	r := carol.Do("PUT", roomPath(room, "state", "m.room.member", carol.UserID), map[string]any{"membership": "join"})
	wantErr(t, r, http.StatusForbidden, "M_FORBIDDEN")
	if !strings.Contains(string(r.Body), "knock") {
		t.Errorf("refusal does not mention knocking: %s", r.Body)
	}
	mustKnock(t, carol, room, "not in the space")
	inviteUser(t, alice, room, carol.UserID)
	joinRoom(t, carol, room)
	if c := stateContent(t, alice, room, "m.room.member", carol.UserID); c[authorisedVia] != nil {
		t.Errorf("carol's invited join = %v", c)
	}

	// A knocker who joins an allowed room may join without an invite.
	dave := srv.Register("dave")
	mustKnock(t, dave, room, "")
	joinRoom(t, dave, allowed)
	joinRoom(t, dave, room)
	if c := stateContent(t, alice, room, "m.room.member", dave.UserID); c["membership"] != "join" || c[authorisedVia] != alice.UserID {
		t.Errorf("dave's join after knocking = %v", c)
	}

	// A public room: whatever the client sends is dropped.
	public := createRoom(t, alice, map[string]any{"preset": "public_chat", "room_version": "10"})
	wantOK(t, bob.Do("POST", csAPI+"/join/"+url.PathEscape(public), map[string]any{authorisedVia: alice.UserID}), nil)
	putState(t, bob, public, "m.room.member", bob.UserID, map[string]any{"membership": "join", "displayname": "B", authorisedVia: "@x:elsewhere.example"})
	if c := stateContent(t, alice, public, "m.room.member", bob.UserID); c[authorisedVia] != nil || c["displayname"] != "B" {
		t.Errorf("public room member content = %v", c)
	}
	// Also in a member event about someone else.
	wantOK(t, alice.Do("PUT", roomPath(public, "state", "m.room.member", carol.UserID),
		map[string]any{"membership": "invite", authorisedVia: "unused"}), nil)
	if c := stateContent(t, alice, public, "m.room.member", carol.UserID); c["membership"] != "invite" || c[authorisedVia] != nil {
		t.Errorf("carol's invite content = %v", c)
	}
}
