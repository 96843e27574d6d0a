package e2ee

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/persistentchat/homeserver/api"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// Cross-signing (spec: client-server API, "Cross-signing"): a user's
// master key, the self-signing key that signs their devices and the
// user-signing key that signs other users' master keys, and the
// signatures uploaded for keys. The server checks every signature it
// stores; it holds no private key.

// Usages of cross-signing keys.
const (
	UsageMaster      = "master"
	UsageSelfSigning = "self_signing"
	UsageUserSigning = "user_signing"
)

// CodeInvalidSignature is a signature upload's failure for a signature
// that does not verify (Synapse's errcode for it).
const CodeInvalidSignature = "M_INVALID_SIGNATURE"

// CrossSigningStore keeps cross-signing keys and uploaded signatures
// (storage/sqlstore/crosssign.go documents each method).
type CrossSigningStore interface {
	CrossSigningKeys(ctx context.Context, users []roomdag.UserID) ([]storage.CrossSigningKey, error)
	PutCrossSigningKeys(ctx context.Context, user roomdag.UserID, keys []storage.CrossSigningKey) error
	PutKeySignatures(ctx context.Context, sigs []storage.KeySignature) error
	KeySignatures(ctx context.Context, users []roomdag.UserID) ([]storage.KeySignature, error)
}

// DeviceKeySource reads the device keys /keys/upload stored (the key
// server's, e2ee/keys*.go): the signed device key object of a user's
// device, storage.ErrNotFound if the device has none.
type DeviceKeySource interface {
	DeviceKeys(ctx context.Context, user roomdag.UserID, device string) (json.RawMessage, error)
}

// DeviceListNotifier hears that a user's device list changed: their
// cross-signing keys or the signatures of their keys. It is called after
// the change is durable, and advances the user's device list (returning
// its new position), which /sync's device_lists and federation's
// m.signing_key_update carry on. The key server's store implements it
// (storage/sqlstore, DeviceListChanged).
type DeviceListNotifier interface {
	DeviceListChanged(ctx context.Context, userID roomdag.UserID) (int64, error)
}

// DeviceSignatures are uploaded signatures of devices: user to device to
// signer to signing key ID to signature, to be merged into the device
// keys' "signatures" (MergeSignatures).
type DeviceSignatures map[roomdag.UserID]map[string]map[roomdag.UserID]map[string]string

// CrossSigning serves /keys/device_signing/upload and
// /keys/signatures/upload, and gives /keys/query the keys and signatures
// (KeysFor, DeviceSignatures).
type CrossSigning struct {
	store   CrossSigningStore
	devices DeviceKeySource
	notify  DeviceListNotifier
}

// NewCrossSigning makes the endpoints. devices may be nil while no key
// server stores device keys: signatures of devices then fail as of
// unknown devices. notify may be nil: nobody then hears of changes.
func NewCrossSigning(store CrossSigningStore, devices DeviceKeySource, notify DeviceListNotifier) *CrossSigning {
	return &CrossSigning{store: store, devices: devices, notify: notify}
}

// Routes are the cross-signing endpoints, for api.Config.Routes.
func (c *CrossSigning) Routes() []api.Route {
	return []api.Route{
		{Method: "POST", Path: "/_matrix/client/v3/keys/device_signing/upload", Handler: c.uploadSigningKeys},
		{Method: "POST", Path: "/_matrix/client/v3/keys/signatures/upload", Handler: c.uploadSignatures},
	}
}

// signingKey is a parsed cross-signing key.
type signingKey struct {
	usage string
	pub   ed25519.PublicKey
	id    string // unpadded base64 of pub
	json  json.RawMessage
}

// keyJSON is the shape of a cross-signing key (spec: CrossSigningKey).
type keyJSON struct {
	UserID     string            `json:"user_id"`
	Usage      []string          `json:"usage"`
	Keys       map[string]string `json:"keys"`
	Signatures json.RawMessage   `json:"signatures"`
}

// parseSigningKey checks a cross-signing key of user with usage: its
// user_id, its usage and exactly one ed25519 key whose ID is the key.
func parseSigningKey(raw json.RawMessage, user roomdag.UserID, usage string) (*signingKey, error) {
	var k keyJSON
	if err := json.Unmarshal(raw, &k); err != nil {
		return nil, httpapi.BadJSON("%s_key is not a cross-signing key: %v", usage, err)
	}
	if k.UserID != string(user) {
		return nil, httpapi.InvalidParam("%s_key's user_id must be %s", usage, user)
	}
	if !slices.Contains(k.Usage, usage) {
		return nil, httpapi.InvalidParam("%s_key's usage must include %q", usage, usage)
	}
	for _, u := range k.Usage {
		if u != usage && (u == UsageMaster || u == UsageSelfSigning || u == UsageUserSigning) {
			return nil, httpapi.InvalidParam("%s_key's usage may not include %q", usage, u)
		}
	}
	if len(k.Keys) != 1 {
		return nil, httpapi.InvalidParam("%s_key must hold exactly one key", usage)
	}
	for id, val := range k.Keys {
		pub, ok := strings.CutPrefix(id, "ed25519:")
		b, err := base64.RawStdEncoding.DecodeString(val)
		if !ok || pub != val || err != nil || len(b) != ed25519.PublicKeySize {
			return nil, httpapi.InvalidParam("%s_key's key must be \"ed25519:<key>\": <key>, an unpadded base64 ed25519 public key", usage)
		}
		c, err := roomdag.CanonicalJSON(raw)
		if err != nil {
			return nil, httpapi.BadJSON("%s_key: %v", usage, err)
		}
		return &signingKey{usage: usage, pub: ed25519.PublicKey(b), id: val, json: c}, nil
	}
	panic("unreachable")
}

// verifiedBy reports whether obj carries a valid signature of user's key.
func verifiedBy(obj json.RawMessage, user roomdag.UserID, k *signingKey) bool {
	return roomdag.VerifyJSON(roomdag.ServerName(user), "ed25519:"+k.id, k.pub, obj) == nil
}

// currentKeys returns user's stored cross-signing keys by usage.
func (c *CrossSigning) currentKeys(ctx context.Context, user roomdag.UserID) (map[string]*signingKey, error) {
	stored, err := c.store.CrossSigningKeys(ctx, []roomdag.UserID{user})
	if err != nil {
		return nil, err
	}
	out := map[string]*signingKey{}
	for _, s := range stored {
		k, err := parseSigningKey(s.JSON, user, s.Usage)
		if err != nil {
			continue // stored keys were checked: unreachable
		}
		out[s.Usage] = k
	}
	return out, nil
}

// uploadSigningKeys is POST /keys/device_signing/upload. The first upload
// of a user without a master key needs no user-interactive auth (MSC3967,
// spec v1.11); replacing keys does. Uploading the keys already stored is
// a no-op without it, so that a client retrying an upload that succeeded
// is not challenged.
func (c *CrossSigning) uploadSigningKeys(r *http.Request) (any, error) {
	user, _, ok := api.Caller(r)
	if !ok {
		return nil, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeMissingToken, "missing access token")
	}
	var req struct {
		Master      json.RawMessage `json:"master_key"`
		SelfSigning json.RawMessage `json:"self_signing_key"`
		UserSigning json.RawMessage `json:"user_signing_key"`
		Auth        json.RawMessage `json:"auth"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	ctx := r.Context()
	current, err := c.currentKeys(ctx, user)
	if err != nil {
		return nil, err
	}
	var upload []*signingKey
	for _, f := range []struct {
		usage string
		raw   json.RawMessage
	}{{UsageMaster, req.Master}, {UsageSelfSigning, req.SelfSigning}, {UsageUserSigning, req.UserSigning}} {
		if len(f.raw) == 0 || string(f.raw) == "null" {
			continue
		}
		k, err := parseSigningKey(f.raw, user, f.usage)
		if err != nil {
			return nil, err
		}
		upload = append(upload, k)
	}
	if len(upload) == 0 {
		return nil, httpapi.MissingParam("no cross-signing key to upload")
	}
	master := current[UsageMaster]
	if upload[0].usage == UsageMaster {
		master = upload[0]
	}
	for _, k := range upload {
		if k.usage == UsageMaster {
			continue
		}
		if master == nil {
			return nil, httpapi.InvalidParam("%s_key needs a master key to sign it, and there is none", k.usage)
		}
		if !verifiedBy(k.json, user, master) {
			return nil, httpapi.InvalidParam("%s_key is not signed by the master key", k.usage)
		}
	}
	same := true
	for _, k := range upload {
		if cur := current[k.usage]; cur == nil || !bytes.Equal(cur.json, k.json) {
			same = false
		}
	}
	if same {
		return struct{}{}, nil
	}
	if current[UsageMaster] != nil {
		if err := api.RequireUserAuth(r, req.Auth); err != nil {
			return nil, err
		}
	}
	// A new master key leaves stored self- and user-signing keys signed by
	// the old one: they are kept (clients upload all three together) but
	// no longer verify, as Synapse does.
	keys := make([]storage.CrossSigningKey, 0, len(upload))
	for _, k := range upload {
		keys = append(keys, storage.CrossSigningKey{User: user, Usage: k.usage, KeyID: k.id, JSON: k.json})
	}
	if err := c.store.PutCrossSigningKeys(ctx, user, keys); err != nil {
		return nil, err
	}
	return struct{}{}, c.changed(ctx, user)
}

func (c *CrossSigning) changed(ctx context.Context, user roomdag.UserID) error {
	if c.notify == nil {
		return nil
	}
	_, err := c.notify.DeviceListChanged(ctx, user)
	return err
}

// DevicesNotifier may be implemented by a DeviceListNotifier: it hears
// that the keys of some of a user's devices changed (signatures were
// uploaded for them), which other servers are then sent as device
// updates rather than as a cross-signing key update.
type DevicesNotifier interface {
	DevicesChanged(ctx context.Context, user roomdag.UserID, devices []string) (int64, error)
}

func (c *CrossSigning) devicesChanged(ctx context.Context, user roomdag.UserID, devices []string) error {
	if n, ok := c.notify.(DevicesNotifier); ok {
		_, err := n.DevicesChanged(ctx, user, devices)
		return err
	}
	return c.changed(ctx, user)
}

// failure is one key's entry of a signature upload's failures.
type failure struct {
	Errcode string `json:"errcode"`
	Error   string `json:"error"`
}

// uploadSignatures is POST /keys/signatures/upload: signatures of the
// requester's own devices by their self-signing key, of their own master
// key by their devices, and of other users' master keys by their
// user-signing key. Each signature is verified, and the signed object
// must be the stored key (signatures and unsigned aside); what fails is
// reported per key in failures, and the rest is stored.
func (c *CrossSigning) uploadSignatures(r *http.Request) (any, error) {
	user, _, ok := api.Caller(r)
	if !ok {
		return nil, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeMissingToken, "missing access token")
	}
	var req map[string]map[string]json.RawMessage
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	ctx := r.Context()
	mine, err := c.currentKeys(ctx, user)
	if err != nil {
		return nil, err
	}
	failures := map[string]map[string]failure{}
	fail := func(u, id, code, msg string) {
		if failures[u] == nil {
			failures[u] = map[string]failure{}
		}
		failures[u][id] = failure{code, msg}
	}
	var sigs []storage.KeySignature
	var ownDevices []string
	changed := map[roomdag.UserID]bool{}
	for target, objs := range req {
		targetUser, err := roomdag.ParseUserID(target)
		if err != nil {
			for id := range objs {
				fail(target, id, httpapi.CodeInvalidParam, "not a user ID")
			}
			continue
		}
		var theirs map[string]*signingKey
		if targetUser != user {
			if theirs, err = c.currentKeys(ctx, targetUser); err != nil {
				return nil, err
			}
		}
		for id, obj := range objs {
			got, code, msg := c.checkSignature(ctx, user, mine, targetUser, theirs, id, obj)
			if code != "" {
				fail(target, id, code, msg)
				continue
			}
			sigs = append(sigs, got...)
			if m := mine[UsageMaster]; targetUser == user && (m == nil || m.id != id) {
				ownDevices = append(ownDevices, id) // a device's keys changed, not the cross-signing keys
				continue
			}
			changed[targetUser] = true
		}
	}
	if len(sigs) > 0 {
		if err := c.store.PutKeySignatures(ctx, sigs); err != nil {
			return nil, err
		}
	}
	if len(ownDevices) > 0 {
		if err := c.devicesChanged(ctx, user, ownDevices); err != nil {
			return nil, err
		}
	}
	for u := range changed {
		if err := c.changed(ctx, u); err != nil {
			return nil, err
		}
	}
	return map[string]any{"failures": failures}, nil
}

// checkSignature checks one signed object of a signature upload by user
// (whose keys are mine) of target's key id (target's keys are theirs when
// target is not user), and returns the signatures to store, or the
// failure's errcode and message.
func (c *CrossSigning) checkSignature(ctx context.Context, user roomdag.UserID, mine map[string]*signingKey,
	target roomdag.UserID, theirs map[string]*signingKey, id string, obj json.RawMessage) ([]storage.KeySignature, string, string) {
	signed, err := roomdag.CanonicalJSON(obj)
	if err != nil || len(signed) == 0 || signed[0] != '{' {
		return nil, httpapi.CodeBadJSON, "the signed key must be a JSON object"
	}
	if target != user {
		master, usk := theirs[UsageMaster], mine[UsageUserSigning]
		switch {
		case master == nil || master.id != id:
			return nil, httpapi.CodeNotFound, "not the master key of " + string(target)
		case usk == nil:
			return nil, httpapi.CodeInvalidParam, "you have no user-signing key to sign other users' keys with"
		case !sameKey(signed, master.json):
			return nil, httpapi.CodeInvalidParam, "the signed key is not the stored master key"
		case !verifiedBy(signed, user, usk):
			return nil, CodeInvalidSignature, "no valid signature by your user-signing key"
		}
		return []storage.KeySignature{{TargetUser: target, TargetKeyID: id, Signer: user,
			SignerKeyID: "ed25519:" + usk.id, Signature: signatureOf(signed, user, "ed25519:"+usk.id)}}, "", ""
	}
	if master := mine[UsageMaster]; master != nil && master.id == id {
		return c.checkMasterByDevices(ctx, user, master, signed)
	}
	for _, k := range mine {
		if k.id == id {
			return nil, httpapi.CodeInvalidParam, "only the master key and devices take uploaded signatures"
		}
	}
	ssk := mine[UsageSelfSigning]
	if ssk == nil {
		return nil, httpapi.CodeInvalidParam, "you have no self-signing key to sign your devices with"
	}
	stored, err := c.deviceKeys(ctx, user, id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httpapi.CodeNotFound, "unknown device or key"
	}
	if err != nil {
		return nil, httpapi.CodeUnknown, "device keys could not be read"
	}
	if !sameKey(signed, stored) {
		return nil, httpapi.CodeInvalidParam, "the signed key is not the stored device key"
	}
	if !verifiedBy(signed, user, ssk) {
		return nil, CodeInvalidSignature, "no valid signature by your self-signing key"
	}
	return []storage.KeySignature{{TargetUser: user, TargetKeyID: id, Signer: user,
		SignerKeyID: "ed25519:" + ssk.id, Signature: signatureOf(signed, user, "ed25519:"+ssk.id)}}, "", ""
}

// checkMasterByDevices checks the signatures of user's devices on their
// master key: each must verify with its device's ed25519 key, and at
// least one must be there.
func (c *CrossSigning) checkMasterByDevices(ctx context.Context, user roomdag.UserID, master *signingKey, signed []byte) ([]storage.KeySignature, string, string) {
	if !sameKey(signed, master.json) {
		return nil, httpapi.CodeInvalidParam, "the signed key is not the stored master key"
	}
	var body struct {
		Signatures map[string]map[string]string `json:"signatures"`
	}
	_ = json.Unmarshal(signed, &body) // canonical JSON: an object
	var out []storage.KeySignature
	for keyID, sig := range body.Signatures[string(user)] {
		device, ok := strings.CutPrefix(keyID, "ed25519:")
		if !ok || device == master.id {
			continue
		}
		pub, err := c.deviceEd25519(ctx, user, device)
		if err != nil {
			return nil, httpapi.CodeNotFound, "unknown device " + device
		}
		if roomdag.VerifyJSON(roomdag.ServerName(user), keyID, pub, signed) != nil {
			return nil, CodeInvalidSignature, "the signature of device " + device + " does not verify"
		}
		out = append(out, storage.KeySignature{TargetUser: user, TargetKeyID: master.id, Signer: user, SignerKeyID: keyID, Signature: sig})
	}
	if len(out) == 0 {
		return nil, CodeInvalidSignature, "no signature of one of your devices"
	}
	return out, "", ""
}

func (c *CrossSigning) deviceKeys(ctx context.Context, user roomdag.UserID, device string) (json.RawMessage, error) {
	if c.devices == nil {
		return nil, storage.ErrNotFound
	}
	return c.devices.DeviceKeys(ctx, user, device)
}

// deviceEd25519 is the ed25519 key of a device's keys.
func (c *CrossSigning) deviceEd25519(ctx context.Context, user roomdag.UserID, device string) (ed25519.PublicKey, error) {
	raw, err := c.deviceKeys(ctx, user, device)
	if err != nil {
		return nil, err
	}
	var dk struct {
		Keys map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(raw, &dk); err != nil {
		return nil, err
	}
	b, err := base64.RawStdEncoding.DecodeString(dk.Keys["ed25519:"+device])
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, storage.ErrNotFound
	}
	return ed25519.PublicKey(b), nil
}

// sameKey reports whether two key objects are the same key: equal but for
// their signatures and unsigned data.
func sameKey(a, b []byte) bool {
	strip := func(x []byte) []byte {
		var m map[string]json.RawMessage
		if json.Unmarshal(x, &m) != nil {
			return nil
		}
		delete(m, "signatures")
		delete(m, "unsigned")
		out, _ := json.Marshal(m)
		c, err := roomdag.CanonicalJSON(out)
		if err != nil {
			return nil
		}
		return c
	}
	sa, sb := strip(a), strip(b)
	return sa != nil && bytes.Equal(sa, sb)
}

// signatureOf is user's signature with keyID on a verified object.
func signatureOf(obj []byte, user roomdag.UserID, keyID string) string {
	var body struct {
		Signatures map[string]map[string]string `json:"signatures"`
	}
	_ = json.Unmarshal(obj, &body)
	return body.Signatures[string(user)][keyID]
}

// KeysFor returns the master, self-signing and user-signing keys of
// users, each its stored signed JSON object, as requester may see them:
// user-signing keys only the requester's own; master keys with the
// uploaded signatures of their owner's devices and of the requester's
// user-signing key (nobody learns whom else a user verified). Users
// without a key of a kind are absent from that map. It is the key
// server's CrossSigningKeys (e2ee/keys.go).
func (c *CrossSigning) KeysFor(ctx context.Context, requester roomdag.UserID, users []roomdag.UserID) (master, selfSigning, userSigning map[roomdag.UserID]json.RawMessage, err error) {
	master, selfSigning, userSigning = map[roomdag.UserID]json.RawMessage{}, map[roomdag.UserID]json.RawMessage{}, map[roomdag.UserID]json.RawMessage{}
	keys, err := c.store.CrossSigningKeys(ctx, users)
	if err != nil {
		return nil, nil, nil, err
	}
	byKey, err := c.signatures(ctx, requester, users)
	if err != nil {
		return nil, nil, nil, err
	}
	for _, k := range keys {
		switch k.Usage {
		case UsageMaster:
			master[k.User] = MergeSignatures(k.JSON, byKey[k.User][k.KeyID])
		case UsageSelfSigning:
			selfSigning[k.User] = k.JSON
		case UsageUserSigning:
			if k.User == requester {
				userSigning[k.User] = k.JSON
			}
		}
	}
	return master, selfSigning, userSigning, nil
}

// DeviceSignatures returns the uploaded signatures of users' devices (by
// their self-signing keys), for /keys/query to merge into the device
// keys it returns.
func (c *CrossSigning) DeviceSignatures(ctx context.Context, requester roomdag.UserID, users []roomdag.UserID) (DeviceSignatures, error) {
	keys, err := c.store.CrossSigningKeys(ctx, users)
	if err != nil {
		return nil, err
	}
	byKey, err := c.signatures(ctx, requester, users)
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		delete(byKey[k.User], k.KeyID)
	}
	out := DeviceSignatures{}
	for u, m := range byKey {
		if len(m) > 0 {
			out[u] = m
		}
	}
	return out, nil
}

// signatures returns the uploaded signatures of users' keys that
// requester may see, by user and signed key ID: the owner's own, and
// another user's only for that user.
func (c *CrossSigning) signatures(ctx context.Context, requester roomdag.UserID, users []roomdag.UserID) (DeviceSignatures, error) {
	sigs, err := c.store.KeySignatures(ctx, users)
	if err != nil {
		return nil, err
	}
	byKey := DeviceSignatures{}
	for _, s := range sigs {
		if s.Signer != s.TargetUser && s.Signer != requester {
			continue
		}
		m := byKey[s.TargetUser]
		if m == nil {
			m = map[string]map[roomdag.UserID]map[string]string{}
			byKey[s.TargetUser] = m
		}
		if m[s.TargetKeyID] == nil {
			m[s.TargetKeyID] = map[roomdag.UserID]map[string]string{}
		}
		if m[s.TargetKeyID][s.Signer] == nil {
			m[s.TargetKeyID][s.Signer] = map[string]string{}
		}
		m[s.TargetKeyID][s.Signer][s.SignerKeyID] = s.Signature
	}
	return byKey, nil
}

// MergeSignatures returns a key object (device keys, a cross-signing key)
// with sigs, signer to key ID to signature, added to its "signatures".
// An object that is not one is returned as it is.
func MergeSignatures(obj json.RawMessage, sigs map[roomdag.UserID]map[string]string) json.RawMessage {
	if len(sigs) == 0 {
		return obj
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(obj, &m) != nil || m == nil {
		return obj
	}
	have := map[string]map[string]string{}
	if s, ok := m["signatures"]; ok {
		_ = json.Unmarshal(s, &have)
		if have == nil {
			have = map[string]map[string]string{}
		}
	}
	for signer, ks := range sigs {
		if have[string(signer)] == nil {
			have[string(signer)] = map[string]string{}
		}
		for id, sig := range ks {
			have[string(signer)][id] = sig
		}
	}
	b, _ := json.Marshal(have)
	m["signatures"] = b
	out, err := json.Marshal(m)
	if err != nil {
		return obj
	}
	return out
}
