package federation

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"maps"
	"slices"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// QueueServerEDUs queues EDUs that are about no room: for each
// destination its own content, as an EDU of eduType at the end of its
// queue, persisted and retried as every queued item is. It does not
// consult Destinations: the caller names the servers (to-device
// messages go to a user's server whether or not a room is shared).
// This server is never a destination; its entry, if any, is skipped.
func (s *Sender) QueueServerEDUs(ctx context.Context, eduType string, byDest map[roomdag.ServerName]any) error {
	items := map[roomdag.ServerName][]storage.FederationItem{}
	for d, content := range byDest {
		if d == s.o.Server || d == "" {
			continue
		}
		b, err := json.Marshal(map[string]any{"edu_type": eduType, "content": content})
		if err != nil {
			return err
		}
		items[d] = []storage.FederationItem{{EDU: b}}
	}
	if len(items) == 0 {
		return nil
	}
	if err := s.o.Store.QueueFederationEDUs(ctx, items, s.o.Clock.Now().UnixMilli()); err != nil {
		return err
	}
	for d := range items {
		s.wake(d)
	}
	return nil
}

// SoftMaxToDeviceEDU is the size an m.direct_to_device EDU's messages
// are kept under: a send's messages for one server are split, between
// users and between one user's devices, into EDUs of at most this many
// bytes of messages, so that a transaction stays small whatever a send
// names (the spec gives EDUs no limit; Synapse splits at the same size).
// One message larger than this (a content is at most 65536 bytes) goes
// alone in an EDU of its own.
const SoftMaxToDeviceEDU = 65536

// SendToDevice implements e2ee.RemoteToDevice: m.direct_to_device EDUs
// (server-server API, "Send-to-device messaging") for each server, split
// at SoftMaxToDeviceEDU, each with a random message_id of its own, by
// which the receiver drops a retried transaction's copy. The EDUs are
// queued in one database transaction, so either every server is sent
// its messages or, on an error, none is.
func (s *Sender) SendToDevice(ctx context.Context, sender roomdag.UserID, evType string, byServer map[roomdag.ServerName]map[roomdag.UserID]map[string]json.RawMessage) error {
	items := map[roomdag.ServerName][]storage.FederationItem{}
	for d, msgs := range byServer {
		if d == s.o.Server || d == "" {
			continue
		}
		for _, part := range splitToDevice(msgs, SoftMaxToDeviceEDU) {
			id, err := messageID()
			if err != nil {
				return err
			}
			b, err := json.Marshal(map[string]any{"edu_type": "m.direct_to_device",
				"content": directToDevice{Sender: sender, Type: evType, MessageID: id, Messages: part}})
			if err != nil {
				return err
			}
			items[d] = append(items[d], storage.FederationItem{EDU: b})
		}
	}
	if len(items) == 0 {
		return nil
	}
	if err := s.o.Store.QueueFederationEDUs(ctx, items, s.o.Clock.Now().UnixMilli()); err != nil {
		return err
	}
	for d := range items {
		s.wake(d)
	}
	return nil
}

// splitToDevice splits msgs into parts whose messages take at most max
// bytes (estimated from the IDs' and contents' lengths), in the order of
// users and then devices; a message larger than max is a part alone.
func splitToDevice(msgs map[roomdag.UserID]map[string]json.RawMessage, max int) []map[roomdag.UserID]map[string]json.RawMessage {
	var parts []map[roomdag.UserID]map[string]json.RawMessage
	var cur map[roomdag.UserID]map[string]json.RawMessage
	size := 0
	for _, u := range slices.Sorted(maps.Keys(msgs)) {
		devices := msgs[u]
		for _, d := range slices.Sorted(maps.Keys(devices)) {
			c := devices[d]
			n := len(u) + len(d) + len(c) + 16 // quotes, colons, commas, braces
			if cur != nil && size+n > max {
				parts = append(parts, cur)
				cur, size = nil, 0
			}
			if cur == nil {
				cur = map[roomdag.UserID]map[string]json.RawMessage{}
			}
			if cur[u] == nil {
				cur[u] = map[string]json.RawMessage{}
			}
			cur[u][d] = c
			size += n
		}
	}
	if cur != nil {
		parts = append(parts, cur)
	}
	return parts
}

// directToDevice is the content of an m.direct_to_device EDU.
type directToDevice struct {
	Sender    roomdag.UserID                                `json:"sender"`
	Type      string                                        `json:"type"`
	MessageID string                                        `json:"message_id"`
	Messages  map[roomdag.UserID]map[string]json.RawMessage `json:"messages"`
}

func messageID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}
