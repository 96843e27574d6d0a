package sync

import (
	"context"

	"github.com/persistentchat/homeserver/roomdag"
)

// End-to-end encryption's sections of /sync that concern device keys
// (spec: "Extensions to /sync" of "End-to-End Encryption"): device_lists,
// device_one_time_keys_count and device_unused_fallback_key_types. Package
// e2ee computes them; the device-list stream is Token.DeviceLists.

// DeviceKeys is what /sync asks of the key server (e2ee.Keys implements
// it). A Syncer without one sends none of these sections.
type DeviceKeys interface {
	// DeviceListChanges returns the users whose devices the user must
	// refetch (changed: their device list changed, or they came to share
	// a room with user) and those the user no longer shares any room with
	// (left), between since and cur.
	DeviceListChanges(ctx context.Context, user roomdag.UserID, since, cur Token) (changed, left []roomdag.UserID, err error)
	// KeyCounts returns the device's unclaimed one-time keys per
	// algorithm and the algorithms of its unused fallback keys.
	KeyCounts(ctx context.Context, user roomdag.UserID, device string) (map[string]int64, []string, error)
}

// DeviceLists is the device_lists section.
type DeviceLists struct {
	Changed []roomdag.UserID `json:"changed"`
	Left    []roomdag.UserID `json:"left"`
}

// deviceKeySections fills resp's device key sections for req between since
// and cur.
func (s *Syncer) deviceKeySections(ctx context.Context, req Request, since, cur Token, resp *Response) error {
	if s.keys == nil {
		return nil
	}
	if req.Since != nil {
		changed, left, err := s.keys.DeviceListChanges(ctx, req.User, since, cur)
		if err != nil {
			return err
		}
		if len(changed) > 0 || len(left) > 0 {
			if changed == nil {
				changed = []roomdag.UserID{}
			}
			if left == nil {
				left = []roomdag.UserID{}
			}
			resp.DeviceLists = &DeviceLists{Changed: changed, Left: left}
		}
	}
	if req.Device == "" {
		return nil
	}
	counts, fallback, err := s.keys.KeyCounts(ctx, req.User, req.Device)
	if err != nil {
		return err
	}
	if counts == nil {
		counts = map[string]int64{}
	}
	if _, ok := counts["signed_curve25519"]; !ok {
		// As Synapse: clients read the count of their usual algorithm
		// and upload keys when it is missing or low.
		counts["signed_curve25519"] = 0
	}
	if fallback == nil {
		fallback = []string{}
	}
	resp.OneTimeKeysCount, resp.UnusedFallbackKeyTypes = counts, &fallback
	return nil
}

// DeviceListChanged is called after a change of user's device list at pos
// in the device-list stream commits, in commit order: it wakes the user
// and every local user who shares a room with them.
func (n *Notifier) DeviceListChanged(user roomdag.UserID, pos int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cur.DeviceLists = max(n.cur.DeviceLists, pos)
	n.wakeLocked(user)
	for room, set := range n.members {
		if _, ok := set[user]; ok {
			n.wakeRoomLocked(room)
		}
	}
}

// Wake wakes the users' pending requests: a change of theirs that the
// notifier cannot place in a room it knows (e2ee.Waker).
func (n *Notifier) Wake(users []roomdag.UserID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, u := range users {
		n.wakeLocked(u)
	}
}

// deviceListsAt raises the device-list position to pos (at start-up,
// from storage).
func (n *Notifier) deviceListsAt(pos int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cur.DeviceLists = max(n.cur.DeviceLists, pos)
}

// idleResponse is the answer of a sync with nothing new: empty sections,
// and the device's key counts, which clients expect in every response
// (they upload keys when the count is missing or low).
//
// The token moves to cur, past device-list changes that woke nobody here
// (those of a remote user whom the notifier knows in no room: the state
// of a room joined over federation reaches it only as outliers): those
// of the user's room-mates are reported, not skipped.
func (s *Syncer) idleResponse(ctx context.Context, req Request, cur Token) (*Response, error) {
	resp := s.emptyResponse(cur)
	if req.Since != nil && s.keys != nil && cur.DeviceLists > req.Since.DeviceLists {
		upTo := *req.Since // the device-list stream only: no room event is news here
		upTo.DeviceLists = cur.DeviceLists
		changed, left, err := s.keys.DeviceListChanges(ctx, req.User, *req.Since, upTo)
		if err != nil {
			return nil, err
		}
		if len(changed) > 0 || len(left) > 0 {
			if changed == nil {
				changed = []roomdag.UserID{}
			}
			if left == nil {
				left = []roomdag.UserID{}
			}
			resp.DeviceLists = &DeviceLists{Changed: changed, Left: left}
		}
	}
	req.Since = nil // no other device list changes: there are none
	if err := s.deviceKeySections(ctx, req, cur, cur, resp); err != nil {
		return nil, err
	}
	return resp, nil
}
