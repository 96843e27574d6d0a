package federation_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/federation"
	"github.com/persistentchat/homeserver/netguard"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"github.com/persistentchat/homeserver/storage/sqlstore"
	"github.com/persistentchat/homeserver/storage/storagetest"
)

// roomsOf is a fixed list of each user's joined rooms.
type roomsOf map[roomdag.UserID][]roomdag.RoomID

func (r roomsOf) JoinedRooms(_ context.Context, u roomdag.UserID) ([]roomdag.RoomID, error) {
	return r[u], nil
}

// TestUserServers: the servers sharing a room with a user are those of
// the joined members in the current state of each room the user is
// joined to: not the invited or departed, not this server, not one a
// room's ACL denies; a room this server does not hold adds none.
func TestUserServers(t *testing.T) {
	const us = roomdag.ServerName("test.local")
	key, err := roomdag.GenerateSigningKey(us, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	member := func(room roomdag.RoomID, user roomdag.UserID, membership string) *roomdag.Event {
		sk := string(user)
		ev, err := roomdag.BuildEvent(v11, key, roomdag.EventTemplate{RoomID: room, Sender: user, Type: roomdag.TypeMember, StateKey: &sk,
			Content: json.RawMessage(fmt.Sprintf(`{"membership":%q}`, membership)), Depth: 1, OriginServerTS: 1})
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	states := map[roomdag.RoomID]roomdag.StateMap{}
	add := func(room roomdag.RoomID, user roomdag.UserID, membership string) {
		if states[room] == nil {
			states[room] = roomdag.StateMap{}
		}
		states[room][roomdag.StateKey{Type: roomdag.TypeMember, StateKey: string(user)}] = member(room, user, membership)
	}
	const alice = roomdag.UserID("@alice:test.local")
	add("!one:test.local", alice, "join")
	add("!one:test.local", "@ann:test.local", "join")
	add("!one:test.local", "@bob:b.test", "join")
	add("!one:test.local", "@carol:c.test", "leave")
	add("!one:test.local", "@dave:d.test", "invite")
	add("!one:test.local", "@dan:d.test", "ban")
	add("!two:test.local", alice, "join")
	add("!two:test.local", "@bea:b.test", "join")
	add("!two:test.local", "@eve:e.test", "join")
	add("!three:test.local", "@fred:f.test", "join") // alice is not in it
	source := federation.StateSourceFunc(func(_ context.Context, id roomdag.RoomID) (*roomdag.RoomState, error) {
		st, ok := states[id]
		if !ok {
			return nil, roomdag.ErrUnknownRoom
		}
		return &roomdag.RoomState{Version: v11, State: st}, nil
	})
	rooms := roomsOf{alice: {"!one:test.local", "!two:test.local", "!gone:test.local"}}
	got, err := federation.UserServers(context.Background(), rooms, federation.JoinedServers{Server: us, Rooms: source}, alice)
	if err != nil || !slices.Equal(got, []roomdag.ServerName{"b.test", "e.test"}) {
		t.Fatalf("servers sharing a room with alice: %v %v", got, err)
	}
	deny := func(_ roomdag.StateMap, s roomdag.ServerName) bool { return s != "e.test" }
	got, _ = federation.UserServers(context.Background(), rooms, federation.JoinedServers{Server: us, Rooms: source, ServerAllowed: deny}, alice)
	if !slices.Equal(got, []roomdag.ServerName{"b.test"}) {
		t.Fatalf("with e.test denied: %v", got)
	}
	if got, _ := federation.UserServers(context.Background(), rooms, federation.JoinedServers{Server: us, Rooms: source}, "@nobody:test.local"); len(got) != 0 {
		t.Fatalf("a user in no room: %v", got)
	}
}

// fakeKeys are the keys the device-list sender puts in its EDUs.
type fakeKeys struct{}

func (fakeKeys) FederationDeviceKeys(_ context.Context, user roomdag.UserID, devices []string) (map[string]json.RawMessage, error) {
	out := map[string]json.RawMessage{}
	for _, d := range devices {
		out[d] = json.RawMessage(fmt.Sprintf(`{"device_id":%q,"user_id":%q}`, d, user))
	}
	return out, nil
}

func (fakeKeys) FederationCrossSigningKeys(_ context.Context, user roomdag.UserID) (json.RawMessage, json.RawMessage, error) {
	return json.RawMessage(fmt.Sprintf(`{"user_id":%q,"usage":["master"]}`, user)), nil, nil
}

// TestDeviceListSender: a local user's device changes reach a server
// sharing a room with them as m.device_list_update EDUs, in order, each
// stream_id following the previous one as its prev_id, a deletion
// without keys; a cross-signing change as m.signing_key_update; nothing
// of a user who shares no room, nor of a remote user; a restarted
// sender sends only what is new.
func TestDeviceListSender(t *testing.T) {
	engines(t, func(t *testing.T, open func(t *testing.T) *sqlstore.DB) {
		db := open(t)
		defer db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		clk := clock.NewFake(time.Unix(1_700_000_000, 0))
		const us = roomdag.ServerName("test.local")
		key, err := roomdag.GenerateSigningKey(us, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		rooms := roomdag.NewRooms(db, key, clk, rand.Reader, 0)
		roomID := roomdag.RoomID("!d:test.local")
		owner := storagetest.CreateRoom(t, rooms, roomID)
		rcv := newReceiver(t)
		rcv.up(t)
		dest := roomdag.ServerName(rcv.addr)
		client := federation.NewClient(federation.ClientOptions{Key: key, Clock: clk,
			Guard: netguard.Guard{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}})
		defer client.CloseIdleConnections()
		states := federation.StateSourceFunc(rooms.State)
		dests := withDest{federation.JoinedServers{Server: us, Rooms: states}, dest}
		sender := federation.NewSender(federation.SenderOptions{Server: us, Store: db, Client: client,
			Destinations: dests, Rooms: states, Backoff: streamworkerBackoff(), Clock: clk, Log: discard()})
		if err := sender.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer sender.Stop()
		var dl *federation.DeviceListSender
		start := func() {
			dl = federation.NewDeviceListSender(federation.DeviceListOptions{Server: us, Store: db, Keys: fakeKeys{},
				Destinations: dests, Sender: sender, Clock: clk, Log: discard()})
			if err := dl.Start(ctx); err != nil {
				t.Fatal(err)
			}
		}
		start()
		db.SetCommitHook(func(c *storage.Change) {
			if len(c.DeviceLists) > 0 {
				dl.Notify()
			}
		})
		dk := func(d string) storage.KeyUpload {
			return storage.KeyUpload{DeviceKeys: json.RawMessage(fmt.Sprintf(`{"device_id":%q,"user_id":%q}`, d, owner))}
		}
		if _, err := db.UploadKeys(ctx, owner, "D", dk("D")); err != nil {
			t.Fatal(err)
		}
		if _, err := db.UploadKeys(ctx, "@lonely:test.local", "L", storage.KeyUpload{
			DeviceKeys: json.RawMessage(`{"device_id":"L","user_id":"@lonely:test.local"}`)}); err != nil {
			t.Fatal(err)
		}
		if err := db.ReplaceRemoteDeviceList(ctx, "@carol:other.test", storage.RemoteDeviceList{StreamID: 9}); err != nil {
			t.Fatal(err)
		}
		if err := db.CreateSession(ctx, storage.Session{UserID: owner, DeviceID: "E", TokenHash: []byte("e")}); err != nil {
			t.Fatal(err)
		}
		if _, err := db.DeviceListChanged(ctx, owner); err != nil {
			t.Fatal(err)
		}
		if err := db.DeleteDevices(ctx, owner, []string{"E"}, ""); err != nil {
			t.Fatal(err)
		}
		type edu struct {
			Type    string `json:"edu_type"`
			Content struct {
				UserID    string          `json:"user_id"`
				DeviceID  string          `json:"device_id"`
				StreamID  int64           `json:"stream_id"`
				PrevID    []int64         `json:"prev_id"`
				Deleted   bool            `json:"deleted"`
				Keys      json.RawMessage `json:"keys"`
				MasterKey json.RawMessage `json:"master_key"`
			} `json:"content"`
		}
		waitEDUs := func(n int) []edu {
			t.Helper()
			deadline := time.Now().Add(30 * time.Second)
			for {
				sent := sender.Stats().Sent
				rcv.mu.Lock()
				raw := append([]json.RawMessage(nil), rcv.edus...)
				rcv.mu.Unlock()
				if len(raw) >= n || time.Now().After(deadline) {
					out := make([]edu, len(raw))
					for i, r := range raw {
						if err := json.Unmarshal(r, &out[i]); err != nil {
							t.Fatal(err)
						}
					}
					return out
				}
				wctx, wcancel := context.WithTimeout(ctx, time.Second)
				_ = sender.WaitStats(wctx, func(s federation.SenderStats) bool { return s.Sent > sent })
				wcancel()
			}
		}
		got := waitEDUs(4)
		summary := func(es []edu) string {
			var s string
			for _, e := range es {
				if e.Type == "m.signing_key_update" {
					s += fmt.Sprintf("[signing %s master=%t] ", e.Content.UserID, e.Content.MasterKey != nil)
					continue
				}
				s += fmt.Sprintf("[%s %s %d %v deleted=%t keys=%t] ", e.Content.UserID, e.Content.DeviceID, e.Content.StreamID,
					e.Content.PrevID, e.Content.Deleted, e.Content.Keys != nil)
			}
			return s
		}
		// Positions: 1 D's keys, 2 lonely's, 3 carol's (remote), 4 E new,
		// 5 cross-signing, 6 E deleted.
		want := "[@owner:test.local D 1 [] deleted=false keys=true] [@owner:test.local E 4 [1] deleted=false keys=true] " +
			"[signing @owner:test.local master=true] [@owner:test.local E 6 [4] deleted=true keys=false] "
		if s := summary(got); s != want {
			t.Fatalf("EDUs\n%s\nwant\n%s", s, want)
		}

		// Restarted, the sender resumes after what it queued.
		dl.Stop()
		start()
		if _, err := db.UploadKeys(ctx, owner, "D", storage.KeyUpload{
			DeviceKeys: json.RawMessage(`{"device_id":"D","user_id":"@owner:test.local","v":2}`)}); err != nil {
			t.Fatal(err)
		}
		got = waitEDUs(5)
		if s := summary(got[4:]); len(got) != 5 || s != "[@owner:test.local D 7 [6] deleted=false keys=true] " {
			t.Fatalf("after the restart: %d EDUs, the last %s", len(got), s)
		}
		dl.Stop()
	})
}
