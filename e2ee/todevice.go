// Package e2ee is what end-to-end encryption needs of the server: it
// stores, relays and accounts for keys and messages it never reads.
package e2ee

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"

	"github.com/persistentchat/homeserver/api"
	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// ToDeviceStore is the to-device stream (storage/sqlstore).
type ToDeviceStore interface {
	// SendToDevice stores one send's messages for the recipients'
	// existing devices and reports whether it did: false for a replay of
	// (SenderDevice, TxnID). storage.ToDeviceSend documents the fields.
	SendToDevice(ctx context.Context, s storage.ToDeviceSend) (bool, error)
	// ToDeviceSince returns up to limit of the device's messages with
	// positions in (after, upTo], oldest first.
	ToDeviceSince(ctx context.Context, user roomdag.UserID, device string, after, upTo int64, limit int) ([]storage.ToDeviceMessage, error)
	// ToDevicePos is the newest committed to-device position.
	ToDevicePos(ctx context.Context) (int64, error)
}

// RemoteToDevice sends to-device messages to the users of other servers:
// federation's m.direct_to_device EDU (spec: server-server API,
// "Send-to-device messaging"), one or more per destination server, each
// with a message_id of its own, queued and retried as federation's other
// transactions are (federation.Sender implements it). It is given the
// messages already split from the local ones, grouped by server. Nil:
// remote recipients get nothing (see send).
type RemoteToDevice interface {
	SendToDevice(ctx context.Context, sender roomdag.UserID, evType string, byServer map[roomdag.ServerName]map[roomdag.UserID]map[string]json.RawMessage) error
}

// ToDevice serves PUT /sendToDevice (spec: client-server API,
// "Send-to-Device messaging") and, for MSC3814, the dehydrated device
// endpoints (dehydrated.go). Delivery is sync's (sync/todevice.go).
type ToDevice struct {
	store  MessageStore
	server roomdag.ServerName
	remote RemoteToDevice
	keys   KeyUploader
	clock  clock.Clock
	log    *slog.Logger
}

// MessageStore is what the to-device and dehydrated device endpoints need.
type MessageStore interface {
	ToDeviceStore
	DehydratedStore
}

// NewToDevice makes the endpoints for server. remote and keys may be nil
// (RemoteToDevice, KeyUploader say what is then left undone).
func NewToDevice(store MessageStore, server roomdag.ServerName, remote RemoteToDevice, keys KeyUploader, clk clock.Clock, log *slog.Logger) *ToDevice {
	return &ToDevice{store: store, server: server, remote: remote, keys: keys, clock: clk, log: log}
}

// Bounds of one send. A message's content is bounded as an event's is
// (65536 bytes, spec: "Size limits"), and so is the number of recipient
// devices a request names, before "*" is expanded: the whole request is
// bounded by the API's body limit anyway, and these make the errors say
// what was too large.
const (
	MaxToDeviceContent    = roomdag.MaxEventBytes
	MaxToDeviceRecipients = 10_000
)

type sendBody struct {
	Messages map[string]map[string]json.RawMessage `json:"messages"`
}

// send is PUT /sendToDevice/{eventType}/{txnId}. The transaction is the
// sender's device and txnId: a replay within storage.TxnLifetimeMS
// answers {} and stores nothing (spec: "Transaction identifiers").
//
// Recipients on other servers are handed to RemoteToDevice, after the
// local messages and the transaction are stored: it queues them for
// their servers whether or not they have ever been reached, as Synapse
// does (device_federation_outbox). Should queueing fail, the client is
// answered with the error, but its retry is a replay and the remote
// recipients miss the messages. Without a RemoteToDevice they are
// dropped, which the sender cannot tell from a server that is down: the
// spec gives no error for either.
func (t *ToDevice) send(r *http.Request) (any, error) {
	user, device, _ := api.Caller(r)
	evType, txnID := httpapi.PathParam(r, "eventType"), httpapi.PathParam(r, "txnId")
	if evType == "" || txnID == "" {
		return nil, httpapi.InvalidParam("eventType and txnId must not be empty")
	}
	var body sendBody
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.Messages == nil {
		return nil, httpapi.MissingParam("messages is required")
	}
	local := map[roomdag.UserID]map[string]json.RawMessage{}
	var remote map[roomdag.ServerName]map[roomdag.UserID]map[string]json.RawMessage
	n := 0
	for u, byDevice := range body.Messages {
		uid, err := roomdag.ParseUserID(u)
		if err != nil {
			return nil, httpapi.InvalidParam("invalid user ID %q", u)
		}
		if byDevice == nil {
			return nil, httpapi.BadJSON("messages of %s must be an object of device IDs", u)
		}
		for d, content := range byDevice {
			if n++; n > MaxToDeviceRecipients {
				return nil, httpapi.Errorf(http.StatusRequestEntityTooLarge, httpapi.CodeTooLarge,
					"a send may name at most %d devices", MaxToDeviceRecipients)
			}
			if d == "" {
				return nil, httpapi.InvalidParam("empty device ID for %s", u)
			}
			if len(content) > MaxToDeviceContent {
				return nil, httpapi.Errorf(http.StatusRequestEntityTooLarge, httpapi.CodeTooLarge,
					"a message's content may be at most %d bytes", MaxToDeviceContent)
			}
			var obj map[string]json.RawMessage
			if json.Unmarshal(content, &obj) != nil || obj == nil {
				return nil, httpapi.BadJSON("the content for %s's device %s must be an object", u, d)
			}
		}
		if uid.Server() == t.server {
			local[uid] = byDevice
			continue
		}
		if remote == nil {
			remote = map[roomdag.ServerName]map[roomdag.UserID]map[string]json.RawMessage{}
		}
		if remote[uid.Server()] == nil {
			remote[uid.Server()] = map[roomdag.UserID]map[string]json.RawMessage{}
		}
		remote[uid.Server()][uid] = byDevice
	}
	stored, err := t.store.SendToDevice(r.Context(), storage.ToDeviceSend{Sender: user, SenderDevice: device, TxnID: txnID,
		NowMS: t.clock.Now().UnixMilli(), Type: evType, Messages: local})
	if err != nil {
		return nil, err
	}
	// The transaction row is stored even when every recipient is
	// remote, so that a replay does not send to them twice either.
	if stored && remote != nil && t.remote != nil {
		if err := t.remote.SendToDevice(r.Context(), user, evType, remote); err != nil {
			return nil, err
		}
	}
	return struct{}{}, nil
}

// directToDevice is the content of an m.direct_to_device EDU (spec:
// server-server API, "Send-to-device messaging").
type directToDevice struct {
	Sender    string                                `json:"sender"`
	Type      string                                `json:"type"`
	MessageID string                                `json:"message_id"`
	Messages  map[string]map[string]json.RawMessage `json:"messages"`
}

// ReceiveEDU stores the to-device messages of an m.direct_to_device EDU
// that origin sent, for the local users it names (others are ignored: a
// server delivers only to its own users). The sender must be a user of
// origin (spec: an EDU claiming another server's user is refused), and
// message_id makes a retried EDU store nothing new, as a client's
// transaction ID does (keyed by the sender, for storage.TxnLifetimeMS).
// The inbound federation transaction handler calls it with the EDU's
// content; a returned *httpapi.Error means the EDU was malformed.
func (t *ToDevice) ReceiveEDU(ctx context.Context, origin roomdag.ServerName, content json.RawMessage) error {
	var edu directToDevice
	if err := json.Unmarshal(content, &edu); err != nil {
		return httpapi.BadJSON("m.direct_to_device: %v", err)
	}
	sender, err := roomdag.ParseUserID(edu.Sender)
	if err != nil || sender.Server() != origin {
		return httpapi.Forbidden("m.direct_to_device: sender %q is not a user of %s", edu.Sender, origin)
	}
	if edu.Type == "" || edu.MessageID == "" {
		return httpapi.BadJSON("m.direct_to_device: type and message_id are required")
	}
	local := map[roomdag.UserID]map[string]json.RawMessage{}
	for u, byDevice := range edu.Messages {
		uid, err := roomdag.ParseUserID(u)
		if err != nil || uid.Server() != t.server {
			continue
		}
		kept := map[string]json.RawMessage{}
		for d, c := range byDevice {
			var obj map[string]json.RawMessage
			if d != "" && len(c) <= MaxToDeviceContent && json.Unmarshal(c, &obj) == nil && obj != nil {
				kept[d] = c
			}
		}
		local[uid] = kept
	}
	// Remote users have no devices here: device "" is the federation's
	// namespace for their message IDs.
	_, err = t.store.SendToDevice(ctx, storage.ToDeviceSend{Sender: sender, TxnID: edu.MessageID,
		NowMS: t.clock.Now().UnixMilli(), Type: edu.Type, Messages: local})
	return err
}
