package e2ee_test

import (
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/persistentchat/homeserver/testserver"
)

// pending sends n to-device messages of a realistic size (an Olm-encrypted
// room key is about 1.5 kB) to bob's device and returns the token bob
// synced at before them.
func pending(b *testing.B, srv *testserver.Server, n int) (bob *testserver.Client, since string) {
	b.Helper()
	alice := srv.Register("benchalice")
	bob = srv.Register("benchbob")
	since = syncTD(b, bob, "").NextBatch
	ciphertext := strings.Repeat("A", 1400)
	for i := range n {
		send(b, alice, "m.room.encrypted", map[string]map[string]any{bob.UserID: {bob.DeviceID: map[string]any{
			"algorithm": "m.olm.v1.curve25519-aes-sha2", "sender_key": "k", "ciphertext": map[string]any{"k": map[string]any{"type": 0, "body": ciphertext}},
			"seq": fmt.Sprint(i)}}})
	}
	return bob, since
}

// BenchmarkSyncToDevicePending1000: one incremental /sync of a device with
// 1,000 to-device messages waiting: it serves the first 100 (the bound),
// through HTTP. The token is not advanced, so every op finds the same
// 1,000 waiting.
func BenchmarkSyncToDevicePending1000(b *testing.B) {
	srv := testserver.Start(b, testserver.Options{})
	bob, since := pending(b, srv, 1000)
	path := "/_matrix/client/v3/sync?timeout=0&since=" + url.QueryEscape(since)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var out syncOut
		bob.MustDo("GET", path, nil, &out)
		if len(out.ToDevice.Events) != 100 {
			b.Fatalf("%d events", len(out.ToDevice.Events))
		}
	}
}

// BenchmarkSyncToDeviceDrain1000: a device syncs until it has received,
// and acknowledged, 1,000 waiting messages (ten syncs and the deletes);
// each op sends the 1,000 first, untimed.
func BenchmarkSyncToDeviceDrain1000(b *testing.B) {
	srv := testserver.Start(b, testserver.Options{})
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		bob, since := pending(b, srv, 1000)
		b.StartTimer()
		got := 0
		for {
			out := syncTD(b, bob, since)
			since = out.NextBatch
			if len(out.ToDevice.Events) == 0 {
				break
			}
			got += len(out.ToDevice.Events)
		}
		if got != 1000 {
			b.Fatalf("received %d", got)
		}
	}
}
