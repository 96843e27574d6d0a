package e2ee

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"

	"github.com/persistentchat/homeserver/api"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"github.com/persistentchat/homeserver/sync"
)

// The key server (spec: "Key management API"): POST /keys/upload, /keys/query,
// /keys/claim and GET /keys/changes, and the device key sections of /sync
// (devicelists.go).

// Store is what the key server reads and writes (storage/sqlstore/e2eekeys.go).
type Store interface {
	// UploadKeys stores a validated upload atomically and returns the
	// device's unclaimed one-time keys per algorithm; a one-time key ID
	// stored with other content fails it with *storage.KeyConflictError.
	// New or changed device keys advance the user's device list.
	UploadKeys(ctx context.Context, user roomdag.UserID, device string, up storage.KeyUpload) (map[string]int64, error)
	OneTimeKeyCounts(ctx context.Context, user roomdag.UserID, device string) (map[string]int64, error)
	UnusedFallbackKeyTypes(ctx context.Context, user roomdag.UserID, device string) ([]string, error)
	// DeviceKeysOf returns the stored device keys of users' devices (all
	// of a user's when mapped to none).
	DeviceKeysOf(ctx context.Context, users map[roomdag.UserID][]string) ([]storage.DeviceKeys, error)
	// ClaimKeys hands out one key per claim in one transaction: the
	// oldest one-time key (deleted), else the fallback key (marked used).
	ClaimKeys(ctx context.Context, claims []storage.KeyClaim) ([]storage.ClaimedKey, error)

	// DeviceListChanged advances user's device list for a change of
	// their cross-signing keys and returns its new position, durable and
	// announced (other servers are sent an m.signing_key_update).
	DeviceListChanged(ctx context.Context, user roomdag.UserID) (int64, error)
	// DeviceListsChangedSince returns the users whose device list changed
	// in (after, upTo] of the device-list stream.
	DeviceListsChangedSince(ctx context.Context, after, upTo int64) ([]roomdag.UserID, error)
	DeviceListPos(ctx context.Context) (int64, error)
	// DevicePos is a local user's latest position at which a device
	// changed (0: none): the stream_id of the last m.device_list_update.
	DevicePos(ctx context.Context, user roomdag.UserID) (int64, error)
	// MembershipChangesSince returns the latest memberships changed in
	// (after, upTo] in the rooms user is or was in.
	MembershipChangesSince(ctx context.Context, user roomdag.UserID, after, upTo roomdag.StreamPos) ([]storage.MemberChange, error)
	JoinedMembersOf(ctx context.Context, room roomdag.RoomID) ([]roomdag.UserID, error)
	// RoomPeers returns the users sharing a joined room with user.
	RoomPeers(ctx context.Context, user roomdag.UserID) (map[roomdag.UserID]bool, error)
}

// CrossSigningKeys supplies the cross-signing keys /keys/query returns
// (implemented with cross-signing, e2ee/crosssign*.go). A nil one has
// none.
type CrossSigningKeys interface {
	// KeysFor returns the master, self-signing and user-signing keys of
	// users (each as its stored signed JSON object), as requester may
	// see them: user-signing keys are only ever the requester's own.
	// Users without a key of a kind are absent from that map.
	KeysFor(ctx context.Context, requester roomdag.UserID, users []roomdag.UserID) (master, selfSigning, userSigning map[roomdag.UserID]json.RawMessage, err error)
}

// DeviceKeySignatures may be implemented by a CrossSigningKeys that also
// holds signatures of device keys made with cross-signing keys (POST
// /keys/signatures/upload): /keys/query adds them to the served device
// keys' signatures.
type DeviceKeySignatures interface {
	// DeviceSignatures returns, for the given devices (all of a user's
	// when mapped to none), the stored signatures of their device keys:
	// user -> device -> signing user -> key ID -> signature.
	// Only signatures requester may see are returned (CrossSigning's).
	DeviceSignatures(ctx context.Context, requester roomdag.UserID, users []roomdag.UserID) (DeviceSignatures, error)
}

// Keys is the key server.
type Keys struct {
	server roomdag.ServerName
	store  Store
	cross  CrossSigningKeys
	// remote asks other servers for their users' keys; nil: nobody.
	remote RemoteKeys
	// cache holds other servers' users' device lists (devicelistfed.go);
	// nil: every query of them asks their server.
	cache RemoteDeviceStore
	// resync rebuilds a missing or stale cached list; nil: none.
	resync Resyncer
	log    *slog.Logger
	// current is the sync position now (GET /keys/changes); nil: the
	// device-list stream's stored head, events unknown.
	current func() sync.Token
}

// NewKeys makes the key server. cross may be nil; current is the sync
// position now (the notifier's Current).
func NewKeys(server roomdag.ServerName, store Store, cross CrossSigningKeys, current func() sync.Token, log *slog.Logger) *Keys {
	return &Keys{server: server, store: store, cross: cross, current: current, log: log}
}

// WithRemote makes /keys/query and /keys/claim ask other servers for
// their users' keys through remote; without, those servers are reported
// in failures. It returns k.
func (k *Keys) WithRemote(remote RemoteKeys) *Keys {
	k.remote = remote
	return k
}

// Bounds of one request, so that nobody ties the server up with one.
const (
	maxClaims  = 10000 // devices in one /keys/claim
	maxQueried = 10000 // users in one /keys/query
)

func (k *Keys) routes() []api.Route {
	return []api.Route{
		{Method: http.MethodPost, Path: v3 + "/keys/upload", Handler: k.upload},
		// Deprecated form with the device ID in the path (r0): the device
		// must be the caller's.
		{Method: http.MethodPost, Path: v3 + "/keys/upload/{deviceId}", Handler: k.upload},
		{Method: http.MethodPost, Path: v3 + "/keys/query", Handler: k.query},
		{Method: http.MethodPost, Path: v3 + "/keys/claim", Handler: k.claim},
		{Method: http.MethodGet, Path: v3 + "/keys/changes", Handler: k.changes},
	}
}

// DeviceListChanged announces that user's device list changed (their
// cross-signing keys, say): the user's other devices and everyone sharing
// a room with them see the user in device_lists.changed.
func (k *Keys) DeviceListChanged(ctx context.Context, user roomdag.UserID) error {
	_, err := k.store.DeviceListChanged(ctx, user)
	return err
}

// uploadBody is POST /keys/upload's body.
type uploadBody struct {
	DeviceKeys   json.RawMessage            `json:"device_keys"`
	OneTimeKeys  map[string]json.RawMessage `json:"one_time_keys"`
	FallbackKeys map[string]json.RawMessage `json:"fallback_keys"`
	// The unstable name (MSC2732) older clients still send.
	FallbackKeysUnstable map[string]json.RawMessage `json:"org.matrix.msc2732.fallback_keys"`
}

// deviceKeysBody is the part of a device keys object the server checks.
type deviceKeysBody struct {
	UserID     string                       `json:"user_id"`
	DeviceID   string                       `json:"device_id"`
	Algorithms []string                     `json:"algorithms"`
	Keys       map[string]string            `json:"keys"`
	Signatures map[string]map[string]string `json:"signatures"`
}

func (k *Keys) upload(r *http.Request) (any, error) {
	user, device, _ := api.Caller(r)
	if device == "" {
		return nil, httpapi.InvalidParam("keys can only be uploaded by a device")
	}
	if d := httpapi.PathParam(r, "deviceId"); d != "" && d != device {
		return nil, httpapi.InvalidParam("device %q is not the caller's device", d)
	}
	var body uploadBody
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	counts, err := k.uploadFor(r.Context(), user, device, body)
	if err != nil {
		return nil, err
	}
	return map[string]any{"one_time_key_counts": counts}, nil
}

// UploadKeys stores keys shaped as a /keys/upload body for the user's
// device, with the checks of /keys/upload: the dehydrated device's keys
// (KeyUploader).
func (k *Keys) UploadKeys(ctx context.Context, user roomdag.UserID, device string, keys json.RawMessage) error {
	var body uploadBody
	if err := json.Unmarshal(keys, &body); err != nil {
		return httpapi.BadJSON("the device's keys: %v", err)
	}
	_, err := k.uploadFor(ctx, user, device, body)
	return err
}

// uploadFor checks and stores one upload and returns the device's
// one-time key counts.
func (k *Keys) uploadFor(ctx context.Context, user roomdag.UserID, device string, body uploadBody) (map[string]int64, error) {
	var up storage.KeyUpload
	var devKey ed25519.PublicKey
	if len(body.DeviceKeys) > 0 && string(body.DeviceKeys) != "null" {
		c, pub, err := checkDeviceKeys(body.DeviceKeys, user, device)
		if err != nil {
			return nil, err
		}
		up.DeviceKeys, devKey = c, pub
	}
	if devKey == nil && (len(body.OneTimeKeys) > 0 || len(body.FallbackKeys) > 0 || len(body.FallbackKeysUnstable) > 0) {
		// Signed one-time keys are checked against the device's key.
		stored, err := k.store.DeviceKeysOf(ctx, map[roomdag.UserID][]string{user: {device}})
		if err != nil {
			return nil, err
		}
		if len(stored) == 1 {
			devKey, _ = deviceKeyOf(stored[0].JSON, device)
		}
	}
	var err error
	if up.OneTime, err = checkOneTimeKeys(body.OneTimeKeys, user, device, devKey, "one_time_keys"); err != nil {
		return nil, err
	}
	fallback := body.FallbackKeys
	if fallback == nil {
		fallback = body.FallbackKeysUnstable
	}
	if up.Fallback, err = checkOneTimeKeys(fallback, user, device, devKey, "fallback_keys"); err != nil {
		return nil, err
	}
	algs := map[string]bool{}
	for _, f := range up.Fallback {
		if algs[f.Algorithm] {
			return nil, httpapi.InvalidParam("fallback_keys holds more than one key of algorithm %s", f.Algorithm)
		}
		algs[f.Algorithm] = true
	}
	counts, err := k.store.UploadKeys(ctx, user, device, up)
	var conflict *storage.KeyConflictError
	if errors.As(err, &conflict) {
		return nil, httpapi.InvalidParam("one-time key %s already exists with different content", conflict.KeyID)
	}
	if err != nil {
		return nil, err
	}
	if _, ok := counts["signed_curve25519"]; !ok {
		counts["signed_curve25519"] = 0
	}
	return counts, nil
}

// checkDeviceKeys validates an uploaded device keys object: it is the
// caller's user and device, has the device's ed25519 key, and is signed by
// it (spec: "Uploading keys": device keys are signed by the device's
// ed25519 key). It returns the object in canonical JSON without
// "unsigned" (the server adds its own there), and the device's key.
func checkDeviceKeys(raw json.RawMessage, user roomdag.UserID, device string) (json.RawMessage, ed25519.PublicKey, error) {
	var dk deviceKeysBody
	if err := json.Unmarshal(raw, &dk); err != nil {
		return nil, nil, httpapi.BadJSON("device_keys is malformed: %v", err)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return nil, nil, httpapi.BadJSON("device_keys must be an object")
	}
	if dk.UserID != string(user) {
		return nil, nil, httpapi.InvalidParam("device_keys.user_id %q is not the caller %s", dk.UserID, user)
	}
	if dk.DeviceID != device {
		return nil, nil, httpapi.InvalidParam("device_keys.device_id %q is not the caller's device %s", dk.DeviceID, device)
	}
	if len(dk.Algorithms) == 0 {
		return nil, nil, httpapi.InvalidParam("device_keys.algorithms is missing")
	}
	pub, err := deviceKeyOf(raw, device)
	if err != nil {
		return nil, nil, err
	}
	delete(obj, "unsigned")
	b, _ := json.Marshal(obj) // re-encoding parsed JSON
	c, err := roomdag.CanonicalJSON(b)
	if err != nil {
		return nil, nil, httpapi.BadJSON("device_keys: %v", err)
	}
	if err := roomdag.VerifyJSON(roomdag.ServerName(user), "ed25519:"+device, pub, c); err != nil {
		return nil, nil, httpapi.InvalidParam("device_keys are not signed by the device's ed25519 key: %v", err)
	}
	return c, pub, nil
}

// deviceKeyOf is the ed25519 key of device in a device keys object.
func deviceKeyOf(raw json.RawMessage, device string) (ed25519.PublicKey, error) {
	var dk deviceKeysBody
	if err := json.Unmarshal(raw, &dk); err != nil {
		return nil, httpapi.BadJSON("device_keys is malformed: %v", err)
	}
	s, ok := dk.Keys["ed25519:"+device]
	if !ok {
		return nil, httpapi.InvalidParam("device_keys.keys has no ed25519:%s key", device)
	}
	pub, err := decodeKey(s)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return nil, httpapi.InvalidParam("device_keys.keys.ed25519:%s is not a base64 ed25519 key", device)
	}
	return pub, nil
}

// decodeKey decodes unpadded base64 (padded accepted too).
func decodeKey(s string) ([]byte, error) {
	return base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
}

// checkOneTimeKeys validates one_time_keys or fallback_keys: each key ID
// is "<algorithm>:<id>" and each key a string or an object with a "key";
// an object signed by the device (ed25519:<device>) must verify when the
// device's key is known.
func checkOneTimeKeys(keys map[string]json.RawMessage, user roomdag.UserID, device string, devKey ed25519.PublicKey, field string) ([]storage.OneTimeKey, error) {
	ids := make([]string, 0, len(keys))
	for id := range keys {
		ids = append(ids, id)
	}
	sort.Strings(ids) // uploaded together: their order of claim is the key IDs'
	out := make([]storage.OneTimeKey, 0, len(keys))
	for _, id := range ids {
		raw := keys[id]
		alg, kid, ok := strings.Cut(id, ":")
		if !ok || alg == "" || kid == "" {
			return nil, httpapi.InvalidParam("%s: key ID %q is not <algorithm>:<key ID>", field, id)
		}
		var s string
		if json.Unmarshal(raw, &s) != nil {
			var obj struct {
				Key        *string                      `json:"key"`
				Signatures map[string]map[string]string `json:"signatures"`
			}
			if err := json.Unmarshal(raw, &obj); err != nil || obj.Key == nil || string(raw) == "null" {
				return nil, httpapi.BadJSON("%s: key %s must be a string or an object with a key", field, id)
			}
			c, err := roomdag.CanonicalJSON(raw)
			if err != nil {
				return nil, httpapi.BadJSON("%s: key %s: %v", field, id, err)
			}
			if _, signed := obj.Signatures[string(user)]["ed25519:"+device]; signed && devKey != nil {
				if err := roomdag.VerifyJSON(roomdag.ServerName(user), "ed25519:"+device, devKey, c); err != nil {
					return nil, httpapi.InvalidParam("%s: key %s is not signed by the device: %v", field, id, err)
				}
			}
			raw = c
		}
		out = append(out, storage.OneTimeKey{Algorithm: alg, KeyID: kid, JSON: raw, Match: storage.KeyMatch(raw)})
	}
	return out, nil
}

// queryBody is POST /keys/query's body; device_keys' values are checked
// by hand: they must be lists.
type queryBody struct {
	DeviceKeys map[string]json.RawMessage `json:"device_keys"`
	// Timeout is how long, in milliseconds, to wait for other servers.
	Timeout *int64 `json:"timeout"`
}

func (k *Keys) query(r *http.Request) (any, error) {
	caller, _, _ := api.Caller(r)
	var body queryBody
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.DeviceKeys == nil {
		return nil, httpapi.BadJSON("device_keys must be a JSON object")
	}
	if len(body.DeviceKeys) > maxQueried {
		return nil, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeTooLarge, "at most %d users per query", maxQueried)
	}
	timeout, err := remoteTimeout(body.Timeout)
	if err != nil {
		return nil, err
	}
	want := map[roomdag.UserID][]string{}
	remote := map[roomdag.ServerName]map[roomdag.UserID][]string{}
	for u, raw := range body.DeviceKeys {
		var devices []string
		// As Synapse: "'device_keys' values must be a list of strings".
		if err := json.Unmarshal(raw, &devices); err != nil || strings.HasPrefix(strings.TrimSpace(string(raw)), "null") {
			return nil, httpapi.BadJSON("'device_keys' values must be a list of strings (user %s)", u)
		}
		uid, err := roomdag.ParseUserID(u)
		if err != nil {
			return nil, httpapi.InvalidParam("invalid user ID %q", u)
		}
		if uid.Server() != k.server {
			if remote[uid.Server()] == nil {
				remote[uid.Server()] = map[roomdag.UserID][]string{}
			}
			remote[uid.Server()][uid] = devices
			continue
		}
		want[uid] = devices
	}
	res, err := k.localQuery(r.Context(), caller, want, false)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(r.Context(), timeout) // resyncs wait as long as other servers' answers
	remote, err = k.cachedRemote(cctx, remote, res)
	cancel()
	if err != nil {
		return nil, err
	}
	failures := k.queryRemote(r.Context(), remote, timeout, res)
	return map[string]any{"device_keys": res.DeviceKeys, "failures": failures,
		"master_keys": res.Master, "self_signing_keys": res.SelfSigning, "user_signing_keys": res.UserSigning}, nil
}

// queryResult is what a key query found: device keys by user and device,
// and cross-signing keys by user.
type queryResult struct {
	DeviceKeys                       map[roomdag.UserID]map[string]json.RawMessage
	Master, SelfSigning, UserSigning map[roomdag.UserID]json.RawMessage
}

// localQuery reads the keys of local users' devices (all of a user's when
// mapped to none) as requester may see them: user-signing keys only the
// requester's own. For another server (federation), the requester is ""
// and devices' display names are left out.
func (k *Keys) localQuery(ctx context.Context, requester roomdag.UserID, want map[roomdag.UserID][]string, federated bool) (*queryResult, error) {
	res := &queryResult{DeviceKeys: map[roomdag.UserID]map[string]json.RawMessage{},
		Master: map[roomdag.UserID]json.RawMessage{}, SelfSigning: map[roomdag.UserID]json.RawMessage{},
		UserSigning: map[roomdag.UserID]json.RawMessage{}}
	if len(want) == 0 {
		return res, nil
	}
	users := make([]roomdag.UserID, 0, len(want))
	for u := range want {
		users = append(users, u)
		res.DeviceKeys[u] = map[string]json.RawMessage{}
	}
	stored, err := k.store.DeviceKeysOf(ctx, want)
	if err != nil {
		return nil, err
	}
	var extra DeviceSignatures
	if ds, ok := k.cross.(DeviceKeySignatures); ok && len(stored) > 0 {
		if extra, err = ds.DeviceSignatures(ctx, requester, users); err != nil {
			return nil, err
		}
	}
	for _, dk := range stored {
		var sigs map[string]map[string]string
		for signer, byKey := range extra[dk.User][dk.Device] {
			if sigs == nil {
				sigs = map[string]map[string]string{}
			}
			sigs[string(signer)] = byKey
		}
		if federated {
			dk.DisplayName = "" // device names stay on this server
		}
		res.DeviceKeys[dk.User][dk.Device] = served(dk, sigs)
	}
	if k.cross != nil {
		m, s, u, err := k.cross.KeysFor(ctx, requester, users)
		if err != nil {
			return nil, err
		}
		for id, v := range m {
			res.Master[id] = v
		}
		for id, v := range s {
			res.SelfSigning[id] = v
		}
		for id, v := range u {
			if requester != "" && id == requester { // only ever the requester's own
				res.UserSigning[id] = v
			}
		}
	}
	return res, nil
}

// served is a stored device keys object as /keys/query serves it: with
// the signatures others made of it (cross-signing) added, and the device's
// display name in unsigned.device_display_name (spec: "UnsignedDeviceInfo").
func served(dk storage.DeviceKeys, sigs map[string]map[string]string) json.RawMessage {
	if dk.DisplayName == "" && len(sigs) == 0 {
		return dk.JSON
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(dk.JSON, &obj) != nil {
		return dk.JSON
	}
	if len(sigs) > 0 {
		var all map[string]map[string]string
		_ = json.Unmarshal(obj["signatures"], &all) // stored after checking: an object of objects
		if all == nil {
			all = map[string]map[string]string{}
		}
		for signer, bykey := range sigs {
			if all[signer] == nil {
				all[signer] = map[string]string{}
			}
			for id, sig := range bykey {
				if _, own := all[signer][id]; !own { // the device's own signature stays
					all[signer][id] = sig
				}
			}
		}
		obj["signatures"], _ = json.Marshal(all)
	}
	if dk.DisplayName != "" {
		obj["unsigned"], _ = json.Marshal(map[string]string{"device_display_name": dk.DisplayName})
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return dk.JSON
	}
	return b
}

// claimBody is POST /keys/claim's body.
type claimBody struct {
	OneTimeKeys map[string]json.RawMessage `json:"one_time_keys"`
	// Timeout is how long, in milliseconds, to wait for other servers.
	Timeout *int64 `json:"timeout"`
}

func (k *Keys) claim(r *http.Request) (any, error) {
	var body claimBody
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.OneTimeKeys == nil {
		return nil, httpapi.BadJSON("one_time_keys must be a JSON object")
	}
	timeout, err := remoteTimeout(body.Timeout)
	if err != nil {
		return nil, err
	}
	var claims []storage.KeyClaim
	remote := map[roomdag.ServerName]map[roomdag.UserID]map[string]string{}
	n := 0
	for u, raw := range body.OneTimeKeys {
		var devices map[string]string
		if err := json.Unmarshal(raw, &devices); err != nil || devices == nil {
			return nil, httpapi.BadJSON("one_time_keys.%s must map device IDs to algorithms", u)
		}
		uid, err := roomdag.ParseUserID(u)
		if err != nil {
			return nil, httpapi.InvalidParam("invalid user ID %q", u)
		}
		for d, alg := range devices {
			if alg == "" {
				return nil, httpapi.InvalidParam("one_time_keys.%s.%s: no algorithm", u, d)
			}
		}
		if n += len(devices); n > maxClaims {
			return nil, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeTooLarge, "at most %d devices per claim", maxClaims)
		}
		if uid.Server() != k.server {
			if remote[uid.Server()] == nil {
				remote[uid.Server()] = map[roomdag.UserID]map[string]string{}
			}
			remote[uid.Server()][uid] = devices
			continue
		}
		for d, alg := range devices {
			claims = append(claims, storage.KeyClaim{User: uid, Device: d, Algorithm: alg})
		}
	}
	keys, err := k.claimLocal(r.Context(), claims)
	if err != nil {
		return nil, err
	}
	failures := k.claimRemote(r.Context(), remote, timeout, keys)
	return map[string]any{"one_time_keys": keys, "failures": failures}, nil
}

// claimedKeys are claimed keys: user to device to "<algorithm>:<key ID>"
// to key.
type claimedKeys = map[roomdag.UserID]map[string]map[string]json.RawMessage

// claimLocal claims one key per claim of local devices, in one
// transaction.
func (k *Keys) claimLocal(ctx context.Context, claims []storage.KeyClaim) (claimedKeys, error) {
	// A stable order: the claims run in one transaction, in this order.
	sort.Slice(claims, func(i, j int) bool {
		if claims[i].User != claims[j].User {
			return claims[i].User < claims[j].User
		}
		return claims[i].Device < claims[j].Device
	})
	keys := claimedKeys{}
	if len(claims) == 0 {
		return keys, nil
	}
	got, err := k.store.ClaimKeys(ctx, claims)
	if err != nil {
		return nil, err
	}
	for _, c := range got {
		if keys[c.User] == nil {
			keys[c.User] = map[string]map[string]json.RawMessage{}
		}
		keys[c.User][c.Device] = map[string]json.RawMessage{c.Algorithm + ":" + c.KeyID: c.JSON}
	}
	return keys, nil
}

func (k *Keys) changes(r *http.Request) (any, error) {
	user, _, _ := api.Caller(r)
	q := r.URL.Query()
	if !q.Has("from") {
		return nil, httpapi.MissingParam("from is required")
	}
	from, err := sync.ParseToken(q.Get("from"))
	if err != nil {
		return nil, httpapi.InvalidParam("from: %v", err)
	}
	cur, err := k.now(r.Context())
	if err != nil {
		return nil, err
	}
	to := cur
	if s := q.Get("to"); s != "" {
		t, err := sync.ParseToken(s)
		if err != nil {
			return nil, httpapi.InvalidParam("to: %v", err)
		}
		// Never past what has committed.
		to = sync.Token{Events: min(t.Events, cur.Events), DeviceLists: min(t.DeviceLists, cur.DeviceLists)}
	}
	if from.Events > to.Events {
		from.Events = to.Events
	}
	if from.DeviceLists > to.DeviceLists {
		from.DeviceLists = to.DeviceLists
	}
	changed, left, err := k.DeviceListChanges(r.Context(), user, from, to)
	if err != nil {
		return nil, err
	}
	if changed == nil {
		changed = []roomdag.UserID{}
	}
	if left == nil {
		left = []roomdag.UserID{}
	}
	return map[string]any{"changed": changed, "left": left}, nil
}

// now is the current sync position of the streams the key server reads.
func (k *Keys) now(ctx context.Context) (sync.Token, error) {
	if k.current != nil {
		return k.current(), nil
	}
	pos, err := k.store.DeviceListPos(ctx)
	if err != nil {
		return sync.Token{}, fmt.Errorf("e2ee: reading the device-list position: %w", err)
	}
	return sync.Token{DeviceLists: pos}, nil
}
