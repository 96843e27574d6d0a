package e2ee

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/persistentchat/homeserver/api"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// Dehydrated devices (MSC3814, "Dehydrated Devices with SSSS", under its
// unstable prefix as Element and matrix-rust-sdk call it): a user keeps at
// most one device without an access token whose private keys, encrypted
// with a key held in secret storage, the server stores as opaque
// device_data. Other devices send it room keys as to any device; a new
// login fetches what it received (POST .../events), then usually replaces
// it with a fresh one (PUT).

// DehydratedPrefix is the MSC's unstable path.
const DehydratedPrefix = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"

// DehydratedStore keeps dehydrated devices (storage/sqlstore).
type DehydratedStore interface {
	// PutDehydratedDevice makes device the user's dehydrated device,
	// creating it, and deletes the one it replaces (returned, "" if
	// none). storage.ErrConflict: the user has an ordinary device of
	// that ID.
	PutDehydratedDevice(ctx context.Context, user roomdag.UserID, device string, data json.RawMessage, name *string) (string, error)
	// DehydratedDevice is the user's dehydrated device, or
	// storage.ErrNotFound.
	DehydratedDevice(ctx context.Context, user roomdag.UserID) (storage.DehydratedDevice, error)
	// DeleteDehydratedDevice deletes it and returns its ID, or
	// storage.ErrNotFound.
	DeleteDehydratedDevice(ctx context.Context, user roomdag.UserID) (string, error)
}

// KeyUploader stores the keys a PUT /dehydrated_device carries for the new
// device (device_keys, one_time_keys, fallback_keys, shaped as a POST
// /keys/upload body), as /keys/upload would for that device: the key
// server's upload (e2ee/keys*.go). Called after the device exists; an
// error it returns as an *httpapi.Error (bad keys) reaches the client.
// Nil until the key server is wired: the keys are then not stored, and
// other users' clients cannot encrypt for the device.
type KeyUploader interface {
	UploadKeys(ctx context.Context, user roomdag.UserID, device string, keys json.RawMessage) error
}

// maxDehydratedBatch bounds one POST .../events answer, as /sync's.
const maxDehydratedBatch = 100

type putDehydratedBody struct {
	DeviceID    string          `json:"device_id"`
	DeviceData  json.RawMessage `json:"device_data"`
	DisplayName *string         `json:"initial_device_display_name"`
	DeviceKeys  json.RawMessage `json:"device_keys"`
	OneTimeKeys json.RawMessage `json:"one_time_keys"`
	Fallback    json.RawMessage `json:"fallback_keys"`
}

// putDehydrated is PUT /dehydrated_device: {"device_id": ...}.
func (t *ToDevice) putDehydrated(r *http.Request) (any, error) {
	user, _, _ := api.Caller(r)
	var body putDehydratedBody
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.DeviceID == "" {
		return nil, httpapi.MissingParam("device_id is required")
	}
	if body.DeviceData == nil {
		return nil, httpapi.MissingParam("device_data is required")
	}
	var data map[string]json.RawMessage
	if json.Unmarshal(body.DeviceData, &data) != nil || data == nil {
		return nil, httpapi.BadJSON("device_data must be an object")
	}
	if _, err := t.store.PutDehydratedDevice(r.Context(), user, body.DeviceID, body.DeviceData, body.DisplayName); err != nil {
		if errors.Is(err, storage.ErrConflict) {
			return nil, httpapi.InvalidParam("%s is already one of your devices", body.DeviceID)
		}
		return nil, err
	}
	if t.keys != nil && (body.DeviceKeys != nil || body.OneTimeKeys != nil || body.Fallback != nil) {
		keys, _ := json.Marshal(map[string]json.RawMessage{"device_keys": body.DeviceKeys,
			"one_time_keys": body.OneTimeKeys, "fallback_keys": body.Fallback})
		if err := t.keys.UploadKeys(r.Context(), user, body.DeviceID, keys); err != nil {
			return nil, err
		}
	}
	return map[string]string{"device_id": body.DeviceID}, nil
}

// getDehydrated is GET /dehydrated_device: {"device_id", "device_data"},
// 404 M_NOT_FOUND when the user has none.
func (t *ToDevice) getDehydrated(r *http.Request) (any, error) {
	user, _, _ := api.Caller(r)
	d, err := t.store.DehydratedDevice(r.Context(), user)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httpapi.NotFound("no dehydrated device")
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"device_id": d.DeviceID, "device_data": d.Data}, nil
}

// deleteDehydrated is DELETE /dehydrated_device: {"device_id"}, 404 when
// there is none.
func (t *ToDevice) deleteDehydrated(r *http.Request) (any, error) {
	user, _, _ := api.Caller(r)
	id, err := t.store.DeleteDehydratedDevice(r.Context(), user)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httpapi.NotFound("no dehydrated device")
	}
	if err != nil {
		return nil, err
	}
	return map[string]string{"device_id": id}, nil
}

// dehydratedEvents is POST /dehydrated_device/{deviceId}/events
// {"next_batch"?}: the dehydrated device's to-device messages after
// next_batch, at most maxDehydratedBatch, with the token of the last one
// (or, when none is left, of the stream's head, which then answers no
// events: the sign that all were fetched). As the MSC asks, and unlike
// /sync, nothing is deleted: a rehydration that fails half-way can be
// started again; the messages go with the device. A device ID that is not
// the user's dehydrated device is 403 M_FORBIDDEN.
func (t *ToDevice) dehydratedEvents(r *http.Request) (any, error) {
	user, _, _ := api.Caller(r)
	device := httpapi.PathParam(r, "deviceId")
	var body struct {
		NextBatch *string `json:"next_batch"`
	}
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	d, err := t.store.DehydratedDevice(r.Context(), user)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	if err != nil || d.DeviceID != device {
		return nil, httpapi.Forbidden("%s is not your dehydrated device", device)
	}
	var after int64
	if body.NextBatch != nil {
		if after, err = strconv.ParseInt(*body.NextBatch, 10, 64); err != nil || after < 0 {
			return nil, httpapi.InvalidParam("next_batch is not a token this server gave")
		}
	}
	head, err := t.store.ToDevicePos(r.Context())
	if err != nil {
		return nil, err
	}
	msgs, err := t.store.ToDeviceSince(r.Context(), user, device, after, head, maxDehydratedBatch)
	if err != nil {
		return nil, err
	}
	events := make([]json.RawMessage, len(msgs))
	for i, m := range msgs {
		events[i] = m.Event
	}
	next := max(head, after)
	if len(msgs) == maxDehydratedBatch {
		next = msgs[len(msgs)-1].Pos
	}
	return map[string]any{"events": events, "next_batch": strconv.FormatInt(next, 10)}, nil
}
