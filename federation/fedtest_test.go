package federation_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/federation"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// memStore is a KeyStore in memory (the SQL one is storagetest's).
type memStore struct {
	mu   sync.Mutex
	keys map[roomdag.ServerName]map[string]storage.ServerKey
}

func (m *memStore) ServerKeys(_ context.Context, server roomdag.ServerName) ([]storage.ServerKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []storage.ServerKey
	for _, k := range m.keys[server] {
		out = append(out, k)
	}
	return out, nil
}

func (m *memStore) StoreServerKeys(_ context.Context, keys []storage.ServerKey) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.keys == nil {
		m.keys = map[roomdag.ServerName]map[string]storage.ServerKey{}
	}
	for _, k := range keys {
		if m.keys[k.ServerName] == nil {
			m.keys[k.ServerName] = map[string]storage.ServerKey{}
		}
		m.keys[k.ServerName][k.KeyID] = k
	}
	return nil
}

// network is a federation.Client over loopback: servers are named by
// their httptest address, and can be taken down. It counts the requests
// each server was sent, by path.
type network struct {
	mu    sync.Mutex
	urls  map[roomdag.ServerName]string
	down  map[roomdag.ServerName]bool
	calls map[roomdag.ServerName]map[string]int
}

func newNetwork() *network {
	return &network{urls: map[roomdag.ServerName]string{}, down: map[roomdag.ServerName]bool{},
		calls: map[roomdag.ServerName]map[string]int{}}
}

func (n *network) Do(ctx context.Context, dest roomdag.ServerName, req *http.Request) (*http.Response, error) {
	n.mu.Lock()
	base, ok := n.urls[dest]
	down := n.down[dest]
	if n.calls[dest] == nil {
		n.calls[dest] = map[string]int{}
	}
	n.calls[dest][req.URL.Path]++
	n.mu.Unlock()
	if !ok || down {
		return nil, errors.New("connection refused")
	}
	u, err := url.Parse(base + req.URL.RequestURI())
	if err != nil {
		return nil, err
	}
	out := req.Clone(ctx)
	out.URL, out.Host, out.RequestURI = u, u.Host, ""
	return http.DefaultClient.Do(out)
}

func (n *network) setDown(s roomdag.ServerName, down bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.down[s] = down
}

func (n *network) count(s roomdag.ServerName, path string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.calls[s][path]
}

// node is one server: its keys, keyring and key server, listening on
// loopback under its own address as its name.
type node struct {
	name    roomdag.ServerName
	own     federation.OwnKeys
	store   *memStore
	keyring *federation.Keyring
	handler http.Handler
	url     string
	clock   clock.Clock
	mu      sync.Mutex
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startNode starts a server on the network with a new key.
func startNode(t *testing.T, n *network, clk clock.Clock, notaries ...federation.Notary) *node {
	t.Helper()
	nd := &node{store: &memStore{}, clock: clk}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nd.mu.Lock()
		h := nd.handler
		nd.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	nd.url = srv.URL
	nd.name = roomdag.ServerName(strings.TrimPrefix(srv.URL, "http://"))
	key, err := roomdag.GenerateSigningKey(nd.name, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	nd.setKeys(n, federation.OwnKeys{Key: key}, notaries)
	n.mu.Lock()
	n.urls[nd.name] = srv.URL
	n.mu.Unlock()
	return nd
}

// setKeys replaces the node's keys (a key rotation) and notaries.
func (nd *node) setKeys(n *network, own federation.OwnKeys, notaries []federation.Notary) {
	kr := federation.NewKeyring(own, nd.store, n, notaries, nd.clock, discard())
	h := federation.NewKeyServer(own, kr, nd.clock, discard(), "test").Handler(nil)
	nd.mu.Lock()
	defer nd.mu.Unlock()
	nd.own, nd.keyring, nd.handler = own, kr, h
}

// notary is nd as a trusted key server, with its current key.
func (nd *node) notary() federation.Notary {
	return federation.Notary{ServerName: nd.name, VerifyKeys: map[string]ed25519.PublicKey{nd.own.Key.KeyID: nd.own.Key.Public()}}
}

var epoch = time.Unix(1_700_000_000, 0)
