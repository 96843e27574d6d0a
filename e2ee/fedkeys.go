package e2ee

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	gosync "sync"
	"time"

	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// End-to-end keys across servers (server-server API, "End-to-End
// Encryption"): the federation endpoints that give other servers the keys
// of this server's users, and /keys/query's and /keys/claim's questions
// to other servers about theirs.

// RemoteKeys asks another server for its users' keys (federation.UserKeys
// implements it over signed federation requests). Each method posts body
// and returns the server's answer, a JSON object; an unreachable server
// or one answering other than 200 is an error.
type RemoteKeys interface {
	QueryKeys(ctx context.Context, server roomdag.ServerName, body json.RawMessage) (json.RawMessage, error)
	ClaimKeys(ctx context.Context, server roomdag.ServerName, body json.RawMessage) (json.RawMessage, error)
}

// FederationRoute is one federation endpoint of the key server, to be
// served behind the federation Authenticator (which checks the origin's
// signature); its fields are federation.Endpoint's.
type FederationRoute struct {
	Method, Path string
	Handler      httpapi.Func
}

// Timeouts for other servers' answers to /keys/query and /keys/claim.
const (
	defaultRemoteTimeout = 10 * time.Second
	maxRemoteTimeout     = time.Minute
)

// remoteTimeout is a request's timeout (milliseconds; absent: the
// default), bounded by maxRemoteTimeout.
func remoteTimeout(ms *int64) (time.Duration, error) {
	if ms == nil {
		return defaultRemoteTimeout, nil
	}
	if *ms < 0 {
		return 0, httpapi.InvalidParam("timeout must not be negative")
	}
	return min(time.Duration(*ms)*time.Millisecond, maxRemoteTimeout), nil
}

// unreachable is a failures entry of a server that did not answer.
func unreachable(err error) map[string]any {
	msg := "the server did not answer"
	if errors.Is(err, context.DeadlineExceeded) {
		msg = "the server did not answer in time"
	} else if err != nil {
		msg = err.Error()
	}
	return map[string]any{"status": http.StatusServiceUnavailable, "message": msg}
}

// eachServer runs ask for every server in parallel, within timeout, and
// returns the failures of the servers it could not ask: server name to
// {status, message}. Without a RemoteKeys every server fails.
func (k *Keys) eachServer(ctx context.Context, servers []roomdag.ServerName, timeout time.Duration, ask func(ctx context.Context, s roomdag.ServerName) error) map[string]any {
	failures := map[string]any{}
	if len(servers) == 0 {
		return failures
	}
	if k.remote == nil {
		for _, s := range servers {
			failures[string(s)] = map[string]any{"status": http.StatusServiceUnavailable, "message": "this server does not ask other servers for keys"}
		}
		return failures
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var mu gosync.Mutex
	var wg gosync.WaitGroup
	for _, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := ask(ctx, s); err != nil {
				if k.log != nil {
					k.log.Info("e2ee: asking a server for keys", "server", s, "err", err)
				}
				mu.Lock()
				failures[string(s)] = unreachable(err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return failures
}

// remoteQueryAnswer is an answer to user/keys/query.
type remoteQueryAnswer struct {
	DeviceKeys      map[roomdag.UserID]map[string]json.RawMessage `json:"device_keys"`
	MasterKeys      map[roomdag.UserID]json.RawMessage            `json:"master_keys"`
	SelfSigningKeys map[roomdag.UserID]json.RawMessage            `json:"self_signing_keys"`
}

// queryRemote asks each server for the keys of its users in want and
// adds them to res: only the users asked about, and device and
// cross-signing keys whose user (and device) are the ones they are served
// as. Signatures are the client's to check. It returns the
// failures.
func (k *Keys) queryRemote(ctx context.Context, want map[roomdag.ServerName]map[roomdag.UserID][]string, timeout time.Duration, res *queryResult) map[string]any {
	var mu gosync.Mutex
	servers := make([]roomdag.ServerName, 0, len(want))
	for s := range want {
		servers = append(servers, s)
	}
	return k.eachServer(ctx, servers, timeout, func(ctx context.Context, s roomdag.ServerName) error {
		users := want[s]
		req := map[roomdag.UserID][]string{}
		for u, d := range users {
			if d == nil {
				d = []string{}
			}
			req[u] = d
		}
		body, _ := json.Marshal(map[string]any{"device_keys": req})
		raw, err := k.remote.QueryKeys(ctx, s, body)
		if err != nil {
			return err
		}
		var ans remoteQueryAnswer
		if err := json.Unmarshal(raw, &ans); err != nil {
			return errors.New("the server's answer is malformed")
		}
		mu.Lock()
		defer mu.Unlock()
		for u := range users {
			devices := map[string]json.RawMessage{}
			for d, obj := range ans.DeviceKeys[u] {
				var dk deviceKeysBody
				if json.Unmarshal(obj, &dk) != nil || dk.UserID != string(u) || dk.DeviceID != d {
					continue
				}
				devices[d] = obj
			}
			res.DeviceKeys[u] = devices
			if m, ok := ans.MasterKeys[u]; ok && keyOf(m, u) {
				res.Master[u] = m
			}
			if m, ok := ans.SelfSigningKeys[u]; ok && keyOf(m, u) {
				res.SelfSigning[u] = m
			}
		}
		return nil
	})
}

// claimRemote claims keys of other servers' devices from their servers
// and adds them to keys: only of the devices claimed. It returns the
// failures.
func (k *Keys) claimRemote(ctx context.Context, want map[roomdag.ServerName]map[roomdag.UserID]map[string]string, timeout time.Duration, keys claimedKeys) map[string]any {
	var mu gosync.Mutex
	servers := make([]roomdag.ServerName, 0, len(want))
	for s := range want {
		servers = append(servers, s)
	}
	return k.eachServer(ctx, servers, timeout, func(ctx context.Context, s roomdag.ServerName) error {
		users := want[s]
		body, _ := json.Marshal(map[string]any{"one_time_keys": users})
		raw, err := k.remote.ClaimKeys(ctx, s, body)
		if err != nil {
			return err
		}
		var ans struct {
			OneTimeKeys claimedKeys `json:"one_time_keys"`
		}
		if err := json.Unmarshal(raw, &ans); err != nil {
			return errors.New("the server's answer is malformed")
		}
		mu.Lock()
		defer mu.Unlock()
		for u, devices := range users {
			for d := range devices {
				got := ans.OneTimeKeys[u][d]
				if len(got) == 0 {
					continue
				}
				if keys[u] == nil {
					keys[u] = map[string]map[string]json.RawMessage{}
				}
				keys[u][d] = got
			}
		}
		return nil
	})
}

// keyOf says whether raw is a cross-signing key object of user.
func keyOf(raw json.RawMessage, user roomdag.UserID) bool {
	var obj struct {
		UserID *string `json:"user_id"`
	}
	return json.Unmarshal(raw, &obj) == nil && obj.UserID != nil && *obj.UserID == string(user)
}

// FederationRoutes are the key server's federation endpoints; the caller
// puts each behind the federation Authenticator. They serve this
// server's users only, and never their user-signing keys.
func (k *Keys) FederationRoutes() []FederationRoute {
	const v1 = "/_matrix/federation/v1"
	return []FederationRoute{
		{http.MethodPost, v1 + "/user/keys/query", k.fedQuery},
		{http.MethodPost, v1 + "/user/keys/claim", k.fedClaim},
		{http.MethodGet, v1 + "/user/devices/{userId}", k.fedDevices},
	}
}

// POST /_matrix/federation/v1/user/keys/query
//
// The device keys and master and self-signing keys of local users; users
// of other servers are left out.
func (k *Keys) fedQuery(r *http.Request) (any, error) {
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
	want := map[roomdag.UserID][]string{}
	for u, raw := range body.DeviceKeys {
		var devices []string
		if err := json.Unmarshal(raw, &devices); err != nil {
			return nil, httpapi.BadJSON("'device_keys' values must be lists of strings (user %s)", u)
		}
		uid, err := roomdag.ParseUserID(u)
		if err != nil {
			return nil, httpapi.InvalidParam("invalid user ID %q", u)
		}
		if uid.Server() == k.server {
			want[uid] = devices
		}
	}
	res, err := k.localQuery(r.Context(), "", want, true)
	if err != nil {
		return nil, err
	}
	return map[string]any{"device_keys": res.DeviceKeys, "master_keys": res.Master, "self_signing_keys": res.SelfSigning}, nil
}

// POST /_matrix/federation/v1/user/keys/claim
//
// One one-time key (else the fallback key) per local device claimed;
// devices of other servers are left out.
func (k *Keys) fedClaim(r *http.Request) (any, error) {
	var body claimBody
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.OneTimeKeys == nil {
		return nil, httpapi.BadJSON("one_time_keys must be a JSON object")
	}
	var claims []storage.KeyClaim
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
			if uid.Server() == k.server {
				claims = append(claims, storage.KeyClaim{User: uid, Device: d, Algorithm: alg})
			}
		}
		if len(claims) > maxClaims {
			return nil, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeTooLarge, "at most %d devices per claim", maxClaims)
		}
	}
	keys, err := k.claimLocal(r.Context(), claims)
	if err != nil {
		return nil, err
	}
	return map[string]any{"one_time_keys": keys}, nil
}

// GET /_matrix/federation/v1/user/devices/{userId}
//
// A local user's devices with keys, and their master and self-signing
// keys. stream_id is the user's latest device-list position at which a
// device changed: the stream_id of the last m.device_list_update sent
// about them, so that the next one's prev_id is what the asker holds.
// Devices that never uploaded keys are not listed; display names stay on
// this server.
func (k *Keys) fedDevices(r *http.Request) (any, error) {
	uid, err := roomdag.ParseUserID(httpapi.PathParam(r, "userId"))
	if err != nil {
		return nil, httpapi.InvalidParam("%q is not a user ID", httpapi.PathParam(r, "userId"))
	}
	if uid.Server() != k.server {
		return nil, httpapi.InvalidParam("%s is not a user of this server", uid)
	}
	pos, err := k.store.DevicePos(r.Context(), uid)
	if err != nil {
		return nil, err
	}
	res, err := k.localQuery(r.Context(), "", map[roomdag.UserID][]string{uid: nil}, true)
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(res.DeviceKeys[uid]))
	for d := range res.DeviceKeys[uid] {
		ids = append(ids, d)
	}
	sort.Strings(ids)
	devices := make([]map[string]any, 0, len(ids))
	for _, d := range ids {
		devices = append(devices, map[string]any{"device_id": d, "keys": res.DeviceKeys[uid][d]})
	}
	out := map[string]any{"user_id": uid, "stream_id": pos, "devices": devices}
	if m, ok := res.Master[uid]; ok {
		out["master_key"] = m
	}
	if s, ok := res.SelfSigning[uid]; ok {
		out["self_signing_key"] = s
	}
	return out, nil
}
