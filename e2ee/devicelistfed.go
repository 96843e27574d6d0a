package e2ee

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	gosync "sync"
	"time"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// Device lists of other servers' users (server-server API, "Device
// Management"): their servers send m.device_list_update and
// m.signing_key_update EDUs to every server sharing a room with them.
// This server caches what they say, with the last stream_id applied; an
// update whose prev_id is not what the cache holds means one was missed,
// and the cache is rebuilt from GET /user/devices (a resync). Each
// change advances the user's device list, so local users sharing a room
// with them see them in device_lists.changed, and /keys/query answers
// from the cache while the user shares a room with a local user (their
// server keeps it current then), asking their server otherwise.

// RemoteDeviceStore is the cache of other servers' users' device lists
// (storage/sqlstore/devicelists.go documents each method).
type RemoteDeviceStore interface {
	RemoteDeviceStream(ctx context.Context, user roomdag.UserID) (int64, bool, error)
	ApplyRemoteDeviceUpdates(ctx context.Context, user roomdag.UserID, streamID int64, updates []storage.RemoteDevice) (bool, error)
	ReplaceRemoteDeviceList(ctx context.Context, user roomdag.UserID, list storage.RemoteDeviceList) error
	PutRemoteCrossSigningKeys(ctx context.Context, user roomdag.UserID, master, selfSigning json.RawMessage) error
	DropRemoteDeviceList(ctx context.Context, user roomdag.UserID) error
	RemoteDeviceLists(ctx context.Context, users []roomdag.UserID) (map[roomdag.UserID]*storage.RemoteDeviceList, error)
	SharedSince(ctx context.Context, user roomdag.UserID, pos roomdag.StreamPos) (bool, error)
	// RoomPeers returns the users sharing a joined room with user.
	RoomPeers(ctx context.Context, user roomdag.UserID) (map[roomdag.UserID]bool, error)
}

// Waker wakes local users' long-polls (sync.Notifier.Wake).
type Waker interface {
	Wake(users []roomdag.UserID)
}

// Resyncer rebuilds a cached device list from the user's server
// (DeviceListUpdates).
type Resyncer interface {
	Resync(ctx context.Context, user roomdag.UserID) error
}

// RemoteDevices fetches a user's devices from their server (GET
// /_matrix/federation/v1/user/devices/{userId}; federation.UserKeys).
type RemoteDevices interface {
	UserDevices(ctx context.Context, server roomdag.ServerName, user roomdag.UserID) (json.RawMessage, error)
}

// resyncTimeout bounds one resync: it runs while the origin's
// transaction waits.
const resyncTimeout = 10 * time.Second

// DeviceListUpdates applies other servers' device-list EDUs to the cache.
type DeviceListUpdates struct {
	server roomdag.ServerName
	store  RemoteDeviceStore
	remote RemoteDevices
	wake   Waker
	log    *slog.Logger

	// Updates of one user are applied one at a time (a resync and an
	// update must not interleave).
	mu    gosync.Mutex
	users map[roomdag.UserID]*userLock
}

type userLock struct {
	gosync.Mutex
	n int // holders and waiters
}

// NewDeviceListUpdates makes the EDU handlers; remote resyncs. wake,
// unless nil, is told the local users sharing a room with a user whose
// cached list changed: the notifier wakes only members of rooms it knows,
// and it knows the members of a room joined over federation only once
// their membership events pass through it.
func NewDeviceListUpdates(server roomdag.ServerName, store RemoteDeviceStore, remote RemoteDevices, wake Waker, log *slog.Logger) *DeviceListUpdates {
	return &DeviceListUpdates{server: server, store: store, remote: remote, wake: wake, log: log, users: map[roomdag.UserID]*userLock{}}
}

// changed wakes the local users sharing a room with user, after a
// change of their cached list committed.
func (d *DeviceListUpdates) changed(ctx context.Context, user roomdag.UserID) {
	if d.wake == nil {
		return
	}
	peers, err := d.store.RoomPeers(ctx, user)
	if err != nil {
		d.log.Info("e2ee: the room-mates of a user whose devices changed", "user", user, "err", err)
		return
	}
	var local []roomdag.UserID
	for u := range peers {
		if u.Server() == d.server {
			local = append(local, u)
		}
	}
	d.wake.Wake(local)
}

func (d *DeviceListUpdates) lock(user roomdag.UserID) func() {
	d.mu.Lock()
	l := d.users[user]
	if l == nil {
		l = &userLock{}
		d.users[user] = l
	}
	l.n++
	d.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		d.mu.Lock()
		if l.n--; l.n == 0 {
			delete(d.users, user)
		}
		d.mu.Unlock()
	}
}

// originUser parses a user ID that must be of origin: a server speaks
// only for its own users.
func originUser(raw string, origin roomdag.ServerName) (roomdag.UserID, error) {
	u, err := roomdag.ParseUserID(raw)
	if err != nil {
		return "", fmt.Errorf("%q is not a user ID", raw)
	}
	if u.Server() != origin {
		return "", fmt.Errorf("user %s is not of origin %s", u, origin)
	}
	return u, nil
}

// deviceListUpdate is an m.device_list_update EDU's content.
type deviceListUpdate struct {
	UserID   string          `json:"user_id"`
	DeviceID string          `json:"device_id"`
	StreamID int64           `json:"stream_id"`
	PrevID   []int64         `json:"prev_id"`
	Deleted  bool            `json:"deleted"`
	Keys     json.RawMessage `json:"keys"`
}

// HandleDeviceListUpdate is the federation.EDUHandler of
// m.device_list_update. Updates of a user who shares no room with a
// local user are ignored (nobody here tracks them; as Synapse does). The
// update is applied when it follows what is cached: every prev_id is at
// most the cached stream_id (stream IDs only grow, so the cache already
// reflects it); one below the cached stream_id is old news. Otherwise
// (nothing cached, no prev_id, a prev_id the cache has not seen) the
// user's devices are fetched anew from the origin.
func (d *DeviceListUpdates) HandleDeviceListUpdate(ctx context.Context, origin roomdag.ServerName, content json.RawMessage) error {
	var u deviceListUpdate
	if err := json.Unmarshal(content, &u); err != nil {
		return fmt.Errorf("m.device_list_update: %w", err)
	}
	user, err := originUser(u.UserID, origin)
	if err != nil {
		return err
	}
	if u.DeviceID == "" {
		return errors.New("m.device_list_update without a device_id")
	}
	var keys json.RawMessage
	if !u.Deleted && len(u.Keys) > 0 && string(u.Keys) != "null" {
		if !deviceKeysOf(u.Keys, user, u.DeviceID) {
			return fmt.Errorf("m.device_list_update: keys are not %s's device %s's", user, u.DeviceID)
		}
		keys = u.Keys
	}
	if ok, err := d.tracked(ctx, user); !ok || err != nil {
		return err
	}
	unlock := d.lock(user)
	defer unlock()
	held, cached, err := d.store.RemoteDeviceStream(ctx, user)
	if err != nil {
		return err
	}
	gap := !cached || len(u.PrevID) == 0
	for _, p := range u.PrevID {
		if p > held {
			gap = true
		}
	}
	if !gap {
		if u.StreamID < held {
			return nil // old news: the cache is newer
		}
		var updates []storage.RemoteDevice
		if keys != nil || u.Deleted {
			updates = []storage.RemoteDevice{{Device: u.DeviceID, Deleted: u.Deleted, Keys: keys}}
		} // else a change without keys (a new device without any yet, a rename): the cached keys stay, the position moves
		applied, err := d.store.ApplyRemoteDeviceUpdates(ctx, user, u.StreamID, updates)
		if applied {
			d.changed(ctx, user)
		}
		return err
	}
	err = d.resync(ctx, user)
	d.changed(ctx, user) // resynced or dropped
	return err
}

// tracked says whether user shares a room with a local user now; an
// update of one who does not is ignored, and logged.
func (d *DeviceListUpdates) tracked(ctx context.Context, user roomdag.UserID) (bool, error) {
	ok, err := d.store.SharedSince(ctx, user, math.MaxInt64)
	if err == nil && !ok {
		d.log.Info("e2ee: device list update of a user who shares no room with this server's users, ignored", "user", user)
	}
	return ok, err
}

// Resync implements Resyncer: it rebuilds user's cached device list from
// their server, one update or resync of theirs at a time.
func (d *DeviceListUpdates) Resync(ctx context.Context, user roomdag.UserID) error {
	unlock := d.lock(user)
	defer unlock()
	err := d.resync(ctx, user)
	d.changed(ctx, user)
	return err
}

// resync replaces the cached device list of user with their server's
// answer; when it fails the cache is dropped, so that /keys/query asks
// their server until an update resyncs again.
func (d *DeviceListUpdates) resync(ctx context.Context, user roomdag.UserID) error {
	list, err := d.fetch(ctx, user)
	if err != nil {
		if derr := d.store.DropRemoteDeviceList(ctx, user); derr != nil {
			return errors.Join(err, derr)
		}
		return fmt.Errorf("resyncing %s's devices: %w", user, err)
	}
	return d.store.ReplaceRemoteDeviceList(ctx, user, *list)
}

// userDevices is GET /user/devices' answer.
type userDevices struct {
	UserID   string `json:"user_id"`
	StreamID *int64 `json:"stream_id"`
	Devices  []struct {
		DeviceID string          `json:"device_id"`
		Keys     json.RawMessage `json:"keys"`
	} `json:"devices"`
	MasterKey      json.RawMessage `json:"master_key"`
	SelfSigningKey json.RawMessage `json:"self_signing_key"`
}

func (d *DeviceListUpdates) fetch(ctx context.Context, user roomdag.UserID) (*storage.RemoteDeviceList, error) {
	if d.remote == nil {
		return nil, errors.New("this server does not ask other servers for devices")
	}
	ctx, cancel := context.WithTimeout(ctx, resyncTimeout)
	defer cancel()
	raw, err := d.remote.UserDevices(ctx, user.Server(), user)
	if err != nil {
		return nil, err
	}
	var ans userDevices
	if err := json.Unmarshal(raw, &ans); err != nil {
		return nil, errors.New("the server's answer is malformed")
	}
	if ans.UserID != string(user) || ans.StreamID == nil {
		return nil, errors.New("the server's answer is not of the user, or has no stream_id")
	}
	list := &storage.RemoteDeviceList{StreamID: *ans.StreamID, Devices: map[string]json.RawMessage{}}
	for _, dev := range ans.Devices {
		if dev.DeviceID != "" && deviceKeysOf(dev.Keys, user, dev.DeviceID) {
			list.Devices[dev.DeviceID] = dev.Keys
		}
	}
	if keyOf(ans.MasterKey, user) {
		list.Master = ans.MasterKey
	}
	if keyOf(ans.SelfSigningKey, user) {
		list.SelfSigning = ans.SelfSigningKey
	}
	return list, nil
}

// deviceKeysOf says whether raw is a device keys object of user's
// device (signatures are the clients' to check).
func deviceKeysOf(raw json.RawMessage, user roomdag.UserID, device string) bool {
	var dk deviceKeysBody
	return len(raw) > 0 && raw[0] == '{' && json.Unmarshal(raw, &dk) == nil && dk.UserID == string(user) && dk.DeviceID == device
}

// HandleSigningKeyUpdate is the federation.EDUHandler of
// m.signing_key_update: {user_id, master_key, self_signing_key}, each
// key optional.
func (d *DeviceListUpdates) HandleSigningKeyUpdate(ctx context.Context, origin roomdag.ServerName, content json.RawMessage) error {
	var c struct {
		UserID         string          `json:"user_id"`
		MasterKey      json.RawMessage `json:"master_key"`
		SelfSigningKey json.RawMessage `json:"self_signing_key"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return fmt.Errorf("m.signing_key_update: %w", err)
	}
	user, err := originUser(c.UserID, origin)
	if err != nil {
		return err
	}
	var master, ssk json.RawMessage
	if len(c.MasterKey) > 0 && string(c.MasterKey) != "null" {
		if !keyOf(c.MasterKey, user) {
			return fmt.Errorf("m.signing_key_update: master_key is not %s's", user)
		}
		master = c.MasterKey
	}
	if len(c.SelfSigningKey) > 0 && string(c.SelfSigningKey) != "null" {
		if !keyOf(c.SelfSigningKey, user) {
			return fmt.Errorf("m.signing_key_update: self_signing_key is not %s's", user)
		}
		ssk = c.SelfSigningKey
	}
	if master == nil && ssk == nil {
		return errors.New("m.signing_key_update without keys")
	}
	if ok, err := d.tracked(ctx, user); !ok || err != nil {
		return err
	}
	unlock := d.lock(user)
	defer unlock()
	if err := d.store.PutRemoteCrossSigningKeys(ctx, user, master, ssk); err != nil {
		return err
	}
	d.changed(ctx, user)
	return nil
}

// maxQueryResyncs bounds the resyncs one /keys/query waits for; the
// other users it cannot answer from the cache are asked of their servers
// in one request per server.
const maxQueryResyncs = 10

// cachedRemote answers, from the cache, the users of want whose cached
// device list is fresh, into res, and returns the rest, still to be
// asked of their servers. A list is fresh while the user has shared a
// room with a local user since its resync (their server sends this
// server every change then). A user who shares a room now but whose list
// is missing or stale is resynced first, up to maxQueryResyncs of them
// at once, within ctx.
func (k *Keys) cachedRemote(ctx context.Context, want map[roomdag.ServerName]map[roomdag.UserID][]string, res *queryResult) (map[roomdag.ServerName]map[roomdag.UserID][]string, error) {
	if k.cache == nil || len(want) == 0 {
		return want, nil
	}
	var users []roomdag.UserID
	for _, us := range want {
		for u := range us {
			users = append(users, u)
		}
	}
	lists, err := k.cache.RemoteDeviceLists(ctx, users)
	if err != nil {
		return nil, err
	}
	fresh := map[roomdag.UserID]*storage.RemoteDeviceList{}
	var stale []roomdag.UserID
	for _, u := range users {
		if l := lists[u]; l != nil {
			ok, err := k.cache.SharedSince(ctx, u, l.ValidFrom)
			if err != nil {
				return nil, err
			}
			if ok {
				fresh[u] = l
				continue
			}
		}
		if k.resync == nil || len(stale) == maxQueryResyncs {
			continue
		}
		ok, err := k.cache.SharedSince(ctx, u, math.MaxInt64)
		if err != nil {
			return nil, err
		}
		if ok {
			stale = append(stale, u)
		}
	}
	if len(stale) > 0 {
		var wg gosync.WaitGroup
		for _, u := range stale {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := k.resync.Resync(ctx, u); err != nil && k.log != nil {
					k.log.Info("e2ee: resyncing a device list for /keys/query", "user", u, "err", err)
				}
			}()
		}
		wg.Wait()
		again, err := k.cache.RemoteDeviceLists(ctx, stale)
		if err != nil {
			return nil, err
		}
		for u, l := range again {
			// Just resynced: fresh if the room is still shared.
			if ok, err := k.cache.SharedSince(ctx, u, l.ValidFrom); err != nil {
				return nil, err
			} else if ok {
				fresh[u] = l
			}
		}
	}
	rest := map[roomdag.ServerName]map[roomdag.UserID][]string{}
	for s, us := range want {
		for u, devices := range us {
			l := fresh[u]
			if l == nil {
				if rest[s] == nil {
					rest[s] = map[roomdag.UserID][]string{}
				}
				rest[s][u] = devices
				continue
			}
			out := map[string]json.RawMessage{}
			for d, keys := range l.Devices {
				if len(devices) == 0 || containsString(devices, d) {
					out[d] = keys
				}
			}
			res.DeviceKeys[u] = out
			if l.Master != nil {
				res.Master[u] = l.Master
			}
			if l.SelfSigning != nil {
				res.SelfSigning[u] = l.SelfSigning
			}
		}
	}
	return rest, nil
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// WithCache makes /keys/query answer from cache for other servers'
// users whose lists it holds fresh, resyncing them through resync (nil:
// none) when they are missing or stale. It returns k.
func (k *Keys) WithCache(cache RemoteDeviceStore, resync Resyncer) *Keys {
	k.cache, k.resync = cache, resync
	return k
}

// FederationDeviceKeys implements federation.DeviceListKeys: the keys of
// a local user's devices as /user/devices serves them.
func (k *Keys) FederationDeviceKeys(ctx context.Context, user roomdag.UserID, devices []string) (map[string]json.RawMessage, error) {
	res, err := k.localQuery(ctx, "", map[roomdag.UserID][]string{user: devices}, true)
	if err != nil {
		return nil, err
	}
	return res.DeviceKeys[user], nil
}

// FederationCrossSigningKeys implements federation.DeviceListKeys.
func (k *Keys) FederationCrossSigningKeys(ctx context.Context, user roomdag.UserID) (master, selfSigning json.RawMessage, err error) {
	res, err := k.localQuery(ctx, "", map[roomdag.UserID][]string{user: nil}, true)
	if err != nil {
		return nil, nil, err
	}
	return res.Master[user], res.SelfSigning[user], nil
}
