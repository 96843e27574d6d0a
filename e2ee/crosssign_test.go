package e2ee_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/testserver"
)

const xsPassword = "correct horse battery" // testserver.Register's

// xsKey is a cross-signing (or device) key pair of a test user.
type xsKey struct {
	pub  string
	priv ed25519.PrivateKey
}

func newXSKey(t *testing.T) xsKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return xsKey{pub: base64.RawStdEncoding.EncodeToString(pub), priv: priv}
}

// xsSign adds user's signature with k (key ID ed25519:<id>) to obj.
func xsSign(t *testing.T, obj map[string]any, user, id string, k xsKey) map[string]any {
	t.Helper()
	bare := map[string]any{}
	for key, v := range obj {
		if key != "signatures" && key != "unsigned" {
			bare[key] = v
		}
	}
	b, _ := json.Marshal(bare)
	c, err := roomdag.CanonicalJSON(b)
	if err != nil {
		t.Fatal(err)
	}
	sig := base64.RawStdEncoding.EncodeToString(ed25519.Sign(k.priv, c))
	out := map[string]any{}
	for key, v := range obj {
		out[key] = v
	}
	sigs := map[string]any{}
	if old, ok := obj["signatures"].(map[string]any); ok {
		for u, s := range old {
			sigs[u] = s
		}
	}
	mine := map[string]any{}
	if old, ok := sigs[user].(map[string]any); ok {
		for k, v := range old {
			mine[k] = v
		}
	}
	mine["ed25519:"+id] = sig
	sigs[user] = mine
	out["signatures"] = sigs
	return out
}

func xsKeyObj(user, usage string, k xsKey) map[string]any {
	return map[string]any{"user_id": user, "usage": []any{usage}, "keys": map[string]any{"ed25519:" + k.pub: k.pub}}
}

// xsUser is a user with a full set of cross-signing keys.
type xsUser struct {
	c                 *testserver.Client
	master, ssk, usk  xsKey
	masterObj, sskObj map[string]any
	uskObj            map[string]any
}

func newXSUser(t *testing.T, c *testserver.Client) *xsUser {
	u := &xsUser{c: c, master: newXSKey(t), ssk: newXSKey(t), usk: newXSKey(t)}
	u.masterObj = xsKeyObj(c.UserID, "master", u.master)
	u.sskObj = xsSign(t, xsKeyObj(c.UserID, "self_signing", u.ssk), c.UserID, u.master.pub, u.master)
	u.uskObj = xsSign(t, xsKeyObj(c.UserID, "user_signing", u.usk), c.UserID, u.master.pub, u.master)
	return u
}

func (u *xsUser) body() map[string]any {
	return map[string]any{"master_key": u.masterObj, "self_signing_key": u.sskObj, "user_signing_key": u.uskObj}
}

const signingUpload = "/_matrix/client/v3/keys/device_signing/upload"
const sigUpload = "/_matrix/client/v3/keys/signatures/upload"

func passwordAuth(c *testserver.Client, session, pw string) map[string]any {
	return map[string]any{"type": "m.login.password", "session": session, "password": pw,
		"identifier": map[string]any{"type": "m.id.user", "user": c.UserID}}
}

// TestCrossSigningUploadAuth: the first upload needs no user-interactive
// auth (MSC3967), uploading the same keys again neither, replacing them
// does, and a wrong password is refused.
func TestCrossSigningUploadAuth(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	alice := newXSUser(t, srv.Register("xsauth"))
	alice.c.MustDo("POST", signingUpload, alice.body(), nil)
	alice.c.MustDo("POST", signingUpload, alice.body(), nil)

	next := newXSUser(t, alice.c)
	r := alice.c.Do("POST", signingUpload, next.body())
	var challenge struct {
		Session string `json:"session"`
		Flows   []struct {
			Stages []string `json:"stages"`
		} `json:"flows"`
	}
	if r.Status != http.StatusUnauthorized || r.JSON(&challenge) != nil || challenge.Session == "" || len(challenge.Flows) == 0 {
		t.Fatalf("replacing keys without auth: %d %s, want a 401 challenge", r.Status, r.Body)
	}
	body := next.body()
	body["auth"] = passwordAuth(alice.c, challenge.Session, "wrong password")
	if r := alice.c.Do("POST", signingUpload, body); r.Status != http.StatusUnauthorized || r.Errcode() != "M_FORBIDDEN" {
		t.Fatalf("wrong password: %d %s, want 401 M_FORBIDDEN", r.Status, r.Body)
	}
	if got := masterOf(t, srv, alice.c.UserID, alice.c.UserID); got != alice.master.pub {
		t.Fatalf("master key after refused replacement: %q, want the first", got)
	}
	body["auth"] = passwordAuth(alice.c, challenge.Session, xsPassword)
	alice.c.MustDo("POST", signingUpload, body, nil)
	if got := masterOf(t, srv, alice.c.UserID, alice.c.UserID); got != next.master.pub {
		t.Fatalf("master key after replacement: %q, want the new one", got)
	}
	// Another user's password proves nothing for alice.
	bob := srv.Register("xsauthb")
	third := newXSUser(t, alice.c)
	r = alice.c.Do("POST", signingUpload, third.body())
	_ = r.JSON(&challenge)
	body = third.body()
	body["auth"] = passwordAuth(bob, challenge.Session, xsPassword)
	if r := alice.c.Do("POST", signingUpload, body); r.Status != http.StatusForbidden {
		t.Fatalf("auth as another user: %d %s, want 403", r.Status, r.Body)
	}
}

// masterOf is the master public key of user that KeysFor gives requester.
func masterOf(t *testing.T, srv *testserver.Server, requester, user string) string {
	t.Helper()
	master, _, _, err := srv.HS.CrossSigning.KeysFor(context.Background(), roomdag.UserID(requester), []roomdag.UserID{roomdag.UserID(user)})
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Keys map[string]string `json:"keys"`
	}
	if raw, ok := master[roomdag.UserID(user)]; ok {
		if err := json.Unmarshal(raw, &k); err != nil {
			t.Fatal(err)
		}
	}
	for _, v := range k.Keys {
		return v
	}
	return ""
}

// TestCrossSigningUploadRefused: keys that are not well-formed cross-signing
// keys of the uploader, or not signed by the master key, are 400.
func TestCrossSigningUploadRefused(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	c := srv.Register("xsbad")
	u := newXSUser(t, c)
	other := newXSKey(t)
	with := func(edit func(b map[string]any)) map[string]any {
		b := u.body()
		edit(b)
		return b
	}
	for _, tc := range []struct {
		name   string
		body   any
		status int
		code   string
	}{
		{"not JSON", "{", 400, "M_NOT_JSON"},
		{"no keys", map[string]any{}, 400, "M_MISSING_PARAM"},
		{"master of another user", with(func(b map[string]any) { b["master_key"] = xsKeyObj("@someone:else", "master", u.master) }), 400, "M_INVALID_PARAM"},
		{"master with the wrong usage", with(func(b map[string]any) { b["master_key"] = xsKeyObj(c.UserID, "self_signing", u.master) }), 400, "M_INVALID_PARAM"},
		{"master with two usages", with(func(b map[string]any) {
			m := xsKeyObj(c.UserID, "master", u.master)
			m["usage"] = []any{"master", "user_signing"}
			b["master_key"] = m
		}), 400, "M_INVALID_PARAM"},
		{"key ID not the key", with(func(b map[string]any) {
			b["master_key"] = map[string]any{"user_id": c.UserID, "usage": []any{"master"}, "keys": map[string]any{"ed25519:abc": u.master.pub}}
		}), 400, "M_INVALID_PARAM"},
		{"key not base64 of 32 bytes", with(func(b map[string]any) {
			b["master_key"] = map[string]any{"user_id": c.UserID, "usage": []any{"master"}, "keys": map[string]any{"ed25519:abcd": "abcd"}}
		}), 400, "M_INVALID_PARAM"},
		{"two keys", with(func(b map[string]any) {
			b["master_key"] = map[string]any{"user_id": c.UserID, "usage": []any{"master"},
				"keys": map[string]any{"ed25519:" + u.master.pub: u.master.pub, "ed25519:" + other.pub: other.pub}}
		}), 400, "M_INVALID_PARAM"},
		{"self-signing key unsigned", with(func(b map[string]any) { b["self_signing_key"] = xsKeyObj(c.UserID, "self_signing", u.ssk) }), 400, "M_INVALID_PARAM"},
		{"user-signing key signed by another key", with(func(b map[string]any) {
			b["user_signing_key"] = xsSign(t, xsKeyObj(c.UserID, "user_signing", u.usk), c.UserID, other.pub, other)
		}), 400, "M_INVALID_PARAM"},
		{"self-signing key without any master key", map[string]any{"self_signing_key": u.sskObj}, 400, "M_INVALID_PARAM"},
		{"keys not an object", map[string]any{"master_key": "x"}, 400, "M_BAD_JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := c.Do("POST", signingUpload, tc.body)
			if r.Status != tc.status || r.Errcode() != tc.code {
				t.Fatalf("%d %s, want %d %s", r.Status, r.Body, tc.status, tc.code)
			}
		})
	}
	if got := masterOf(t, srv, c.UserID, c.UserID); got != "" {
		t.Fatalf("a refused upload stored master key %q", got)
	}
	if r := srv.Anonymous().Do("POST", signingUpload, u.body()); r.Status != http.StatusUnauthorized {
		t.Fatalf("without a token: %d", r.Status)
	}
}

// TestSignatureUpload: signatures of another user's master key by the
// user-signing key are verified and stored, visible to the signer only;
// each bad one is a failure of its own key.
func TestSignatureUpload(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	alice := newXSUser(t, srv.Register("xssiga"))
	bob := newXSUser(t, srv.Register("xssigb"))
	carol := srv.Register("xssigc")
	alice.c.MustDo("POST", signingUpload, alice.body(), nil)
	bob.c.MustDo("POST", signingUpload, bob.body(), nil)
	a, b := alice.c.UserID, bob.c.UserID
	stranger := newXSKey(t)
	changed := xsKeyObj(b, "master", bob.master)
	changed["extra"] = "field"

	for _, tc := range []struct {
		name   string
		target string
		keyID  string
		obj    map[string]any
		code   string // "" for success
	}{
		{"bob's master by alice's user-signing key", b, bob.master.pub, xsSign(t, bob.masterObj, a, alice.usk.pub, alice.usk), ""},
		{"signed by alice's master key", b, bob.master.pub, xsSign(t, bob.masterObj, a, alice.master.pub, alice.master), "M_INVALID_SIGNATURE"},
		{"signature forged under the user-signing key's ID", b, bob.master.pub, xsSign(t, bob.masterObj, a, alice.usk.pub, stranger), "M_INVALID_SIGNATURE"},
		{"not bob's master key", b, bob.ssk.pub, xsSign(t, bob.sskObj, a, alice.usk.pub, alice.usk), "M_NOT_FOUND"},
		{"another object than bob's master key", b, bob.master.pub, xsSign(t, changed, a, alice.usk.pub, alice.usk), "M_INVALID_PARAM"},
		{"user without keys", carol.UserID, "abc", map[string]any{"user_id": carol.UserID}, "M_NOT_FOUND"},
		{"own unknown device", a, "NODEVICE", xsSign(t, map[string]any{"user_id": a, "device_id": "NODEVICE"}, a, alice.ssk.pub, alice.ssk), "M_NOT_FOUND"},
		{"own master key without device signatures", a, alice.master.pub, alice.masterObj, "M_INVALID_SIGNATURE"},
		{"own self-signing key", a, alice.ssk.pub, alice.sskObj, "M_INVALID_PARAM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out struct {
				Failures map[string]map[string]struct {
					Errcode string `json:"errcode"`
				} `json:"failures"`
			}
			alice.c.MustDo("POST", sigUpload, map[string]any{tc.target: map[string]any{tc.keyID: tc.obj}}, &out)
			if out.Failures == nil {
				t.Fatal("no failures object in the response")
			}
			if got := out.Failures[tc.target][tc.keyID].Errcode; got != tc.code {
				t.Fatalf("failure %q, want %q (%v)", got, tc.code, out.Failures)
			}
		})
	}

	// The stored signature is bob's master key's for alice, not for carol
	// or bob.
	sigs := func(requester string) map[string]map[string]string {
		master, ssk, usk, err := srv.HS.CrossSigning.KeysFor(context.Background(), roomdag.UserID(requester), []roomdag.UserID{roomdag.UserID(b)})
		if err != nil {
			t.Fatal(err)
		}
		var k struct {
			Signatures map[string]map[string]string `json:"signatures"`
		}
		if err := json.Unmarshal(master[roomdag.UserID(b)], &k); err != nil {
			t.Fatal(err)
		}
		if _, ok := usk[roomdag.UserID(b)]; ok != (requester == b) {
			t.Errorf("user-signing key of %s given to %s: %v", b, requester, ok)
		}
		if _, ok := ssk[roomdag.UserID(b)]; !ok {
			t.Errorf("no self-signing key of %s for %s", b, requester)
		}
		return k.Signatures
	}
	if got := sigs(a)[a]["ed25519:"+alice.usk.pub]; got == "" {
		t.Fatalf("alice does not see her signature of bob's master key: %v", sigs(a))
	}
	for _, who := range []string{carol.UserID, b} {
		if _, ok := sigs(who)[a]; ok {
			t.Fatalf("%s sees alice's signature of bob's master key", who)
		}
	}

	// Replacing alice's user-signing key drops what it signed.
	next := newXSUser(t, alice.c)
	next.master, next.masterObj = alice.master, alice.masterObj
	next.uskObj = xsSign(t, xsKeyObj(a, "user_signing", next.usk), a, alice.master.pub, alice.master)
	r := alice.c.Do("POST", signingUpload, map[string]any{"user_signing_key": next.uskObj})
	var challenge struct {
		Session string `json:"session"`
	}
	_ = r.JSON(&challenge)
	alice.c.MustDo("POST", signingUpload, map[string]any{"user_signing_key": next.uskObj, "auth": passwordAuth(alice.c, challenge.Session, xsPassword)}, nil)
	if _, ok := sigs(a)[a]; ok {
		t.Fatal("the signature of a replaced user-signing key is still given out")
	}
}

// TestDeviceSignatures: signatures of one's own devices by the
// self-signing key and of one's master key by a device, verified against
// the device keys /keys/upload stored. It needs the key server's
// /keys/upload, and skips where that is not served.
func TestDeviceSignatures(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	alice := newXSUser(t, srv.Register("xsdev"))
	a, dev := alice.c.UserID, alice.c.DeviceID
	devKey, curve := newXSKey(t), newXSKey(t)
	deviceKeys := xsSign(t, map[string]any{"user_id": a, "device_id": dev,
		"algorithms": []any{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]any{"curve25519:" + dev: curve.pub, "ed25519:" + dev: devKey.pub}}, a, dev, devKey)
	r := alice.c.Do("POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": deviceKeys})
	if r.Status == http.StatusNotFound {
		t.Skip("no /keys/upload served here (the key server, e2ee/keys*.go)")
	}
	if r.Status != http.StatusOK {
		t.Fatalf("keys/upload: %d %s", r.Status, r.Body)
	}
	alice.c.MustDo("POST", signingUpload, alice.body(), nil)
	stranger := newXSKey(t)
	altered := map[string]any{}
	for k, v := range deviceKeys {
		altered[k] = v
	}
	altered["algorithms"] = []any{"m.megolm.v1.aes-sha2"}

	for _, tc := range []struct {
		name  string
		keyID string
		obj   map[string]any
		code  string
	}{
		{"device by a stranger's key under the self-signing key's ID", dev, xsSign(t, deviceKeys, a, alice.ssk.pub, stranger), "M_INVALID_SIGNATURE"},
		{"altered device keys", dev, xsSign(t, altered, a, alice.ssk.pub, alice.ssk), "M_INVALID_PARAM"},
		{"master by a forged device signature", alice.master.pub, xsSign(t, alice.masterObj, a, dev, stranger), "M_INVALID_SIGNATURE"},
		{"device by the self-signing key", dev, xsSign(t, deviceKeys, a, alice.ssk.pub, alice.ssk), ""},
		{"master by the device", alice.master.pub, xsSign(t, alice.masterObj, a, dev, devKey), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out struct {
				Failures map[string]map[string]struct {
					Errcode string `json:"errcode"`
				} `json:"failures"`
			}
			alice.c.MustDo("POST", sigUpload, map[string]any{a: map[string]any{tc.keyID: tc.obj}}, &out)
			if got := out.Failures[a][tc.keyID].Errcode; got != tc.code {
				t.Fatalf("failure %q, want %q (%v)", got, tc.code, out.Failures)
			}
		})
	}
	ctx, users := context.Background(), []roomdag.UserID{roomdag.UserID(a)}
	ds, err := srv.HS.CrossSigning.DeviceSignatures(ctx, roomdag.UserID(a), users)
	if err != nil {
		t.Fatal(err)
	}
	if ds[roomdag.UserID(a)][dev][roomdag.UserID(a)]["ed25519:"+alice.ssk.pub] == "" {
		t.Fatalf("device signatures: %v, want the self-signing key's of %s", ds, dev)
	}
	master, _, _, err := srv.HS.CrossSigning.KeysFor(ctx, roomdag.UserID(a), users)
	if err != nil {
		t.Fatal(err)
	}
	var mk struct {
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if err := json.Unmarshal(master[roomdag.UserID(a)], &mk); err != nil || mk.Signatures[a]["ed25519:"+dev] == "" {
		t.Fatalf("master key %s: want the device's signature", master[roomdag.UserID(a)])
	}
}

// TestDeletedDeviceSignatures: a deleted device leaves /keys/query, and so
// do the signatures of its keys (a device later created with the same ID
// does not inherit the self-signing key's signature of the old keys); the
// signature the device made on its user's master key stays, as Synapse
// keeps it (clients ignore signatures by devices they do not know).
func TestDeletedDeviceSignatures(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	alice := newXSUser(t, srv.Register("xsgone"))
	bob := srv.Register("xsgonebob")
	a := alice.c.UserID
	alice.c.MustDo("POST", signingUpload, alice.body(), nil)

	const gone = "XSGONE"
	login := func() *device {
		var out struct {
			AccessToken string `json:"access_token"`
			DeviceID    string `json:"device_id"`
		}
		c := srv.Anonymous()
		c.MustDo("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password", "device_id": gone,
			"identifier": map[string]any{"type": "m.id.user", "user": a}, "password": xsPassword}, &out)
		if out.DeviceID != gone {
			t.Fatalf("login with device_id %s got %s", gone, out.DeviceID)
		}
		c.UserID, c.Token, c.DeviceID = a, out.AccessToken, out.DeviceID
		d := newDevice(t, c)
		d.upload(t, map[string]any{"device_keys": d.deviceKeys(t)})
		return d
	}
	sigsOf := func(obj map[string]any) map[string]any {
		s, _ := obj["signatures"].(map[string]any)
		m, _ := s[a].(map[string]any)
		return m
	}
	query := func(c *testserver.Client) (devices map[string]map[string]any, master map[string]any) {
		var out struct {
			DeviceKeys map[string]map[string]map[string]any `json:"device_keys"`
			MasterKeys map[string]map[string]any            `json:"master_keys"`
		}
		c.MustDo("POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{a: []string{}}}, &out)
		return out.DeviceKeys[a], out.MasterKeys[a]
	}

	old := login()
	oldKeys := old.deviceKeys(t)
	var up struct {
		Failures map[string]any `json:"failures"`
	}
	alice.c.MustDo("POST", sigUpload, map[string]any{a: map[string]any{
		gone:             xsSign(t, oldKeys, a, alice.ssk.pub, alice.ssk),
		alice.master.pub: signWith(t, old.priv, a, "ed25519:"+gone, alice.masterObj),
	}}, &up)
	if len(up.Failures) != 0 {
		t.Fatalf("signature upload failures: %v", up.Failures)
	}
	sskSig, devSig := "ed25519:"+alice.ssk.pub, "ed25519:"+gone
	devs, master := query(bob)
	if sigsOf(devs[gone])[sskSig] == nil || sigsOf(master)[devSig] == nil {
		t.Fatalf("before the deletion: device %v, master %v; want the self-signing key's and the device's signatures", devs[gone], master)
	}
	masterSig := sigsOf(master)[devSig]

	old.MustDo("POST", "/_matrix/client/v3/logout", map[string]any{}, nil)
	for name, c := range map[string]*testserver.Client{"bob": bob, "alice": alice.c} {
		devs, master = query(c)
		if _, ok := devs[gone]; ok {
			t.Fatalf("%s's /keys/query still lists the deleted device: %v", name, devs[gone])
		}
		if got := sigsOf(master)[devSig]; got != masterSig {
			t.Fatalf("%s's /keys/query: the deleted device's signature of the master key is %v, want it kept (%v)", name, got, masterSig)
		}
	}

	// A new device with the same ID and new keys: no signature of the
	// self-signing key comes with it until one is uploaded for its keys.
	fresh := login()
	devs, _ = query(bob)
	if devs[gone] == nil {
		t.Fatalf("the new %s is not listed", gone)
	}
	if got := sigsOf(devs[gone]); got[sskSig] != nil || len(got) != 1 {
		t.Fatalf("the new %s's signatures: %v; want its own only (the old keys' self-signing signature went with them)", gone, got)
	}
	if k := devs[gone]["keys"].(map[string]any)["ed25519:"+gone]; k != b64(fresh.pub) {
		t.Fatalf("the new device's key %v, want %s", k, b64(fresh.pub))
	}
}
