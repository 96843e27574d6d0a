package federation_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/federation"
	"github.com/persistentchat/homeserver/roomdag"
)

const serverPath = "/_matrix/key/v2/server"

// keyResponse is the part of a key response the tests read.
type keyResponse struct {
	ServerName    roomdag.ServerName              `json:"server_name"`
	ValidUntilTS  int64                           `json:"valid_until_ts"`
	VerifyKeys    map[string]struct{ Key string } `json:"verify_keys"`
	OldVerifyKeys map[string]struct {
		Key       string `json:"key"`
		ExpiredTS int64  `json:"expired_ts"`
	} `json:"old_verify_keys"`
	Signatures map[roomdag.ServerName]map[string]string `json:"signatures"`
}

func get(t *testing.T, u string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func post(t *testing.T, u, body string) (int, []byte) {
	t.Helper()
	resp, err := http.Post(u, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// The published key response lists the current key and the old ones with
// their expired_ts, and is self-signed with the current key (spec:
// "Publishing Keys"), valid for a day.
func TestServerKeysPublishOldKeys(t *testing.T) {
	clk := clock.NewFake(epoch)
	a := startNode(t, newNetwork(), clk)
	oldPub, _, _ := ed25519.GenerateKey(rand.Reader)
	a.setKeys(newNetwork(), federation.OwnKeys{Key: a.own.Key, Old: []federation.OldKey{{KeyID: "ed25519:old", Public: oldPub, ExpiredTS: 1234}}}, nil)
	status, body := get(t, a.url+serverPath)
	if status != http.StatusOK {
		t.Fatalf("status %d: %s", status, body)
	}
	var r keyResponse
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatal(err)
	}
	if r.ServerName != a.name || r.ValidUntilTS != epoch.Add(24*time.Hour).UnixMilli() {
		t.Errorf("server_name %s valid_until_ts %d", r.ServerName, r.ValidUntilTS)
	}
	if vk := r.VerifyKeys[a.own.Key.KeyID]; vk.Key != base64.RawStdEncoding.EncodeToString(a.own.Key.Public()) || len(r.VerifyKeys) != 1 {
		t.Errorf("verify_keys: %s", body)
	}
	if ok := r.OldVerifyKeys["ed25519:old"]; ok.ExpiredTS != 1234 || ok.Key != base64.RawStdEncoding.EncodeToString(oldPub) {
		t.Errorf("old_verify_keys: %s", body)
	}
	if err := roomdag.VerifyJSON(a.name, a.own.Key.KeyID, a.own.Key.Public(), body); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	if status, _ := get(t, a.url+serverPath+"/"+url.PathEscape(a.own.Key.KeyID)); status != http.StatusOK {
		t.Errorf("deprecated /server/{keyId}: %d", status)
	}
}

// A remote key is fetched from its server once, then served from the
// store until its validity ends.
func TestDirectFetchIsCached(t *testing.T) {
	clk := clock.NewFake(epoch)
	net := newNetwork()
	us, a := startNode(t, net, clk), startNode(t, net, clk)
	ctx := context.Background()
	for range 3 {
		pub, err := us.keyring.RequestKey(ctx, a.name, a.own.Key.KeyID)
		if err != nil || !pub.Equal(a.own.Key.Public()) {
			t.Fatalf("RequestKey: %v, %v", pub, err)
		}
	}
	if n := net.count(a.name, serverPath); n != 1 {
		t.Fatalf("fetched %d times, want 1", n)
	}
	clk.Advance(24*time.Hour + time.Minute)
	if _, err := us.keyring.RequestKey(ctx, a.name, a.own.Key.KeyID); err != nil {
		t.Fatal(err)
	}
	if n := net.count(a.name, serverPath); n != 2 {
		t.Errorf("after valid_until_ts: fetched %d times, want 2", n)
	}
	// A key the server does not publish is unknown, and asking again at
	// once does not fetch again.
	clk.Advance(2 * time.Minute)
	if _, err := us.keyring.RequestKey(ctx, a.name, "ed25519:nope"); !errors.Is(err, federation.ErrUnknownKey) {
		t.Errorf("unpublished key: %v", err)
	}
	if _, err := us.keyring.RequestKey(ctx, a.name, "ed25519:nope2"); !errors.Is(err, federation.ErrUnknownKey) {
		t.Errorf("unpublished key: %v", err)
	}
	if n := net.count(a.name, serverPath); n != 3 {
		t.Errorf("made-up key IDs: fetched %d times in all, want 3", n)
	}
}

// Two key servers and a notary: when a server is down, its keys come
// through the notary, which cached them, signed by both; a notary whose
// signature does not match its configured key is not believed.
func TestNotaryFallback(t *testing.T) {
	clk := clock.NewFake(epoch)
	net := newNetwork()
	a, b, notary := startNode(t, net, clk), startNode(t, net, clk), startNode(t, net, clk)
	ctx := context.Background()
	// The notary learns a's and b's keys while they are up.
	for _, s := range []*node{a, b} {
		if _, err := notary.keyring.RequestKey(ctx, s.name, s.own.Key.KeyID); err != nil {
			t.Fatal(err)
		}
	}
	net.setDown(a.name, true)
	net.setDown(b.name, true)

	us := startNode(t, net, clk, notary.notary())
	for _, s := range []*node{a, b} {
		pub, err := us.keyring.RequestKey(ctx, s.name, s.own.Key.KeyID)
		if err != nil || !pub.Equal(s.own.Key.Public()) {
			t.Fatalf("key of %s through the notary: %v", s.name, err)
		}
	}
	// The POST form, once per server: Dendrite serves no GET
	// /query/{serverName}.
	if n := net.count(notary.name, "/_matrix/key/v2/query"); n != 2 {
		t.Errorf("notary asked %d times with POST /query for a and b, want 2", n)
	}
	if n := net.count(notary.name, "/_matrix/key/v2/query/"+string(a.name)); n != 0 {
		t.Errorf("notary asked %d times with GET /query/{serverName}, want 0", n)
	}

	// Without configured keys the notary's own key is fetched from it.
	tofu := startNode(t, net, clk, federation.Notary{ServerName: notary.name})
	if _, err := tofu.keyring.RequestKey(ctx, a.name, a.own.Key.KeyID); err != nil {
		t.Errorf("through a notary without configured keys: %v", err)
	}

	// A notary configured with another key is not believed.
	wrong := notary.notary()
	otherPub, _, _ := ed25519.GenerateKey(rand.Reader)
	wrong.VerifyKeys[notary.own.Key.KeyID] = otherPub
	distrust := startNode(t, net, clk, wrong)
	if _, err := distrust.keyring.RequestKey(ctx, a.name, a.own.Key.KeyID); !errors.Is(err, federation.ErrUnknownKey) {
		t.Errorf("notary signed with a key other than its configured one: %v", err)
	}

	// A server down with nothing cached anywhere: unknown.
	c := startNode(t, net, clk)
	net.setDown(c.name, true)
	if _, err := us.keyring.RequestKey(ctx, c.name, c.own.Key.KeyID); !errors.Is(err, federation.ErrUnknownKey) {
		t.Errorf("unreachable and unknown: %v", err)
	}
}

// The notary endpoints: GET /query/{serverName} and POST /query relay
// the servers' own responses with the notary's signature added, fetch
// again for minimum_valid_until_ts beyond what is cached, serve the cache
// when the server is down, and answer this server's own keys directly.
func TestNotaryEndpoints(t *testing.T) {
	clk := clock.NewFake(epoch)
	net := newNetwork()
	a, notary := startNode(t, net, clk), startNode(t, net, clk)

	check := func(body []byte, want ...*node) {
		t.Helper()
		var resp struct {
			ServerKeys []json.RawMessage `json:"server_keys"`
		}
		if err := json.Unmarshal(body, &resp); err != nil {
			t.Fatalf("%v: %s", err, body)
		}
		if len(resp.ServerKeys) != len(want) {
			t.Fatalf("%d responses, want %d: %s", len(resp.ServerKeys), len(want), body)
		}
		for i, raw := range resp.ServerKeys {
			var r keyResponse
			json.Unmarshal(raw, &r)
			if r.ServerName != want[i].name {
				t.Errorf("response %d is for %s, want %s", i, r.ServerName, want[i].name)
			}
			if err := roomdag.VerifyJSON(r.ServerName, want[i].own.Key.KeyID, want[i].own.Key.Public(), raw); err != nil {
				t.Errorf("%s's own signature: %v", r.ServerName, err)
			}
			if err := roomdag.VerifyJSON(notary.name, notary.own.Key.KeyID, notary.own.Key.Public(), raw); err != nil {
				t.Errorf("notary's signature: %v", err)
			}
		}
	}
	status, body := get(t, notary.url+"/_matrix/key/v2/query/"+string(a.name))
	if status != http.StatusOK {
		t.Fatalf("GET query: %d %s", status, body)
	}
	check(body, a)
	if n := net.count(a.name, serverPath); n != 1 {
		t.Errorf("a fetched %d times, want 1", n)
	}
	// Cached and valid: not fetched again.
	get(t, notary.url+"/_matrix/key/v2/query/"+string(a.name))
	if n := net.count(a.name, serverPath); n != 1 {
		t.Errorf("a fetched %d times, want 1", n)
	}
	// Keys wanted valid beyond the cached valid_until_ts: fetched again
	// (once the refetch interval has passed).
	clk.Advance(2 * time.Minute)
	later := epoch.Add(48 * time.Hour).UnixMilli()
	status, body = get(t, fmt.Sprintf("%s/_matrix/key/v2/query/%s?minimum_valid_until_ts=%d", notary.url, a.name, later))
	if status != http.StatusOK || net.count(a.name, serverPath) != 2 {
		t.Errorf("minimum_valid_until_ts beyond the cache: %d, %d fetches", status, net.count(a.name, serverPath))
	}
	check(body, a)

	// POST: a and the notary itself; a is down and served from the cache.
	net.setDown(a.name, true)
	clk.Advance(2 * time.Minute)
	q := fmt.Sprintf(`{"server_keys":{%q:{%q:{"minimum_valid_until_ts":%d}},%q:{}}}`, a.name, a.own.Key.KeyID, later+1, notary.name)
	status, body = post(t, notary.url+"/_matrix/key/v2/query", q)
	if status != http.StatusOK {
		t.Fatalf("POST query: %d %s", status, body)
	}
	var resp struct {
		ServerKeys []keyResponse `json:"server_keys"`
	}
	json.Unmarshal(body, &resp)
	if len(resp.ServerKeys) != 2 {
		t.Fatalf("POST answered %s", body)
	}
	if resp.ServerKeys[0].ServerName != a.name {
		resp.ServerKeys[0], resp.ServerKeys[1] = resp.ServerKeys[1], resp.ServerKeys[0]
	}
	if resp.ServerKeys[0].ServerName != a.name || resp.ServerKeys[1].ServerName != notary.name {
		t.Errorf("POST answered %s", body)
	}
	// Nothing asked, nothing answered; an unknown server down: left out.
	if status, body := post(t, notary.url+"/_matrix/key/v2/query", `{"server_keys":{}}`); status != http.StatusOK || string(body) != `{"server_keys":[]}` {
		t.Errorf("empty query: %d %s", status, body)
	}
	if status, body := get(t, notary.url+"/_matrix/key/v2/query/127.0.0.1:1"); status != http.StatusOK || string(body) != `{"server_keys":[]}` {
		t.Errorf("unknown server: %d %s", status, body)
	}
	// Bad input is a Matrix error, never a 500.
	for _, tc := range []struct {
		method, path, body, errcode string
		status                      int
	}{
		{"GET", "/_matrix/key/v2/query/bad%20name", "", "M_INVALID_PARAM", 400},
		{"GET", "/_matrix/key/v2/query/a.test?minimum_valid_until_ts=soon", "", "M_INVALID_PARAM", 400},
		{"POST", "/_matrix/key/v2/query", `{"server_keys":`, "M_NOT_JSON", 400},
		{"POST", "/_matrix/key/v2/query", `{"server_keys":[]}`, "M_BAD_JSON", 400},
		{"POST", "/_matrix/key/v2/query", `{}`, "M_MISSING_PARAM", 400},
		{"POST", "/_matrix/key/v2/query", `{"server_keys":{"bad name":{}}}`, "M_INVALID_PARAM", 400},
		{"PUT", "/_matrix/key/v2/query", `{}`, "M_UNRECOGNIZED", 405},
		{"GET", "/_matrix/key/v2/nothing", "", "M_UNRECOGNIZED", 404},
	} {
		req, _ := http.NewRequest(tc.method, notary.url+tc.path, strings.NewReader(tc.body))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e struct{ Errcode string }
		json.NewDecoder(res.Body).Decode(&e)
		res.Body.Close()
		if res.StatusCode != tc.status || e.Errcode != tc.errcode {
			t.Errorf("%s %s %s: %d %s, want %d %s", tc.method, tc.path, tc.body, res.StatusCode, e.Errcode, tc.status, tc.errcode)
		}
	}
}

// Key responses that are not what they claim are refused: one for
// another server, one not self-signed, one signed with a key it does not
// list.
func TestForgedKeyResponsesRefused(t *testing.T) {
	clk := clock.NewFake(epoch)
	net := newNetwork()
	us, a, rogue := startNode(t, net, clk), startNode(t, net, clk), startNode(t, net, clk)
	ctx := context.Background()
	genuine, err := federation.NewKeyServer(a.own, a.keyring, clk, discard(), "test").ServerKeys()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := roomdag.GenerateSigningKey(rogue.name, rand.Reader)
	pubB64 := base64.RawStdEncoding.EncodeToString(other.Public())
	unsigned := fmt.Sprintf(`{"server_name":%q,"valid_until_ts":%d,"verify_keys":{%q:{"key":%q}}}`, rogue.name, epoch.Add(time.Hour).UnixMilli(), other.KeyID, pubB64)
	signedByUnlisted, _ := roomdag.SignJSON(rogue.own.Key, []byte(unsigned))
	for name, body := range map[string][]byte{
		"another server's response":   genuine,
		"not signed":                  []byte(unsigned),
		"signed with an unlisted key": signedByUnlisted,
		"not JSON":                    []byte(`{"server_name"`),
	} {
		t.Run(name, func(t *testing.T) {
			clk.Advance(2 * time.Minute) // past the refetch interval
			rogue.mu.Lock()
			rogue.handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(body) })
			rogue.mu.Unlock()
			for _, id := range []string{other.KeyID, a.own.Key.KeyID} {
				if _, err := us.keyring.RequestKey(ctx, rogue.name, id); !errors.Is(err, federation.ErrUnknownKey) {
					t.Errorf("key %s believed: %v", id, err)
				}
			}
		})
	}
}

// A key rotation keeps old signatures verifiable: the old key moves to
// old_verify_keys with its expired_ts; it no longer authenticates
// requests, and it verifies events of rooms v5+ sent before it expired
// (and, in rooms v1-v4, whenever).
func TestKeyRotation(t *testing.T) {
	clk := clock.NewFake(epoch)
	net := newNetwork()
	us, a := startNode(t, net, clk), startNode(t, net, clk)
	ctx := context.Background()
	key1 := a.own.Key
	sentEarly := epoch.Add(time.Hour).UnixMilli()
	early := signedEvent(t, "10", key1, sentEarly)
	if _, err := us.keyring.RequestKey(ctx, a.name, key1.KeyID); err != nil {
		t.Fatal(err)
	}

	clk.Advance(2 * time.Hour)
	rotated := clk.Now().UnixMilli()
	key2, _ := roomdag.GenerateSigningKey(a.name, rand.Reader)
	a.setKeys(net, federation.OwnKeys{Key: key2, Old: []federation.OldKey{{KeyID: key1.KeyID, Public: key1.Public(), ExpiredTS: rotated}}}, nil)
	clk.Advance(time.Minute)
	late := signedEvent(t, "10", key1, clk.Now().UnixMilli())
	lateV4 := signedEvent(t, "4", key1, clk.Now().UnixMilli())
	// The new key is unknown: fetched, which also tells of key1's expiry.
	if _, err := us.keyring.RequestKey(ctx, a.name, key2.KeyID); err != nil {
		t.Fatal(err)
	}
	if _, err := us.keyring.RequestKey(ctx, a.name, key1.KeyID); !errors.Is(err, federation.ErrUnknownKey) {
		t.Errorf("old key authenticated a request: %v", err)
	}
	if err := us.keyring.VerifyEventSignatures(ctx, early, early.OriginServerTS()); err != nil {
		t.Errorf("event signed before the rotation: %v", err)
	}
	if err := us.keyring.VerifyEventSignatures(ctx, late, late.OriginServerTS()); !errors.Is(err, federation.ErrUnknownKey) {
		t.Errorf("v10 event signed with the old key after it expired: %v", err)
	}
	if err := us.keyring.VerifyEventSignatures(ctx, lateV4, lateV4.OriginServerTS()); err != nil {
		t.Errorf("v4 event, where key validity is not enforced: %v", err)
	}
	withKey2 := signedEvent(t, "10", key2, clk.Now().UnixMilli())
	if err := us.keyring.VerifyEventSignatures(ctx, withKey2, withKey2.OriginServerTS()); err != nil {
		t.Errorf("event signed with the new key: %v", err)
	}
	// A v10 event sent beyond the key's 7-day validity cap needs a fresh
	// fetch; with the server down it cannot be verified.
	net.setDown(a.name, true)
	clk.Advance(8 * 24 * time.Hour)
	future := signedEvent(t, "10", key2, clk.Now().UnixMilli())
	if err := us.keyring.VerifyEventSignatures(ctx, future, future.OriginServerTS()); !errors.Is(err, federation.ErrUnknownKey) {
		t.Errorf("beyond the key's validity: %v", err)
	}
}

// Signatures on events: a tampered event, and one lacking the sender
// server's signature, are refused.
func TestVerifyEventSignatures(t *testing.T) {
	clk := clock.NewFake(epoch)
	net := newNetwork()
	us, a, b := startNode(t, net, clk), startNode(t, net, clk), startNode(t, net, clk)
	ctx := context.Background()
	ev := signedEvent(t, "11", a.own.Key, epoch.UnixMilli())
	if err := us.keyring.VerifyEventSignatures(ctx, ev, ev.OriginServerTS()); err != nil {
		t.Fatal(err)
	}
	v, _ := roomdag.LookupRoomVersion("11")
	// Changing what the signature covers (the sender's depth) breaks it.
	tampered, err := roomdag.NewEventFromJSON(v, []byte(strings.Replace(string(ev.JSON()), `"depth":3`, `"depth":4`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if err := us.keyring.VerifyEventSignatures(ctx, tampered, tampered.OriginServerTS()); !errors.Is(err, roomdag.ErrSignature) {
		t.Errorf("tampered event: %v", err)
	}
	// Signed by b only, sent as a's user.
	byB := signedEventAs(t, "11", b.own.Key, "@u:"+string(a.name), epoch.UnixMilli())
	if err := us.keyring.VerifyEventSignatures(ctx, byB, byB.OriginServerTS()); err == nil {
		t.Errorf("event of a's user signed by b verified")
	}
}

func signedEvent(t *testing.T, version string, key roomdag.SigningKey, ts int64) *roomdag.Event {
	return signedEventAs(t, version, key, "@u:"+string(key.ServerName), ts)
}

// signedEventAs builds a message event of sender, signed with key.
func signedEventAs(t *testing.T, version string, key roomdag.SigningKey, sender string, ts int64) *roomdag.Event {
	t.Helper()
	return buildEvent(t, version, fmt.Sprintf(`"sender":%q,"type":"m.room.message","content":{"body":"hi"},"origin_server_ts":%d`, sender, ts), key)
}

// buildEvent builds an event of the given fields (sender, type, content,
// ...) in a room of the first key's server, signed with each key.
func buildEvent(t *testing.T, version, fields string, keys ...roomdag.SigningKey) *roomdag.Event {
	t.Helper()
	v, ok := roomdag.LookupRoomVersion(version)
	if !ok {
		t.Fatalf("room version %s", version)
	}
	raw := fmt.Sprintf(`{"room_id":"!r:%s",%s,"depth":3,`+
		`"prev_events":["$aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"],"auth_events":["$bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"]}`,
		keys[0].ServerName, fields)
	signed, err := roomdag.AddContentHash(v, []byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range keys {
		if signed, err = roomdag.SignEvent(v, key, signed); err != nil {
			t.Fatal(err)
		}
	}
	ev, err := roomdag.NewEventFromJSON(v, signed)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// The servers an event needs signatures of: a restricted join needs the
// authorising server's too (v8+), an invite through a third-party
// identifier does not need the sender's.
func TestRequiredSigners(t *testing.T) {
	clk := clock.NewFake(epoch)
	net := newNetwork()
	us, a, b := startNode(t, net, clk), startNode(t, net, clk), startNode(t, net, clk)
	ctx := context.Background()
	join := fmt.Sprintf(`"sender":"@u:%[1]s","state_key":"@u:%[1]s","type":"m.room.member","origin_server_ts":%[3]d,`+
		`"content":{"membership":"join","join_authorised_via_users_server":"@x:%[2]s"}`, a.name, b.name, epoch.UnixMilli())
	if err := us.keyring.VerifyEventSignatures(ctx, buildEvent(t, "10", join, a.own.Key), epoch.UnixMilli()); !errors.Is(err, roomdag.ErrSignature) {
		t.Errorf("restricted join without the authorising server's signature: %v", err)
	}
	if err := us.keyring.VerifyEventSignatures(ctx, buildEvent(t, "10", join, a.own.Key, b.own.Key), epoch.UnixMilli()); err != nil {
		t.Errorf("restricted join signed by both: %v", err)
	}
	if err := us.keyring.VerifyEventSignatures(ctx, buildEvent(t, "7", join, a.own.Key), epoch.UnixMilli()); err != nil {
		t.Errorf("v7 has no restricted joins: %v", err)
	}
	invite := fmt.Sprintf(`"sender":"@u:%[1]s","state_key":"@v:%[2]s","type":"m.room.member","origin_server_ts":%[3]d,`+
		`"content":{"membership":"invite","third_party_invite":{"display_name":"v","signed":{}}}`, a.name, b.name, epoch.UnixMilli())
	if err := us.keyring.VerifyEventSignatures(ctx, buildEvent(t, "10", invite, b.own.Key), epoch.UnixMilli()); err != nil {
		t.Errorf("third-party invite sent by another server: %v", err)
	}
}

// Requests that arrive together from a server met for the first time
// share one fetch of its keys, and all of them get the key.
func TestConcurrentLookupsShareAFetch(t *testing.T) {
	clk := clock.NewFake(epoch)
	net := newNetwork()
	us, a := startNode(t, net, clk), startNode(t, net, clk)
	entered, release := make(chan struct{}), make(chan struct{})
	a.mu.Lock()
	inner := a.handler
	var once sync.Once
	a.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { close(entered) })
		<-release
		inner.ServeHTTP(w, r)
	})
	a.mu.Unlock()
	const n = 8
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := us.keyring.RequestKey(context.Background(), a.name, a.own.Key.KeyID)
			errs <- err
		}()
	}
	<-entered
	close(release)
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if c := net.count(a.name, serverPath); c != 1 {
		t.Errorf("fetched %d times, want 1", c)
	}
}
