package compliance_test

import (
	"bytes"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/compliance"
	"github.com/persistentchat/homeserver/storage"
	"github.com/persistentchat/homeserver/testserver"
)

// An export for a user holds the user's conversations: what others sent
// in a room while the user was joined to it (carol joins, leaves, is
// invited elsewhere, rejoins and is kicked), the membership events about
// the user whoever sent them, and not what was said while the user was
// out, nor in rooms the user never joined. A time range still follows a
// membership that began before it.
func TestExportUserConversations(t *testing.T) {
	srv := startArchiving(t, testserver.Options{})
	admin := registerAdmin(t, srv, "auditor")
	alice, bob, carol := srv.Register("alice"), srv.Register("bob"), srv.Register("carol")
	text := func(c *testserver.Client, room, body string) {
		t.Helper()
		send(t, c, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": body})
	}
	r := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	bob.Join(r)
	text(bob, r, "before carol")
	carol.Join(r)
	text(bob, r, "while carol 1")
	tick()
	mid := time.Now()
	text(alice, r, "while carol 2")
	text(carol, r, "carol speaks")
	carol.MustDo("POST", roomPath(r, "leave"), map[string]any{}, nil)
	text(bob, r, "after carol left")

	elsewhere := bob.CreateRoom(map[string]any{"preset": "public_chat"})
	text(bob, elsewhere, "elsewhere")
	private := alice.CreateRoom(map[string]any{"preset": "private_chat"})
	alice.MustDo("POST", roomPath(private, "invite"), map[string]any{"user_id": carol.UserID}, nil)
	text(alice, private, "carol only invited")

	carol.Join(r)
	text(bob, r, "carol back")
	alice.MustDo("POST", roomPath(r, "kick"), map[string]any{"user_id": carol.UserID, "reason": "enough"}, nil)
	text(bob, r, "after the kick")
	settle(t, srv)

	body := func(rec storage.ComplianceRecord) string {
		var line struct { // records' Payload is the export's line
			Record struct {
				Payload struct {
					Event struct {
						Content struct {
							Body string `json:"body"`
						} `json:"content"`
					} `json:"event"`
				} `json:"payload"`
			} `json:"record"`
		}
		jsonUnmarshal([]byte(rec.Payload), &line)
		return line.Record.Payload.Event.Content.Body
	}
	bodies := func(rs []storage.ComplianceRecord) map[string]bool {
		out := map[string]bool{}
		for _, rec := range rs {
			if b := body(rec); b != "" {
				out[b] = true
			}
		}
		return out
	}
	want := func(what string, got map[string]bool, in, out []string) {
		t.Helper()
		for _, b := range in {
			if !got[b] {
				t.Errorf("%s: %q is missing", what, b)
			}
		}
		for _, b := range out {
			if got[b] {
				t.Errorf("%s: %q is in it", what, b)
			}
		}
	}
	outside := []string{"before carol", "after carol left", "elsewhere", "carol only invited", "after the kick"}
	user := "user=" + url.QueryEscape(carol.UserID)
	rs, _ := records(t, export(t, admin, user))
	want("carol's export", bodies(rs), []string{"while carol 1", "while carol 2", "carol speaks", "carol back"}, outside)
	if !archivedIn(rs, compliance.KindEvent, `"membership":"invite"`, `"sender":"`+alice.UserID) {
		t.Error("carol's export lacks alice's invite of her")
	}
	if !archivedIn(rs, compliance.KindEvent, `"membership":"leave"`, `"reason":"enough"`) {
		t.Error("carol's export lacks alice's kick of her")
	}
	for _, rec := range rs {
		if rec.Room == elsewhere || rec.Room == private && rec.Actor != alice.UserID {
			t.Errorf("record %d, of room %s, is not carol's conversation", rec.Seq, rec.Room)
		}
	}

	// From the middle of her first stay: she was joined when it began.
	rs, _ = records(t, export(t, admin, user+"&from="+url.QueryEscape(mid.UTC().Format(time.RFC3339Nano))))
	want("carol's export from the middle", bodies(rs), []string{"while carol 2", "carol speaks", "carol back"}, append(outside, "while carol 1"))
	// Of one room.
	rs, _ = records(t, export(t, admin, user+"&room="+url.QueryEscape(r)))
	want("carol's export of the room", bodies(rs), []string{"while carol 1", "carol back"}, outside)

	// Grouped by conversation: her rooms, with everyone in them.
	x := export(t, admin, user+"&format=xml")
	for _, s := range []string{"while carol 1", `<conversation id="` + r, `<participant id="` + bob.UserID} {
		if !bytes.Contains(x, []byte(s)) {
			t.Errorf("carol's xml export lacks %q", s)
		}
	}
	for _, s := range outside {
		if bytes.Contains(x, []byte(s)) {
			t.Errorf("carol's xml export holds %q", s)
		}
	}
	if strings.Count(string(x), "<message ") != strings.Count(string(export(t, admin, user+"&format=jsonl")), `{"record":`) {
		t.Error("the xml and jsonl exports of carol hold different numbers of records")
	}
}

// tick waits until the clock's millisecond has moved on, so that what
// follows has a later timestamp than what went before.
func tick() {
	for t0 := time.Now().UnixMilli(); time.Now().UnixMilli() <= t0; {
		time.Sleep(time.Millisecond)
	}
}
