// Package e2ee is the server side of end-to-end encryption (spec:
// client-server API, "End-to-End Encryption"): the key server (device,
// one-time and fallback keys, device lists), to-device messages,
// cross-signing and key backup. The server never sees plaintext; it
// stores, relays and accounts for keys. It has its own small store
// interface per part; storage/sqlstore implements them.
//
// This file is the package's wiring: its parts, and the route table the
// client API serves behind its authentication (api.Route).
package e2ee

import (
	"log/slog"

	"github.com/persistentchat/homeserver/api"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/sync"
)

// Config is what the end-to-end encryption endpoints need.
type Config struct {
	// Server is this homeserver's name: keys of users of other servers
	// come over federation (Remote).
	Server roomdag.ServerName
	// Store is the key store.
	Store Store
	// CrossSigning supplies /keys/query's cross-signing keys; nil: none.
	CrossSigning CrossSigningKeys
	// Remote asks other servers for their users' keys (federation.UserKeys);
	// nil: their servers are reported in failures.
	Remote RemoteKeys
	// Cache holds other servers' users' device lists, which /keys/query
	// answers from while they share a room with a local user; nil: none.
	Cache RemoteDeviceStore
	// Resync rebuilds a cached device list that is missing or stale for
	// /keys/query (DeviceListUpdates); nil: such users are asked of
	// their servers.
	Resync Resyncer
	// Current is the sync position now (sync.Notifier.Current).
	Current func() sync.Token
	Log     *slog.Logger
}

// Server serves the end-to-end encryption endpoints.
type Server struct {
	keys *Keys
}

// New builds the endpoints.
func New(cfg Config) *Server {
	return &Server{keys: NewKeys(cfg.Server, cfg.Store, cfg.CrossSigning, cfg.Current, cfg.Log).WithRemote(cfg.Remote).WithCache(cfg.Cache, cfg.Resync)}
}

// Keys is the key server, which /sync also reads (sync.DeviceKeys).
func (s *Server) Keys() *Keys { return s.keys }

// Routes is the table of every end-to-end encryption endpoint, each
// behind an access token.
func (s *Server) Routes() []api.Route {
	var out []api.Route
	out = append(out, s.keys.routes()...)
	return out
}

const v3 = "/_matrix/client/v3"
