package e2ee_test

import (
	"fmt"
	"testing"

	"github.com/persistentchat/homeserver/testserver"
)

// BenchmarkKeysClaim100x5 measures one POST /keys/claim of a key from each
// of 100 users' 5 devices (500 keys in one transaction), as a client does
// before sending its first message to a room of 100: ns/op is one claim
// through HTTP. Each device holds keysPerDevice one-time keys; they are
// replenished, off the clock, when used up.
func BenchmarkKeysClaim100x5(b *testing.B) {
	const users, devices, keysPerDevice = 100, 5, 50
	hs := testserver.Start(b, testserver.Options{})
	claimer := hs.Register("claimer")
	var all []*testserver.Client
	req := map[string]map[string]string{}
	for range users {
		first := hs.Register("u")
		req[first.UserID] = map[string]string{}
		for d := range devices {
			c := first
			if d > 0 {
				c = loginAs(b, hs, first.UserID)
			}
			all = append(all, c)
			req[first.UserID][c.DeviceID] = "signed_curve25519"
		}
	}
	round := 0
	replenish := func() {
		for _, c := range all {
			keys := map[string]any{}
			for k := range keysPerDevice {
				keys[fmt.Sprintf("signed_curve25519:r%dk%d", round, k)] = map[string]any{"key": fmt.Sprintf("key%d", k)}
			}
			c.MustDo("POST", "/_matrix/client/v3/keys/upload", map[string]any{"one_time_keys": keys}, nil)
		}
		round++
	}
	replenish()
	body := map[string]any{"one_time_keys": req}
	b.ResetTimer()
	for i := range b.N {
		if i > 0 && i%keysPerDevice == 0 {
			b.StopTimer()
			replenish()
			b.StartTimer()
		}
		var out struct {
			Keys map[string]map[string]map[string]any `json:"one_time_keys"`
		}
		claimer.MustDo("POST", "/_matrix/client/v3/keys/claim", body, &out)
		if len(out.Keys) != users {
			b.Fatalf("claimed keys of %d users, want %d", len(out.Keys), users)
		}
	}
}
