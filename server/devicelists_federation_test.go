package server_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/server"
	"github.com/persistentchat/homeserver/testserver"
)

// signedDeviceKeys is a device keys object of c's device, signed by a new
// ed25519 key of the device.
func signedDeviceKeys(t *testing.T, user, device string) map[string]any {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawStdEncoding.EncodeToString
	obj := map[string]any{"user_id": user, "device_id": device,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]any{"ed25519:" + device: b64(pub), "curve25519:" + device: b64(pub)}}
	j, _ := json.Marshal(obj)
	c, err := roomdag.CanonicalJSON(j)
	if err != nil {
		t.Fatal(err)
	}
	obj["signatures"] = map[string]any{user: map[string]any{"ed25519:" + device: b64(ed25519.Sign(priv, c))}}
	return obj
}

// joinFrom makes user, of server from, join room on host as from would
// over federation: an event built and signed with from's own key, taken
// by host's Receive, which checks the signature with keys it fetches
// from from. (Joins over federation are another branch's work; this is
// the event such a join ends with.)
func joinFrom(t *testing.T, host, from *testserver.Server, room string, user string) {
	t.Helper()
	memberFrom(t, host, from, room, user, `{"membership":"join"}`)
}

// memberFrom sends user's membership event with content to host as
// their server, from, would (joinFrom).
func memberFrom(t *testing.T, host, from *testserver.Server, room string, user string, member string) {
	t.Helper()
	ctx := context.Background()
	key, err := server.LoadOrCreateKey(from.Config.SigningKeyPath(), roomdag.ServerName(from.Name()))
	if err != nil {
		t.Fatal(err)
	}
	st, err := host.HS.Rooms.State(ctx, roomdag.RoomID(room))
	if err != nil {
		t.Fatal(err)
	}
	sk := user
	content := []byte(member)
	var auth []roomdag.EventID
	for _, k := range roomdag.AuthEventTuples(st.Version, roomdag.TypeMember, &sk, roomdag.UserID(user), content) {
		if ev := st.State[k]; ev != nil {
			auth = append(auth, ev.ID())
		}
	}
	depth := int64(0)
	for _, id := range st.Extremities {
		ev, err := host.HS.DB().Event(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		depth = max(depth, ev.Depth())
	}
	ev, err := roomdag.BuildEvent(st.Version, key, roomdag.EventTemplate{RoomID: roomdag.RoomID(room), Sender: roomdag.UserID(user),
		Type: roomdag.TypeMember, StateKey: &sk, Content: content, PrevEvents: st.Extremities, AuthEvents: auth,
		Depth: depth + 1, OriginServerTS: time.Now().UnixMilli()})
	if err != nil {
		t.Fatal(err)
	}
	res, err := host.HS.Rooms.Receive(ctx, ev, roomdag.ReceiveOptions{Kind: roomdag.KindLive, Verifier: host.HS.Keyring})
	if err != nil || res.Status != roomdag.StatusTimeline {
		t.Fatalf("%s joining %s on %s: %+v %v", user, room, host.Name(), res, err)
	}
}

// keysOf is a /keys/query answer for one user: their device IDs and
// whether they have a master key.
func keysOf(t *testing.T, c *testserver.Client, user string) (devices []string, master json.RawMessage, failures map[string]any) {
	t.Helper()
	var out struct {
		DeviceKeys map[string]map[string]json.RawMessage `json:"device_keys"`
		MasterKeys map[string]json.RawMessage            `json:"master_keys"`
		Failures   map[string]any                        `json:"failures"`
	}
	c.MustDo("POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{user: []string{}}, "timeout": 5000}, &out)
	for d := range out.DeviceKeys[user] {
		devices = append(devices, d)
	}
	sort.Strings(devices)
	return devices, out.MasterKeys[user], out.Failures
}

// deviceListWatch follows a client's /sync device_lists.changed.
type deviceListWatch struct {
	c     *testserver.Client
	since string
}

func watchDeviceLists(c *testserver.Client) *deviceListWatch {
	return &deviceListWatch{c: c, since: c.Sync("timeout=0")["next_batch"].(string)}
}

// until syncs until user is in device_lists.changed, failing the test at
// the deadline.
func (w *deviceListWatch) until(t *testing.T, user string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if w.next(t, user) {
			return
		}
	}
	t.Fatalf("%s: %s never in device_lists.changed", w.c.UserID, user)
}

// next syncs once, waiting up to 5 s for news, and says whether user is
// in device_lists.changed.
func (w *deviceListWatch) next(t *testing.T, user string) bool {
	t.Helper()
	var out struct {
		NextBatch   string `json:"next_batch"`
		DeviceLists struct {
			Changed []string `json:"changed"`
		} `json:"device_lists"`
	}
	w.c.MustDo("GET", "/_matrix/client/v3/sync?timeout=5000&since="+w.since, nil, &out)
	w.since = out.NextBatch
	return slices.Contains(out.DeviceLists.Changed, user)
}

// TestDeviceListEDUs: device-list EDUs that B sends A, signed as B: the
// first update of a user A holds nothing of is resynced from B's
// /user/devices; one that follows what A holds is applied as it is (a
// device only the EDU names shows in /keys/query, so the answer comes
// from A's cache, not from B); deletions drop devices; signing key
// updates set the cross-signing keys; a cache gone stale (bob's
// membership changed after its resync) is resynced by /keys/query; a gap
// in prev_id resyncs again; updates for users not of B and malformed
// ones are ignored without failing the transaction, and so are those of
// a user who shares no room with A's users, whom /keys/query asks B
// about; a resync that fails drops the cache. A's users see the changes
// in device_lists.changed.
func TestDeviceListEDUs(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice := a.Register("alice")
	bob := b.Register("bob")
	carol := b.Register("carol")
	bob.MustDo("POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": signedDeviceKeys(t, bob.UserID, bob.DeviceID)}, nil)
	carol.MustDo("POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": signedDeviceKeys(t, carol.UserID, carol.DeviceID)}, nil)
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	joinFrom(t, a, b, room, bob.UserID)
	watch := watchDeviceLists(alice)

	// B's stream_id for bob's devices, which a resync holds.
	status, body := fedDo(t, a, b, http.MethodGet, "/_matrix/federation/v1/user/devices/"+bob.UserID, nil)
	if status != http.StatusOK {
		t.Fatalf("/user/devices: %d %s", status, body)
	}
	var devs struct {
		StreamID int64 `json:"stream_id"`
	}
	if err := json.Unmarshal(body, &devs); err != nil || devs.StreamID <= 0 {
		t.Fatalf("/user/devices: %s", body)
	}
	held := devs.StreamID

	n := 0
	send := func(edus ...any) {
		t.Helper()
		n++
		txn := map[string]any{"origin": b.Name(), "origin_server_ts": time.Now().UnixMilli(), "pdus": []any{}, "edus": edus}
		if status, body := fedPut(t, b, a.Name(), fmt.Sprintf("/_matrix/federation/v1/send/dl-%d", n), txn); status != http.StatusOK {
			t.Fatalf("transaction %d: %d %s", n, status, body)
		}
	}
	update := func(user, device string, stream int64, prev []int64, deleted bool) map[string]any {
		c := map[string]any{"user_id": user, "device_id": device, "stream_id": stream, "prev_id": prev, "deleted": deleted}
		if !deleted {
			c["keys"] = signedDeviceKeys(t, user, device)
		}
		return map[string]any{"edu_type": "m.device_list_update", "content": c}
	}
	expect := func(step, user string, want []string, wantMaster bool) {
		t.Helper()
		got, master, failures := keysOf(t, alice, user)
		want = slices.Sorted(slices.Values(want))
		if !slices.Equal(got, want) || (master != nil) != wantMaster || len(failures) != 0 {
			t.Fatalf("%s: %s's devices %v (master %s, failures %v), want %v (master: %t)", step, user, got, master, failures, want, wantMaster)
		}
	}

	// Nothing held: the update is not applied but resynced, so only B's
	// real device is cached, not the one the EDU named.
	send(update(bob.UserID, "FAKE1", held+100, []int64{held + 99}, false))
	watch.until(t, bob.UserID)
	expect("after the resync", bob.UserID, []string{bob.DeviceID}, false)

	// Following what is held: applied as it is. B has no FAKE2.
	from := watch.since
	send(update(bob.UserID, "FAKE2", held+1, []int64{held}, false))
	watch.until(t, bob.UserID)
	expect("after an update", bob.UserID, []string{bob.DeviceID, "FAKE2"}, false)
	var changes struct {
		Changed []string `json:"changed"`
	}
	alice.MustDo("GET", "/_matrix/client/v3/keys/changes?from="+from, nil, &changes)
	if !slices.Equal(changes.Changed, []string{bob.UserID}) {
		t.Fatalf("/keys/changes from before the update: %v", changes.Changed)
	}

	// A master key by m.signing_key_update; B has none to serve.
	master := map[string]any{"user_id": bob.UserID, "usage": []string{"master"},
		"keys": map[string]any{"ed25519:AAAA": "AAAA"}}
	send(map[string]any{"edu_type": "m.signing_key_update", "content": map[string]any{"user_id": bob.UserID, "master_key": master}})
	watch.until(t, bob.UserID)
	expect("after a signing key update", bob.UserID, []string{bob.DeviceID, "FAKE2"}, true)

	// Ignored, the transaction still accepted: users not of B, a stale
	// update, malformed content; then a deletion that follows.
	send(update("@mallory:"+a.Name(), "M", held+5, []int64{held}, false),
		update("@mallory:elsewhere.test", "M", held+5, []int64{held}, false),
		update(bob.UserID, "STALE", held, []int64{held - 1}, false),
		map[string]any{"edu_type": "m.device_list_update", "content": "not an object"},
		map[string]any{"edu_type": "m.device_list_update", "content": map[string]any{"user_id": bob.UserID, "device_id": "BAD", "stream_id": "x"}},
		map[string]any{"edu_type": "m.device_list_update", "content": map[string]any{"user_id": bob.UserID, "device_id": "WRONG",
			"stream_id": held + 2, "prev_id": []int64{held + 1}, "keys": signedDeviceKeys(t, bob.UserID, "OTHER")}},
		map[string]any{"edu_type": "m.signing_key_update", "content": map[string]any{"user_id": "@mallory:elsewhere.test", "master_key": master}},
		update(bob.UserID, "FAKE2", held+2, []int64{held + 1}, true))
	watch.until(t, bob.UserID)
	expect("after the ignored ones and a deletion", bob.UserID, []string{bob.DeviceID}, true)

	// A cache gone stale: bob's membership changed (a new join event)
	// after it was resynced, so A cannot know it heard every change
	// meanwhile: /keys/query resyncs, which drops what only the EDUs said.
	send(update(bob.UserID, "FAKE6", held+3, []int64{held + 2}, false))
	watch.until(t, bob.UserID)
	expect("before the cache goes stale", bob.UserID, []string{bob.DeviceID, "FAKE6"}, true)
	memberFrom(t, a, b, room, bob.UserID, `{"membership":"join","displayname":"Bob"}`)
	expect("with the cache stale", bob.UserID, []string{bob.DeviceID}, false)
	// Resynced, it answers for itself again.
	send(update(bob.UserID, "FAKE7", held+1000, []int64{held}, false))
	watch.until(t, bob.UserID)
	expect("after the stale resync", bob.UserID, []string{bob.DeviceID, "FAKE7"}, false)

	// A gap: resynced, which drops what only the EDUs said.
	send(update(bob.UserID, "FAKE3", held+2000, []int64{held + 1500}, false))
	watch.until(t, bob.UserID)
	expect("after a gap", bob.UserID, []string{bob.DeviceID}, false)

	// carol shares no room with A's users: her updates are ignored
	// (nothing cached), and /keys/query asks B.
	send(update(carol.UserID, "FAKE4", 1_000_000, []int64{999_999}, false),
		map[string]any{"edu_type": "m.signing_key_update", "content": map[string]any{"user_id": carol.UserID, "master_key": map[string]any{
			"user_id": carol.UserID, "usage": []string{"master"}, "keys": map[string]any{"ed25519:BBBB": "BBBB"}}}})
	if lists, err := a.HS.DB().RemoteDeviceLists(context.Background(), []roomdag.UserID{roomdag.UserID(carol.UserID)}); err != nil || len(lists) != 0 {
		t.Fatalf("carol's cached list: %+v %v", lists, err)
	}
	expect("an untracked user", carol.UserID, []string{carol.DeviceID}, false)

	// B down: a gap cannot be resynced, so the cache is dropped rather
	// than trusted, and /keys/query asks B, which fails.
	b.Stop()
	send(update(bob.UserID, "FAKE8", held+5000, []int64{held + 4000}, false))
	got, _, failures := keysOf(t, alice, bob.UserID)
	if len(got) != 0 || failures[b.Name()] == nil {
		t.Fatalf("with B down after a failed resync: devices %v, failures %v", got, failures)
	}
}

// TestDeviceListsAcrossServers: with bob of B and alice of A in a room
// on each server, bob's new device reaches A as an m.device_list_update
// from B's sender: alice sees bob in device_lists.changed and his new
// device in /keys/query, answered from A's cache (B is down by then);
// bob's cross-signing keys follow as an m.signing_key_update, and his
// deleted device leaves A's answer.
func TestDeviceListsAcrossServers(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice := a.Register("alice")
	bob := b.Register("bob")
	roomA := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	joinFrom(t, a, b, roomA, bob.UserID)
	roomB := bob.CreateRoom(map[string]any{"preset": "public_chat"})
	joinFrom(t, b, a, roomB, alice.UserID)
	watch := watchDeviceLists(alice)

	changedAt := time.Now()
	bob.MustDo("POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": signedDeviceKeys(t, bob.UserID, bob.DeviceID)}, nil)
	watch.until(t, bob.UserID)
	waitDevices := func(step string, want []string, wantMaster bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			got, master, failures := keysOf(t, alice, bob.UserID)
			if slices.Equal(got, want) && (master != nil) == wantMaster && len(failures) == 0 {
				t.Logf("%s: in A's /keys/query %v after the change on B", step, time.Since(changedAt))
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: bob's devices %v (master %s, failures %v), want %v", step, got, master, failures, want)
			}
			watch.next(t, bob.UserID)
		}
	}
	waitDevices("first device", []string{bob.DeviceID}, false)

	// A second device: logged in, its keys uploaded.
	var login struct {
		AccessToken string `json:"access_token"`
		DeviceID    string `json:"device_id"`
	}
	b.Anonymous().MustDo("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password",
		"identifier": map[string]any{"type": "m.id.user", "user": bob.UserID}, "password": "correct horse battery"}, &login)
	bob2 := *bob
	bob2.Token, bob2.DeviceID = login.AccessToken, login.DeviceID
	changedAt = time.Now()
	bob2.MustDo("POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": signedDeviceKeys(t, bob.UserID, bob2.DeviceID)}, nil)
	both := []string{bob.DeviceID, bob2.DeviceID}
	sort.Strings(both)
	waitDevices("second device", both, false)

	// Cross-signing keys: a master key, uploaded first without UIA.
	mpub, _, _ := ed25519.GenerateKey(rand.Reader)
	mid := base64.RawStdEncoding.EncodeToString(mpub)
	changedAt = time.Now()
	bob.MustDo("POST", "/_matrix/client/v3/keys/device_signing/upload", map[string]any{"master_key": map[string]any{
		"user_id": bob.UserID, "usage": []string{"master"}, "keys": map[string]any{"ed25519:" + mid: mid}}}, nil)
	waitDevices("master key", both, true)

	// The second device is deleted (UIA with bob's password).
	del := bob.Do("POST", "/_matrix/client/v3/delete_devices", map[string]any{"devices": []string{bob2.DeviceID}})
	var uia struct {
		Session string `json:"session"`
	}
	_ = del.JSON(&uia)
	changedAt = time.Now()
	bob.MustDo("POST", "/_matrix/client/v3/delete_devices", map[string]any{"devices": []string{bob2.DeviceID},
		"auth": map[string]any{"type": "m.login.password", "session": uia.Session, "password": "correct horse battery",
			"identifier": map[string]any{"type": "m.id.user", "user": bob.UserID}}}, nil)
	waitDevices("device deleted", []string{bob.DeviceID}, true)

	// From A's cache: B is down.
	b.Stop()
	if got, master, failures := keysOf(t, alice, bob.UserID); !slices.Equal(got, []string{bob.DeviceID}) || master == nil || len(failures) != 0 {
		t.Fatalf("with B down: %v %s %v", got, master, failures)
	}
}

// TestDeviceListsInJoinedRoom: bob of B joins alice's room on A over
// federation (make_join/send_join); then each one's new device keys
// reach the other's server unasked: alice sees bob in
// device_lists.changed and his device in /keys/query, answered from A's
// cache (it still answers with B down), and bob sees alice's. B's
// notifier knows the room's members only from outliers: a change of
// alice's that does not wake bob's long-poll is still in its timed-out
// answer.
func TestDeviceListsInJoinedRoom(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice := a.Register("alice")
	bob := b.Register("bob")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?server_name="+url.QueryEscape(a.Name()), map[string]any{}, nil)
	watchA, watchB := watchDeviceLists(alice), watchDeviceLists(bob)

	bob.MustDo("POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": signedDeviceKeys(t, bob.UserID, bob.DeviceID)}, nil)
	alice.MustDo("POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": signedDeviceKeys(t, alice.UserID, alice.DeviceID)}, nil)
	for _, tc := range []struct {
		watch     *deviceListWatch
		c         *testserver.Client
		of        *testserver.Client
		ofDevices []string
	}{{watchA, alice, bob, []string{bob.DeviceID}}, {watchB, bob, alice, []string{alice.DeviceID}}} {
		tc.watch.until(t, tc.of.UserID) // the other server told this one
		deadline := time.Now().Add(30 * time.Second)
		for {
			got, _, failures := keysOf(t, tc.c, tc.of.UserID)
			if slices.Equal(got, tc.ofDevices) && len(failures) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s's /keys/query of %s: %v (failures %v), want %v", tc.c.UserID, tc.of.UserID, got, failures, tc.ofDevices)
			}
			tc.watch.until(t, tc.of.UserID)
		}
	}
	// B holds alice's device in its cache; A answers from its own with B
	// down.
	lists, err := b.HS.DB().RemoteDeviceLists(context.Background(), []roomdag.UserID{roomdag.UserID(alice.UserID)})
	if err != nil || lists[roomdag.UserID(alice.UserID)] == nil || lists[roomdag.UserID(alice.UserID)].Devices[alice.DeviceID] == nil {
		t.Fatalf("B's cache of alice's devices: %+v %v", lists, err)
	}

	// A change of alice's list on B that wakes nobody (written to B's
	// store directly, while bob's long-poll waits): the long-poll's
	// timed-out answer still reports her rather than moving past her.
	since := bob.Sync("timeout=0")["next_batch"].(string)
	type syncOut struct {
		DeviceLists struct {
			Changed []string `json:"changed"`
		} `json:"device_lists"`
	}
	done := make(chan syncOut, 1)
	parked := b.HS.Syncer.Parked()
	go func() {
		var out syncOut
		bob.MustDo("GET", "/_matrix/client/v3/sync?timeout=1000&since="+since, nil, &out)
		done <- out
	}()
	for deadline := time.Now().Add(10 * time.Second); b.HS.Syncer.Parked() == parked; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("bob's long-poll never parked")
		}
	}
	if err := b.HS.DB().PutRemoteCrossSigningKeys(context.Background(), roomdag.UserID(alice.UserID),
		json.RawMessage(`{"user_id":"`+alice.UserID+`","usage":["master"],"keys":{}}`), nil); err != nil {
		t.Fatal(err)
	}
	if out := <-done; !slices.Equal(out.DeviceLists.Changed, []string{alice.UserID}) {
		t.Fatalf("bob's timed-out long-poll: device_lists.changed %v, want alice", out.DeviceLists.Changed)
	}

	b.Stop()
	if got, _, failures := keysOf(t, alice, bob.UserID); !slices.Equal(got, []string{bob.DeviceID}) || len(failures) != 0 {
		t.Fatalf("with B down: %v %v", got, failures)
	}
}
