package server_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/federation"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"github.com/persistentchat/homeserver/testserver"
)

// Interoperability with another homeserver implementation (Dendrite,
// Synapse, Conduit...), run by hand: the test starts one of our servers,
// federating over TLS on loopback, and runs a federation scenario against
// a peer already running. It is skipped unless the environment names the
// peer:
//
//	HOMESERVER_INTEROP_PEER             the peer's server name, e.g. 127.0.0.1:18448
//	                                    (a name that resolves to its federation listener)
//	HOMESERVER_INTEROP_PEER_CLIENT_URL  its client-server API, e.g. http://127.0.0.1:18008
//	HOMESERVER_INTEROP_PEER_SECRET      its registration_shared_secret, for users made with
//	                                    /_synapse/admin/v1/register; unset: open registration
//
// The peer must accept our self-signed certificate and reach 127.0.0.1
// (for Dendrite: federation_api.disable_tls_validation: true, and
// deny_networks without loopback). Our server is named 127.0.0.1:PORT
// after its federation listener, a new one on each run.
const (
	envPeer       = "HOMESERVER_INTEROP_PEER"
	envPeerClient = "HOMESERVER_INTEROP_PEER_CLIENT_URL"
	envPeerSecret = "HOMESERVER_INTEROP_PEER_SECRET"
)

// interop is one run: our server and the peer, with a user on each.
type interop struct {
	t    *testing.T
	ours *testserver.Server
	peer roomdag.ServerName
	// the users: ours and theirs.
	alice *testserver.Client // on our server
	bob   *testserver.Client // on the peer
	pc    *testserver.Peer
}

func startInterop(t *testing.T) *interop {
	peer := os.Getenv(envPeer)
	clientURL := os.Getenv(envPeerClient)
	if peer == "" || clientURL == "" {
		t.Skipf("no peer homeserver: set %s and %s (and %s) to run against one", envPeer, envPeerClient, envPeerSecret)
	}
	ours := testserver.Federation(t, 1, testserver.Options{Configure: func(c *configs.Config) {
		c.FederationDomainWhitelist = append(c.FederationDomainWhitelist, peer)
		c.LogLevel = "info"
	}})[0]
	pc := testserver.NewPeer(t, clientURL, os.Getenv(envPeerSecret))
	in := &interop{t: t, ours: ours, peer: roomdag.ServerName(peer), pc: pc}
	in.alice = ours.Register("alice")
	in.bob = pc.Register("bob")
	return in
}

// fed sends a signed federation request from our server to the peer and
// returns the status and body.
func (in *interop) fed(method, path string, body any) (int, []byte) {
	in.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			in.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, path, rd)
	if err != nil {
		in.t.Fatal(err)
	}
	resp, err := in.ours.HS.Federation.Do(ctx, in.peer, req)
	if err != nil {
		in.t.Fatalf("%s %s to %s: %v", method, path, in.peer, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		in.t.Fatalf("%s %s: reading: %v", method, path, err)
	}
	return resp.StatusCode, b
}

// serverKeys is a /_matrix/key/v2/server answer.
type serverKeys struct {
	ServerName   string `json:"server_name"`
	ValidUntilTS int64  `json:"valid_until_ts"`
	VerifyKeys   map[string]struct {
		Key string `json:"key"`
	} `json:"verify_keys"`
	Signatures map[string]map[string]string `json:"signatures"`
}

// checkSelfSigned decodes a key response of server and checks that each
// of its verify keys signed it; it returns the keys.
func checkSelfSigned(t *testing.T, server string, raw []byte) map[string]ed25519.PublicKey {
	t.Helper()
	var k serverKeys
	if err := json.Unmarshal(raw, &k); err != nil {
		t.Fatalf("key response of %s: %v: %s", server, err, raw)
	}
	if k.ServerName != server {
		t.Fatalf("key response names %q, want %q", k.ServerName, server)
	}
	if len(k.VerifyKeys) == 0 {
		t.Fatalf("key response of %s has no verify_keys: %s", server, raw)
	}
	out := map[string]ed25519.PublicKey{}
	for id, vk := range k.VerifyKeys {
		pub, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(vk.Key, "="))
		if err != nil || len(pub) != ed25519.PublicKeySize {
			t.Fatalf("key %s of %s: %q is not an ed25519 key", id, server, vk.Key)
		}
		if err := roomdag.VerifyJSON(roomdag.ServerName(server), id, pub, raw); err != nil {
			t.Fatalf("key response of %s: self-signature by %s: %v", server, id, err)
		}
		out[id] = pub
	}
	return out
}

// TestInterop runs the federation scenario against the peer of the
// environment (see envPeer). Each step is a subtest, so that a run
// reports every step that fails, not only the first.
func TestInterop(t *testing.T) {
	in := startInterop(t)
	ours := in.ours.Name()
	peer := string(in.peer)
	ctx := context.Background()

	var peerKeys map[string]ed25519.PublicKey
	t.Run("KeysOfPeerDirect", func(t *testing.T) {
		status, body := in.fed("GET", "/_matrix/key/v2/server", nil)
		if status != http.StatusOK {
			t.Fatalf("GET key/v2/server: %d %s", status, body)
		}
		peerKeys = checkSelfSigned(t, peer, body)
		for id, want := range peerKeys {
			got, err := in.ours.HS.Keyring.RequestKey(ctx, in.peer, id)
			if err != nil {
				t.Fatalf("keyring: %v", err)
			}
			if !got.Equal(want) {
				t.Fatalf("keyring has %x for %s, the peer publishes %x", got, id, want)
			}
		}
	})

	var ourKeys map[string]ed25519.PublicKey
	t.Run("PeerAsNotaryForUs", func(t *testing.T) {
		own := in.ours.Anonymous().Do("GET", "/_matrix/key/v2/server", nil)
		ourKeys = checkSelfSigned(t, ours, own.Body)
		// The peer fetches our keys from our federation listener and
		// relays them, signed by itself.
		status, body := in.fed("POST", "/_matrix/key/v2/query", map[string]any{
			"server_keys": map[string]any{ours: map[string]any{}}})
		if status != http.StatusOK {
			t.Fatalf("POST key/v2/query: %d %s", status, body)
		}
		relayed := checkRelayed(t, body, ours, ourKeys)
		checkNotarySigned(t, relayed, peer, peerKeys)
	})

	t.Run("UsAsNotaryForPeer", func(t *testing.T) {
		var out json.RawMessage
		in.ours.Anonymous().MustDo("POST", "/_matrix/key/v2/query", map[string]any{
			"server_keys": map[string]any{peer: map[string]any{}}}, &out)
		relayed := checkRelayed(t, out, peer, peerKeys)
		checkNotarySigned(t, relayed, ours, ourKeys)
	})

	t.Run("KeyringThroughPeerNotary", func(t *testing.T) {
		// A keyring of a third server, "interop.invalid", that cannot
		// reach ours directly and asks the peer as its notary instead.
		third, err := roomdag.GenerateSigningKey("interop.invalid", rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		noDirect := clientFunc(func(ctx context.Context, dest roomdag.ServerName, req *http.Request) (*http.Response, error) {
			if dest != in.peer {
				return nil, fmt.Errorf("%s is unreachable in this step", dest)
			}
			return in.ours.HS.Federation.Do(ctx, dest, req)
		})
		if len(ourKeys) == 0 {
			t.Fatal("our keys are not known (PeerAsNotaryForUs failed or did not run)")
		}
		kr := federation.NewKeyring(federation.OwnKeys{Key: third}, &keyMap{}, noDirect,
			[]federation.Notary{{ServerName: in.peer}}, clock.Real{}, slog.New(slog.NewTextHandler(testWriter{t}, nil)))
		for id, want := range ourKeys {
			got, err := kr.RequestKey(ctx, roomdag.ServerName(ours), id)
			if err != nil {
				t.Fatalf("our key %s through the peer: %v", id, err)
			}
			if !got.Equal(want) {
				t.Fatalf("the peer relays %x as our %s, we publish %x", got, id, want)
			}
		}
	})

	t.Run("ProfileQueryToPeer", func(t *testing.T) {
		in.bob.MustDo("PUT", "/_matrix/client/v3/profile/"+url.PathEscape(in.bob.UserID)+"/displayname",
			map[string]any{"displayname": "Bob on the peer"}, nil)
		status, body := in.fed("GET", "/_matrix/federation/v1/query/profile?user_id="+url.QueryEscape(in.bob.UserID), nil)
		if status != http.StatusOK {
			t.Fatalf("query/profile: %d %s", status, body)
		}
		var p struct {
			DisplayName string `json:"displayname"`
		}
		if err := json.Unmarshal(body, &p); err != nil || p.DisplayName != "Bob on the peer" {
			t.Fatalf("query/profile: %s", body)
		}
	})

	t.Run("ProfileQueryFromPeer", func(t *testing.T) {
		in.alice.MustDo("PUT", "/_matrix/client/v3/profile/"+url.PathEscape(in.alice.UserID)+"/displayname",
			map[string]any{"displayname": "Alice on ours"}, nil)
		// The peer asks our server over federation.
		var p struct {
			DisplayName string `json:"displayname"`
		}
		in.bob.MustDo("GET", "/_matrix/client/v3/profile/"+url.PathEscape(in.alice.UserID), nil, &p)
		if p.DisplayName != "Alice on ours" {
			t.Fatalf("the peer sees %q as alice's display name", p.DisplayName)
		}
	})

	t.Run("DirectoryQueryToPeer", func(t *testing.T) {
		local := "interop" + strings.ReplaceAll(in.bob.UserID[1:strings.IndexByte(in.bob.UserID, ':')], "_", "")
		room := in.bob.CreateRoom(map[string]any{"room_alias_name": local, "preset": "public_chat"})
		alias := "#" + local + ":" + peer
		status, body := in.fed("GET", "/_matrix/federation/v1/query/directory?room_alias="+url.QueryEscape(alias), nil)
		if status != http.StatusOK {
			t.Fatalf("query/directory: %d %s", status, body)
		}
		var d struct {
			RoomID  string   `json:"room_id"`
			Servers []string `json:"servers"`
		}
		if err := json.Unmarshal(body, &d); err != nil || d.RoomID != room || !contains(d.Servers, peer) {
			t.Fatalf("query/directory for %s (room %s): %s", alias, room, body)
		}
	})

	t.Run("DirectoryQueryFromPeer", func(t *testing.T) {
		local := "interop" + in.alice.UserID[1:strings.IndexByte(in.alice.UserID, ':')]
		room := in.alice.CreateRoom(map[string]any{"room_alias_name": local, "preset": "public_chat"})
		alias := "#" + local + ":" + ours
		var d struct {
			RoomID  string   `json:"room_id"`
			Servers []string `json:"servers"`
		}
		in.bob.MustDo("GET", "/_matrix/client/v3/directory/room/"+url.PathEscape(alias), nil, &d)
		if d.RoomID != room || !contains(d.Servers, ours) {
			t.Fatalf("the peer resolves %s to %+v, want room %s on %s", alias, d, room, ours)
		}
	})

	// Events of a world-readable room on the peer, fetched by our
	// server: each must parse, hash, have the ID we compute and carry a
	// signature of the peer that verifies (canonical JSON, content and
	// reference hashes, redaction algorithm and signatures, as the peer
	// builds them).
	t.Run("PeerRoomEventsVerify", func(t *testing.T) {
		room := in.bob.CreateRoom(map[string]any{"preset": "public_chat", "initial_state": []any{
			map[string]any{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "world_readable"}}}})
		in.bob.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.topic/", map[string]any{"topic": "interop topic"}, nil)
		var ids []string
		for _, text := range []string{"plain", "unicode h\u00e9llo \u2603 \U0001F600 \u2028 \"quoted\" \\ /", "numbers"} {
			ids = append(ids, in.bob.SendText(room, text))
		}
		var create struct {
			RoomVersion string `json:"room_version"`
		}
		in.bob.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.create/", nil, &create)
		if create.RoomVersion == "" {
			create.RoomVersion = "1"
		}
		v, ok := roomdag.LookupRoomVersion(create.RoomVersion)
		if !ok {
			t.Fatalf("the peer's room version %q is not one we know", create.RoomVersion)
		}
		last := ids[len(ids)-1]
		redacted := map[roomdag.EventID]bool{}
		check := func(raw json.RawMessage) *roomdag.Event {
			t.Helper()
			ev, err := roomdag.NewEventFromJSON(v, raw)
			if err != nil {
				t.Fatalf("peer event does not parse: %v: %s", err, raw)
			}
			if err := roomdag.CheckContentHash(v, raw); err != nil {
				// Events a server may not see are served redacted
				// (Dendrite, as Synapse): then what came must be its own
				// redaction, which the signature covers.
				red, rerr := roomdag.Redact(v, raw)
				if rerr != nil {
					t.Fatalf("peer event %s: %v, and redacting it: %v", ev.ID(), err, rerr)
				}
				rev, rerr := roomdag.NewEventFromJSON(v, red)
				if rerr != nil || !bytes.Equal(canonical(t, rev.Content()), canonical(t, ev.Content())) {
					t.Fatalf("peer event %s: %v, and it is not redacted: %s", ev.ID(), err, raw)
				}
				redacted[ev.ID()] = true
			}
			if err := in.ours.HS.Keyring.VerifyEventSignatures(ctx, ev, ev.OriginServerTS()); err != nil {
				t.Fatalf("peer event %s: %v", ev.ID(), err)
			}
			return ev
		}
		var one struct {
			PDUs []json.RawMessage `json:"pdus"`
		}
		status, body := in.fed("GET", "/_matrix/federation/v1/event/"+url.PathEscape(last), nil)
		if status != http.StatusOK || json.Unmarshal(body, &one) != nil || len(one.PDUs) != 1 {
			t.Fatalf("GET /event: %d %s", status, body)
		}
		if ev := check(one.PDUs[0]); string(ev.ID()) != last {
			t.Fatalf("we compute ID %s for the event the peer calls %s", ev.ID(), last)
		}
		// The whole history by /backfill, back to the create event.
		status, body = in.fed("GET", "/_matrix/federation/v1/backfill/"+url.PathEscape(room)+"?limit=100&v="+url.QueryEscape(last), nil)
		var bf struct {
			PDUs []json.RawMessage `json:"pdus"`
		}
		if status != http.StatusOK || json.Unmarshal(body, &bf) != nil {
			t.Fatalf("GET /backfill: %d %s", status, body)
		}
		seen := map[roomdag.EventID]bool{}
		sawCreate := false
		for _, raw := range bf.PDUs {
			ev := check(raw)
			seen[ev.ID()] = true
			sawCreate = sawCreate || ev.IsCreate()
		}
		for _, id := range ids {
			if !seen[roomdag.EventID(id)] {
				t.Errorf("/backfill lacks %s (or we compute another ID for it)", id)
			}
			if redacted[roomdag.EventID(id)] {
				t.Errorf("%s, sent when the room was world-readable, came redacted", id)
			}
		}
		t.Logf("/backfill: %d events, %d of them redacted (sent before the room was world-readable)", len(bf.PDUs), len(redacted))
		if !sawCreate {
			t.Errorf("/backfill from the latest event did not reach the create event (%d events)", len(bf.PDUs))
		}
		// The state at the last event, whole and as IDs, and its auth chain.
		var st struct {
			PDUs      []json.RawMessage `json:"pdus"`
			AuthChain []json.RawMessage `json:"auth_chain"`
		}
		status, body = in.fed("GET", "/_matrix/federation/v1/state/"+url.PathEscape(room)+"?event_id="+url.QueryEscape(last), nil)
		if status != http.StatusOK || json.Unmarshal(body, &st) != nil || len(st.PDUs) == 0 {
			t.Fatalf("GET /state: %d %s", status, body)
		}
		sawTopic := false
		for _, raw := range append(st.PDUs, st.AuthChain...) {
			ev := check(raw)
			if ev.Type() == "m.room.topic" {
				sawTopic = strings.Contains(string(ev.Content()), "interop topic")
			}
		}
		if !sawTopic {
			t.Errorf("/state lacks the topic")
		}
		var sids struct {
			PDUIDs       []string `json:"pdu_ids"`
			AuthChainIDs []string `json:"auth_chain_ids"`
		}
		status, body = in.fed("GET", "/_matrix/federation/v1/state_ids/"+url.PathEscape(room)+"?event_id="+url.QueryEscape(last), nil)
		if status != http.StatusOK || json.Unmarshal(body, &sids) != nil || len(sids.PDUIDs) != len(st.PDUs) {
			t.Errorf("GET /state_ids: %d %s (/state had %d events)", status, body, len(st.PDUs))
		}
		var ea struct {
			AuthChain []json.RawMessage `json:"auth_chain"`
		}
		status, body = in.fed("GET", "/_matrix/federation/v1/event_auth/"+url.PathEscape(room)+"/"+url.PathEscape(last), nil)
		if status != http.StatusOK || json.Unmarshal(body, &ea) != nil || len(ea.AuthChain) == 0 {
			t.Errorf("GET /event_auth: %d %s", status, body)
		}
		for _, raw := range ea.AuthChain {
			check(raw)
		}
		var ts struct {
			EventID string `json:"event_id"`
		}
		status, body = in.fed("GET", fmt.Sprintf("/_matrix/federation/v1/timestamp_to_event/%s?dir=b&ts=%d", url.PathEscape(room), time.Now().Add(time.Minute).UnixMilli()), nil)
		if status == http.StatusNotFound && strings.Contains(string(body), "M_UNRECOGNIZED") {
			t.Logf("the peer does not serve timestamp_to_event (spec v1.6): %s", body)
		} else if status != http.StatusOK || json.Unmarshal(body, &ts) != nil || ts.EventID != last {
			t.Errorf("GET /timestamp_to_event: %d %s, want %s", status, body, last)
		}
	})

	// The published room directories and space hierarchies, each side
	// asking the other's over federation.
	t.Run("PublicRoomsOfPeer", func(t *testing.T) {
		room := in.bob.CreateRoom(map[string]any{"preset": "public_chat", "visibility": "public", "name": "Peer directory room"})
		status, body := in.fed("GET", "/_matrix/federation/v1/publicRooms?limit=100", nil)
		if status != http.StatusOK || !strings.Contains(string(body), room) {
			t.Fatalf("publicRooms of the peer: %d %s, want %s listed", status, body, room)
		}
	})
	t.Run("PublicRoomsFromPeer", func(t *testing.T) {
		room := in.alice.CreateRoom(map[string]any{"preset": "public_chat", "visibility": "public", "name": "Our directory room"})
		r := in.bob.Do("GET", "/_matrix/client/v3/publicRooms?limit=100&server="+url.QueryEscape(ours), nil)
		if r.Status != http.StatusOK || !strings.Contains(string(r.Body), room) {
			t.Fatalf("the peer's publicRooms?server=ours: %d %s, want %s listed", r.Status, r.Body, room)
		}
	})
	space := func(c *testserver.Client, server string) (string, string) {
		child := c.CreateRoom(map[string]any{"preset": "public_chat", "name": "child"})
		sp := c.CreateRoom(map[string]any{"preset": "public_chat", "name": "space",
			"creation_content": map[string]any{"type": "m.space"},
			"initial_state":    []any{map[string]any{"type": "m.space.child", "state_key": child, "content": map[string]any{"via": []string{server}}}}})
		return sp, child
	}
	t.Run("HierarchyOfPeer", func(t *testing.T) {
		sp, child := space(in.bob, peer)
		status, body := in.fed("GET", "/_matrix/federation/v1/hierarchy/"+url.PathEscape(sp), nil)
		if status != http.StatusOK || !strings.Contains(string(body), child) {
			t.Fatalf("hierarchy of the peer's space: %d %s, want child %s", status, body, child)
		}
	})
	t.Run("HierarchyFromPeer", func(t *testing.T) {
		// Dendrite walks only spaces it knows, asking over federation for
		// the children it does not: a space on the peer with a child here.
		ourSp, ourChild := space(in.alice, ours)
		sp := in.bob.CreateRoom(map[string]any{"preset": "public_chat", "name": "space with a remote child",
			"creation_content": map[string]any{"type": "m.space"},
			"initial_state":    []any{map[string]any{"type": "m.space.child", "state_key": ourSp, "content": map[string]any{"via": []string{ours}}}}})
		r := in.bob.Do("GET", "/_matrix/client/v1/rooms/"+url.PathEscape(sp)+"/hierarchy", nil)
		if r.Status != http.StatusOK || !strings.Contains(string(r.Body), `"room_id":"`+ourSp+`"`) || !strings.Contains(string(r.Body), ourChild) {
			t.Fatalf("the peer's hierarchy of its space holding ours: %d %s, want %s and its child %s", r.Status, r.Body, ourSp, ourChild)
		}
	})

	// Device keys: each side uploads signed device keys and a one-time
	// key, and the other side's user queries and claims them (the
	// servers ask each other with /user/keys/query and /user/keys/claim).
	aliceKeys := uploadDeviceKeys(t, in.alice)
	bobKeys := uploadDeviceKeys(t, in.bob)
	t.Run("DeviceKeysQueryFromPeer", func(t *testing.T) {
		checkQueriedKeys(t, in.bob, in.alice, aliceKeys)
	})
	t.Run("DeviceKeysQueryToPeer", func(t *testing.T) {
		checkQueriedKeys(t, in.alice, in.bob, bobKeys)
	})
	t.Run("OneTimeKeyClaimFromPeer", func(t *testing.T) {
		checkClaimedKey(t, in.bob, in.alice, aliceKeys)
	})
	t.Run("OneTimeKeyClaimToPeer", func(t *testing.T) {
		checkClaimedKey(t, in.alice, in.bob, bobKeys)
	})
	t.Run("UserDevicesOfPeer", func(t *testing.T) {
		status, body := in.fed("GET", "/_matrix/federation/v1/user/devices/"+url.PathEscape(in.bob.UserID), nil)
		var d struct {
			UserID  string `json:"user_id"`
			Devices []struct {
				DeviceID string `json:"device_id"`
			} `json:"devices"`
		}
		if status != http.StatusOK || json.Unmarshal(body, &d) != nil || d.UserID != in.bob.UserID {
			t.Fatalf("user/devices: %d %s", status, body)
		}
		for _, dev := range d.Devices {
			if dev.DeviceID == in.bob.DeviceID {
				return
			}
		}
		t.Fatalf("user/devices lacks %s: %s", in.bob.DeviceID, body)
	})

	// Media: each side downloads what the other's user uploaded, through
	// its own server, which fetches it over federation.
	t.Run("MediaFromPeer", func(t *testing.T) {
		checkRemoteMedia(t, in.alice, in.bob)
	})
	t.Run("MediaToPeer", func(t *testing.T) {
		checkRemoteMedia(t, in.bob, in.alice)
	})

	t.Run("ToDeviceToPeer", func(t *testing.T) {
		inbox := newInbox(in.bob)
		in.alice.MustDo("PUT", "/_matrix/client/v3/sendToDevice/m.interop.test/ours1", map[string]any{"messages": map[string]any{
			in.bob.UserID: map[string]any{in.bob.DeviceID: map[string]any{"from": "ours"}}}}, nil)
		got := inbox.until(t, "m.interop.test")
		ev := got[len(got)-1]
		if ev.Sender != in.alice.UserID {
			t.Fatalf("sender %q, want %q", ev.Sender, in.alice.UserID)
		}
		sameJSON(t, ev.Content, `{"from":"ours"}`)
	})

	t.Run("ToDeviceFromPeer", func(t *testing.T) {
		inbox := newInbox(in.alice)
		in.bob.MustDo("PUT", "/_matrix/client/v3/sendToDevice/m.interop.test/peer1", map[string]any{"messages": map[string]any{
			in.alice.UserID: map[string]any{in.alice.DeviceID: map[string]any{"from": "peer"}}}}, nil)
		got := inbox.until(t, "m.interop.test")
		ev := got[len(got)-1]
		if ev.Sender != in.bob.UserID {
			t.Fatalf("sender %q, want %q", ev.Sender, in.bob.UserID)
		}
		sameJSON(t, ev.Content, `{"from":"peer"}`)
	})
}

// TestInteropRooms: rooms shared with the peer. Our user joins a room
// of the peer's and the peer's user joins ours; in each, history from
// before the join, messages both ways, a topic change and typing
// notifications are seen on both sides, and the late joiner pages back
// through the history its server did not have.
func TestInteropRooms(t *testing.T) {
	in := startInterop(t)
	ours := in.ours.Name()
	peer := string(in.peer)
	for _, tc := range []struct {
		name string
		// host created the room; guest's server joins it late.
		host, guest *testserver.Client
		hostServer  string
	}{
		{"OurUserJoinsPeerRoom", in.bob, in.alice, peer},
		{"PeerUserJoinsOurRoom", in.alice, in.bob, ours},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host, guest := tc.host, tc.guest
			room := host.CreateRoom(map[string]any{"preset": "public_chat", "name": "interop " + tc.name})
			var before []string
			for i := range 3 {
				before = append(before, host.SendText(room, fmt.Sprintf("before the join %d", i)))
			}
			r := guest.Do("POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?server_name="+url.QueryEscape(tc.hostServer), map[string]any{})
			if r.Status != http.StatusOK {
				t.Fatalf("%s joining %s through %s: %d %s", guest.UserID, room, tc.hostServer, r.Status, r.Body)
			}
			// The host's server has the guest's join.
			waitFor(t, interopWait, "the join at the host", func() bool {
				var m struct {
					Membership string `json:"membership"`
				}
				r := host.Do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.member/"+url.PathEscape(guest.UserID), nil)
				return r.Status == http.StatusOK && r.JSON(&m) == nil && m.Membership == "join"
			})

			t.Run("MessageHostToGuest", func(t *testing.T) {
				id := host.SendText(room, "from the host")
				waitEvent(t, guest, room, id, "from the host")
			})
			t.Run("MessageGuestToHost", func(t *testing.T) {
				id := guest.SendText(room, "from the guest")
				waitEvent(t, host, room, id, "from the guest")
			})
			t.Run("BurstBothWays", func(t *testing.T) {
				// 60 messages each way as fast as the client sends them
				// (several transactions, batched): every one arrives.
				for _, pair := range [][2]*testserver.Client{{host, guest}, {guest, host}} {
					from, to := pair[0], pair[1]
					var ids []string
					for i := range 60 {
						ids = append(ids, from.SendText(room, fmt.Sprintf("burst %d", i)))
					}
					waitEvent(t, to, room, ids[len(ids)-1], "burst 59")
					for i, id := range ids {
						r := to.Do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/event/"+url.PathEscape(id), nil)
						if r.Status != http.StatusOK {
							t.Errorf("burst message %d from %s missing at %s: %d %s", i, from.UserID, to.UserID, r.Status, r.Body)
						}
					}
				}
			})
			t.Run("ContentBothWays", func(t *testing.T) {
				// Content that canonical JSON must get right on both sides
				// (sorted keys, non-ASCII left as UTF-8, escapes, the
				// largest integers allowed), each way.
				content := map[string]any{"msgtype": "m.text", "body": "h\u00e9llo \u2603 \U0001F600 \u2028 \"q\" \\ / \u0007 <>&",
					"zz": map[string]any{"b": []any{1, -9007199254740991, 9007199254740991, "x", nil, true}, "a": ""}, "\u00e9": "key"}
				want, _ := json.Marshal(content)
				for _, pair := range [][2]*testserver.Client{{host, guest}, {guest, host}} {
					from, to := pair[0], pair[1]
					var out struct {
						EventID string `json:"event_id"`
					}
					from.MustDo("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/c%d", url.PathEscape(room), time.Now().UnixNano()), content, &out)
					var ev struct {
						Content json.RawMessage `json:"content"`
					}
					waitFor(t, interopWait, "the message at "+to.UserID, func() bool {
						r := to.Do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/event/"+url.PathEscape(out.EventID), nil)
						return r.Status == http.StatusOK && r.JSON(&ev) == nil
					})
					sameJSON(t, ev.Content, string(want))
				}
			})
			t.Run("RedactionHostToGuest", func(t *testing.T) {
				id := host.SendText(room, "to be redacted")
				waitEvent(t, guest, room, id, "to be redacted")
				host.MustDo("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/redact/%s/r%d", url.PathEscape(room), url.PathEscape(id), time.Now().UnixNano()), map[string]any{"reason": "interop"}, nil)
				var last []byte
				defer func() {
					if t.Failed() {
						t.Logf("the guest's last view of %s: %s", id, last)
					}
				}()
				waitFor(t, interopWait, "the redaction at the guest", func() bool {
					var ev struct {
						Content map[string]any `json:"content"`
					}
					r := guest.Do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/event/"+url.PathEscape(id), nil)
					last = r.Body
					return r.Status == http.StatusOK && r.JSON(&ev) == nil && len(ev.Content) == 0
				})
			})
			t.Run("DeviceListGuestToHost", func(t *testing.T) {
				since := host.Sync("timeout=0")["next_batch"].(string)
				// A new device of the guest's user, with keys.
				var login struct {
					AccessToken string `json:"access_token"`
					DeviceID    string `json:"device_id"`
				}
				anon := *guest
				anon.Token = ""
				anon.MustDo("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password",
					"identifier": map[string]any{"type": "m.id.user", "user": guest.UserID}, "password": "correct horse battery"}, &login)
				dev := *guest
				dev.Token, dev.DeviceID = login.AccessToken, login.DeviceID
				uploadDeviceKeys(t, &dev)
				waitFor(t, interopWait, "the guest's device list change at the host", func() bool {
					var out struct {
						NextBatch   string `json:"next_batch"`
						DeviceLists struct {
							Changed []string `json:"changed"`
						} `json:"device_lists"`
					}
					host.MustDo("GET", "/_matrix/client/v3/sync?timeout=2000&since="+url.QueryEscape(since), nil, &out)
					since = out.NextBatch
					return contains(out.DeviceLists.Changed, guest.UserID)
				})
			})
			t.Run("TopicChange", func(t *testing.T) {
				// The host created the room: only it may set the topic.
				host.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.topic/", map[string]any{"topic": "set by the host"}, nil)
				waitFor(t, interopWait, "the topic at the guest", func() bool {
					var tp struct {
						Topic string `json:"topic"`
					}
					r := guest.Do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.topic/", nil)
					return r.Status == http.StatusOK && r.JSON(&tp) == nil && tp.Topic == "set by the host"
				})
			})
			t.Run("TypingGuestToHost", func(t *testing.T) {
				since := host.Sync("timeout=0")["next_batch"].(string)
				guest.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/typing/"+url.PathEscape(guest.UserID), map[string]any{"typing": true, "timeout": 30000}, nil)
				waitFor(t, interopWait, "the guest typing at the host", func() bool {
					out := host.Sync("timeout=2000&since=" + since)
					since = out["next_batch"].(string)
					b, _ := json.Marshal(out)
					return strings.Contains(string(b), `"m.typing"`) && strings.Contains(string(b), guest.UserID)
				})
			})
			t.Run("ReceiptGuestToHost", func(t *testing.T) {
				id := host.SendText(room, "to be read")
				waitEvent(t, guest, room, id, "to be read")
				since := host.Sync("timeout=0")["next_batch"].(string)
				guest.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/receipt/m.read/"+url.PathEscape(id), map[string]any{}, nil)
				waitFor(t, interopWait, "the guest's receipt at the host", func() bool {
					out := host.Sync("timeout=2000&since=" + since)
					since = out["next_batch"].(string)
					b, _ := json.Marshal(out)
					return strings.Contains(string(b), `"m.receipt"`) && strings.Contains(string(b), guest.UserID)
				})
			})
			t.Run("GuestStateChange", func(t *testing.T) {
				// The host raises the guest to 100; the guest's server then
				// builds a state event the host's server must accept.
				var pl map[string]any
				host.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.power_levels/", nil, &pl)
				users, _ := pl["users"].(map[string]any)
				if users == nil {
					users = map[string]any{}
				}
				users[guest.UserID] = 100
				pl["users"] = users
				host.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.power_levels/", pl, nil)
				waitFor(t, interopWait, "the guest's power at the guest's server", func() bool {
					var got map[string]any
					r := guest.Do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.power_levels/", nil)
					if r.Status != http.StatusOK || r.JSON(&got) != nil {
						return false
					}
					u, _ := got["users"].(map[string]any)
					return u[guest.UserID] == float64(100)
				})
				guest.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.name/", map[string]any{"name": "named by the guest"}, nil)
				waitFor(t, interopWait, "the guest's room name at the host", func() bool {
					var n struct {
						Name string `json:"name"`
					}
					r := host.Do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.name/", nil)
					return r.Status == http.StatusOK && r.JSON(&n) == nil && n.Name == "named by the guest"
				})
			})
			t.Run("ConcurrentStateConverges", func(t *testing.T) {
				// Both (at power 100 since GuestStateChange) rename the room
				// at once, each on its own server: the DAG forks, and both
				// servers' state resolution must pick the same name.
				done := make(chan struct{})
				go func() {
					defer close(done)
					host.Do("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.name/", map[string]any{"name": "host's name"})
				}()
				guest.Do("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.name/", map[string]any{"name": "guest's name"})
				<-done
				name := func(c *testserver.Client) string {
					var n struct {
						Name string `json:"name"`
					}
					c.Do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.name/", nil).JSON(&n)
					return n.Name
				}
				// Messages after the fork merge it on both sides.
				waitEvent(t, guest, room, host.SendText(room, "after the fork"), "after the fork")
				waitEvent(t, host, room, guest.SendText(room, "after the fork too"), "after the fork too")
				var h, g string
				waitFor(t, interopWait, "the same room name on both servers", func() bool {
					h, g = name(host), name(guest)
					return h == g && (h == "host's name" || h == "guest's name")
				})
				t.Logf("both servers resolved the name to %q", h)
			})
			t.Run("BackfillBeforeJoin", func(t *testing.T) {
				// The guest pages back from the end: its server fetches what
				// came before it joined from the host's.
				seen := map[string]bool{}
				from := ""
				found := func() bool {
					for _, id := range before {
						if !seen[id] {
							return false
						}
					}
					return true
				}
				for page := 0; page < 20 && !found(); page++ {
					q := "dir=b&limit=10"
					if from != "" {
						q += "&from=" + url.QueryEscape(from)
					}
					var out struct {
						Chunk []struct {
							EventID string `json:"event_id"`
						} `json:"chunk"`
						End string `json:"end"`
					}
					guest.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?"+q, nil, &out)
					for _, ev := range out.Chunk {
						seen[ev.EventID] = true
					}
					if out.End == "" || len(out.Chunk) == 0 {
						break
					}
					from = out.End
				}
				for _, id := range before {
					if !seen[id] {
						t.Errorf("the guest's /messages lacks %s, sent before its server joined (saw %d events)", id, len(seen))
					}
				}
			})
			t.Run("GuestLeaves", func(t *testing.T) {
				leaver := in.pc.Register("leaver")
				if guest == in.alice {
					leaver = in.ours.Register("leaver")
				}
				leaver.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?server_name="+url.QueryEscape(tc.hostServer), map[string]any{}, nil)
				waitFor(t, interopWait, "the leaver joined at the host", memberIs(host, room, leaver.UserID, "join"))
				leaver.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/leave", map[string]any{}, nil)
				waitFor(t, interopWait, "the leave at the host", memberIs(host, room, leaver.UserID, "leave"))
			})
			t.Run("KickAndBan", func(t *testing.T) {
				// A second guest of the same server, so that the guest's
				// server stays in the room: kicked, it rejoins; banned, it
				// cannot.
				var other *testserver.Client
				if guest == in.alice {
					other = in.ours.Register("kicked")
				} else {
					other = in.pc.Register("kicked")
				}
				other.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?server_name="+url.QueryEscape(tc.hostServer), map[string]any{}, nil)
				member := func(c *testserver.Client, want string) func() bool {
					return func() bool {
						var m struct {
							Membership string `json:"membership"`
						}
						r := c.Do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.member/"+url.PathEscape(other.UserID), nil)
						return r.Status == http.StatusOK && r.JSON(&m) == nil && m.Membership == want
					}
				}
				waitFor(t, interopWait, "the second guest joined at the host", member(host, "join"))
				host.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/kick", map[string]any{"user_id": other.UserID, "reason": "interop"}, nil)
				waitFor(t, interopWait, "the kick at the guest's server", member(guest, "leave"))
				other.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?server_name="+url.QueryEscape(tc.hostServer), map[string]any{}, nil)
				waitFor(t, interopWait, "the rejoin at the host", member(host, "join"))
				host.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/ban", map[string]any{"user_id": other.UserID, "reason": "interop"}, nil)
				waitFor(t, interopWait, "the ban at the guest's server", member(guest, "ban"))
				if r := other.Do("POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?server_name="+url.QueryEscape(tc.hostServer), map[string]any{}); r.Status != http.StatusForbidden {
					t.Errorf("a banned user's join: %d %s, want 403", r.Status, r.Body)
				}
			})
		})
	}
}

// TestInteropInvites: each side's user invites the other's to a private
// room; the invitee sees the invite in /sync, joins through it and
// messages go both ways; a second invite is rejected and the inviter's
// server sees the rejection.
func TestInteropInvites(t *testing.T) {
	in := startInterop(t)
	for _, tc := range []struct {
		name             string
		inviter, invitee *testserver.Client
		inviteeServer    func() *testserver.Client // a second user of the invitee's server
	}{
		{"OurUserInvitesPeerUser", in.alice, in.bob, func() *testserver.Client { return in.pc.Register("rejecter") }},
		{"PeerUserInvitesOurUser", in.bob, in.alice, func() *testserver.Client { return in.ours.Register("rejecter") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			room := tc.inviter.CreateRoom(map[string]any{"preset": "private_chat", "name": "invite " + tc.name})
			r := tc.inviter.Do("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/invite", map[string]any{"user_id": tc.invitee.UserID})
			if r.Status != http.StatusOK {
				t.Fatalf("inviting %s: %d %s", tc.invitee.UserID, r.Status, r.Body)
			}
			waitFor(t, interopWait, "the invite in the invitee's /sync", func() bool {
				out := tc.invitee.Sync("timeout=0")
				rooms, _ := out["rooms"].(map[string]any)
				inv, _ := rooms["invite"].(map[string]any)
				_, ok := inv[room]
				return ok
			})
			// Joining through the invite: no server named, the invite says.
			r = tc.invitee.Do("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{})
			if r.Status != http.StatusOK {
				t.Fatalf("joining through the invite: %d %s", r.Status, r.Body)
			}
			waitEvent(t, tc.inviter, room, tc.invitee.SendText(room, "joined by invite"), "joined by invite")
			waitEvent(t, tc.invitee, room, tc.inviter.SendText(room, "welcome"), "welcome")

			other := tc.inviteeServer()
			tc.inviter.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/invite", map[string]any{"user_id": other.UserID}, nil)
			waitFor(t, interopWait, "the second invite", func() bool {
				out := other.Sync("timeout=0")
				rooms, _ := out["rooms"].(map[string]any)
				inv, _ := rooms["invite"].(map[string]any)
				_, ok := inv[room]
				return ok
			})
			other.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/leave", map[string]any{}, nil)
			waitFor(t, interopWait, "the rejection at the inviter", func() bool {
				var m struct {
					Membership string `json:"membership"`
				}
				r := tc.inviter.Do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.member/"+url.PathEscape(other.UserID), nil)
				return r.Status == http.StatusOK && r.JSON(&m) == nil && m.Membership == "leave"
			})
		})
	}
}

// TestInteropRoomVersions: for every room version both servers support,
// a room of each side is joined by the other's user and a message goes
// each way: event formats, IDs, hashes, redaction algorithms and auth
// rules as each version has them.
func TestInteropRoomVersions(t *testing.T) {
	in := startInterop(t)
	var caps struct {
		Capabilities struct {
			RoomVersions struct {
				Available map[string]string `json:"available"`
			} `json:"m.room_versions"`
		} `json:"capabilities"`
	}
	in.bob.MustDo("GET", "/_matrix/client/v3/capabilities", nil, &caps)
	var versions []string
	for id := range caps.Capabilities.RoomVersions.Available {
		if v, ok := roomdag.LookupRoomVersion(id); ok && v.Stable {
			versions = append(versions, id)
		}
	}
	slices.SortFunc(versions, cmpNum)
	t.Logf("room versions both support: %v (the peer offers %v)", versions, caps.Capabilities.RoomVersions.Available)
	for _, ver := range versions {
		for _, dir := range []struct {
			name        string
			host, guest *testserver.Client
			hostServer  string
		}{{"PeerRoom", in.bob, in.alice, string(in.peer)}, {"OurRoom", in.alice, in.bob, in.ours.Name()}} {
			t.Run("v"+ver+"/"+dir.name, func(t *testing.T) {
				room := dir.host.CreateRoom(map[string]any{"preset": "public_chat", "room_version": ver})
				dir.host.SendText(room, "before v"+ver)
				r := dir.guest.Do("POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?server_name="+url.QueryEscape(dir.hostServer), map[string]any{})
				if r.Status != http.StatusOK {
					t.Fatalf("joining a v%s room: %d %s", ver, r.Status, r.Body)
				}
				waitEvent(t, dir.host, room, dir.guest.SendText(room, "guest v"+ver), "guest v"+ver)
				waitEvent(t, dir.guest, room, dir.host.SendText(room, "host v"+ver), "host v"+ver)
			})
		}
	}
}

// cmpNum orders decimal strings by value.
func cmpNum(a, b string) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	return strings.Compare(a, b)
}

// memberIs is a condition: c's server has user's membership in room.
func memberIs(c *testserver.Client, room, user, want string) func() bool {
	return func() bool {
		var m struct {
			Membership string `json:"membership"`
		}
		r := c.Do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.member/"+url.PathEscape(user), nil)
		return r.Status == http.StatusOK && r.JSON(&m) == nil && m.Membership == want
	}
}

// interopWait bounds each wait for the peer (a deadline, not a sleep).
const interopWait = 30 * time.Second

// waitEvent waits until c's server has event id in room, with body.
func waitEvent(t *testing.T, c *testserver.Client, room, id, body string) {
	t.Helper()
	var ev struct {
		Content struct {
			Body string `json:"body"`
		} `json:"content"`
	}
	waitFor(t, interopWait, "event "+id+" at "+c.UserID, func() bool {
		r := c.Do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/event/"+url.PathEscape(id), nil)
		return r.Status == http.StatusOK && r.JSON(&ev) == nil
	})
	if ev.Content.Body != body {
		t.Fatalf("event %s at %s has body %q, want %q", id, c.UserID, ev.Content.Body, body)
	}
}

// checkRelayed finds server's key response in a notary's answer, checks
// it is self-signed with the keys want and returns it.
func checkRelayed(t *testing.T, answer []byte, server string, want map[string]ed25519.PublicKey) []byte {
	t.Helper()
	var out struct {
		ServerKeys []json.RawMessage `json:"server_keys"`
	}
	if err := json.Unmarshal(answer, &out); err != nil {
		t.Fatalf("notary answer: %v: %s", err, answer)
	}
	for _, raw := range out.ServerKeys {
		var head struct {
			ServerName string `json:"server_name"`
		}
		if json.Unmarshal(raw, &head) != nil || head.ServerName != server {
			continue
		}
		got := checkSelfSigned(t, server, raw)
		for id, pub := range want {
			if !got[id].Equal(pub) {
				t.Fatalf("notary relays %x as %s of %s, the server publishes %x", got[id], id, server, pub)
			}
		}
		return raw
	}
	t.Fatalf("notary answer has no keys of %s: %s", server, answer)
	return nil
}

// checkNotarySigned checks that notary signed raw with one of its keys.
func checkNotarySigned(t *testing.T, raw []byte, notary string, keys map[string]ed25519.PublicKey) {
	t.Helper()
	if len(keys) == 0 {
		t.Fatalf("the keys of %s are not known (an earlier step failed)", notary)
	}
	for id, pub := range keys {
		if err := roomdag.VerifyJSON(roomdag.ServerName(notary), id, pub, raw); err == nil {
			return
		}
	}
	t.Fatalf("relayed keys not signed by the notary %s: %s", notary, raw)
}

// deviceKeys are what uploadDeviceKeys uploaded for a device.
type deviceKeys struct {
	ed25519 string // the device's fingerprint key, unpadded base64
	otkID   string // "signed_curve25519:AAAA"
}

// signAs signs obj (without signatures and unsigned) as user's device
// key, the way clients do.
func signAs(t *testing.T, obj map[string]any, user, keyID string, priv ed25519.PrivateKey) {
	t.Helper()
	b, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	canon, err := roomdag.CanonicalJSON(b)
	if err != nil {
		t.Fatal(err)
	}
	obj["signatures"] = map[string]any{user: map[string]string{keyID: base64.RawStdEncoding.EncodeToString(ed25519.Sign(priv, canon))}}
}

// uploadDeviceKeys uploads c's device keys and one signed one-time key.
func uploadDeviceKeys(t *testing.T, c *testserver.Client) deviceKeys {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	curve := make([]byte, 32)
	rand.Read(curve)
	fp := base64.RawStdEncoding.EncodeToString(pub)
	keyID := "ed25519:" + c.DeviceID
	dk := map[string]any{
		"user_id": c.UserID, "device_id": c.DeviceID,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]string{"curve25519:" + c.DeviceID: base64.RawStdEncoding.EncodeToString(curve), keyID: fp},
	}
	signAs(t, dk, c.UserID, keyID, priv)
	otk := map[string]any{"key": base64.RawStdEncoding.EncodeToString(curve)}
	signAs(t, otk, c.UserID, keyID, priv)
	otkID := "signed_curve25519:AAAAAQ"
	c.MustDo("POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": dk, "one_time_keys": map[string]any{otkID: otk}}, nil)
	return deviceKeys{ed25519: fp, otkID: otkID}
}

// checkQueriedKeys: asker's /keys/query finds owner's device keys.
func checkQueriedKeys(t *testing.T, asker, owner *testserver.Client, want deviceKeys) {
	t.Helper()
	var out struct {
		Failures   map[string]any `json:"failures"`
		DeviceKeys map[string]map[string]struct {
			Keys map[string]string `json:"keys"`
		} `json:"device_keys"`
	}
	asker.MustDo("POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{owner.UserID: []string{}}}, &out)
	got := out.DeviceKeys[owner.UserID][owner.DeviceID].Keys["ed25519:"+owner.DeviceID]
	if got != want.ed25519 {
		t.Fatalf("keys/query by %s for %s: ed25519 %q, want %q (failures %v)", asker.UserID, owner.UserID, got, want.ed25519, out.Failures)
	}
}

// checkClaimedKey: asker's /keys/claim gets owner's one-time key.
func checkClaimedKey(t *testing.T, asker, owner *testserver.Client, want deviceKeys) {
	t.Helper()
	var out struct {
		Failures    map[string]any                       `json:"failures"`
		OneTimeKeys map[string]map[string]map[string]any `json:"one_time_keys"`
	}
	asker.MustDo("POST", "/_matrix/client/v3/keys/claim", map[string]any{"one_time_keys": map[string]any{
		owner.UserID: map[string]string{owner.DeviceID: "signed_curve25519"}}}, &out)
	if _, ok := out.OneTimeKeys[owner.UserID][owner.DeviceID][want.otkID]; !ok {
		t.Fatalf("keys/claim by %s for %s/%s: %v (failures %v)", asker.UserID, owner.UserID, owner.DeviceID, out.OneTimeKeys, out.Failures)
	}
}

// checkRemoteMedia: uploader uploads a file on its server, and
// downloader fetches it through its own.
func checkRemoteMedia(t *testing.T, downloader, uploader *testserver.Client) {
	t.Helper()
	server := roomdag.UserID(uploader.UserID).Server()
	content := []byte("interop media " + uploader.UserID)
	status, body, _ := raw(t, uploader, "POST", "/_matrix/media/v3/upload?filename=hello.txt", "text/plain", content)
	var up struct {
		ContentURI string `json:"content_uri"`
	}
	if status != http.StatusOK || json.Unmarshal(body, &up) != nil || !strings.HasPrefix(up.ContentURI, "mxc://"+string(server)+"/") {
		t.Fatalf("upload on %s: %d %s", server, status, body)
	}
	id := strings.TrimPrefix(up.ContentURI, "mxc://"+string(server)+"/")
	status, body, h := raw(t, downloader, "GET", "/_matrix/client/v1/media/download/"+string(server)+"/"+id, "", nil)
	if status != http.StatusOK || !bytes.Equal(body, content) {
		t.Fatalf("download of %s by %s: %d %q", up.ContentURI, downloader.UserID, status, body)
	}
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("download of %s: Content-Type %q, uploaded as text/plain", up.ContentURI, ct)
	}
}

// raw sends a request with a body of any type as c.
func raw(t *testing.T, c *testserver.Client, method, path, ctype string, body []byte) (int, []byte, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, c.Base+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := c.HTTP.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b, resp.Header
}

// canonical is raw in canonical JSON.
func canonical(t *testing.T, raw []byte) []byte {
	t.Helper()
	b, err := roomdag.CanonicalJSON(raw)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// clientFunc is a federation.Client.
type clientFunc func(ctx context.Context, dest roomdag.ServerName, req *http.Request) (*http.Response, error)

func (f clientFunc) Do(ctx context.Context, dest roomdag.ServerName, req *http.Request) (*http.Response, error) {
	return f(ctx, dest, req)
}

// keyMap is a federation.KeyStore in memory.
type keyMap struct {
	mu   gosync.Mutex
	keys []storage.ServerKey
}

func (m *keyMap) ServerKeys(_ context.Context, server roomdag.ServerName) ([]storage.ServerKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []storage.ServerKey
	for _, k := range m.keys {
		if k.ServerName == server {
			out = append(out, k)
		}
	}
	return out, nil
}

func (m *keyMap) StoreServerKeys(_ context.Context, keys []storage.ServerKey) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range keys {
		m.keys = slices.DeleteFunc(m.keys, func(o storage.ServerKey) bool { return o.ServerName == k.ServerName && o.KeyID == k.KeyID })
		m.keys = append(m.keys, k)
	}
	return nil
}

// testWriter writes to the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
