package csapi

import (
	"testing"

	. "github.com/persistentchat/homeserver/conformance/deploy"
)

// TestServerNotices: Synapse's server notices (not in the spec; Synapse's
// admin API POST /_synapse/admin/v1/send_server_notice), on the configured
// server, which turns them on.
func TestServerNotices(t *testing.T) {
	hs := configured(t)
	admin, err := hs.Register(ctx, dep.UniqueLocalpart("admin"), strongPassword, true)
	if err != nil {
		t.Fatal(err)
	}
	alice, err := hs.Register(ctx, dep.UniqueLocalpart("alice"), strongPassword, false)
	if err != nil {
		t.Fatal(err)
	}
	system := "@" + noticesLocalpart + ":" + hs.Name
	notice := func(body string) map[string]any {
		return map[string]any{"user_id": alice.UserID, "content": map[string]any{"msgtype": "m.text", "body": body}}
	}
	sendNotice := []string{"_synapse", "admin", "v1", "send_server_notice"}
	var noticeID, room, since string
	t.Run("/send_server_notice is not allowed as normal user", func(t *testing.T) {
		expectStatus(t, alice.Do(ctx, "POST", sendNotice, notice("hi")), 403, "M_FORBIDDEN")
	})
	t.Run("/send_server_notice as an admin is allowed", func(t *testing.T) {
		noticeID = mustOK(t, admin.Do(ctx, "POST", sendNotice, notice("maintenance tonight")), "send").GetString("event_id")
		if noticeID == "" {
			t.Fatal("no event_id")
		}
	})
	t.Run("Alice is invited to the server alert room", func(t *testing.T) {
		since = syncUntil(t, alice, "", "invite", func(r *Res) bool {
			for id := range mapAt(r.JSON, "rooms.invite") {
				room = id
				return true
			}
			return false
		})
		r := sync(t, alice, "")
		var inviter, name string
		for _, ev := range arr(r.JSON, "rooms.invite."+esc(room)+".invite_state.events") {
			switch str(ev, "type") {
			case "m.room.member":
				if str(ev, "state_key") == alice.UserID {
					inviter = str(ev, "sender")
				}
			case "m.room.name":
				name = str(ev, "content.name")
			}
		}
		if inviter != system || name != "Server Notices" {
			t.Fatalf("invite from %q to room named %q: %s", inviter, name, r)
		}
	})
	t.Run("Alice can join the alert room", func(t *testing.T) {
		joinRoom(t, alice, room)
		syncUntil(t, alice, since, "the notice", timelineHas(room, eventID(noticeID)))
		r := sync(t, alice, "")
		tagged := false
		for _, ev := range arr(r.JSON, "rooms.join."+esc(room)+".account_data.events") {
			if str(ev, "type") == "m.tag" {
				_, tagged = Path(ev, "content.tags.m\\.server_notice")
			}
		}
		if !tagged {
			t.Fatalf("room not tagged m.server_notice: %s", r)
		}
		r = mustOK(t, alice.Do(ctx, "GET", cs("rooms", room, "state", "m.room.member", system), nil), "system user")
		expectStr(t, r, "displayname", "Server Notices Bot")
	})
	t.Run("Alice cannot send to the alert room", func(t *testing.T) {
		expectStatus(t, alice.Do(ctx, "PUT", cs("rooms", room, "send", "m.room.message", alice.NextTxn()), map[string]any{"msgtype": "m.text", "body": "reply"}), 403, "M_FORBIDDEN")
	})
	t.Run("Sending a notice with a transactionID is idempotent", func(t *testing.T) {
		a := mustOK(t, admin.Do(ctx, "PUT", append(sendNotice, "txn-1"), notice("once")), "send").GetString("event_id")
		b := mustOK(t, admin.Do(ctx, "PUT", append(sendNotice, "txn-1"), notice("once")), "resend").GetString("event_id")
		if a == "" || a != b {
			t.Fatalf("event IDs %q and %q", a, b)
		}
		syncUntil(t, alice, "", "the second notice in the same room", timelineHas(room, eventID(a)))
	})
	t.Run("The server notices user cannot be registered", func(t *testing.T) {
		expectStatus(t, registerWith(hs, noticesLocalpart, strongPassword), 400, "M_USER_IN_USE")
	})
	t.Run("Bad requests are refused", func(t *testing.T) {
		expectStatus(t, admin.Do(ctx, "POST", sendNotice, map[string]any{"content": map[string]any{"body": "x"}}), 400, "M_MISSING_PARAM")
		expectStatus(t, admin.Do(ctx, "POST", sendNotice, map[string]any{"user_id": "@nobody-here:" + hs.Name, "content": map[string]any{"body": "x"}}), 404, "M_NOT_FOUND")
	})
	t.Run("Server notices are off unless configured", func(t *testing.T) {
		a, err := hs1().Register(ctx, dep.UniqueLocalpart("admin"), password, true)
		if err != nil {
			t.Fatal(err)
		}
		u := register(t, "nonotice")
		r := a.Do(ctx, "POST", sendNotice, map[string]any{"user_id": u.UserID, "content": map[string]any{"msgtype": "m.text", "body": "x"}})
		if r.Status < 400 || r.Status >= 500 {
			t.Fatalf("want a 4xx error: %s", r)
		}
	})
}

// mapAt returns the object at path.
func mapAt(v any, path string) map[string]any {
	x, _ := Path(v, path)
	m, _ := x.(map[string]any)
	return m
}
