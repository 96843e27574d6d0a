// Package federation is the server-server API. So far it publishes this
// server's signing key, which remote servers need to verify our events.
package federation

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/roomdag"
)

// keyValidity is how long remote servers may cache our key response.
const keyValidity = 24 * time.Hour

// KeyServer serves GET /_matrix/key/v2/server and the federation version.
type KeyServer struct {
	key     roomdag.SigningKey
	clock   clock.Clock
	version string
}

// NewKeyServer serves the given signing key.
func NewKeyServer(key roomdag.SigningKey, clk clock.Clock, version string) *KeyServer {
	return &KeyServer{key: key, clock: clk, version: version}
}

// Handler serves the key and version endpoints. It is meant for every path
// under /_matrix/federation/ and /_matrix/key/: what it does not serve is
// answered as the client API answers it, 405 M_UNRECOGNIZED for a known
// path asked with another method and 404 M_UNRECOGNIZED for an unknown
// path (spec: "API Standards").
func (k *KeyServer) Handler(middlewares ...func(http.Handler) http.Handler) http.Handler {
	r := chi.NewRouter()
	r.Use(middlewares...) // as api.Server.Handler's
	// Every GET answers HEAD too, as on the client API (api.Server.Handler).
	get := func(path string, h http.HandlerFunc) {
		r.Get(path, h)
		r.Head(path, h)
	}
	get("/_matrix/key/v2/server", k.serverKeys)
	get("/_matrix/key/v2/server/{keyId}", k.serverKeys) // deprecated form, still asked by old peers
	get("/_matrix/federation/v1/version", k.serverVersion)
	r.NotFound(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "M_UNRECOGNIZED", "unrecognized request")
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusMethodNotAllowed, "M_UNRECOGNIZED", "method not allowed")
	})
	return r
}

// writeError writes a Matrix error.
func writeError(w http.ResponseWriter, status int, errcode, msg string) {
	b, _ := json.Marshal(map[string]string{"errcode": errcode, "error": msg})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

// ServerKeys returns the signed key response (spec: server-server API,
// "Publishing Keys").
func (k *KeyServer) ServerKeys() ([]byte, error) {
	body := map[string]any{
		"server_name": k.key.ServerName,
		"verify_keys": map[string]any{
			k.key.KeyID: map[string]string{"key": base64.RawStdEncoding.EncodeToString(k.key.Public())},
		},
		"old_verify_keys": map[string]any{},
		"valid_until_ts":  k.clock.Now().Add(keyValidity).UnixMilli(),
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	return roomdag.SignJSON(k.key, raw)
}

func (k *KeyServer) serverKeys(w http.ResponseWriter, r *http.Request) {
	b, err := k.ServerKeys()
	if err != nil {
		writeError(w, http.StatusInternalServerError, "M_UNKNOWN", "could not sign keys")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

func (k *KeyServer) serverVersion(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"server": map[string]string{"name": "persistentchat", "version": k.version}})
}
