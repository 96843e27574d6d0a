package appservice_test

import (
	"encoding/json"
	"net/url"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/appservice/astest"
	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/sync"
	"github.com/persistentchat/homeserver/testserver"
)

// presenceOf returns the m.presence events the service received, in
// order.
func presenceOf(fake *astest.AS) []presenceSeen {
	var out []presenceSeen
	for _, e := range fake.Ephemeral() {
		if e.Type != "m.presence" {
			continue
		}
		var c struct {
			Presence  string `json:"presence"`
			StatusMsg string `json:"status_msg"`
		}
		_ = json.Unmarshal(e.Content, &c)
		out = append(out, presenceSeen{e.Sender, c.Presence, c.StatusMsg})
	}
	return out
}

type presenceSeen struct{ user, presence, status string }

// waitPresence waits for the service to receive user's presence state
// (with the status, when given) and returns every presence event so far.
func waitPresence(fake *astest.AS, user, state, status string) []presenceSeen {
	var got []presenceSeen
	fake.Wait(user+" "+state, func() bool {
		got = presenceOf(fake)
		for _, p := range got {
			if p.user == user && p.presence == state && (status == "" || p.status == status) {
				return true
			}
		}
		return false
	})
	return got
}

// Every presence change reaches services with receive_ephemeral, however
// it came about: a sync's set_presence, the offline timeout and PUT
// /presence alike. Users outside the namespaces who share no room with
// the service's users are not told about.
func TestPresenceFromSyncAndTimeout(t *testing.T) {
	fake := astest.NewAS(t, "hs-pr")
	r := reg("pr", fake.URL)
	r.ReceiveEphemeral = true
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	opts := astest.Options(t, nil, r)
	opts.Clock = clk
	srv := testserver.Start(t, opts)
	alice, bob := srv.Register("alice"), srv.Register("bob")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	g, q := ghost(t, srv, r, "_pr_g")
	asClient(srv, r).MustDo("POST", csAPI+"/join/"+url.PathEscape(room)+q, map[string]any{}, nil)
	bob.CreateRoom(map[string]any{"preset": "private_chat"}) // a room without the service

	// bob shares no room with the service's users: his sync brings him
	// online, unannounced. It is queued before alice's, so once hers
	// has arrived his would have too.
	bob.Sync("timeout=0")
	// A plain sync brings alice online.
	alice.Sync("timeout=0")
	waitPresence(fake, alice.UserID, sync.PresenceOnline, "")
	// set_presence=unavailable makes her unavailable.
	alice.Sync("timeout=0&set_presence=unavailable")
	waitPresence(fake, alice.UserID, sync.PresenceUnavailable, "")
	// The service's own user is in its namespace: its presence goes
	// too, room or not.
	asClient(srv, r).MustDo("GET", csAPI+"/sync"+q+"&timeout=0", nil, nil)
	waitPresence(fake, string(g), sync.PresenceOnline, "")

	// No client syncs any more: the timeout takes everyone offline. The
	// timers were set before the syncs answered, so moving the clock
	// fires them.
	clk.Advance(sync.PresenceOfflineTimeout + time.Second)
	waitPresence(fake, alice.UserID, sync.PresenceOffline, "")
	waitPresence(fake, string(g), sync.PresenceOffline, "")

	// PUT still goes through the same place; bob's timeout, if it were
	// announced, came before it.
	alice.MustDo("PUT", csAPI+"/presence/"+url.PathEscape(alice.UserID)+"/status", map[string]any{"presence": "online", "status_msg": "back"}, nil)
	got := waitPresence(fake, alice.UserID, sync.PresenceOnline, "back")

	var aliceStates []string
	for _, p := range got {
		switch p.user {
		case bob.UserID:
			t.Errorf("bob's presence delivered: %+v", p)
		case alice.UserID:
			aliceStates = append(aliceStates, p.presence)
		}
	}
	want := []string{"online", "unavailable", "offline", "online"}
	if len(aliceStates) != len(want) {
		t.Fatalf("alice's presence as delivered: %v, want %v", aliceStates, want)
	}
	for i := range want {
		if aliceStates[i] != want[i] {
			t.Fatalf("alice's presence as delivered: %v, want %v", aliceStates, want)
		}
	}
}
