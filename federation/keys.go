// Package federation is the server-server API. So far it publishes this
// server's signing key, which remote servers need to verify our events.
package federation

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"time"

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

// Register adds the routes to mux.
func (k *KeyServer) Register(mux interface {
	HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request))
}) {
	mux.HandleFunc("GET /_matrix/key/v2/server", k.serverKeys)
	mux.HandleFunc("GET /_matrix/key/v2/server/{keyId}", k.serverKeys) // deprecated form, still asked by old peers
	mux.HandleFunc("GET /_matrix/federation/v1/version", k.serverVersion)
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
		http.Error(w, `{"errcode":"M_UNKNOWN","error":"could not sign keys"}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

func (k *KeyServer) serverVersion(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"server": map[string]string{"name": "persistentchat", "version": k.version}})
}
