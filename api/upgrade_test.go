package api_test

import (
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/testserver"
)

// Room upgrades (spec: client-server API, "Room Upgrades"), the
// expectations of Synapse's behaviour and of SyTest's
// tests/30rooms/60version_upgrade.pl.

func upgradeRaw(c *testserver.Client, room string, body map[string]any) *testserver.Response {
	return c.Do("POST", roomPath(room, "upgrade"), body)
}

// upgrade upgrades room to version and returns the replacement room.
func upgrade(t testing.TB, c *testserver.Client, room, version string) string {
	t.Helper()
	var out struct {
		ReplacementRoom string `json:"replacement_room"`
	}
	wantOK(t, upgradeRaw(c, room, map[string]any{"new_version": version}), &out)
	if out.ReplacementRoom == "" || out.ReplacementRoom == room {
		t.Fatalf("replacement_room %q", out.ReplacementRoom)
	}
	return out.ReplacementRoom
}

func membershipOf(t testing.TB, c *testserver.Client, room, user string) string {
	t.Helper()
	if ev := stateEvent(roomState(t, c, room), "m.room.member", user); ev != nil {
		return ev.membership()
	}
	return ""
}

// TestUpgradeRoom upgrades a public room with everything an upgrade
// carries over, between the versions that differ the most.
func TestUpgradeRoom(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	server := srv.Config.ServerName
	for _, tc := range []struct{ from, to string }{
		{"10", "11"}, // content.creator goes
		{"11", "12"}, // creators leave power levels (MSC4289)
		{"11", "11"}, // same version
		{"12", "12"},
	} {
		t.Run(tc.from+"->"+tc.to, func(t *testing.T) {
			t.Parallel()
			alice, bob, mod := srv.Register("alice"), srv.Register("bob"), srv.Register("mod")
			name := strings.TrimPrefix(strings.Split(alice.UserID, ":")[0], "@")
			alias1 := fmt.Sprintf("#up-%s:%s", name, server)
			alias2 := fmt.Sprintf("#alt-%s:%s", name, server)
			remoteAlias := "#elsewhere:remote.example"
			old := createRoom(t, alice, map[string]any{"preset": "public_chat", "room_version": tc.from,
				"visibility": "public", "name": "Ops", "topic": "incidents"})
			joinRoom(t, bob, old)
			joinRoom(t, mod, old)
			copied := map[string]map[string]any{
				"m.room.avatar":               {"url": "mxc://example.org/abc"},
				"m.room.encryption":           {"algorithm": "m.megolm.v1.aes-sha2"},
				"m.room.server_acl":           {"allow": []any{"*"}, "allow_ip_literals": false, "deny": []any{"evil.example"}},
				"m.room.guest_access":         {"guest_access": "can_join"},
				"m.room.history_visibility":   {"history_visibility": "joined"},
				"org.persistentchat.backchat": {"limit": float64(20)},
			}
			for typ, content := range copied {
				putState(t, alice, old, typ, "", content)
			}
			copied["m.room.name"] = map[string]any{"name": "Ops"}
			copied["m.room.join_rules"] = map[string]any{"join_rule": "public"}
			copied["m.room.topic"] = stateContent(t, alice, old, "m.room.topic", "")
			pl := stateContent(t, alice, old, "m.room.power_levels", "")
			pl["users"].(map[string]any)[mod.UserID] = float64(50)
			putState(t, alice, old, "m.room.power_levels", "", pl)
			banned := "@troll:remote.example"
			putState(t, alice, old, "m.room.member", banned, map[string]any{"membership": "ban", "reason": "spam"})
			for _, a := range []string{alias1, alias2} {
				wantOK(t, alice.Do("PUT", csAPI+"/directory/room/"+url.PathEscape(a), map[string]any{"room_id": old}), nil)
			}
			putState(t, alice, old, "m.room.canonical_alias", "", map[string]any{"alias": alias1, "alt_aliases": []any{alias2, remoteAlias}})
			last := sendText(t, bob, old, "last words")

			repl := upgrade(t, alice, old, tc.to)

			t.Run("tombstone", func(t *testing.T) {
				ev := stateEvent(roomState(t, alice, old), "m.room.tombstone", "")
				if ev == nil || ev.Sender != alice.UserID {
					t.Fatalf("tombstone %v", ev)
				}
				if want := map[string]any{"body": "This room has been replaced", "replacement_room": repl}; !reflect.DeepEqual(ev.Content, want) {
					t.Errorf("tombstone content %v, want %v", ev.Content, want)
				}
			})
			t.Run("create event", func(t *testing.T) {
				create := stateContent(t, alice, repl, "m.room.create", "")
				if create["room_version"] != tc.to {
					t.Errorf("room_version %v", create["room_version"])
				}
				// predecessor.event_id is the last event of the old room
				// before the upgrade (spec: "the last known event"), except
				// in v12, where MSC4291 drops it.
				want := map[string]any{"room_id": old, "event_id": last}
				if tc.to == "12" {
					want = map[string]any{"room_id": old}
				}
				if !reflect.DeepEqual(create["predecessor"], want) {
					t.Errorf("predecessor %v, want %v", create["predecessor"], want)
				}
				if _, ok := create["creator"]; ok {
					t.Errorf("content.creator in a v%s room", tc.to)
				}
				if _, ok := create["m.federate"]; ok {
					t.Errorf("m.federate set on the new room of a federated one")
				}
			})
			t.Run("copied state", func(t *testing.T) {
				for typ, want := range copied {
					if got := stateContent(t, alice, repl, typ, ""); !reflect.DeepEqual(got, want) {
						t.Errorf("%s = %v, want %v", typ, got, want)
					}
				}
				if got := membershipOf(t, alice, repl, banned); got != "ban" {
					t.Errorf("banned user's membership %q in the new room", got)
				}
				if got := stateContent(t, alice, repl, "m.room.member", banned)["reason"]; got != "spam" {
					t.Errorf("ban reason %v", got)
				}
				// A public room invites nobody: everyone may join.
				if got := membershipOf(t, alice, repl, bob.UserID); got != "" {
					t.Errorf("bob's membership %q in a public replacement room", got)
				}
			})
			t.Run("power levels", func(t *testing.T) {
				got := stateContent(t, alice, repl, "m.room.power_levels", "")
				want := stateContent(t, alice, old, "m.room.power_levels", "")
				want["events_default"], want["invite"] = float64(0), float64(0) // as before the lock
				if tc.to == "12" {
					// The upgrader is the new room's creator: not listed.
					delete(want["users"].(map[string]any), alice.UserID)
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("power levels in the new room\n%v\nwant\n%v", got, want)
				}
				if u := got["users"].(map[string]any); u[mod.UserID] != float64(50) {
					t.Errorf("moderator's level %v", u[mod.UserID])
				}
			})
			t.Run("aliases", func(t *testing.T) {
				for _, a := range []string{alias1, alias2} {
					var out struct {
						RoomID string `json:"room_id"`
					}
					wantOK(t, alice.Do("GET", csAPI+"/directory/room/"+url.PathEscape(a), nil), &out)
					if out.RoomID != repl {
						t.Errorf("%s resolves to %s, want %s", a, out.RoomID, repl)
					}
				}
				var aliases struct {
					Aliases []string `json:"aliases"`
				}
				wantOK(t, alice.Do("GET", roomPath(repl, "aliases"), nil), &aliases)
				if want := []string{alias2, alias1}; !slices.Equal(aliases.Aliases, want) {
					t.Errorf("new room's aliases %v, want %v", aliases.Aliases, want)
				}
				wantOK(t, alice.Do("GET", roomPath(old, "aliases"), nil), &aliases)
				if len(aliases.Aliases) != 0 {
					t.Errorf("old room's aliases %v", aliases.Aliases)
				}
				if got, want := stateContent(t, alice, repl, "m.room.canonical_alias", ""),
					(map[string]any{"alias": alias1, "alt_aliases": []any{alias2}}); !reflect.DeepEqual(got, want) {
					t.Errorf("new room's canonical alias %v, want %v", got, want)
				}
				// Aliases of other servers stay behind: they cannot be moved.
				if got, want := stateContent(t, alice, old, "m.room.canonical_alias", ""),
					(map[string]any{"alt_aliases": []any{remoteAlias}}); !reflect.DeepEqual(got, want) {
					t.Errorf("old room's canonical alias %v, want %v", got, want)
				}
			})
			t.Run("public directory", func(t *testing.T) {
				for room, want := range map[string]string{old: "private", repl: "public"} {
					var out struct {
						Visibility string `json:"visibility"`
					}
					wantOK(t, alice.Do("GET", csAPI+"/directory/list/room/"+url.PathEscape(room), nil), &out)
					if out.Visibility != want {
						t.Errorf("%s is %s, want %s", room, out.Visibility, want)
					}
				}
			})
			t.Run("old room locked", func(t *testing.T) {
				got := stateContent(t, alice, old, "m.room.power_levels", "")
				if got["events_default"] != float64(50) || got["invite"] != float64(50) {
					t.Errorf("old room's events_default %v, invite %v, want 50", got["events_default"], got["invite"])
				}
				r := bob.Do("PUT", roomPath(old, "send", "m.room.message", "after-upgrade"), map[string]any{"msgtype": "m.text", "body": "hello?"})
				wantErr(t, r, http.StatusForbidden, "M_FORBIDDEN")
				sendText(t, mod, old, "moderators still may")
				joinRoom(t, bob, repl)
				sendText(t, bob, repl, "here instead")
			})
		})
	}
}

// TestUpgradeV12Creators: in v12 the upgrader and the additional creators
// of the request are the new room's creators, unlisted in its power
// levels, and an upgrade needs the creators' power by default.
func TestUpgradeV12Creators(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob, carol := srv.Register("alice"), srv.Register("bob"), srv.Register("carol")

	t.Run("11 to 12 with additional creators", func(t *testing.T) {
		old := createRoom(t, alice, map[string]any{"preset": "public_chat", "room_version": "11",
			"power_level_content_override": map[string]any{"users": map[string]any{alice.UserID: 100, bob.UserID: 100, carol.UserID: 50}}})
		joinRoom(t, bob, old)
		var out struct {
			ReplacementRoom string `json:"replacement_room"`
		}
		wantOK(t, upgradeRaw(alice, old, map[string]any{"new_version": "12", "additional_creators": []string{bob.UserID}}), &out)
		create := stateContent(t, alice, out.ReplacementRoom, "m.room.create", "")
		if want := []any{bob.UserID}; !reflect.DeepEqual(create["additional_creators"], want) {
			t.Errorf("additional_creators %v, want %v", create["additional_creators"], want)
		}
		users := stateContent(t, alice, out.ReplacementRoom, "m.room.power_levels", "")["users"].(map[string]any)
		if want := map[string]any{carol.UserID: float64(50)}; !reflect.DeepEqual(users, want) {
			t.Errorf("users %v, want %v (creators unlisted)", users, want)
		}
		// bob is a creator: he may do what only creators may.
		joinRoom(t, bob, out.ReplacementRoom)
		putState(t, bob, out.ReplacementRoom, "m.room.tombstone", "", map[string]any{"replacement_room": "!elsewhere:" + srv.Config.ServerName, "body": "test"})
	})
	t.Run("additional creators are ignored below 12", func(t *testing.T) {
		old := createRoom(t, alice, map[string]any{"room_version": "10"})
		var out struct {
			ReplacementRoom string `json:"replacement_room"`
		}
		wantOK(t, upgradeRaw(alice, old, map[string]any{"new_version": "11", "additional_creators": "not even a list"}), &out)
		if _, ok := stateContent(t, alice, out.ReplacementRoom, "m.room.create", "")["additional_creators"]; ok {
			t.Error("additional_creators in a v11 room")
		}
	})
	t.Run("only creators may upgrade a v12 room by default", func(t *testing.T) {
		old := createRoom(t, alice, map[string]any{"room_version": "12", "power_level_content_override": map[string]any{"users": map[string]any{bob.UserID: 100}}})
		inviteUser(t, alice, old, bob.UserID)
		joinRoom(t, bob, old)
		wantErr(t, upgradeRaw(bob, old, map[string]any{"new_version": "12"}), http.StatusForbidden, "M_FORBIDDEN")
	})
	t.Run("a non-creator at 150 may, and becomes the creator", func(t *testing.T) {
		// Complement's "non-creator admins can upgrade v12 rooms to v12
		// with different creators": alice, not named, is no creator of
		// the new room.
		old := createRoom(t, alice, map[string]any{"preset": "public_chat", "room_version": "12",
			"power_level_content_override": map[string]any{"users": map[string]any{bob.UserID: 150}}})
		joinRoom(t, bob, old)
		repl := upgrade(t, bob, old, "12")
		if create := getCreate(t, bob, repl); create.Sender != bob.UserID {
			t.Errorf("new room made by %s", create.Sender)
		}
		users := stateContent(t, bob, repl, "m.room.power_levels", "")["users"].(map[string]any)
		if len(users) != 0 {
			t.Errorf("users %v, want none", users)
		}
	})
	t.Run("12 to 11 lists the old creators", func(t *testing.T) {
		old := createRoom(t, alice, map[string]any{"preset": "public_chat", "room_version": "12",
			"power_level_content_override": map[string]any{"users": map[string]any{bob.UserID: 120}}})
		repl := upgrade(t, alice, old, "11")
		users := stateContent(t, alice, repl, "m.room.power_levels", "")["users"].(map[string]any)
		// alice, a creator, may still do everything: 150 is the tombstone's.
		if want := map[string]any{alice.UserID: float64(150), bob.UserID: float64(120)}; !reflect.DeepEqual(users, want) {
			t.Errorf("users %v, want %v", users, want)
		}
		putState(t, alice, repl, "m.room.name", "", map[string]any{"name": "still mine"})
	})
}

func getCreate(t testing.TB, c *testserver.Client, room string) *clientEvent {
	t.Helper()
	ev := stateEvent(roomState(t, c, room), "m.room.create", "")
	if ev == nil {
		t.Fatalf("no m.room.create in %s", room)
	}
	return ev
}

// TestUpgradeModeratorUpgrader: an upgrader below the power to set every
// state event is raised in the new room while its state is copied, then
// put back; the old room's power levels, which they may not change, stay
// (SyTest: "/upgrade preserves the power level of the upgrading user in
// old and new rooms").
func TestUpgradeModeratorUpgrader(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, mod := srv.Register("alice"), srv.Register("mod")
	old := createRoom(t, alice, map[string]any{"preset": "public_chat", "room_version": "11"})
	joinRoom(t, mod, old)
	pl := stateContent(t, alice, old, "m.room.power_levels", "")
	pl["users"].(map[string]any)[mod.UserID] = float64(50)
	pl["events"].(map[string]any)["m.room.tombstone"] = float64(50)
	putState(t, alice, old, "m.room.power_levels", "", pl)
	putState(t, alice, old, "m.room.history_visibility", "", map[string]any{"history_visibility": "invited"}) // needs 100

	repl := upgrade(t, mod, old, "11")
	if got := stateContent(t, mod, repl, "m.room.power_levels", ""); !reflect.DeepEqual(got, pl) {
		t.Errorf("new room's power levels\n%v\nwant\n%v", got, pl)
	}
	if got := stateContent(t, mod, repl, "m.room.history_visibility", "")["history_visibility"]; got != "invited" {
		t.Errorf("history visibility %v", got)
	}
	if got := stateContent(t, mod, old, "m.room.power_levels", ""); !reflect.DeepEqual(got, pl) {
		t.Errorf("old room's power levels changed to %v", got)
	}
	// The unusual case of SyTest's "/upgrade restricts power levels in the
	// old room when the old PLs are unusual": above users_default.
	old2 := createRoom(t, alice, map[string]any{"room_version": "11", "power_level_content_override": map[string]any{"users_default": 80}})
	upgrade(t, alice, old2, "12")
	got := stateContent(t, alice, old2, "m.room.power_levels", "")
	if got["events_default"] != float64(81) || got["invite"] != float64(81) {
		t.Errorf("events_default %v, invite %v, want 81", got["events_default"], got["invite"])
	}
}

// TestUpgradeInvitesMembers: the local members of a room that is not
// public are invited to the new room, and invitations to the old one move
// there too.
func TestUpgradeInvitesMembers(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob, dave, erin := srv.Register("alice"), srv.Register("bob"), srv.Register("dave"), srv.Register("erin")
	old := createRoom(t, alice, map[string]any{"preset": "private_chat", "invite": []string{bob.UserID, dave.UserID, erin.UserID}})
	joinRoom(t, bob, old)
	joinRoom(t, erin, old)
	leaveRoom(t, erin, old)
	repl := upgrade(t, alice, old, "12")
	for user, want := range map[string]string{bob.UserID: "invite", dave.UserID: "invite", erin.UserID: "", alice.UserID: "join"} {
		if got := membershipOf(t, alice, repl, user); got != want {
			t.Errorf("%s is %q in the new room, want %q", user, got, want)
		}
	}
	// dave's invitation moved: the old one is withdrawn.
	if got := membershipOf(t, alice, old, dave.UserID); got != "leave" {
		t.Errorf("dave is %q in the old room, want leave", got)
	}
	if got := membershipOf(t, alice, old, bob.UserID); got != "join" {
		t.Errorf("bob is %q in the old room", got)
	}
	joinRoom(t, bob, repl)
	joinRoom(t, dave, repl)
}

// TestUpgradeCopiesUserState: a user who joins the replacement room gets
// their push rules, tags and m.direct entries of the old room for it; the
// upgrader, who joins it as it is made, at once.
func TestUpgradeCopiesUserState(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	old := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, bob, old)
	other := createRoom(t, bob, map[string]any{})
	for _, c := range []*testserver.Client{alice, bob} {
		wantOK(t, c.Do("PUT", csAPI+"/pushrules/global/room/"+url.PathEscape(old), map[string]any{"actions": []any{}}), nil)
		// Element mutes a room with an override rule named after it.
		wantOK(t, c.Do("PUT", csAPI+"/pushrules/global/override/"+url.PathEscape(old), map[string]any{"actions": []any{},
			"conditions": []any{map[string]any{"kind": "event_match", "key": "room_id", "pattern": old}}}), nil)
		wantOK(t, c.Do("PUT", csAPI+"/user/"+url.PathEscape(c.UserID)+"/rooms/"+url.PathEscape(old)+"/tags/m.favourite", map[string]any{"order": 0.25}), nil)
		wantOK(t, c.Do("PUT", csAPI+"/user/"+url.PathEscape(c.UserID)+"/account_data/m.direct",
			map[string]any{"@peer:example.org": []string{old, other}, "@else:example.org": []string{other}}), nil)
	}
	repl := upgrade(t, alice, old, "11")

	ruleIDs := func(c *testserver.Client, kind string) []string {
		var rules map[string][]struct {
			RuleID     string `json:"rule_id"`
			Conditions []struct {
				Pattern string `json:"pattern"`
			} `json:"conditions"`
		}
		wantOK(t, c.Do("GET", csAPI+"/pushrules/global/", nil), &rules)
		var out []string
		for _, r := range rules[kind] {
			if kind == "override" && r.RuleID == repl && (len(r.Conditions) != 1 || r.Conditions[0].Pattern != repl) {
				t.Errorf("copied override rule %+v does not match the new room", r)
			}
			out = append(out, r.RuleID)
		}
		return out
	}
	hasCopy := func(c *testserver.Client) []string {
		var missing []string
		for _, kind := range []string{"room", "override"} {
			if !slices.Contains(ruleIDs(c, kind), repl) {
				missing = append(missing, kind+" rule")
			}
		}
		var tags struct {
			Tags map[string]map[string]any `json:"tags"`
		}
		wantOK(t, c.Do("GET", csAPI+"/user/"+url.PathEscape(c.UserID)+"/rooms/"+url.PathEscape(repl)+"/tags", nil), &tags)
		if tags.Tags["m.favourite"]["order"] != 0.25 {
			missing = append(missing, "tag")
		}
		var direct map[string][]string
		wantOK(t, c.Do("GET", csAPI+"/user/"+url.PathEscape(c.UserID)+"/account_data/m.direct", nil), &direct)
		if !slices.Equal(direct["@peer:example.org"], []string{old, other, repl}) || !slices.Equal(direct["@else:example.org"], []string{other}) {
			missing = append(missing, fmt.Sprintf("m.direct (%v)", direct))
		}
		return missing
	}
	if m := hasCopy(alice); m != nil {
		t.Errorf("the upgrader lacks %v", m)
	}
	if m := hasCopy(bob); len(m) != 4 {
		t.Errorf("bob had %d of 4 copies before joining the new room", 4-len(m))
	}
	joinRoom(t, bob, repl)
	if m := hasCopy(bob); m != nil {
		t.Errorf("after joining, bob lacks %v", m)
	}
	// Joining again copies nothing twice.
	leaveRoom(t, bob, repl)
	joinRoom(t, bob, repl)
	if n := len(ruleIDs(bob, "room")); n != 2+len(ruleIDs(srv.Register("fresh"), "room")) {
		t.Errorf("bob has %d room rules after a rejoin: %v", n, ruleIDs(bob, "room"))
	}
}

// TestUpgradeSearch: a search of a replacement room covers the rooms it
// replaced (as Synapse's search does, and Complement's "Search works
// across an upgraded room and its predecessor" expects).
func TestUpgradeSearch(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, eve := srv.Register("alice"), srv.Register("eve")
	first := createRoom(t, alice, map[string]any{"preset": "public_chat", "room_version": "10"})
	one := sendText(t, alice, first, "needle one")
	second := upgrade(t, alice, first, "11")
	two := sendText(t, alice, second, "needle two")
	third := upgrade(t, alice, second, "12")
	three := sendText(t, alice, third, "needle three")
	joinRoom(t, eve, third)
	for _, tc := range []struct {
		name  string
		who   *testserver.Client
		rooms []string
		want  []string
	}{
		{"newest room", alice, []string{third}, []string{three, two, one}},
		{"middle room", alice, []string{second}, []string{two, one}},
		{"oldest room", alice, []string{first}, []string{one}},
		{"not_rooms still applies", alice, nil, nil},
		// eve was never in the old rooms: their history stays hidden.
		{"never a member of the old rooms", eve, []string{third}, []string{three}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			filter := map[string]any{"rooms": tc.rooms}
			want := tc.want
			if tc.rooms == nil {
				filter = map[string]any{"rooms": []string{third}, "not_rooms": []string{second}}
				want = []string{three, one}
			}
			got := search(t, tc.who, term("needle", "order_by", "recent", "filter", filter), "").ids()
			if !slices.Equal(got, want) {
				t.Errorf("results %v, want %v", got, want)
			}
		})
	}
}

// TestUpgradeSpace: a space's children come with it, so its hierarchy is
// the same from the new room (Synapse copies them; its /hierarchy does
// nothing else about upgrades).
func TestUpgradeSpace(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	space := createRoom(t, alice, map[string]any{"preset": "public_chat", "name": "Space", "creation_content": map[string]any{"type": "m.space"}})
	a := createRoom(t, alice, map[string]any{"preset": "public_chat", "name": "A"})
	b := createRoom(t, alice, map[string]any{"preset": "public_chat", "name": "B"})
	gone := createRoom(t, alice, map[string]any{"preset": "public_chat", "name": "Gone"})
	via := []string{srv.Config.ServerName}
	putState(t, alice, space, "m.space.child", a, map[string]any{"via": via, "order": "1"})
	putState(t, alice, space, "m.space.child", b, map[string]any{"via": via, "order": "2"})
	putState(t, alice, space, "m.space.child", gone, map[string]any{}) // removed
	repl := upgrade(t, alice, space, "12")
	if got := stateContent(t, alice, repl, "m.room.create", "")["type"]; got != "m.space" {
		t.Errorf("new room's type %v", got)
	}
	if got := getHierarchy(t, alice, repl, nil).ids(); !slices.Equal(got, []string{repl, a, b}) {
		t.Errorf("hierarchy %v, want %v", got, []string{repl, a, b})
	}
	if r := alice.Do("GET", roomPath(repl, "state", "m.space.child", gone), nil); r.Status != http.StatusNotFound {
		t.Errorf("a removed child was copied: %d %s", r.Status, r.Body)
	}
}

// TestUpgradeNonFederated: m.federate false carries over (SyTest:
// "/upgrade preserves room federation ability").
func TestUpgradeNonFederated(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	old := createRoom(t, alice, map[string]any{"creation_content": map[string]any{"m.federate": false}})
	repl := upgrade(t, alice, old, "11")
	if got, ok := stateContent(t, alice, repl, "m.room.create", "")["m.federate"]; !ok || got != false {
		t.Errorf("m.federate %v", got)
	}
}

func TestUpgradeRejects(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Now())
	srv := testserver.Start(t, testserver.Options{Clock: clk})
	alice, bob, carol := srv.Register("alice"), srv.Register("bob"), srv.Register("carol")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat",
		"power_level_content_override": map[string]any{"users": map[string]any{alice.UserID: 100, carol.UserID: 100}}})
	joinRoom(t, bob, room)
	joinRoom(t, carol, room)
	for _, tc := range []struct {
		name    string
		who     *testserver.Client
		room    string
		body    map[string]any
		status  int
		errcode string
	}{
		{"unknown version", alice, room, map[string]any{"new_version": "my_bad_version"}, http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION"},
		{"no version", alice, room, map[string]any{}, http.StatusBadRequest, "M_MISSING_PARAM"},
		{"version not a string", alice, room, map[string]any{"new_version": 11}, http.StatusBadRequest, "M_BAD_JSON"},
		{"bad additional_creators", alice, room, map[string]any{"new_version": "12", "additional_creators": "@a:b"}, http.StatusBadRequest, "M_BAD_JSON"},
		{"bad user in additional_creators", alice, room, map[string]any{"new_version": "12", "additional_creators": []string{"nobody"}}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"unknown room", alice, "!fail:unknown.example", map[string]any{"new_version": "11"}, http.StatusNotFound, "M_NOT_FOUND"},
		{"malformed room", alice, "fail", map[string]any{"new_version": "11"}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"no power", bob, room, map[string]any{"new_version": "11"}, http.StatusForbidden, "M_FORBIDDEN"},
		{"not in the room", srv.Register("dan"), room, map[string]any{"new_version": "11"}, http.StatusForbidden, "M_FORBIDDEN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, upgradeRaw(tc.who, tc.room, tc.body), tc.status, tc.errcode)
		})
	}

	var shared string
	t.Run("concurrent requests share one upgrade", func(t *testing.T) {
		var wg gosync.WaitGroup
		got := make([]*testserver.Response, 4)
		for i := range got {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got[i] = upgradeRaw(alice, room, map[string]any{"new_version": "11"})
			}()
		}
		wg.Wait()
		for _, r := range got {
			if r.Status != http.StatusOK || string(r.Body) != string(got[0].Body) {
				t.Fatalf("answers differ: %d %s, %d %s", r.Status, r.Body, got[0].Status, got[0].Body)
			}
		}
		shared = string(got[0].Body)
	})
	t.Run("a retry gets the same room", func(t *testing.T) {
		r := upgradeRaw(alice, room, map[string]any{"new_version": "11"})
		wantOK(t, r, nil)
		if string(r.Body) != shared {
			t.Errorf("retry answered %s, first %s", r.Body, shared)
		}
	})
	t.Run("someone else's upgrade of an upgraded room", func(t *testing.T) {
		wantErr(t, upgradeRaw(carol, room, map[string]any{"new_version": "11"}), http.StatusBadRequest, "M_BAD_STATE")
	})
	t.Run("a later retry", func(t *testing.T) {
		clk.Advance(5 * time.Minute)
		wantErr(t, upgradeRaw(alice, room, map[string]any{"new_version": "11"}), http.StatusBadRequest, "M_BAD_STATE")
	})
}

// TestTombstoneChecks: what Synapse refuses of a tombstone a client sends.
func TestTombstoneChecks(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	room := createRoom(t, alice, map[string]any{})
	for _, tc := range []struct {
		name   string
		path   string
		body   map[string]any
		status int
	}{
		{"names its own room", roomPath(room, "state", "m.room.tombstone", ""), map[string]any{"replacement_room": room, "body": "x"}, http.StatusBadRequest},
		{"no replacement_room", roomPath(room, "state", "m.room.tombstone", ""), map[string]any{"body": "x"}, http.StatusBadRequest},
		// SyTest: "Cannot send tombstone event that points to the same room".
		{"not a state event", roomPath(room, "send", "m.room.tombstone", "t1"), map[string]any{"replacement_room": room}, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, alice.Do("PUT", tc.path, tc.body), tc.status, "M_BAD_JSON")
		})
	}
}
