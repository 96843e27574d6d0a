package federation

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"github.com/persistentchat/homeserver/streamworker"
)

// Outbound device lists (server-server API, "Device Management"): every
// change of a local user's devices is an m.device_list_update EDU, and
// every change of their cross-signing keys an m.signing_key_update, for
// each server that shares a room with them. The store keeps each change
// in an outbox at its device-list stream position (storage/sqlstore,
// deviceListChanged); a worker (lease "device_list_sender") turns them
// into EDUs on the persisted per-destination queues, committing its
// position with them, so a change is neither lost nor sent twice across
// a crash. An update's stream_id is its position, which grows for each
// user, and its prev_id the user's previous one, so that a receiver that
// missed one sees the gap and resyncs with GET /user/devices.

// DeviceListStore is what the device-list sender reads and writes
// (sqlstore.DB).
type DeviceListStore interface {
	DeviceListSenderPos(ctx context.Context) (roomdag.StreamPos, error)
	DeviceListOutbox(ctx context.Context, after roomdag.StreamPos, limit int) ([]storage.DeviceListOutboxEntry, error)
	QueueDeviceListEDUs(ctx context.Context, from, to roomdag.StreamPos, items map[roomdag.ServerName][]storage.FederationItem, nowMS int64) error
	RoomsOfUser
}

// RoomsOfUser lists the rooms a local user is joined to.
type RoomsOfUser interface {
	JoinedRooms(ctx context.Context, user roomdag.UserID) ([]roomdag.RoomID, error)
}

// DeviceListKeys gives the keys the EDUs carry, as other servers are
// served them (e2ee.Keys): signed device keys without display names.
type DeviceListKeys interface {
	// FederationDeviceKeys returns the keys of a local user's devices;
	// a device without keys is absent.
	FederationDeviceKeys(ctx context.Context, user roomdag.UserID, devices []string) (map[string]json.RawMessage, error)
	// FederationCrossSigningKeys returns their master and self-signing
	// keys (nil: none).
	FederationCrossSigningKeys(ctx context.Context, user roomdag.UserID) (master, selfSigning json.RawMessage, err error)
}

// DeviceListOptions configure NewDeviceListSender.
type DeviceListOptions struct {
	Server       roomdag.ServerName
	Store        DeviceListStore
	Keys         DeviceListKeys
	Destinations Destinations
	// Sender delivers the queued EDUs; it is woken for each destination.
	Sender *Sender
	// Holder is the "device_list_sender" lease; nil: always held.
	Holder *streamworker.Holder
	// Rescan, when positive, is how often the worker looks for changes
	// it was not told of (other processes sharing the database commit
	// them). Zero: only Notify wakes it.
	Rescan time.Duration
	Clock  clock.Clock
	Log    *slog.Logger
}

// DeviceListSender queues local device-list changes for other servers.
type DeviceListSender struct {
	o    DeviceListOptions
	loop *streamworker.Loop
	quit chan struct{}
	done chan struct{}
}

// NewDeviceListSender makes the worker; Start runs it.
func NewDeviceListSender(o DeviceListOptions) *DeviceListSender {
	d := &DeviceListSender{o: o, quit: make(chan struct{}), done: make(chan struct{})}
	d.loop = streamworker.New(d, streamworker.Options{Name: "device list sender", Clock: o.Clock, Log: o.Log, Holder: o.Holder})
	return d
}

// Start resumes the worker from its stored position.
func (d *DeviceListSender) Start(ctx context.Context) error {
	if err := d.loop.Start(ctx); err != nil {
		return err
	}
	go func() {
		defer close(d.done)
		if d.o.Rescan <= 0 {
			<-d.quit
			return
		}
		for {
			select {
			case <-d.quit:
				return
			case <-d.o.Clock.After(d.o.Rescan):
				d.loop.Notify()
			}
		}
	}()
	return nil
}

// Stop stops the worker after its step in progress.
func (d *DeviceListSender) Stop() {
	select {
	case <-d.quit:
	default:
		close(d.quit)
	}
	d.loop.Stop()
	<-d.done
}

// Notify wakes the worker: a device list changed (called after commit).
func (d *DeviceListSender) Notify() { d.loop.Notify() }

// Loop is the worker's loop, for tests (WaitStats).
func (d *DeviceListSender) Loop() *streamworker.Loop { return d.loop }

// Resume implements streamworker.Stepper.
func (d *DeviceListSender) Resume(ctx context.Context) (roomdag.StreamPos, error) {
	return d.o.Store.DeviceListSenderPos(ctx)
}

// stepPositions bounds the device-list positions one step queues.
const stepPositions = 100

// Step implements streamworker.Stepper.
func (d *DeviceListSender) Step(ctx context.Context, from roomdag.StreamPos) (roomdag.StreamPos, bool, error) {
	entries, err := d.o.Store.DeviceListOutbox(ctx, from, stepPositions)
	if err != nil || len(entries) == 0 {
		return from, false, err
	}
	to := roomdag.StreamPos(entries[len(entries)-1].Pos)
	items := map[roomdag.ServerName][]storage.FederationItem{}
	positions := 0
	for i := 0; i < len(entries); {
		// One user's run of entries, in stream order.
		j := i
		for j < len(entries) && entries[j].User == entries[i].User {
			if j == i || entries[j].Pos != entries[j-1].Pos {
				positions++
			}
			j++
		}
		edus, dests, err := d.userEDUs(ctx, entries[i:j])
		if err != nil {
			return from, false, err
		}
		for _, dest := range dests {
			for _, b := range edus {
				items[dest] = append(items[dest], storage.FederationItem{EDU: b})
			}
		}
		i = j
	}
	if err := d.o.Store.QueueDeviceListEDUs(context.WithoutCancel(ctx), from, to, items, d.o.Clock.Now().UnixMilli()); err != nil {
		return from, false, err
	}
	if d.o.Sender != nil {
		for dest := range items {
			d.o.Sender.wake(dest)
		}
	}
	return to, positions >= stepPositions, nil
}

// deviceListUpdate is an m.device_list_update EDU's content. Device
// display names stay on this server, as in /user/devices.
type deviceListUpdate struct {
	UserID   roomdag.UserID  `json:"user_id"`
	DeviceID string          `json:"device_id"`
	StreamID int64           `json:"stream_id"`
	PrevID   []int64         `json:"prev_id"`
	Deleted  bool            `json:"deleted,omitempty"`
	Keys     json.RawMessage `json:"keys,omitempty"`
}

// signingKeyUpdate is an m.signing_key_update EDU's content.
type signingKeyUpdate struct {
	UserID         roomdag.UserID  `json:"user_id"`
	MasterKey      json.RawMessage `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
}

// userEDUs are the EDUs of one local user's entries and the servers
// they go to; none for a user of another server or one who shares no
// room with another server.
func (d *DeviceListSender) userEDUs(ctx context.Context, entries []storage.DeviceListOutboxEntry) ([][]byte, []roomdag.ServerName, error) {
	user := entries[0].User
	if user.Server() != d.o.Server {
		return nil, nil, nil
	}
	dests, err := UserServers(ctx, d.o.Store, d.o.Destinations, user)
	if err != nil || len(dests) == 0 {
		return nil, nil, err
	}
	var devices []string
	for _, e := range entries {
		if e.Device != "" && !e.Deleted && !slices.Contains(devices, e.Device) {
			devices = append(devices, e.Device)
		}
	}
	keys := map[string]json.RawMessage{}
	if len(devices) > 0 {
		if keys, err = d.o.Keys.FederationDeviceKeys(ctx, user, devices); err != nil {
			return nil, nil, err
		}
	}
	var out [][]byte
	signing := false
	for _, e := range entries {
		var edu any
		if e.Device == "" {
			if signing {
				continue // one update carries the keys as they are now
			}
			signing = true
			master, ssk, err := d.o.Keys.FederationCrossSigningKeys(ctx, user)
			if err != nil {
				return nil, nil, err
			}
			if master == nil && ssk == nil {
				continue
			}
			edu = map[string]any{"edu_type": "m.signing_key_update", "content": signingKeyUpdate{UserID: user, MasterKey: master, SelfSigningKey: ssk}}
		} else {
			u := deviceListUpdate{UserID: user, DeviceID: e.Device, StreamID: e.Pos, PrevID: []int64{}, Deleted: e.Deleted}
			if e.Prev > 0 {
				u.PrevID = []int64{e.Prev}
			}
			if !e.Deleted {
				u.Keys = keys[e.Device]
			}
			edu = map[string]any{"edu_type": "m.device_list_update", "content": u}
		}
		b, err := json.Marshal(edu)
		if err != nil {
			return nil, nil, err
		}
		out = append(out, b)
	}
	return out, dests, nil
}

// UserServers are the servers that share a room with a local user: the
// servers of the joined members of each room the user is joined to, in
// the rooms' current state (Destinations.RoomServers, which leaves out
// this server and those a room's ACL denies), sorted.
func UserServers(ctx context.Context, rooms RoomsOfUser, dests Destinations, user roomdag.UserID) ([]roomdag.ServerName, error) {
	joined, err := rooms.JoinedRooms(ctx, user)
	if err != nil {
		return nil, err
	}
	seen := map[roomdag.ServerName]bool{}
	var out []roomdag.ServerName
	for _, room := range joined {
		servers, err := dests.RoomServers(ctx, room)
		if err != nil {
			return nil, err
		}
		for _, s := range servers {
			if !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

var _ streamworker.Stepper = (*DeviceListSender)(nil)
