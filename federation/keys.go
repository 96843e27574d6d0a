// Package federation is the server-server API: this server's signing
// keys and the notary that relays other servers' keys (keys.go), the
// keyring that finds and caches remote keys (keyring.go), and request
// authentication with X-Matrix signatures (xmatrix.go, auth.go).
package federation

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// keyValidity is how long remote servers may cache our key response.
// Notaries cache a response for half its lifetime, and responses that
// expire within the hour should not be served (keys_server.yaml).
const keyValidity = 24 * time.Hour

// OldKey is a key this server signed with before a rotation (Synapse's
// old_signing_keys): published in old_verify_keys, so that events it
// signed stay verifiable.
type OldKey struct {
	KeyID  string
	Public ed25519.PublicKey
	// ExpiredTS is when the key stopped being used (ms).
	ExpiredTS int64
}

// OwnKeys are this server's signing key and the keys it used before.
type OwnKeys struct {
	Key roomdag.SigningKey
	Old []OldKey
}

// storedKeys returns own keys as the keyring stores remote ones, the
// current key valid for keyValidity from now.
func (o OwnKeys) storedKeys(now int64) []storage.ServerKey {
	out := []storage.ServerKey{{ServerName: o.Key.ServerName, KeyID: o.Key.KeyID, PublicKey: o.Key.Public(),
		ValidUntilTS: now + keyValidity.Milliseconds(), FetchedTS: now}}
	for _, k := range o.Old {
		if k.KeyID == o.Key.KeyID {
			continue
		}
		out = append(out, storage.ServerKey{ServerName: o.Key.ServerName, KeyID: k.KeyID, PublicKey: k.Public,
			ExpiredTS: max(k.ExpiredTS, 1), FetchedTS: now})
	}
	return out
}

// KeyServer serves this server's keys (GET /_matrix/key/v2/server), the
// notary API (/_matrix/key/v2/query) and the federation version.
type KeyServer struct {
	own     OwnKeys
	keys    *Keyring
	clock   clock.Clock
	version string
	http    *httpapi.Adapter
}

// NewKeyServer serves own's keys, and other servers' keys as the keyring
// knows or fetches them.
func NewKeyServer(own OwnKeys, keys *Keyring, clk clock.Clock, log *slog.Logger, version string) *KeyServer {
	return &KeyServer{own: own, keys: keys, clock: clk, version: version, http: httpapi.NewAdapter(log, nil)}
}

// Handler serves the key and version endpoints, and the endpoints of
// routes (Inbound.Routes, already authenticated). It is meant for every path
// under /_matrix/federation/ and /_matrix/key/: what it does not serve is
// answered as the client API answers it, 405 M_UNRECOGNIZED for a known
// path asked with another method and 404 M_UNRECOGNIZED for an unknown
// path (spec: "API Standards").
func (k *KeyServer) Handler(routes []Endpoint, middlewares ...func(http.Handler) http.Handler) http.Handler {
	r := chi.NewRouter()
	r.Use(middlewares...) // as api.Server.Handler's
	// Every GET answers HEAD too, as on the client API (api.Server.Handler).
	get := func(path string, h httpapi.Func) {
		r.Get(path, k.http.Handler(path, h))
		r.Head(path, k.http.Handler(path, h))
	}
	get("/_matrix/key/v2/server", k.serverKeys)
	get("/_matrix/key/v2/server/{keyId}", k.serverKeys) // deprecated form, still asked by old peers
	get("/_matrix/key/v2/query/{serverName}", k.queryOne)
	get("/_matrix/key/v2/query/{serverName}/{keyId}", k.queryOne) // deprecated form, as above
	r.Post("/_matrix/key/v2/query", k.http.Handler("/_matrix/key/v2/query", k.queryMany))
	get("/_matrix/federation/v1/version", k.serverVersion)
	for _, e := range routes {
		if e.Method == http.MethodGet {
			get(e.Path, e.Handler)
		} else {
			r.Method(e.Method, e.Path, k.http.Handler(e.Path, e.Handler))
		}
	}
	r.NotFound(func(w http.ResponseWriter, req *http.Request) {
		k.http.WriteError(w, req, httpapi.Errorf(http.StatusNotFound, httpapi.CodeUnrecognized, "unrecognized request"))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, req *http.Request) {
		k.http.WriteError(w, req, httpapi.Errorf(http.StatusMethodNotAllowed, httpapi.CodeUnrecognized, "method not allowed"))
	})
	return r
}

// ServerKeys returns the signed key response (spec: server-server API,
// "Publishing Keys"): the current key in verify_keys, the keys used
// before in old_verify_keys with their expired_ts, signed with the
// current key.
func (k *KeyServer) ServerKeys() ([]byte, error) {
	now := k.clock.Now().UnixMilli()
	verify := map[string]any{}
	old := map[string]any{}
	for _, sk := range k.own.storedKeys(now) {
		key := base64.RawStdEncoding.EncodeToString(sk.PublicKey)
		if sk.ExpiredTS == 0 {
			verify[sk.KeyID] = map[string]string{"key": key}
		} else {
			old[sk.KeyID] = map[string]any{"key": key, "expired_ts": sk.ExpiredTS}
		}
	}
	body := map[string]any{
		"server_name":     k.own.Key.ServerName,
		"verify_keys":     verify,
		"old_verify_keys": old,
		"valid_until_ts":  now + keyValidity.Milliseconds(),
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	return roomdag.SignJSON(k.own.Key, raw)
}

// signedJSON is a response already encoded.
type signedJSON []byte

func (b signedJSON) MarshalJSON() ([]byte, error) { return b, nil }

func (k *KeyServer) serverKeys(*http.Request) (any, error) {
	b, err := k.ServerKeys()
	if err != nil {
		return nil, err
	}
	return signedJSON(b), nil
}

// maxQueryServers bounds the servers one notary query may name: each may
// cost a fetch.
const maxQueryServers = 100

// queryOne serves GET /_matrix/key/v2/query/{serverName}.
func (k *KeyServer) queryOne(r *http.Request) (any, error) {
	server, err := roomdag.ParseServerName(httpapi.PathParam(r, "serverName"))
	if err != nil {
		return nil, httpapi.InvalidParam("%q is not a server name", httpapi.PathParam(r, "serverName"))
	}
	minValid := k.clock.Now().UnixMilli() // "If not supplied, the notary server MUST use the current time."
	if v := r.URL.Query().Get("minimum_valid_until_ts"); v != "" {
		if minValid, err = strconv.ParseInt(v, 10, 64); err != nil {
			return nil, httpapi.InvalidParam("minimum_valid_until_ts is not an integer")
		}
	}
	return k.query(r.Context(), map[roomdag.ServerName]int64{server: minValid})
}

// queryMany serves POST /_matrix/key/v2/query.
func (k *KeyServer) queryMany(r *http.Request) (any, error) {
	var body struct {
		ServerKeys map[string]map[string]struct {
			MinimumValidUntilTS *int64 `json:"minimum_valid_until_ts"`
		} `json:"server_keys"`
	}
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.ServerKeys == nil {
		return nil, httpapi.MissingParam("server_keys is required")
	}
	if len(body.ServerKeys) > maxQueryServers {
		return nil, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeLimitExceeded, "at most %d servers per query", maxQueryServers)
	}
	now := k.clock.Now().UnixMilli()
	want := map[roomdag.ServerName]int64{}
	for name, ids := range body.ServerKeys {
		server, err := roomdag.ParseServerName(name)
		if err != nil {
			return nil, httpapi.InvalidParam("%q is not a server name", name)
		}
		// The keys must cover the latest time any key was asked for.
		minValid := now
		for _, c := range ids {
			if c.MinimumValidUntilTS != nil && *c.MinimumValidUntilTS > minValid {
				minValid = *c.MinimumValidUntilTS
			}
		}
		want[server] = minValid
	}
	return k.query(r.Context(), want)
}

// query answers a notary query: each server's key responses, ours as we
// publish them, others' as received, each signed by us too ("The notary
// server must sign the keys returned by the queried server"). A server
// that cannot be reached and has nothing cached is left out.
func (k *KeyServer) query(ctx context.Context, want map[roomdag.ServerName]int64) (any, error) {
	out := []signedJSON{}
	for server, minValid := range want {
		if server == k.own.Key.ServerName {
			b, err := k.ServerKeys()
			if err != nil {
				return nil, err
			}
			out = append(out, b)
			continue
		}
		resps, err := k.keys.responses(ctx, server, minValid)
		if err != nil {
			return nil, err
		}
		for _, resp := range resps {
			b, err := roomdag.SignJSON(k.own.Key, resp)
			if err != nil {
				// Stored responses were checked when received; one that
				// cannot be signed now is skipped, not fatal.
				continue
			}
			out = append(out, b)
		}
	}
	return map[string]any{"server_keys": out}, nil
}

func (k *KeyServer) serverVersion(*http.Request) (any, error) {
	return map[string]any{"server": map[string]string{"name": "persistentchat", "version": k.version}}, nil
}
