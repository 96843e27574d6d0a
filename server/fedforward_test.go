package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"testing"

	"github.com/persistentchat/homeserver/roomdag"

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

// TestFederatedOutliersServed: B joined A's room over federation, so it
// holds the room's state from before its join as outliers; C, joined
// through B, fetches that old state from B: the events (/event), their
// auth chains (/event_auth), and the state at B's join with its auth
// chain (/state) hold them all; the state at an outlier is not known
// (404).
func TestFederatedOutliersServed(t *testing.T) {
	fed := testserver.Federation(t, 3, testserver.Options{})
	a, b, c := fed[0], fed[1], fed[2]
	alice := a.Register("alice")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat", "room_version": "11"})
	var before []struct {
		EventID string `json:"event_id"`
		Type    string `json:"type"`
	}
	alice.MustDo("GET", roomPath(room, "state"), nil, &before)
	ids := map[string]string{}
	for _, e := range before {
		ids[e.Type] = e.EventID
	}
	oldPL := ids["m.room.power_levels"]
	var pl map[string]any
	alice.MustDo("GET", roomPath(room, "state/m.room.power_levels/"), nil, &pl)
	pl["state_default"] = 60
	alice.MustDo("PUT", roomPath(room, "state/m.room.power_levels/"), pl, nil)
	// More history than B backfills on joining: the old state stays
	// outliers there.
	for i := range 60 {
		alice.MustDo("PUT", roomPath(room, fmt.Sprintf("send/m.room.message/m%d", i)), map[string]any{"msgtype": "m.text", "body": "before"}, nil)
	}
	bob := b.Register("bob")
	joinVia(t, bob, room, a)
	carol := c.Register("carol")
	joinVia(t, carol, room, b)
	waitMember(t, bob, room, carol.UserID, "join")

	held, err := b.HS.DB().DAGEvents(context.Background(), []roomdag.EventID{roomdag.EventID(ids["m.room.create"]), roomdag.EventID(oldPL)})
	if err != nil {
		t.Fatal(err)
	}
	if len(held) != 2 {
		t.Fatalf("B holds %d of the create and the old power levels", len(held))
	}
	for id, d := range held {
		if d.Status != roomdag.StatusOutlier {
			t.Fatalf("B holds %s as %s, not as an outlier", id, d.Status)
		}
	}
	esc := url.PathEscape(room)
	for typ, id := range ids {
		var got struct {
			PDUs []map[string]any `json:"pdus"`
		}
		status, body := fedDo(t, c, b, "GET", "/_matrix/federation/v1/event/"+url.PathEscape(id), nil)
		if status != http.StatusOK || json.Unmarshal(body, &got) != nil || len(got.PDUs) != 1 || got.PDUs[0]["type"] != typ {
			t.Errorf("B's /event of the %s outlier: %d %s", typ, status, body)
		}
	}
	authIDs := func(body []byte, field string) map[string]bool {
		var all map[string]json.RawMessage
		var got []json.RawMessage
		if err := json.Unmarshal(body, &all); err != nil || json.Unmarshal(all[field], &got) != nil {
			t.Fatalf("%s: %v", body, err)
		}
		v11, _ := roomdag.LookupRoomVersion("11")
		out := map[string]bool{}
		for _, raw := range got {
			ev, err := roomdag.NewEventFromJSON(v11, raw)
			if err != nil {
				t.Fatalf("%s: %v", raw, err)
			}
			out[string(ev.ID())] = true
		}
		return out
	}
	status, body := fedDo(t, c, b, "GET", "/_matrix/federation/v1/event_auth/"+esc+"/"+url.PathEscape(oldPL), nil)
	if status != http.StatusOK {
		t.Fatalf("B's /event_auth of an outlier: %d %s", status, body)
	}
	if chain := authIDs(body, "auth_chain"); !chain[ids["m.room.create"]] || !chain[ids["m.room.member"]] {
		t.Errorf("B's auth chain of the old power levels: %v, want the create and alice's join (%v)", chain, ids)
	}

	status, body = fedDo(t, c, b, "GET", "/_matrix/federation/v1/state/"+esc+"?event_id="+url.QueryEscape(oldPL), nil)
	if status != http.StatusNotFound {
		t.Errorf("B's /state at an outlier: %d %s", status, body)
	}

	var bobJoin struct {
		EventID string `json:"event_id"`
	}
	var st []struct {
		EventID  string `json:"event_id"`
		Type     string `json:"type"`
		StateKey string `json:"state_key"`
	}
	bob.MustDo("GET", roomPath(room, "state"), nil, &st)
	for _, e := range st {
		if e.Type == "m.room.member" && e.StateKey == bob.UserID {
			bobJoin.EventID = e.EventID
		}
	}
	status, body = fedDo(t, c, b, "GET", "/_matrix/federation/v1/state/"+esc+"?event_id="+url.QueryEscape(bobJoin.EventID), nil)
	if status != http.StatusOK {
		t.Fatalf("B's /state at its join: %d %s", status, body)
	}
	if state, chain := authIDs(body, "pdus"), authIDs(body, "auth_chain"); !state[ids["m.room.create"]] || !chain[oldPL] {
		t.Errorf("B's /state at its join: state %v, auth chain %v; want the create and the old power levels", state, chain)
	}

}
