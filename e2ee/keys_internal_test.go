package e2ee

import (
	"encoding/json"
	"testing"

	"github.com/persistentchat/homeserver/storage"
)

// served adds cross-signing signatures and the display name to stored
// device keys, never replacing the device's own signature.
func TestServedDeviceKeys(t *testing.T) {
	stored := json.RawMessage(`{"device_id":"D","keys":{"ed25519:D":"k"},"signatures":{"@a:hs":{"ed25519:D":"own"}},"user_id":"@a:hs"}`)
	tests := []struct {
		name string
		dk   storage.DeviceKeys
		sigs map[string]map[string]string
		want string
	}{
		{"as stored", storage.DeviceKeys{JSON: stored}, nil, string(stored)},
		{"display name", storage.DeviceKeys{JSON: stored, DisplayName: "phone"}, nil,
			`{"device_id":"D","keys":{"ed25519:D":"k"},"signatures":{"@a:hs":{"ed25519:D":"own"}},"unsigned":{"device_display_name":"phone"},"user_id":"@a:hs"}`},
		{"self-signing signature added", storage.DeviceKeys{JSON: stored}, map[string]map[string]string{"@a:hs": {"ed25519:SSK": "ss"}},
			`{"device_id":"D","keys":{"ed25519:D":"k"},"signatures":{"@a:hs":{"ed25519:D":"own","ed25519:SSK":"ss"}},"user_id":"@a:hs"}`},
		{"own signature kept", storage.DeviceKeys{JSON: stored}, map[string]map[string]string{"@a:hs": {"ed25519:D": "forged"}, "@b:hs": {"ed25519:X": "x"}},
			`{"device_id":"D","keys":{"ed25519:D":"k"},"signatures":{"@a:hs":{"ed25519:D":"own"},"@b:hs":{"ed25519:X":"x"}},"user_id":"@a:hs"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(served(tc.dk, tc.sigs)); got != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}
