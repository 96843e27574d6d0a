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
