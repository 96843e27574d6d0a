package federation

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"

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

// SendToDevice implements e2ee.RemoteToDevice: one m.direct_to_device
// EDU (server-server API, "Send-to-device messaging") per server, each
// with a random message_id of its own, by which the receiver drops a
// retried transaction's copy. The EDUs are queued in one database
// transaction, so either every server is sent its messages or, on an
// error, none is.
func (s *Sender) SendToDevice(ctx context.Context, sender roomdag.UserID, evType string, byServer map[roomdag.ServerName]map[roomdag.UserID]map[string]json.RawMessage) error {
	byDest := make(map[roomdag.ServerName]any, len(byServer))
	for d, msgs := range byServer {
		id, err := messageID()
		if err != nil {
			return err
		}
		byDest[d] = directToDevice{Sender: sender, Type: evType, MessageID: id, Messages: msgs}
	}
	return s.QueueServerEDUs(ctx, "m.direct_to_device", byDest)
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
