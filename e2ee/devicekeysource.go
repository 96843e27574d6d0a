package e2ee

import (
	"context"
	"encoding/json"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// StoreDeviceKeys is the key server's store as cross-signing's
// DeviceKeySource: the device keys a signature upload is checked against.
type StoreDeviceKeys struct{ Store Store }

// DeviceKeys returns the stored keys of one device, storage.ErrNotFound
// when it has none.
func (s StoreDeviceKeys) DeviceKeys(ctx context.Context, user roomdag.UserID, device string) (json.RawMessage, error) {
	stored, err := s.Store.DeviceKeysOf(ctx, map[roomdag.UserID][]string{user: {device}})
	if err != nil {
		return nil, err
	}
	for _, dk := range stored {
		if dk.Device == device {
			return dk.JSON, nil
		}
	}
	return nil, storage.ErrNotFound
}
