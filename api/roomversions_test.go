package api_test

import (
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/persistentchat/homeserver/testserver"
)

// Every room version works end to end through the client API: create,
// join, send, state, redact, /sync, /messages and /event, with the event ID
// format of its version (rooms/v1 "Event IDs": "$opaque:server"; rooms/v3:
// unpadded standard base64 of the reference hash; rooms/v4 and later:
// URL-safe), and the content rules that differ between versions.
func TestEveryRoomVersion(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob, outsider := srv.Register("alice"), srv.Register("bob"), srv.Register("outsider")
	server := srv.Config.ServerName
	v1IDs := regexp.MustCompile(`^\$[A-Za-z0-9]{18}:` + regexp.QuoteMeta(server) + `$`)
	v3IDs := regexp.MustCompile(`^\$[A-Za-z0-9+/]{43}$`)
	v4IDs := regexp.MustCompile(`^\$[A-Za-z0-9_-]{43}$`)
	tests := []struct {
		version string
		ids     *regexp.Regexp
		// stringLevels: power levels may be strings (v1-v9);
		// floats: content may hold floats (no canonical JSON before v6);
		// aliases: m.room.aliases is allowed by server (v1-v5 rule 4).
		stringLevels, floats, aliases bool
	}{
		{"1", v1IDs, true, true, true},
		{"2", v1IDs, true, true, true},
		{"3", v3IDs, true, true, true},
		{"4", v4IDs, true, true, true},
		{"5", v4IDs, true, true, true},
		{"6", v4IDs, true, false, false},
		{"7", v4IDs, true, false, false},
		{"8", v4IDs, true, false, false},
		{"9", v4IDs, true, false, false},
		{"10", v4IDs, false, false, false},
		{"11", v4IDs, false, false, false},
		{"12", v4IDs, false, false, false},
	}
	for _, tc := range tests {
		t.Run("v"+tc.version, func(t *testing.T) {
			t.Parallel()
			checkID := func(what, id string) {
				t.Helper()
				if !tc.ids.MatchString(id) {
					t.Errorf("%s: event ID %q is not the v%s format", what, id, tc.version)
				}
			}
			room := createRoom(t, alice, map[string]any{"room_version": tc.version, "preset": "public_chat", "name": "v" + tc.version})
			joinRoom(t, bob, room)

			st := roomState(t, alice, room)
			create := stateEvent(st, "m.room.create", "")
			if create == nil || create.Content["room_version"] != tc.version || create.RoomID != room {
				t.Fatalf("create event %+v", create)
			}
			checkID("create", create.EventID)
			if name := stateEvent(st, "m.room.name", ""); name == nil || name.Content["name"] != "v"+tc.version {
				t.Errorf("name event %+v", name)
			}

			msg := sendText(t, bob, room, "hello v"+tc.version)
			checkID("message", msg)
			if ev := getEvent(t, alice, room, msg); ev.EventID != msg || ev.Content["body"] != "hello v"+tc.version || ev.RoomID != room {
				t.Errorf("GET /event = %+v", ev)
			}
			topic := putState(t, alice, room, "m.room.topic", "", map[string]any{"topic": "t" + tc.version})
			checkID("topic", topic)
			if got := stateContent(t, bob, room, "m.room.topic", ""); got["topic"] != "t"+tc.version {
				t.Errorf("topic = %v", got)
			}

			// The creator (level 100) redacts bob's message.
			var red struct {
				EventID string `json:"event_id"`
			}
			wantOK(t, alice.Do("PUT", roomPath(room, "redact", msg, "rv"+tc.version), map[string]any{"reason": "r"}), &red)
			checkID("redaction", red.EventID)
			if ev := getEvent(t, bob, room, msg); len(ev.Content) != 0 || ev.Unsigned["redacted_because"] == nil {
				t.Errorf("redacted message reads %v %v", ev.Content, ev.Unsigned)
			}
			if ev := getEvent(t, bob, room, red.EventID); ev.Redacts != msg {
				t.Errorf("redaction redacts %q, want %s (top-level in every version)", ev.Redacts, msg)
			}

			// /sync and /messages serve the same events in order.
			tl, _ := syncRoom(t, bob, room, 5)
			ids := eventIDs(tl.Events)
			if n := len(ids); n < 3 || !slices.Equal(ids[n-3:], []string{msg, topic, red.EventID}) {
				t.Errorf("/sync timeline %v, want it to end with %v", ids, []string{msg, topic, red.EventID})
			}
			for _, ev := range tl.Events {
				checkID("/sync", ev.EventID)
				if ev.EventID == msg && len(ev.Content) != 0 {
					t.Errorf("/sync serves the redacted message unredacted: %v", ev.Content)
				}
			}
			page := messages(t, bob, room, query("dir", "b", "limit", "3"))
			if got := eventIDs(page.Chunk); !slices.Equal(got, []string{red.EventID, topic, msg}) {
				t.Errorf("/messages = %v, want %v", got, []string{red.EventID, topic, msg})
			}
			all := messages(t, bob, room, query("dir", "b", "limit", "50"))
			if last := all.Chunk[len(all.Chunk)-1]; last.Type != "m.room.create" || last.EventID != create.EventID {
				t.Errorf("/messages ends with %v, want the create event", last)
			}

			// Power levels may be strings before v10; from v10 such
			// content is malformed whoever sends it: 400, not 403.
			pl := stateContent(t, alice, room, "m.room.power_levels", "")
			pl["ban"] = "50"
			r := alice.Do("PUT", roomPath(room, "state", "m.room.power_levels", ""), pl)
			if tc.stringLevels {
				wantOK(t, r, nil)
			} else {
				wantErr(t, r, http.StatusBadRequest, "M_BAD_JSON")
			}

			// Floats are canonical JSON only before v6 (rooms/v6: "a 400
			// M_BAD_JSON error on most endpoints").
			r = bob.Do("PUT", roomPath(room, "send", "org.example.float", "f"+tc.version), map[string]any{"n": 1.5, "big": 9007199254740993})
			if tc.floats {
				var out struct {
					EventID string `json:"event_id"`
				}
				wantOK(t, r, &out)
				if ev := getEvent(t, alice, room, out.EventID); ev.Content["n"] != 1.5 {
					t.Errorf("float content reads %v", ev.Content)
				}
			} else {
				wantErr(t, r, http.StatusBadRequest, "M_BAD_JSON")
			}

			// m.room.aliases: a server's own aliases need no power before
			// v6; after, the state default (50) applies and bob has 0.
			r = bob.Do("PUT", roomPath(room, "state", "m.room.aliases", server), map[string]any{"aliases": []string{"#x:" + server}})
			if tc.aliases {
				wantOK(t, r, nil)
			} else {
				wantErr(t, r, http.StatusForbidden, "M_FORBIDDEN")
			}
			// Rule 4 would let a user outside the room set them; like
			// Synapse, local users must be joined.
			r = outsider.Do("PUT", roomPath(room, "state", "m.room.aliases", server), map[string]any{"aliases": []string{}})
			wantErr(t, r, http.StatusForbidden, "M_FORBIDDEN")
		})
	}
}

// A joined member changing their display name sends a new join event, which
// needs no join_authorised_via_users_server in restricted and
// knock_restricted rooms (v8+ rule 4.3.5.1, v12 5.3.5.1: a member already
// joined or invited is allowed).
func TestProfileChangeInRestrictedRooms(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	space := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	var rooms []string
	for _, tc := range []struct{ version, rule string }{
		{"8", "restricted"}, {"9", "restricted"}, {"10", "restricted"}, {"10", "knock_restricted"},
		{"11", "knock_restricted"}, {"12", "restricted"}, {"12", "knock_restricted"},
	} {
		room := createRoom(t, alice, map[string]any{"room_version": tc.version, "preset": "public_chat"})
		joinRoom(t, bob, room)
		putState(t, alice, room, "m.room.join_rules", "", map[string]any{"join_rule": tc.rule,
			"allow": []map[string]any{{"type": "m.room_membership", "room_id": space}}})
		rooms = append(rooms, room)
	}
	wantOK(t, bob.Do("PUT", profilePath(bob.UserID, "displayname"), map[string]any{"displayname": "Bobby"}), nil)
	for _, room := range rooms {
		if c := stateContent(t, alice, room, "m.room.member", bob.UserID); c["displayname"] != "Bobby" || c["membership"] != "join" {
			t.Errorf("room %s: bob's member event %v, want the new display name", room, c)
		}
	}
}

// v12 rooms from createRoom: m.room.tombstone needs 150, above the 100 of
// admins (spec: createRoom, "MUST explicitly be higher than state_default";
// MSC4289), and trusted_private_chat makes the invitees additional creators,
// merged with those in creation_content.
func TestCreateRoomV12Defaults(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob, carol := srv.Register("alice"), srv.Register("bob"), srv.Register("carol")
	server := srv.Config.ServerName
	for _, tc := range []struct{ version string }{{"11"}, {"12"}} {
		room := createRoom(t, alice, map[string]any{"room_version": tc.version})
		events, _ := stateContent(t, alice, room, "m.room.power_levels", "")["events"].(map[string]any)
		want := 100.0
		if tc.version == "12" {
			want = 150
		}
		if events["m.room.tombstone"] != want {
			t.Errorf("v%s: m.room.tombstone level %v, want %v", tc.version, events["m.room.tombstone"], want)
		}
	}
	// An admin at 100 cannot tombstone a v12 room; the creator can.
	room := createRoom(t, alice, map[string]any{"room_version": "12", "preset": "public_chat"})
	joinRoom(t, bob, room)
	pl := stateContent(t, alice, room, "m.room.power_levels", "")
	pl["users"] = map[string]any{bob.UserID: 100}
	putState(t, alice, room, "m.room.power_levels", "", pl)
	tomb := map[string]any{"body": "moved", "replacement_room": "!elsewhere:" + server}
	wantErr(t, bob.Do("PUT", roomPath(room, "state", "m.room.tombstone", ""), tomb), http.StatusForbidden, "M_FORBIDDEN")
	putState(t, alice, room, "m.room.tombstone", "", tomb)

	dave := "@dave:" + server
	for _, tc := range []struct {
		name     string
		creation map[string]any
		want     []string
	}{
		{"invitees", nil, []string{bob.UserID, carol.UserID}},
		{"merged with creation_content, without duplicates", map[string]any{"additional_creators": []string{carol.UserID, dave}},
			[]string{bob.UserID, carol.UserID, dave}},
	} {
		body := map[string]any{"room_version": "12", "preset": "trusted_private_chat", "invite": []string{bob.UserID, carol.UserID}}
		if tc.creation != nil {
			body["creation_content"] = tc.creation
		}
		room := createRoom(t, alice, body)
		var got []string
		for _, u := range stateContent(t, alice, room, "m.room.create", "")["additional_creators"].([]any) {
			got = append(got, u.(string))
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: additional_creators = %v, want %v", tc.name, got, tc.want)
		}
		if users, _ := stateContent(t, alice, room, "m.room.power_levels", "")["users"].(map[string]any); len(users) != 0 {
			t.Errorf("%s: creators listed in power levels: %v", tc.name, users)
		}
		// The invitees are creators: once joined, they have every power.
		joinRoom(t, bob, room)
		putState(t, bob, room, "m.room.name", "", map[string]any{"name": "bob's"})
	}
}

// Content the auth rules refuse whoever sends it is a bad request (400
// M_BAD_JSON, as Synapse answers), not a 403: creators listed in v12 power
// levels, malformed additional_creators, power levels that are not integers.
func TestMalformedContentIsBadJSON(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, carol := srv.Register("alice"), srv.Register("carol")
	v12 := createRoom(t, alice, map[string]any{"room_version": "12"})
	v11 := createRoom(t, alice, map[string]any{"room_version": "11", "preset": "public_chat"})
	joinRoom(t, carol, v11)
	for _, tc := range []struct {
		name     string
		sender   *testserver.Client
		room     string
		content  map[string]any
		status   int
		errcode  string
		wantRule string
	}{
		{"v12 creator listed in power levels", alice, v12, map[string]any{"users": map[string]any{alice.UserID: 100}}, 400, "M_BAD_JSON", "10.4"},
		{"v12 level that is not an integer", alice, v12, map[string]any{"ban": "50"}, 400, "M_BAD_JSON", "10.1"},
		{"v11 users not an object", alice, v11, map[string]any{"users": []string{}, "state_default": 50}, 400, "M_BAD_JSON", "9.3"},
		// Permission failures stay 403.
		{"v11 member below the level of power levels", carol, v11, map[string]any{"users": map[string]any{alice.UserID: 100}}, 403, "M_FORBIDDEN", "7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.sender.Do("PUT", roomPath(tc.room, "state", "m.room.power_levels", ""), tc.content)
			wantErr(t, r, tc.status, tc.errcode)
			if !strings.Contains(string(r.Body), "rule "+tc.wantRule+":") {
				t.Errorf("error %s does not name rule %s", r.Body, tc.wantRule)
			}
		})
	}
	for _, tc := range []struct {
		name string
		body map[string]any
	}{
		{"additional_creators not an array", map[string]any{"room_version": "12", "creation_content": map[string]any{"additional_creators": "@x:y"}}},
		{"additional_creators not user IDs", map[string]any{"room_version": "12", "creation_content": map[string]any{"additional_creators": []any{"x", 5}}}},
		{"override listing the creator", map[string]any{"room_version": "12", "power_level_content_override": map[string]any{"users": map[string]any{alice.UserID: 100}}}},
		{"trusted chat with malformed additional_creators", map[string]any{"room_version": "12", "preset": "trusted_private_chat",
			"invite": []string{alice.UserID}, "creation_content": map[string]any{"additional_creators": "x"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, alice.Do("POST", csAPI+"/createRoom", tc.body), http.StatusBadRequest, "M_BAD_JSON")
		})
	}
}

// The invite_state of /sync carries the m.room.create event (required since
// v1.16, MSC4311); in v12, where the room ID is the create event's hash, it
// is the full event, as Synapse sends it, so a client can check the room and
// its creator's server.
func TestInviteStateCreateEvent(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	rooms := map[string]string{}
	for _, v := range []string{"1", "11", "12"} {
		rooms[v] = createRoom(t, alice, map[string]any{"room_version": v, "name": "n" + v})
		inviteUser(t, alice, rooms[v], bob.UserID)
	}
	var out struct {
		Rooms struct {
			Invite map[string]struct {
				InviteState struct {
					Events []map[string]any `json:"events"`
				} `json:"invite_state"`
			} `json:"invite"`
		} `json:"rooms"`
	}
	wantOK(t, bob.Do("GET", csAPI+"/sync?timeout=0", nil), &out)
	for v, room := range rooms {
		var create map[string]any
		for _, ev := range out.Rooms.Invite[room].InviteState.Events {
			if ev["type"] == "m.room.create" {
				create = ev
			}
		}
		if create == nil {
			t.Errorf("v%s: no m.room.create in invite_state %v", v, out.Rooms.Invite[room].InviteState.Events)
			continue
		}
		content, _ := create["content"].(map[string]any)
		if content["room_version"] != v || create["sender"] != alice.UserID || create["state_key"] != "" {
			t.Errorf("v%s: create event %v", v, create)
		}
		_, full := create["origin_server_ts"]
		_, signed := create["signatures"]
		if full != (v == "12") || signed != (v == "12") {
			t.Errorf("v%s: create event %v: full event = %v, want %v", v, create, full && signed, v == "12")
		}
		if v == "12" {
			// The room ID is the reference hash of exactly this event.
			var st []clientEvent
			wantOK(t, alice.Do("GET", roomPath(room, "state"), nil), &st)
			if c := stateEvent(st, "m.room.create", ""); c == nil || room != "!"+strings.TrimPrefix(c.EventID, "$") {
				t.Errorf("v12 room %s is not the create event's hash", room)
			}
			if create["hashes"] == nil || create["depth"] == nil {
				t.Errorf("v12 create event lacks PDU fields: %v", create)
			}
		}
	}
}
