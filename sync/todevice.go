package sync

import (
	"context"
	"encoding/json"
	gosync "sync"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// To-device messages in /sync (spec: "Send-to-Device messaging", "Protocol
// definitions" of /sync to_device): a device's messages are served oldest
// first, at most MaxToDevicePerSync per response, and deleted only when its
// client syncs with a since whose ToDevice position is at or past them: the
// token it was given acknowledges what came with it. Until then every sync
// from an older token serves them again (at least once). When a response
// holds only part of what waits, its next_batch's ToDevice is the last
// message served, so that the next sync returns at once with the rest.

// MaxToDevicePerSync bounds the to-device messages of one /sync response,
// as Synapse's 100.
const MaxToDevicePerSync = 100

// ToDeviceStore is the to-device stream /sync reads (storage/sqlstore).
type ToDeviceStore interface {
	// ToDeviceSince returns up to limit of the device's messages with
	// positions in (after, upTo], oldest first.
	ToDeviceSince(ctx context.Context, user roomdag.UserID, device string, after, upTo int64, limit int) ([]storage.ToDeviceMessage, error)
	// AckToDevice deletes the device's messages at or below upTo.
	AckToDevice(ctx context.Context, user roomdag.UserID, device string, upTo int64) error
}

// ToDeviceAdded wakes the user after to-device messages for them committed,
// the newest at pos.
func (n *Notifier) ToDeviceAdded(user roomdag.UserID, pos int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if pos > n.cur.ToDevice {
		n.cur.ToDevice = pos
	}
	n.wakeLocked(user)
}

// toDeviceAcks remembers, per device, the highest position this process has
// deleted up to, so that the syncs that acknowledge nothing new (every
// long-poll after the first) do not read the database for it. Deleting is
// monotone: messages stored later get positions above the stream's head,
// which a token this process handed out does not pass.
type toDeviceAcks struct {
	mu    gosync.Mutex
	acked map[string]int64 // user "|" device
}

// maxAckEntries bounds the memory of toDeviceAcks; when full it starts
// again (the cost is one read per device).
const maxAckEntries = 100_000

// ack deletes what the device's client acknowledged with a since at
// upTo. cur is this process's current position: an acknowledgement past it
// (a token from another process ahead of this one) is carried out but not
// remembered.
func (s *Syncer) ackToDevice(ctx context.Context, user roomdag.UserID, device string, upTo, cur int64) error {
	if device == "" || upTo <= 0 {
		return nil
	}
	a := &s.toDeviceAcks
	key := string(user) + "|" + device
	a.mu.Lock()
	done := a.acked[key] >= upTo
	a.mu.Unlock()
	if done {
		return nil
	}
	if err := s.store.AckToDevice(ctx, user, device, upTo); err != nil {
		return err
	}
	if upTo <= cur {
		a.mu.Lock()
		if a.acked == nil || len(a.acked) >= maxAckEntries {
			a.acked = map[string]int64{}
		}
		a.acked[key] = max(a.acked[key], upTo)
		a.mu.Unlock()
	}
	return nil
}

// toDeviceEvents fills resp's to_device section with the device's messages
// in (since, cur], and, when more wait than one response holds, lowers its
// next_batch to the last one served.
func (s *Syncer) toDeviceEvents(ctx context.Context, req Request, since, cur Token, resp *Response) error {
	if req.Device == "" || cur.ToDevice <= since.ToDevice {
		return nil
	}
	msgs, err := s.store.ToDeviceSince(ctx, req.User, req.Device, since.ToDevice, cur.ToDevice, MaxToDevicePerSync+1)
	if err != nil {
		return err
	}
	more := len(msgs) > MaxToDevicePerSync
	if more {
		msgs = msgs[:MaxToDevicePerSync]
	}
	events := make([]json.RawMessage, len(msgs))
	for i, m := range msgs {
		events[i] = m.Event
	}
	resp.ToDevice.Events = events
	if more {
		next := cur
		next.ToDevice = msgs[len(msgs)-1].Pos
		resp.NextBatch = next.String()
	}
	return nil
}
