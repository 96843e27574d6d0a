package api_test

import (
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/testserver"
)

const sendNotice = "/_synapse/admin/v1/send_server_notice"

// noticeRooms returns the user's rooms tagged m.server_notice in an
// initial sync, joined or invited, and the notices' bodies per room.
func noticeRooms(t *testing.T, c *testserver.Client) (joined map[string][]string, invited []string) {
	t.Helper()
	var out struct {
		Rooms struct {
			Join map[string]struct {
				Timeline struct {
					Events []clientEvent `json:"events"`
				} `json:"timeline"`
				AccountData struct {
					Events []struct {
						Type    string `json:"type"`
						Content struct {
							Tags map[string]any `json:"tags"`
						} `json:"content"`
					} `json:"events"`
				} `json:"account_data"`
			} `json:"join"`
			Invite map[string]any `json:"invite"`
		} `json:"rooms"`
	}
	wantOK(t, c.Do("GET", csAPI+"/sync?timeout=0", nil), &out)
	joined = map[string][]string{}
	for id, jr := range out.Rooms.Join {
		tagged := false
		for _, ad := range jr.AccountData.Events {
			_, tagged = ad.Content.Tags["m.server_notice"]
			tagged = tagged && ad.Type == "m.tag"
			if tagged {
				break
			}
		}
		if !tagged {
			continue
		}
		joined[id] = []string{}
		for _, ev := range jr.Timeline.Events {
			if ev.Type == "m.room.message" {
				body, _ := ev.Content["body"].(string)
				joined[id] = append(joined[id], body)
			}
		}
	}
	for id := range out.Rooms.Invite {
		invited = append(invited, id)
	}
	return joined, invited
}

func TestServerNotices(t *testing.T) {
	t.Parallel()
	const secret = "notices-admin-secret"
	srv := hsStart(t, testserver.Options{Configure: func(c *configs.Config) {
		c.RegistrationSharedSecret = configs.NewSecret(secret)
		c.ServerNotices = configs.ServerNotices{SystemMXIDLocalpart: "notices", SystemMXIDDisplayName: "Server Notices Bot",
			RoomName: "Server Notices", RoomTopic: "From the administrators"}
	}})
	admin := registerAdmin(t, srv, secret)
	alice, bob := srv.Register("alice"), srv.Register("bob")
	notice := func(body string) map[string]any {
		return map[string]any{"user_id": alice.UserID, "content": map[string]any{"msgtype": "m.text", "body": body}}
	}

	// The first notice makes the room and invites alice to it.
	var sent struct {
		EventID string `json:"event_id"`
	}
	wantOK(t, admin.Do("POST", sendNotice, notice("maintenance tonight")), &sent)
	if sent.EventID == "" {
		t.Fatal("no event_id")
	}
	_, invited := noticeRooms(t, alice)
	if len(invited) != 1 {
		t.Fatalf("alice is invited to %v, want one notices room", invited)
	}
	room := invited[0]
	joinRoom(t, alice, room)

	// A second notice goes to the same room; a retried PUT transaction
	// sends once.
	wantOK(t, admin.Do("POST", sendNotice, notice("maintenance done")), nil)
	var first, again struct {
		EventID string `json:"event_id"`
	}
	wantOK(t, admin.Do("PUT", sendNotice+"/txn1", notice("a retried notice")), &first)
	wantOK(t, admin.Do("PUT", sendNotice+"/txn1", notice("a retried notice")), &again)
	if first.EventID == "" || first.EventID != again.EventID {
		t.Errorf("retried transaction: %q then %q", first.EventID, again.EventID)
	}
	joined, _ := noticeRooms(t, alice)
	if got := joined[room]; len(joined) != 1 || len(got) != 3 || got[0] != "maintenance tonight" || got[2] != "a retried notice" {
		t.Errorf("alice's tagged notices rooms: %v", joined)
	}

	// The room: named, the system user owns it, alice can neither write
	// nor invite.
	var name struct{ Name string }
	wantOK(t, alice.Do("GET", roomPath(room, "state", "m.room.name", ""), nil), &name)
	if name.Name != "Server Notices" {
		t.Errorf("room name %q", name.Name)
	}
	var member struct {
		DisplayName string `json:"displayname"`
		Membership  string `json:"membership"`
	}
	wantOK(t, alice.Do("GET", roomPath(room, "state", "m.room.member", "@notices:localhost"), nil), &member)
	if member.Membership != "join" || member.DisplayName != "Server Notices Bot" {
		t.Errorf("system user membership %+v", member)
	}
	wantErr(t, alice.Do("PUT", roomPath(room, "send", "m.room.message", "t1"), map[string]any{"msgtype": "m.text", "body": "hi"}), http.StatusForbidden, "M_FORBIDDEN")
	wantErr(t, alice.Do("POST", roomPath(room, "invite"), map[string]any{"user_id": bob.UserID}), http.StatusForbidden, "M_FORBIDDEN")

	// Nobody can log in as, or register, the system user.
	wantErr(t, srv.Anonymous().Do("POST", csAPI+"/register", map[string]any{"username": "notices", "password": "correct horse battery",
		"auth": map[string]string{"type": "m.login.dummy"}}), http.StatusBadRequest, "M_USER_IN_USE")

	// Once alice leaves, the next notice invites her back to the same
	// room (Synapse; Complement's "After leaving the alert room and on
	// re-invitation, no new room is created"), and she sees it there.
	wantOK(t, alice.Do("POST", roomPath(room, "leave"), map[string]any{}), nil)
	wantOK(t, admin.Do("POST", sendNotice, notice("after leaving")), nil)
	if _, invited := noticeRooms(t, alice); len(invited) != 1 || invited[0] != room {
		t.Errorf("after leaving, invited to %v, want %s again", invited, room)
	}
	joinRoom(t, alice, room)
	if joined, _ := noticeRooms(t, alice); len(joined) != 1 || !slices.Contains(joined[room], "after leaving") {
		t.Errorf("after joining again: %v", joined)
	}

	// A state notice, with type and state_key.
	wantOK(t, admin.Do("POST", sendNotice, map[string]any{"user_id": bob.UserID, "type": "m.room.topic", "state_key": "",
		"content": map[string]any{"topic": "changed by a notice"}}), nil)

	// Bad requests.
	for _, tc := range []struct {
		who    *testserver.Client
		body   map[string]any
		status int
		code   string
	}{
		{alice, notice("not an admin"), 403, "M_FORBIDDEN"},
		{admin, map[string]any{"content": map[string]any{"body": "x"}}, 400, "M_MISSING_PARAM"},
		{admin, map[string]any{"user_id": alice.UserID}, 400, "M_MISSING_PARAM"},
		{admin, map[string]any{"user_id": alice.UserID, "content": "text"}, 400, "M_BAD_JSON"},
		{admin, map[string]any{"user_id": "not-a-user", "content": map[string]any{}}, 400, "M_INVALID_PARAM"},
		{admin, map[string]any{"user_id": "@nobody:localhost", "content": map[string]any{}}, 404, "M_NOT_FOUND"},
		{admin, map[string]any{"user_id": "@someone:elsewhere.example", "content": map[string]any{}}, 400, "M_UNKNOWN"},
	} {
		wantErr(t, tc.who.Do("POST", sendNotice, tc.body), tc.status, tc.code)
	}
	wantErr(t, srv.Anonymous().Do("POST", sendNotice, notice("x")), 401, "M_MISSING_TOKEN")
}

// TestServerNoticesAutoJoinAndOff: auto_join joins the user at once; with
// server_notices absent the endpoint says they are off.
func TestServerNoticesAutoJoinAndOff(t *testing.T) {
	t.Parallel()
	const secret = "notices-admin-secret"
	srv := hsStart(t, testserver.Options{Configure: func(c *configs.Config) {
		c.RegistrationSharedSecret = configs.NewSecret(secret)
		c.ServerNotices = configs.ServerNotices{SystemMXIDLocalpart: "notices", AutoJoin: true}
	}})
	admin := registerAdmin(t, srv, secret)
	alice := srv.Register("alice")
	wantOK(t, admin.Do("PUT", sendNotice+"/"+url.PathEscape("t 1"), map[string]any{"user_id": alice.UserID,
		"content": map[string]any{"msgtype": "m.text", "body": "welcome"}}), nil)
	joined, invited := noticeRooms(t, alice)
	if len(invited) != 0 || len(joined) != 1 {
		t.Fatalf("auto_join: joined %v, invited %v", joined, invited)
	}
	var room string
	for id, bodies := range joined {
		room = id
		if len(bodies) != 1 || bodies[0] != "welcome" {
			t.Errorf("notices %v", bodies)
		}
	}

	// A changed configuration reaches the existing room with the next
	// notice: room name and the system user's display name (Synapse).
	srv.Stop()
	srv = testserver.Start(t, testserver.Options{DataDir: srv.DataDir, Configure: func(c *configs.Config) {
		c.RegistrationSharedSecret = configs.NewSecret(secret)
		c.ServerNotices = configs.ServerNotices{SystemMXIDLocalpart: "notices", SystemMXIDDisplayName: "Ops", RoomName: "Ops notices", AutoJoin: true}
	}})
	admin, alice = reconnect(srv, admin), reconnect(srv, alice)
	wantOK(t, admin.Do("POST", sendNotice, map[string]any{"user_id": alice.UserID, "content": map[string]any{"msgtype": "m.text", "body": "again"}}), nil)
	if joined, _ := noticeRooms(t, alice); len(joined) != 1 || len(joined[room]) != 2 {
		t.Errorf("after the restart: %v", joined)
	}
	var name struct{ Name string }
	wantOK(t, alice.Do("GET", roomPath(room, "state", "m.room.name", ""), nil), &name)
	var member struct {
		DisplayName string `json:"displayname"`
	}
	wantOK(t, alice.Do("GET", roomPath(room, "state", "m.room.member", "@notices:localhost"), nil), &member)
	if name.Name != "Ops notices" || member.DisplayName != "Ops" {
		t.Errorf("room name %q, system user %q", name.Name, member.DisplayName)
	}

	// Left, the user is invited back and, with auto_join, joined again.
	leaveRoom(t, alice, room)
	wantOK(t, admin.Do("POST", sendNotice, map[string]any{"user_id": alice.UserID, "content": map[string]any{"msgtype": "m.text", "body": "back"}}), nil)
	if joined, invited := noticeRooms(t, alice); len(invited) != 0 || len(joined) != 1 || !slices.Contains(joined[room], "back") {
		t.Errorf("after leaving with auto_join: joined %v, invited %v", joined, invited)
	}

	off := hsStart(t, testserver.Options{Configure: func(c *configs.Config) { c.RegistrationSharedSecret = configs.NewSecret(secret) }})
	offAdmin := registerAdmin(t, off, secret)
	wantErr(t, offAdmin.Do("POST", sendNotice, map[string]any{"user_id": offAdmin.UserID, "content": map[string]any{}}), 400, "M_UNKNOWN")
}

// TestServerNoticesInviteCannotBeRejected: the invite to a notices room
// cannot be rejected, by /leave or by PUT state; once joined the user may
// leave (Synapse; Complement's TestServerNotices).
func TestServerNoticesInviteCannotBeRejected(t *testing.T) {
	t.Parallel()
	const secret = "notices-admin-secret"
	srv := hsStart(t, testserver.Options{Configure: func(c *configs.Config) {
		c.RegistrationSharedSecret = configs.NewSecret(secret)
		c.ServerNotices = configs.ServerNotices{SystemMXIDLocalpart: "notices"}
	}})
	admin := registerAdmin(t, srv, secret)
	alice, bob := srv.Register("alice"), srv.Register("bob")
	wantOK(t, admin.Do("POST", sendNotice, map[string]any{"user_id": alice.UserID, "content": map[string]any{"msgtype": "m.text", "body": "hi"}}), nil)
	_, invited := noticeRooms(t, alice)
	if len(invited) != 1 {
		t.Fatalf("alice is invited to %v", invited)
	}
	room := invited[0]
	wantErr(t, alice.Do("POST", roomPath(room, "leave"), map[string]any{}), http.StatusForbidden, "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM")
	wantErr(t, alice.Do("PUT", roomPath(room, "state", "m.room.member", alice.UserID), map[string]any{"membership": "leave"}),
		http.StatusForbidden, "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM")
	if _, invited := noticeRooms(t, alice); len(invited) != 1 || invited[0] != room {
		t.Fatalf("after the refused rejections alice is invited to %v", invited)
	}
	joinRoom(t, alice, room)
	leaveRoom(t, alice, room)

	// Other invites can be rejected as ever.
	other := createRoom(t, bob, map[string]any{"invite": []string{alice.UserID}})
	leaveRoom(t, alice, other)
}
