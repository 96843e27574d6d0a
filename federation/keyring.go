package federation

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	gosync "sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// The keyring answers "which public key is key K of server S, and may it
// be used now, or for an event sent at time T?" (server-server API,
// "Retrieving server keys"). It keeps the keys it learns in the database,
// by their valid_until_ts, fetches a server's keys from the server itself
// (GET /_matrix/key/v2/server) when it does not know the key or no longer
// trusts it, and asks the configured notaries (POST /_matrix/key/v2/query)
// when the server cannot be reached. Every key response is checked before
// anything in it is believed: it must be self-signed by the server with
// the keys it lists, and one relayed by a notary signed by the notary too.

// ErrUnknownKey: the key could not be found or fetched, or is not valid
// for the use asked (expired, or an old key for a request).
var ErrUnknownKey = errors.New("unknown signing key")

// Client sends federation requests to other servers. The federation
// transport (server discovery, TLS, the IP deny list) implements it.
type Client interface {
	// Do sends req to the server named dest and returns its response,
	// which the caller closes. req.URL holds only the request target
	// (path and query): the client finds where dest is served.
	Do(ctx context.Context, dest roomdag.ServerName, req *http.Request) (*http.Response, error)
}

// KeyStore is what the keyring needs from storage.
type KeyStore interface {
	// ServerKeys returns every key stored for server.
	ServerKeys(ctx context.Context, server roomdag.ServerName) ([]storage.ServerKey, error)
	// StoreServerKeys inserts or replaces keys by (server, key ID).
	StoreServerKeys(ctx context.Context, keys []storage.ServerKey) error
}

// Notary is a key server trusted to relay other servers' keys (Synapse's
// trusted_key_servers).
type Notary struct {
	ServerName roomdag.ServerName
	// VerifyKeys are the notary's own keys, by key ID, with which its
	// answers must be signed. Empty: its keys are fetched from it like any
	// server's (trust on first use, as Synapse does without verify_keys).
	VerifyKeys map[string]ed25519.PublicKey
}

const (
	// maxKeyValidity: "Servers MUST use the lesser of [valid_until_ts]
	// and 7 days into the future when determining if a key is valid"
	// (keys.yaml, valid_until_ts).
	maxKeyValidity = 7 * 24 * time.Hour
	// refetchInterval: a server's keys are fetched again at most this
	// often for keys it did not have, so that requests naming made-up key
	// IDs cannot make this server fetch on each of them.
	refetchInterval = time.Minute
	// maxKeyResponse bounds a key response read (a few hundred bytes per
	// key; notary answers carry several servers).
	maxKeyResponse = 1 << 20
	// keyFetchTimeout bounds one fetch, direct or through a notary.
	keyFetchTimeout = 30 * time.Second
	// maxAttempts bounds the memory of recent fetch attempts.
	maxAttempts = 10000
)

// Keyring finds and caches other servers' signing keys. It is safe for
// concurrent use.
type Keyring struct {
	own      OwnKeys // this server's keys: answered without a fetch
	store    KeyStore
	client   Client
	notaries []Notary
	clock    clock.Clock
	log      *slog.Logger

	fetches singleflight.Group
	mu      gosync.Mutex
	tried   map[roomdag.ServerName]time.Time // last fetch attempt per server
}

// NewKeyring returns a keyring that answers for own's server from own,
// keeps other servers' keys in store, fetches them with client, and falls
// back on notaries in the order given.
func NewKeyring(own OwnKeys, store KeyStore, client Client, notaries []Notary, clk clock.Clock, log *slog.Logger) *Keyring {
	return &Keyring{own: own, store: store, client: client, notaries: notaries, clock: clk, log: log,
		tried: map[roomdag.ServerName]time.Time{}}
}

// keyUse is what a key is wanted for.
type keyUse struct {
	// request: a key to authenticate a request now; only a current key
	// (verify_keys, not old_verify_keys) valid now will do.
	request bool
	// at is the time (ms) the key must be valid at, for an event of a
	// room version that enforces key validity; 0 for none.
	at int64
}

// usable reports whether a stored key serves u at now (ms).
func (u keyUse) usable(k storage.ServerKey, now int64) bool {
	switch {
	case u.request:
		return k.ExpiredTS == 0 && k.ValidUntilTS >= now
	case u.at == 0:
		return true // rooms v1-v4: valid_until_ts "MUST be ignored"
	case k.ExpiredTS != 0:
		// An old key signed what came before it expired.
		return u.at < k.ExpiredTS
	}
	return u.at <= k.ValidUntilTS
}

// RequestKey returns server's key keyID if it may sign a request now: a
// key of its verify_keys whose validity has not ended. The error wraps
// ErrUnknownKey when there is no such key.
func (k *Keyring) RequestKey(ctx context.Context, server roomdag.ServerName, keyID string) (ed25519.PublicKey, error) {
	return k.key(ctx, server, keyID, keyUse{request: true})
}

// EventKey returns server's key keyID for checking a signature on an
// event sent at atTS (ms). enforce is the room version's
// EnforceKeyValidity (v5+): then the key must have been valid at atTS,
// an old key only if it expired after atTS; without it any key the
// server has published will do. The error wraps ErrUnknownKey when there
// is no such key.
func (k *Keyring) EventKey(ctx context.Context, server roomdag.ServerName, keyID string, atTS int64, enforce bool) (ed25519.PublicKey, error) {
	u := keyUse{}
	if enforce {
		u.at = max(atTS, 1)
	}
	return k.key(ctx, server, keyID, u)
}

func (k *Keyring) key(ctx context.Context, server roomdag.ServerName, keyID string, u keyUse) (ed25519.PublicKey, error) {
	now := k.clock.Now().UnixMilli()
	if server == k.own.Key.ServerName {
		for _, sk := range k.own.storedKeys(now) {
			if sk.KeyID == keyID && u.usable(sk, now) {
				return sk.PublicKey, nil
			}
		}
		return nil, fmt.Errorf("%w: %s is not a usable key of this server", ErrUnknownKey, keyID)
	}
	if found, err := k.stored(ctx, server, keyID, u, now); err != nil || found != nil {
		return found, err
	}
	// Not known, or known but not valid for this use: the server may
	// have published it since, or extended its validity.
	minValid := now
	if u.at > now {
		minValid = u.at
	}
	ferr := k.refresh(ctx, server, keyID, minValid)
	if found, err := k.stored(ctx, server, keyID, u, now); err != nil || found != nil {
		return found, err
	}
	if ferr != nil {
		return nil, fmt.Errorf("%w: %s of %s: %v", ErrUnknownKey, keyID, server, ferr)
	}
	return nil, fmt.Errorf("%w: %s of %s is not published or not valid for this use", ErrUnknownKey, keyID, server)
}

// stored returns the stored key if it is usable, nil if not.
func (k *Keyring) stored(ctx context.Context, server roomdag.ServerName, keyID string, u keyUse, now int64) (ed25519.PublicKey, error) {
	keys, err := k.store.ServerKeys(ctx, server)
	if err != nil {
		return nil, err
	}
	for _, sk := range keys {
		if sk.KeyID == keyID && u.usable(sk, now) {
			return sk.PublicKey, nil
		}
	}
	return nil, nil
}

// responses returns the key responses stored for server, as received,
// for a notary to relay: fetched again first when none of its keys is
// current and valid until minValid, and served from the cache when the
// server cannot be reached (server-server API, "Querying Keys Through
// Another Server").
func (k *Keyring) responses(ctx context.Context, server roomdag.ServerName, minValid int64) ([][]byte, error) {
	keys, err := k.store.ServerKeys(ctx, server)
	if err != nil {
		return nil, err
	}
	fresh := false
	for _, sk := range keys {
		fresh = fresh || sk.ExpiredTS == 0 && sk.ValidUntilTS >= minValid
	}
	if !fresh {
		if err := k.refresh(ctx, server, "", minValid); err != nil {
			k.log.Info("notary: fetching keys failed, serving the cache", "server", server, "err", err)
		} else if keys, err = k.store.ServerKeys(ctx, server); err != nil {
			return nil, err
		}
	}
	var out [][]byte
	seen := map[string]bool{}
	for _, sk := range keys {
		if len(sk.Response) == 0 || seen[string(sk.Response)] {
			continue
		}
		seen[string(sk.Response)] = true
		out = append(out, sk.Response)
	}
	return out, nil
}

// refresh fetches server's keys, directly and else through the notaries
// (asking them for keyID, "" for any), and stores what it learns.
// Concurrent calls for one server share one fetch, and a server is
// fetched at most once per refetchInterval.
func (k *Keyring) refresh(ctx context.Context, server roomdag.ServerName, keyID string, minValid int64) error {
	if k.client == nil {
		return errors.New("no federation client to fetch keys with")
	}
	ch := k.fetches.DoChan(string(server), func() (any, error) {
		// The interval is checked inside the shared call, so that callers
		// arriving while a fetch is under way wait for its result rather
		// than being turned away.
		now := k.clock.Now()
		k.mu.Lock()
		last, ok := k.tried[server]
		if ok && now.Sub(last) < refetchInterval {
			k.mu.Unlock()
			return nil, fmt.Errorf("keys of %s were fetched less than %s ago", server, refetchInterval)
		}
		if len(k.tried) >= maxAttempts {
			clear(k.tried)
		}
		k.tried[server] = now
		k.mu.Unlock()
		// The fetch outlives a caller that gives up: others may wait on
		// it, and its result is worth storing.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), keyFetchTimeout)
		defer cancel()
		return nil, k.fetch(ctx, server, keyID, minValid)
	})
	select {
	case res := <-ch:
		return res.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (k *Keyring) fetch(ctx context.Context, server roomdag.ServerName, keyID string, minValid int64) error {
	derr := k.fetchDirect(ctx, server)
	if derr == nil {
		return nil
	}
	k.log.Info("fetching keys directly failed", "server", server, "err", derr)
	errs := []error{fmt.Errorf("direct: %w", derr)}
	for _, n := range k.notaries {
		if n.ServerName == server {
			continue
		}
		err := k.fetchFromNotary(ctx, n, server, keyID, minValid)
		if err == nil {
			return nil
		}
		k.log.Info("fetching keys through a notary failed", "server", server, "notary", n.ServerName, "err", err)
		errs = append(errs, fmt.Errorf("notary %s: %w", n.ServerName, err))
	}
	return errors.Join(errs...)
}

// fetchDirect asks the server itself: GET /_matrix/key/v2/server.
func (k *Keyring) fetchDirect(ctx context.Context, server roomdag.ServerName) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "/_matrix/key/v2/server", nil)
	if err != nil {
		return err
	}
	body, err := k.do(ctx, server, req)
	if err != nil {
		return err
	}
	keys, err := parseKeyResponse(server, body, k.clock.Now())
	if err != nil {
		return err
	}
	return k.merge(ctx, server, keys)
}

// fetchFromNotary asks notary n for server's keys (POST
// /_matrix/key/v2/query) and stores those of the answers that both n and
// server signed.
func (k *Keyring) fetchFromNotary(ctx context.Context, n Notary, server roomdag.ServerName, keyID string, minValid int64) error {
	// The POST form: Dendrite serves no GET /query/{serverName}, only the
	// deprecated GET form with a key ID. minimum_valid_until_ts hangs on
	// a key ID; without one the notary answers every key it has.
	criteria := map[string]any{}
	if keyID != "" {
		criteria[keyID] = map[string]int64{"minimum_valid_until_ts": minValid}
	}
	q, err := json.Marshal(map[string]any{"server_keys": map[roomdag.ServerName]any{server: criteria}})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "/_matrix/key/v2/query", bytes.NewReader(q))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	body, err := k.do(ctx, n.ServerName, req)
	if err != nil {
		return err
	}
	var resp struct {
		ServerKeys []json.RawMessage `json:"server_keys"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return fmt.Errorf("notary answer is not a key query response: %v", err)
	}
	var keys []storage.ServerKey
	var errs []error
	for _, raw := range resp.ServerKeys {
		var head struct {
			ServerName roomdag.ServerName `json:"server_name"`
		}
		if json.Unmarshal(raw, &head) != nil || head.ServerName != server {
			continue // other servers' keys are not what was asked
		}
		if err := k.checkNotarySignature(ctx, n, raw); err != nil {
			errs = append(errs, err)
			continue
		}
		got, err := parseKeyResponse(server, raw, k.clock.Now())
		if err != nil {
			errs = append(errs, err)
			continue
		}
		keys = append(keys, got...)
	}
	if len(keys) == 0 {
		if len(errs) == 0 {
			return fmt.Errorf("the notary has no keys of %s", server)
		}
		return errors.Join(errs...)
	}
	return k.merge(ctx, server, keys)
}

// checkNotarySignature checks that notary n signed a relayed response,
// with one of its configured keys, or else with a key of its own fetched
// from it.
func (k *Keyring) checkNotarySignature(ctx context.Context, n Notary, raw []byte) error {
	ids, err := signatureKeyIDs(raw, n.ServerName)
	if err != nil {
		return err
	}
	for _, id := range ids {
		pub := n.VerifyKeys[id]
		if pub == nil && len(n.VerifyKeys) == 0 {
			if p, err := k.RequestKey(ctx, n.ServerName, id); err == nil {
				pub = p
			}
		}
		if pub == nil {
			continue
		}
		if err := roomdag.VerifyJSON(n.ServerName, id, pub, raw); err != nil {
			return fmt.Errorf("notary %s: %w", n.ServerName, err)
		}
		return nil
	}
	return fmt.Errorf("%w: not signed by notary %s with a key it is trusted with", roomdag.ErrSignature, n.ServerName)
}

// do sends req and returns the body of a 200 answer.
func (k *Keyring) do(ctx context.Context, dest roomdag.ServerName, req *http.Request) ([]byte, error) {
	resp, err := k.client.Do(ctx, dest, req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxKeyResponse+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxKeyResponse {
		return nil, fmt.Errorf("key response larger than %d bytes", maxKeyResponse)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %d", dest, resp.StatusCode)
	}
	return body, nil
}

// merge stores freshly fetched keys over what is known of them. A key's
// validity only grows (an older response relayed later cannot shorten
// it), and once a key is old it stays old, with the earliest expiry heard.
// The response stored is the latest received, which a notary serves.
func (k *Keyring) merge(ctx context.Context, server roomdag.ServerName, fresh []storage.ServerKey) error {
	known, err := k.store.ServerKeys(ctx, server)
	if err != nil {
		return err
	}
	byID := map[string]storage.ServerKey{}
	for _, sk := range known {
		byID[sk.KeyID] = sk
	}
	out := make([]storage.ServerKey, 0, len(fresh))
	for _, f := range fresh {
		if old, ok := byID[f.KeyID]; ok && bytes.Equal(old.PublicKey, f.PublicKey) {
			f.ValidUntilTS = max(f.ValidUntilTS, old.ValidUntilTS)
			if old.ExpiredTS != 0 && (f.ExpiredTS == 0 || old.ExpiredTS < f.ExpiredTS) {
				f.ExpiredTS = old.ExpiredTS
			}
		}
		out = append(out, f)
	}
	return k.store.StoreServerKeys(ctx, out)
}

// keyResponse is a key response (keys.yaml).
type keyResponse struct {
	ServerName roomdag.ServerName `json:"server_name"`
	VerifyKeys map[string]struct {
		Key string `json:"key"`
	} `json:"verify_keys"`
	OldVerifyKeys map[string]struct {
		Key       string `json:"key"`
		ExpiredTS *int64 `json:"expired_ts"`
	} `json:"old_verify_keys"`
	ValidUntilTS *int64 `json:"valid_until_ts"`
}

// parseKeyResponse checks a key response of server fetched at now and
// returns its keys. The response must name server, be signed by server,
// and every signature of server on it must be by one of the keys it
// lists in verify_keys and verify: a key cannot be vouched for by a key
// the server does not publish. Keys of algorithms other than ed25519 are
// skipped.
func parseKeyResponse(server roomdag.ServerName, raw []byte, now time.Time) ([]storage.ServerKey, error) {
	var r keyResponse
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("key response is not JSON of the right shape: %v", err)
	}
	if r.ServerName != server {
		return nil, fmt.Errorf("key response is for %q, not %s", r.ServerName, server)
	}
	if r.ValidUntilTS == nil {
		return nil, errors.New("key response has no valid_until_ts")
	}
	validUntil := min(*r.ValidUntilTS, now.Add(maxKeyValidity).UnixMilli())
	var keys []storage.ServerKey
	current := map[string]ed25519.PublicKey{}
	for id, vk := range r.VerifyKeys {
		pub, ok := decodeKey(id, vk.Key)
		if !ok {
			continue
		}
		current[id] = pub
		keys = append(keys, storage.ServerKey{ServerName: server, KeyID: id, PublicKey: pub,
			ValidUntilTS: validUntil, FetchedTS: now.UnixMilli(), Response: raw})
	}
	if len(current) == 0 {
		return nil, errors.New("key response lists no ed25519 verify key")
	}
	for id, ok := range r.OldVerifyKeys {
		if _, dup := current[id]; dup || ok.ExpiredTS == nil {
			continue
		}
		pub, good := decodeKey(id, ok.Key)
		if !good {
			continue
		}
		keys = append(keys, storage.ServerKey{ServerName: server, KeyID: id, PublicKey: pub,
			ExpiredTS: max(*ok.ExpiredTS, 1), FetchedTS: now.UnixMilli(), Response: raw})
	}
	ids, err := signatureKeyIDs(raw, server)
	if err != nil {
		return nil, err
	}
	verified := 0
	for _, id := range ids {
		pub, ok := current[id]
		if !ok {
			return nil, fmt.Errorf("%w: key response signed with %s, which it does not list", roomdag.ErrSignature, id)
		}
		if err := roomdag.VerifyJSON(server, id, pub, raw); err != nil {
			return nil, err
		}
		verified++
	}
	if verified == 0 {
		return nil, fmt.Errorf("%w: key response is not signed by %s", roomdag.ErrSignature, server)
	}
	return keys, nil
}

// decodeKey decodes an ed25519 verify key; false for another algorithm,
// a bad key version or a malformed key.
func decodeKey(id, b64 string) (ed25519.PublicKey, bool) {
	alg, version, _ := strings.Cut(id, ":")
	if alg != "ed25519" || !roomdag.ValidKeyVersion(version) {
		return nil, false
	}
	pub, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(b64, "="))
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return nil, false
	}
	return pub, true
}

// signatureKeyIDs lists the ed25519 key IDs with which server signed a
// JSON object, sorted.
func signatureKeyIDs(raw []byte, server roomdag.ServerName) ([]string, error) {
	var s struct {
		Signatures map[roomdag.ServerName]map[string]json.RawMessage `json:"signatures"`
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("%w: signatures are malformed", roomdag.ErrSignature)
	}
	var ids []string
	for id := range s.Signatures[server] {
		if strings.HasPrefix(id, "ed25519:") {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids, nil
}
