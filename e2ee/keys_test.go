package e2ee_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	gosync "sync"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/testserver"
)

// device is a client device with its own ed25519 identity key, signing
// what it uploads as a real client does (spec: "Signing JSON").
type device struct {
	*testserver.Client
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
}

func newDevice(t testing.TB, c *testserver.Client) *device {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &device{Client: c, priv: priv, pub: pub}
}

func b64(b []byte) string { return base64.RawStdEncoding.EncodeToString(b) }

// signWith adds a signature by priv, as user with key ID keyID, to obj.
func signWith(t testing.TB, priv ed25519.PrivateKey, user, keyID string, obj map[string]any) map[string]any {
	t.Helper()
	bare := map[string]any{}
	for k, v := range obj {
		if k != "signatures" && k != "unsigned" {
			bare[k] = v
		}
	}
	j, _ := json.Marshal(bare)
	c, err := roomdag.CanonicalJSON(j)
	if err != nil {
		t.Fatal(err)
	}
	sigs, _ := obj["signatures"].(map[string]any)
	if sigs == nil {
		sigs = map[string]any{}
	}
	mine, _ := sigs[user].(map[string]any)
	if mine == nil {
		mine = map[string]any{}
	}
	mine[keyID] = b64(ed25519.Sign(priv, c))
	sigs[user] = mine
	obj["signatures"] = sigs
	return obj
}

func (d *device) sign(t testing.TB, obj map[string]any) map[string]any {
	return signWith(t, d.priv, d.UserID, "ed25519:"+d.DeviceID, obj)
}

// deviceKeys is the device's signed device keys object.
func (d *device) deviceKeys(t testing.TB) map[string]any {
	return d.sign(t, map[string]any{
		"user_id": d.UserID, "device_id": d.DeviceID,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]any{"ed25519:" + d.DeviceID: b64(d.pub), "curve25519:" + d.DeviceID: b64(d.pub)},
	})
}

// otks makes signed_curve25519 one-time keys with the given IDs.
func (d *device) otks(t testing.TB, ids ...string) map[string]any {
	out := map[string]any{}
	for _, id := range ids {
		out["signed_curve25519:"+id] = d.sign(t, map[string]any{"key": "k" + id})
	}
	return out
}

func (d *device) upload(t testing.TB, body map[string]any) map[string]int64 {
	t.Helper()
	var out struct {
		Counts map[string]int64 `json:"one_time_key_counts"`
	}
	d.MustDo("POST", "/_matrix/client/v3/keys/upload", body, &out)
	return out.Counts
}

func TestKeysUploadValidation(t *testing.T) {
	hs := testserver.Start(t, testserver.Options{})
	alice := newDevice(t, hs.Register("alice"))
	other := newDevice(t, hs.Register("other"))
	_, wrongPriv, _ := ed25519.GenerateKey(rand.Reader)
	tests := []struct {
		name string
		body func() any
		code string
	}{
		{"wrong user_id", func() any {
			dk := alice.deviceKeys(t)
			dk["user_id"] = other.UserID
			return map[string]any{"device_keys": alice.sign(t, dk)}
		}, "M_INVALID_PARAM"},
		{"wrong device_id", func() any {
			dk := alice.deviceKeys(t)
			dk["device_id"] = "NOTMINE"
			return map[string]any{"device_keys": alice.sign(t, dk)}
		}, "M_INVALID_PARAM"},
		{"another device's keys", func() any { return map[string]any{"device_keys": other.deviceKeys(t)} }, "M_INVALID_PARAM"},
		{"unsigned", func() any {
			dk := alice.deviceKeys(t)
			delete(dk, "signatures")
			return map[string]any{"device_keys": dk}
		}, "M_INVALID_PARAM"},
		{"signed by another key", func() any {
			dk := alice.deviceKeys(t)
			delete(dk, "signatures")
			return map[string]any{"device_keys": signWith(t, wrongPriv, alice.UserID, "ed25519:"+alice.DeviceID, dk)}
		}, "M_INVALID_PARAM"},
		{"changed after signing", func() any {
			dk := alice.deviceKeys(t)
			dk["algorithms"] = []string{"m.megolm.v1.aes-sha2"}
			return map[string]any{"device_keys": dk}
		}, "M_INVALID_PARAM"},
		{"no ed25519 key", func() any {
			dk := alice.deviceKeys(t)
			dk["keys"] = map[string]any{"curve25519:" + alice.DeviceID: b64(alice.pub)}
			return map[string]any{"device_keys": alice.sign(t, dk)}
		}, "M_INVALID_PARAM"},
		{"device_keys not an object", func() any { return map[string]any{"device_keys": "keys"} }, "M_BAD_JSON"},
		{"keys not strings", func() any {
			dk := alice.deviceKeys(t)
			dk["keys"] = map[string]any{"ed25519:" + alice.DeviceID: 5}
			return map[string]any{"device_keys": dk}
		}, "M_BAD_JSON"},
		{"one-time key ID without algorithm", func() any {
			return map[string]any{"one_time_keys": map[string]any{"AAAA": "key"}}
		}, "M_INVALID_PARAM"},
		{"one-time key object without key", func() any {
			return map[string]any{"one_time_keys": map[string]any{"signed_curve25519:A": map[string]any{"k": "x"}}}
		}, "M_BAD_JSON"},
		{"one-time key mis-signed", func() any {
			k := alice.sign(t, map[string]any{"key": "one"})
			k["key"] = "two"
			return map[string]any{"device_keys": alice.deviceKeys(t), "one_time_keys": map[string]any{"signed_curve25519:A": k}}
		}, "M_INVALID_PARAM"},
		{"two fallback keys of one algorithm", func() any {
			return map[string]any{"fallback_keys": map[string]any{"signed_curve25519:F1": "a", "signed_curve25519:F2": "b"}}
		}, "M_INVALID_PARAM"},
		{"not JSON", func() any { return []byte("{") }, "M_NOT_JSON"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := alice.Do("POST", "/_matrix/client/v3/keys/upload", tc.body())
			if r.Status != http.StatusBadRequest || r.Errcode() != tc.code {
				t.Fatalf("status %d %s, want 400 %s", r.Status, r.Body, tc.code)
			}
		})
	}
	// Nothing of the refused uploads was stored.
	if got := queryDevices(t, other.Client, alice.UserID); len(got) != 0 {
		t.Fatalf("refused uploads stored device keys: %v", got)
	}
	if r := hs.Anonymous().Do("POST", "/_matrix/client/v3/keys/upload", map[string]any{}); r.Status != http.StatusUnauthorized {
		t.Fatalf("upload without a token: %d", r.Status)
	}
	// A valid upload, and the deprecated path form only for one's own device.
	alice.upload(t, map[string]any{"device_keys": alice.deviceKeys(t)})
	if r := alice.Do("POST", "/_matrix/client/r0/keys/upload/"+other.DeviceID, map[string]any{}); r.Status != 400 || r.Errcode() != "M_INVALID_PARAM" {
		t.Fatalf("upload for another device id in the path: %d %s", r.Status, r.Body)
	}
}

// queryDevices returns user's device keys as c's /keys/query sees them.
func queryDevices(t testing.TB, c *testserver.Client, user string) map[string]map[string]any {
	t.Helper()
	var out struct {
		DeviceKeys map[string]map[string]map[string]any `json:"device_keys"`
	}
	c.MustDo("POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{user: []string{}}}, &out)
	return out.DeviceKeys[user]
}

func TestKeysUploadIdempotentAndConflicts(t *testing.T) {
	hs := testserver.Start(t, testserver.Options{})
	alice := newDevice(t, hs.Register("alice"))
	keys := alice.otks(t, "A1", "A2", "A3")
	body := map[string]any{"device_keys": alice.deviceKeys(t), "one_time_keys": keys}
	steps := []struct {
		name  string
		body  map[string]any
		want  int64
		error string
	}{
		{"first upload", body, 3, ""},
		{"the same again", body, 3, ""},
		{"a key signed again is the same key", map[string]any{"one_time_keys": map[string]any{
			"signed_curve25519:A1": alice.sign(t, map[string]any{"key": "kA1"})}}, 3, ""},
		{"conflicting key under a stored ID, with a new one", map[string]any{"one_time_keys": map[string]any{
			"signed_curve25519:A2": alice.sign(t, map[string]any{"key": "different"}),
			"signed_curve25519:A9": alice.sign(t, map[string]any{"key": "kA9"})}}, 3, "M_INVALID_PARAM"},
		{"more keys", map[string]any{"one_time_keys": alice.otks(t, "B1")}, 4, ""},
		{"string keys of another algorithm", map[string]any{"one_time_keys": map[string]any{"curve25519:C1": "abc"}}, 4, ""},
	}
	for _, st := range steps {
		r := alice.Do("POST", "/_matrix/client/v3/keys/upload", st.body)
		if st.error != "" {
			if r.Status != 400 || r.Errcode() != st.error {
				t.Fatalf("%s: %d %s, want 400 %s", st.name, r.Status, r.Body, st.error)
			}
		} else if r.Status != 200 {
			t.Fatalf("%s: %d %s", st.name, r.Status, r.Body)
		}
		var counts struct {
			Counts map[string]int64 `json:"one_time_key_counts"`
		}
		alice.MustDo("POST", "/_matrix/client/v3/keys/upload", map[string]any{}, &counts)
		if counts.Counts["signed_curve25519"] != st.want {
			t.Fatalf("%s: counts %v, want %d signed_curve25519", st.name, counts.Counts, st.want)
		}
	}
	// The counts in /sync too, an incremental one with nothing new
	// included.
	s := alice.Sync("timeout=0")
	s = syncSince(t, alice.Client, s["next_batch"].(string), 0)
	if s["device_lists"] != nil {
		t.Fatalf("device_lists with nothing new: %v", s["device_lists"])
	}
	counts, _ := s["device_one_time_keys_count"].(map[string]any)
	if counts["signed_curve25519"] != 4.0 || counts["curve25519"] != 1.0 {
		t.Fatalf("sync device_one_time_keys_count: %v", s["device_one_time_keys_count"])
	}
	if fb, ok := s["device_unused_fallback_key_types"].([]any); !ok || len(fb) != 0 {
		t.Fatalf("sync device_unused_fallback_key_types: %v", s["device_unused_fallback_key_types"])
	}
}

func TestKeysQuery(t *testing.T) {
	hs := testserver.Start(t, testserver.Options{})
	alice := newDevice(t, hs.Register("alice"))
	bob := hs.Register("bob")
	alice.MustDo("PUT", "/_matrix/client/v3/devices/"+alice.DeviceID, map[string]any{"display_name": "Alice's phone"}, nil)
	alice.upload(t, map[string]any{"device_keys": alice.deviceKeys(t)})
	noKeys := hs.Register("nokeys")

	type result struct {
		DeviceKeys map[string]map[string]map[string]any `json:"device_keys"`
		Failures   map[string]any                       `json:"failures"`
		Master     map[string]any                       `json:"master_keys"`
		Self       map[string]any                       `json:"self_signing_keys"`
		UserSign   map[string]any                       `json:"user_signing_keys"`
	}
	tests := []struct {
		name    string
		body    any
		status  int
		code    string
		devices map[string][]string // user -> device IDs expected
		failed  []string
	}{
		{"all devices", map[string]any{"device_keys": map[string]any{alice.UserID: []string{}}}, 200, "",
			map[string][]string{alice.UserID: {alice.DeviceID}}, nil},
		{"one device", map[string]any{"device_keys": map[string]any{alice.UserID: []string{alice.DeviceID}}}, 200, "",
			map[string][]string{alice.UserID: {alice.DeviceID}}, nil},
		{"unknown device", map[string]any{"device_keys": map[string]any{alice.UserID: []string{"NOPE"}}}, 200, "",
			map[string][]string{alice.UserID: {}}, nil},
		{"user without keys", map[string]any{"device_keys": map[string]any{noKeys.UserID: []string{}}}, 200, "",
			map[string][]string{noKeys.UserID: {}}, nil},
		{"remote user", map[string]any{"device_keys": map[string]any{"@x:127.0.0.1:1": []string{}}}, 200, "",
			map[string][]string{}, []string{"127.0.0.1:1"}},
		{"an object instead of a list", map[string]any{"device_keys": map[string]any{alice.UserID: map[string]any{}}}, 400, "M_BAD_JSON", nil, nil},
		{"a string instead of a list", map[string]any{"device_keys": map[string]any{alice.UserID: "DEV"}}, 400, "M_BAD_JSON", nil, nil},
		{"null instead of a list", map[string]any{"device_keys": map[string]any{alice.UserID: nil}}, 400, "M_BAD_JSON", nil, nil},
		{"a list of numbers", map[string]any{"device_keys": map[string]any{alice.UserID: []int{1}}}, 400, "M_BAD_JSON", nil, nil},
		{"device_keys missing", map[string]any{}, 400, "M_BAD_JSON", nil, nil},
		{"device_keys a list", map[string]any{"device_keys": []string{alice.UserID}}, 400, "M_BAD_JSON", nil, nil},
		{"invalid user ID", map[string]any{"device_keys": map[string]any{"alice": []string{}}}, 400, "M_INVALID_PARAM", nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := bob.Do("POST", "/_matrix/client/v3/keys/query", tc.body)
			if r.Status != tc.status || tc.code != "" && r.Errcode() != tc.code {
				t.Fatalf("%d %s, want %d %s", r.Status, r.Body, tc.status, tc.code)
			}
			if tc.status != 200 {
				return
			}
			var out result
			if err := r.JSON(&out); err != nil {
				t.Fatal(err)
			}
			if out.Master == nil || out.Self == nil || out.UserSign == nil || out.Failures == nil {
				t.Fatalf("sections missing: %s", r.Body)
			}
			for u, want := range tc.devices {
				got := []string{}
				for d := range out.DeviceKeys[u] {
					got = append(got, d)
				}
				sort.Strings(got)
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("devices of %s: %v, want %v (%s)", u, got, want, r.Body)
				}
			}
			for _, f := range tc.failed {
				if _, ok := out.Failures[f]; !ok {
					t.Fatalf("no failure for %s: %s", f, r.Body)
				}
			}
		})
	}
	// The keys come back as uploaded, signature and all, with the
	// device's display name in unsigned.
	dk := queryDevices(t, bob, alice.UserID)[alice.DeviceID]
	sigs, _ := dk["signatures"].(map[string]any)
	if _, ok := sigs[alice.UserID].(map[string]any)["ed25519:"+alice.DeviceID]; !ok {
		t.Fatalf("no device signature: %v", dk)
	}
	if u, _ := dk["unsigned"].(map[string]any); u["device_display_name"] != "Alice's phone" {
		t.Fatalf("unsigned: %v", dk["unsigned"])
	}
	j, _ := json.Marshal(dk)
	var obj map[string]any
	_ = json.Unmarshal(j, &obj)
	pub, _ := base64.RawStdEncoding.DecodeString(obj["keys"].(map[string]any)["ed25519:"+alice.DeviceID].(string))
	if err := roomdag.VerifyJSON(roomdag.ServerName(alice.UserID), "ed25519:"+alice.DeviceID, pub, j); err != nil {
		t.Fatalf("served keys do not verify: %v", err)
	}
}

// claim claims one signed_curve25519 key of each device and returns the
// key IDs given, by user and device.
func claim(t testing.TB, c *testserver.Client, devices map[string][]string) map[string]map[string]string {
	t.Helper()
	req := map[string]map[string]string{}
	for u, ds := range devices {
		req[u] = map[string]string{}
		for _, d := range ds {
			req[u][d] = "signed_curve25519"
		}
	}
	var out struct {
		Keys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
	}
	c.MustDo("POST", "/_matrix/client/v3/keys/claim", map[string]any{"one_time_keys": req}, &out)
	got := map[string]map[string]string{}
	for u, ds := range out.Keys {
		got[u] = map[string]string{}
		for d, ks := range ds {
			if len(ks) != 1 {
				t.Fatalf("%s %s: %d keys in one claim", u, d, len(ks))
			}
			for id := range ks {
				got[u][d] = id
			}
		}
	}
	return got
}

func TestKeysClaimOrderAndFallback(t *testing.T) {
	hs := testserver.Start(t, testserver.Options{})
	alice := newDevice(t, hs.Register("alice"))
	bob := hs.Register("bob")
	alice.upload(t, map[string]any{"device_keys": alice.deviceKeys(t), "one_time_keys": alice.otks(t, "Z1")})
	alice.upload(t, map[string]any{"one_time_keys": alice.otks(t, "A1")}) // newer, though it sorts first
	fallback := map[string]any{"signed_curve25519:F1": alice.sign(t, map[string]any{"key": "fb", "fallback": true})}
	alice.upload(t, map[string]any{"fallback_keys": fallback})
	fallbackTypes := func() []any {
		s := alice.Sync("timeout=0")
		fb, _ := s["device_unused_fallback_key_types"].([]any)
		return fb
	}
	if fb := fallbackTypes(); fmt.Sprint(fb) != "[signed_curve25519]" {
		t.Fatalf("unused fallback types before claims: %v", fb)
	}
	steps := []struct {
		want   string // key ID claimed, "" none
		unused bool   // fallback unused afterwards
	}{
		{"signed_curve25519:Z1", true}, // oldest first
		{"signed_curve25519:A1", true},
		{"signed_curve25519:F1", false}, // then the fallback key, marked used
		{"signed_curve25519:F1", false}, // and again
	}
	for i, st := range steps {
		got := claim(t, bob, map[string][]string{alice.UserID: {alice.DeviceID}})[alice.UserID][alice.DeviceID]
		if got != st.want {
			t.Fatalf("claim %d: %q, want %q", i, got, st.want)
		}
		if unused := len(fallbackTypes()) == 1; unused != st.unused {
			t.Fatalf("claim %d: fallback unused %v, want %v", i, unused, st.unused)
		}
	}
	// The same fallback key again keeps it used; a new one is unused.
	alice.upload(t, map[string]any{"fallback_keys": fallback})
	if fb := fallbackTypes(); len(fb) != 0 {
		t.Fatalf("re-uploading the used fallback key: unused %v", fb)
	}
	alice.upload(t, map[string]any{"fallback_keys": map[string]any{"signed_curve25519:F2": alice.sign(t, map[string]any{"key": "fb2", "fallback": true})}})
	if fb := fallbackTypes(); len(fb) != 1 {
		t.Fatalf("a new fallback key: unused %v", fb)
	}
	if got := claim(t, bob, map[string][]string{alice.UserID: {alice.DeviceID}})[alice.UserID][alice.DeviceID]; got != "signed_curve25519:F2" {
		t.Fatalf("claim after the new fallback key: %q", got)
	}
	// A device without keys, an unknown one and a remote user give nothing.
	var out struct {
		Keys     map[string]any `json:"one_time_keys"`
		Failures map[string]any `json:"failures"`
	}
	bob.MustDo("POST", "/_matrix/client/v3/keys/claim", map[string]any{"one_time_keys": map[string]any{
		bob.UserID: map[string]string{bob.DeviceID: "signed_curve25519"}, alice.UserID: map[string]string{"NOPE": "signed_curve25519"},
		"@x:127.0.0.1:1": map[string]string{"D": "signed_curve25519"}}}, &out)
	if len(out.Keys) != 0 || out.Failures["127.0.0.1:1"] == nil {
		t.Fatalf("claim of nothing: %+v", out)
	}
	for name, body := range map[string]any{
		"one_time_keys missing":       map[string]any{},
		"devices as a list":           map[string]any{"one_time_keys": map[string]any{alice.UserID: []string{alice.DeviceID}}},
		"algorithm not a string":      map[string]any{"one_time_keys": map[string]any{alice.UserID: map[string]any{alice.DeviceID: 1}}},
		"one_time_keys not an object": map[string]any{"one_time_keys": "x"},
	} {
		if r := bob.Do("POST", "/_matrix/client/v3/keys/claim", body); r.Status != 400 || r.Errcode() != "M_BAD_JSON" {
			t.Fatalf("%s: %d %s", name, r.Status, r.Body)
		}
	}
}

// Concurrent claims never get the same key: every key goes to exactly
// one claimer, and a claim after the last gets none.
func TestKeysClaimConcurrent(t *testing.T) {
	hs := testserver.Start(t, testserver.Options{})
	alice := newDevice(t, hs.Register("alice"))
	const n = 40
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("K%03d", i)
	}
	alice.upload(t, map[string]any{"device_keys": alice.deviceKeys(t), "one_time_keys": alice.otks(t, ids...)})
	claimers := []*testserver.Client{hs.Register("bob"), hs.Register("carol"), hs.Register("dave"), hs.Register("erin")}
	var mu gosync.Mutex
	seen := map[string]int{}
	var wg gosync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(c *testserver.Client) {
			defer wg.Done()
			id := claim(t, c, map[string][]string{alice.UserID: {alice.DeviceID}})[alice.UserID][alice.DeviceID]
			mu.Lock()
			seen[id]++
			mu.Unlock()
		}(claimers[i%len(claimers)])
	}
	wg.Wait()
	if len(seen) != n {
		t.Fatalf("%d distinct keys for %d claims: %v", len(seen), n, seen)
	}
	for id, k := range seen {
		if k != 1 || id == "" {
			t.Fatalf("key %q given %d times", id, k)
		}
	}
	if got := claim(t, claimers[0], map[string][]string{alice.UserID: {alice.DeviceID}}); len(got[alice.UserID]) != 0 {
		t.Fatalf("claim after the last key: %v", got)
	}
}

// syncToken runs an incremental sync and returns its body.
func syncSince(t testing.TB, c *testserver.Client, since string, timeoutMS int) map[string]any {
	t.Helper()
	return c.Sync(fmt.Sprintf("since=%s&timeout=%d", url.QueryEscape(since), timeoutMS))
}

func deviceLists(s map[string]any) (changed, left []string) {
	dl, _ := s["device_lists"].(map[string]any)
	return asList(dl["changed"]), asList(dl["left"])
}

func asList(v any) []string {
	l, _ := v.([]any)
	out := []string{}
	for _, x := range l {
		out = append(out, x.(string))
	}
	sort.Strings(out)
	return out
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// keysChanges is GET /keys/changes.
func keysChanges(t testing.TB, c *testserver.Client, from, to string) (changed, left []string) {
	t.Helper()
	var out struct {
		Changed []string `json:"changed"`
		Left    []string `json:"left"`
	}
	c.MustDo("GET", "/_matrix/client/v3/keys/changes?from="+url.QueryEscape(from)+"&to="+url.QueryEscape(to), nil, &out)
	if out.Changed == nil || out.Left == nil {
		t.Fatalf("keys/changes without changed or left")
	}
	return out.Changed, out.Left
}

// Two users come to share a room, change keys, and one leaves: each sees
// the other in device_lists.changed and then left, in /sync and in
// /keys/changes; a stranger sees nothing.
func TestDeviceListsChangedAndLeft(t *testing.T) {
	hs := testserver.Start(t, testserver.Options{})
	alice := newDevice(t, hs.Register("alice"))
	bob := newDevice(t, hs.Register("bob"))
	stranger := newDevice(t, hs.Register("stranger"))
	next := func(c *testserver.Client) string { return c.Sync("timeout=0")["next_batch"].(string) }
	bobT, aliceT, strangerT := next(bob.Client), next(alice.Client), next(stranger.Client)

	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	bob.Join(room)
	steps := []struct {
		name string
		act  func()
		// want per viewer: users in changed and in left (of interest).
		bobChanged, bobLeft, aliceChanged, aliceLeft []string
	}{
		{"bob joined alice's room", func() {}, []string{alice.UserID}, nil, []string{bob.UserID}, nil},
		{"alice uploads device keys", func() { alice.upload(t, map[string]any{"device_keys": alice.deviceKeys(t)}) },
			[]string{alice.UserID}, nil, []string{alice.UserID}, nil},
		{"alice logs in a new device", func() { loginAs(t, hs, alice.UserID) },
			[]string{alice.UserID}, nil, []string{alice.UserID}, nil},
		{"alice renames a device", func() {
			alice.MustDo("PUT", "/_matrix/client/v3/devices/"+alice.DeviceID, map[string]any{"display_name": "laptop"}, nil)
		}, []string{alice.UserID}, nil, []string{alice.UserID}, nil},
		{"a stranger uploads keys", func() { stranger.upload(t, map[string]any{"device_keys": stranger.deviceKeys(t)}) },
			nil, nil, nil, nil},
		{"bob leaves the last shared room", func() {
			bob.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/leave", map[string]any{}, nil)
		}, nil, []string{alice.UserID}, nil, []string{bob.UserID}},
		{"alice's keys change once bob has gone", func() {
			dk := alice.deviceKeys(t)
			dk["algorithms"] = []string{"m.megolm.v1.aes-sha2"} // other content: changed
			alice.upload(t, map[string]any{"device_keys": alice.sign(t, dk)})
		}, nil, nil, []string{alice.UserID}, nil},
	}
	for _, st := range steps {
		st.act()
		for _, v := range []struct {
			who           *device
			tok           *string
			changed, left []string
		}{{bob, &bobT, st.bobChanged, st.bobLeft}, {alice, &aliceT, st.aliceChanged, st.aliceLeft}} {
			from := *v.tok
			s := syncSince(t, v.who.Client, from, 0)
			changed, left := deviceLists(s)
			if fmt.Sprint(sorted(changed)) != fmt.Sprint(sorted(v.changed)) || fmt.Sprint(sorted(left)) != fmt.Sprint(sorted(v.left)) {
				t.Fatalf("%s: %s sees changed %v left %v, want %v %v", st.name, v.who.UserID, changed, left, v.changed, v.left)
			}
			*v.tok = s["next_batch"].(string)
			kc, kl := keysChanges(t, v.who.Client, from, *v.tok)
			if fmt.Sprint(sorted(kc)) != fmt.Sprint(sorted(v.changed)) || fmt.Sprint(sorted(kl)) != fmt.Sprint(sorted(v.left)) {
				t.Fatalf("%s: %s /keys/changes %v %v, want %v %v", st.name, v.who.UserID, kc, kl, v.changed, v.left)
			}
		}
	}
	s := syncSince(t, stranger.Client, strangerT, 0)
	if changed, left := deviceLists(s); contains(changed, alice.UserID) || contains(changed, bob.UserID) || len(left) != 0 {
		t.Fatalf("the stranger sees %v %v", changed, left)
	}
	for _, q := range []string{"", "from=x", "from=s1&to=bad"} {
		r := alice.Do("GET", "/_matrix/client/v3/keys/changes?"+q, nil)
		if r.Status != 400 {
			t.Fatalf("keys/changes?%s: %d %s", q, r.Status, r.Body)
		}
	}
}

func sorted(l []string) []string {
	out := append([]string{}, l...)
	sort.Strings(out)
	return out
}

// A room-mate's key upload wakes a long-polling /sync.
func TestSyncWakesOnRoomMateKeyUpload(t *testing.T) {
	hs := testserver.Start(t, testserver.Options{})
	alice := newDevice(t, hs.Register("alice"))
	bob := newDevice(t, hs.Register("bob"))
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	bob.Join(room)
	hs.Settle()
	tok := bob.Sync("timeout=0")["next_batch"].(string)
	done := make(chan map[string]any, 1)
	go func() {
		done <- syncSince(t, bob.Client, tok, 60000)
	}()
	// Upload once the long-poll is parked, so the upload must wake it.
	waitParked(t, hs, 1)
	alice.upload(t, map[string]any{"device_keys": alice.deviceKeys(t)})
	s := <-done
	if changed, _ := deviceLists(s); !contains(changed, alice.UserID) {
		t.Fatalf("woken sync: device_lists %v", s["device_lists"])
	}
}

// waitParked waits until n long-polls wait on the server, for at most a
// minute.
func waitParked(t testing.TB, hs *testserver.Server, n int64) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for hs.HS.Syncer.Parked() < n {
		if time.Now().After(deadline) {
			t.Fatalf("no long-poll parked")
		}
		time.Sleep(time.Millisecond) // polling a counter with a deadline, not waiting for time to pass
	}
}

// login logs user in again: a second device.
func loginAs(t testing.TB, hs *testserver.Server, user string) *testserver.Client {
	t.Helper()
	c := hs.Anonymous()
	var out struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
		DeviceID    string `json:"device_id"`
	}
	c.MustDo("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password",
		"identifier": map[string]any{"type": "m.id.user", "user": user}, "password": "correct horse battery"}, &out)
	c.UserID, c.Token, c.DeviceID = out.UserID, out.AccessToken, out.DeviceID
	return c
}

// Deleting a device, however it is done, deletes its keys and tells the
// user's room-mates (device_lists.changed).
func TestDeletedDeviceLosesKeys(t *testing.T) {
	hs := testserver.Start(t, testserver.Options{})
	alice := newDevice(t, hs.Register("alice"))
	bob := newDevice(t, hs.Register("bob"))
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	bob.Join(room)
	password := func(c *testserver.Client, session string) map[string]any {
		return map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": c.UserID},
			"password": "correct horse battery", "session": session}
	}
	// withUIA runs a request that needs user-interactive auth with a password.
	withUIA := func(c *testserver.Client, method, path string, body map[string]any) {
		r := c.Do(method, path, body)
		if r.Status != http.StatusUnauthorized {
			t.Fatalf("%s %s without auth: %d %s", method, path, r.Status, r.Body)
		}
		var ch struct {
			Session string `json:"session"`
		}
		_ = r.JSON(&ch)
		body["auth"] = password(c, ch.Session)
		c.MustDo(method, path, body, nil)
	}
	tests := []struct {
		name   string
		delete func(second *testserver.Client)
		// deactivates: alice also leaves the room, so bob may hear of
		// her in left rather than changed.
		deactivates bool
	}{
		{"logout", func(second *testserver.Client) {
			second.MustDo("POST", "/_matrix/client/v3/logout", map[string]any{}, nil)
		}, false},
		{"DELETE /devices/{id}", func(second *testserver.Client) {
			withUIA(alice.Client, "DELETE", "/_matrix/client/v3/devices/"+second.DeviceID, map[string]any{})
		}, false},
		{"delete_devices", func(second *testserver.Client) {
			withUIA(alice.Client, "POST", "/_matrix/client/v3/delete_devices", map[string]any{"devices": []string{second.DeviceID}})
		}, false},
		// Last: alice is gone afterwards.
		{"deactivation", func(second *testserver.Client) {
			withUIA(second, "POST", "/_matrix/client/v3/account/deactivate", map[string]any{})
		}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			second := newDevice(t, loginAs(t, hs, alice.UserID))
			second.upload(t, map[string]any{"device_keys": second.deviceKeys(t), "one_time_keys": second.otks(t, "X1"),
				"fallback_keys": map[string]any{"signed_curve25519:F": second.sign(t, map[string]any{"key": "f", "fallback": true})}})
			if _, ok := queryDevices(t, bob.Client, alice.UserID)[second.DeviceID]; !ok {
				t.Fatalf("second device's keys not served")
			}
			tok := bob.Sync("timeout=0")["next_batch"].(string)
			tc.delete(second.Client)
			if _, ok := queryDevices(t, bob.Client, alice.UserID)[second.DeviceID]; ok {
				t.Fatalf("deleted device's keys still served")
			}
			if got := claim(t, bob.Client, map[string][]string{alice.UserID: {second.DeviceID}}); len(got[alice.UserID]) != 0 {
				t.Fatalf("deleted device's one-time or fallback key claimed: %v", got)
			}
			changed, left := deviceLists(syncSince(t, bob.Client, tok, 0))
			if !contains(changed, alice.UserID) && !(tc.deactivates && contains(left, alice.UserID)) {
				t.Fatalf("bob not told of alice's deleted device")
			}
		})
	}
}

// Across processes sharing one PostgreSQL database: a key upload through
// one wakes a room-mate's long-poll on the other, and a claim on either
// takes keys from the same pool.
func TestDeviceListsAcrossProcesses(t *testing.T) {
	hs := testserver.Cluster(t, 2, testserver.Options{})
	a, b := hs[0], hs[1]
	alice := newDevice(t, a.Register("alice"))
	bob := a.Register("bob")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	bob.Join(room)
	bobB := bob.On(b)
	tok := bobB.Sync("timeout=0")["next_batch"].(string)
	done := make(chan map[string]any, 1)
	go func() { done <- syncSince(t, bobB, tok, 60000) }()
	waitParked(t, b, 1)
	alice.upload(t, map[string]any{"device_keys": alice.deviceKeys(t), "one_time_keys": alice.otks(t, "K1", "K2")})
	s := <-done
	if changed, _ := deviceLists(s); !contains(changed, alice.UserID) {
		t.Fatalf("bob's long-poll on the other process: device_lists %v", s["device_lists"])
	}
	got := map[string]bool{}
	for _, c := range []*testserver.Client{bob, bobB} {
		got[claim(t, c, map[string][]string{alice.UserID: {alice.DeviceID}})[alice.UserID][alice.DeviceID]] = true
	}
	if !got["signed_curve25519:K1"] || !got["signed_curve25519:K2"] {
		t.Fatalf("claims on the two processes: %v", got)
	}
}
