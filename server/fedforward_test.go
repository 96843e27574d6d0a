package server_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/persistentchat/homeserver/testserver"
)

// TestFederatedJoinForwarded: B's user joins A's room through A, and
// later leaves through A, as a server that sends nothing itself (the test
// plays B): C, in the room already, hears of both from A, which forwards
// what its send_join and send_leave took in.
func TestFederatedJoinForwarded(t *testing.T) {
	fed := testserver.Federation(t, 3, testserver.Options{})
	a, b, c := fed[0], fed[1], fed[2]
	pb := playServer(t, b)
	alice := a.Register("alice")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat", "room_version": "11"})
	carol := c.Register("carol")
	joinVia(t, carol, room, a)
	waitMember(t, alice, room, carol.UserID, "join")

	pat := "@pat:" + b.Name()
	esc := url.PathEscape(room) + "/" + url.PathEscape(pat)
	status, body := fedDo(t, b, a, "GET", "/_matrix/federation/v1/make_join/"+esc+"?ver=11", nil)
	if status != http.StatusOK {
		t.Fatalf("make_join: %d %s", status, body)
	}
	_, join := memberFromTemplate(t, pb, body)
	status, body = fedDo(t, b, a, "PUT", "/_matrix/federation/v2/send_join/"+url.PathEscape(room)+"/"+url.PathEscape(string(join.ID())), join.JSON())
	if status != http.StatusOK {
		t.Fatalf("send_join: %d %s", status, body)
	}
	waitMember(t, carol, room, pat, "join")

	status, body = fedDo(t, b, a, "GET", "/_matrix/federation/v1/make_leave/"+esc, nil)
	if status != http.StatusOK {
		t.Fatalf("make_leave: %d %s", status, body)
	}
	_, leave := memberFromTemplate(t, pb, body)
	status, body = fedDo(t, b, a, "PUT", "/_matrix/federation/v2/send_leave/"+url.PathEscape(room)+"/"+url.PathEscape(string(leave.ID())), leave.JSON())
	if status != http.StatusOK {
		t.Fatalf("send_leave: %d %s", status, body)
	}
	waitMember(t, carol, room, pat, "leave")
}
