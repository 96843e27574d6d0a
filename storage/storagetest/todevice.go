package storagetest

import (
	"context"
	"encoding/json"
	"errors"
	gosync "sync"
	"testing"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// testToDevice: to-device messages go to existing devices only, "*" to
// each, take dense positions that survive deletes, are announced per
// user, a replayed transaction stores nothing (for a day), an acknowledgement deletes
// what it covers, and a deleted device (dehydrated or not) loses its
// messages.
func testToDevice(t *testing.T, open Opener) {
	db := open(t)
	ctx := context.Background()
	var mu gosync.Mutex
	var heard []storage.UserPos
	db.SetCommitHook(func(c *storage.Change) {
		mu.Lock()
		heard = append(heard, c.ToDevice...)
		mu.Unlock()
	})
	bob := roomdag.UserID("@bob:hs")
	for _, d := range []string{"B1", "B2"} {
		if _, err := db.CreateDevice(ctx, bob, d, nil); err != nil {
			t.Fatal(err)
		}
	}
	msg := func(txn string, byDevice map[string]string) storage.ToDeviceSend {
		m := map[string]json.RawMessage{}
		for d, c := range byDevice {
			m[d] = json.RawMessage(c)
		}
		return storage.ToDeviceSend{Sender: "@alice:hs", SenderDevice: "A1", TxnID: txn, NowMS: 1000, Type: "m.test",
			Messages: map[roomdag.UserID]map[string]json.RawMessage{bob: m, "@nobody:hs": {"*": json.RawMessage(`{}`)}}}
	}
	for _, s := range []struct {
		send storage.ToDeviceSend
		want bool
	}{
		{msg("t1", map[string]string{"*": `{"n":1}`}), true},                     // B1 at 1, B2 at 2
		{msg("t1", map[string]string{"*": `{"n":9}`}), false},                    // replay
		{msg("t2", map[string]string{"B2": `{"n":3}`, "GONE": `{"n":0}`}), true}, // B2 at 3
	} {
		stored, err := db.SendToDevice(ctx, s.send)
		if err != nil || stored != s.want {
			t.Fatalf("SendToDevice(%s) = %v, %v; want %v", s.send.TxnID, stored, err, s.want)
		}
	}
	if pos, err := db.ToDevicePos(ctx); err != nil || pos != 3 {
		t.Fatalf("ToDevicePos = %d, %v; want 3", pos, err)
	}
	if h, err := db.StreamHeads(ctx); err != nil || h.ToDevice != 3 {
		t.Fatalf("StreamHeads().ToDevice = %d, %v; want 3", h.ToDevice, err)
	}
	mu.Lock()
	if len(heard) != 2 || heard[0] != (storage.UserPos{User: bob, Pos: 2}) || heard[1] != (storage.UserPos{User: bob, Pos: 3}) {
		t.Fatalf("announced %+v", heard)
	}
	mu.Unlock()
	want := func(device string, after int64, want ...int64) {
		t.Helper()
		msgs, err := db.ToDeviceSince(ctx, bob, device, after, 100, 10)
		if err != nil {
			t.Fatal(err)
		}
		var got []int64
		for _, m := range msgs {
			var ev struct {
				Sender, Type string
				Content      json.RawMessage
			}
			if err := json.Unmarshal(m.Event, &ev); err != nil || ev.Sender != "@alice:hs" || ev.Type != "m.test" {
				t.Fatalf("event %s: %v", m.Event, err)
			}
			got = append(got, m.Pos)
		}
		if len(got) != len(want) {
			t.Fatalf("%s after %d: positions %v, want %v", device, after, got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%s after %d: positions %v, want %v", device, after, got, want)
			}
		}
	}
	want("B1", 0, 1)
	want("B2", 0, 2, 3)
	want("B2", 2, 3)
	if err := db.AckToDevice(ctx, bob, "B2", 2); err != nil {
		t.Fatal(err)
	}
	want("B2", 0, 3)
	want("B1", 0, 1) // another device's acknowledgement
	if err := db.DeleteDevices(ctx, bob, []string{"B1"}, ""); err != nil {
		t.Fatal(err)
	}
	want("B1", 0)
	// Positions go on above the deleted rows.
	if err := db.AckToDevice(ctx, bob, "B2", 3); err != nil {
		t.Fatal(err)
	}
	if _, err := db.SendToDevice(ctx, msg("t3", map[string]string{"B2": `{}`})); err != nil {
		t.Fatal(err)
	}
	want("B2", 0, 4)
	// A transaction ID is forgotten after storage.TxnLifetimeMS.
	late := msg("t1", map[string]string{"B2": `{}`})
	late.NowMS += storage.TxnLifetimeMS
	if stored, err := db.SendToDevice(ctx, late); err != nil || stored {
		t.Fatalf("a replay at the end of the lifetime = %v, %v; want a replay", stored, err)
	}
	late.NowMS++
	if stored, err := db.SendToDevice(ctx, late); err != nil || !stored {
		t.Fatalf("the same ID after the lifetime = %v, %v; want a new send", stored, err)
	}
	if err := db.AckToDevice(ctx, bob, "B2", 5); err != nil {
		t.Fatal(err)
	}

	// Dehydrated devices: one per user; replacing deletes the old.
	if _, err := db.DehydratedDevice(ctx, bob); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("DehydratedDevice with none: %v", err)
	}
	if _, err := db.PutDehydratedDevice(ctx, bob, "B2", json.RawMessage(`{}`), nil); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("PutDehydratedDevice over an ordinary device: %v", err)
	}
	if old, err := db.PutDehydratedDevice(ctx, bob, "D1", json.RawMessage(`{"v":1}`), nil); err != nil || old != "" {
		t.Fatalf("PutDehydratedDevice D1 = %q, %v", old, err)
	}
	if _, err := db.SendToDevice(ctx, msg("t4", map[string]string{"*": `{}`})); err != nil {
		t.Fatal(err)
	}
	want("D1", 0, 7) // B2 got 6
	if old, err := db.PutDehydratedDevice(ctx, bob, "D2", json.RawMessage(`{"v":2}`), nil); err != nil || old != "D1" {
		t.Fatalf("PutDehydratedDevice D2 = %q, %v; want D1 replaced", old, err)
	}
	want("D1", 0)
	if d, err := db.DehydratedDevice(ctx, bob); err != nil || d.DeviceID != "D2" || string(d.Data) != `{"v":2}` {
		t.Fatalf("DehydratedDevice = %+v, %v", d, err)
	}
	devs, err := db.Devices(ctx, bob)
	if err != nil || len(devs) != 2 || devs[0].DeviceID != "B2" || devs[1].DeviceID != "D2" {
		t.Fatalf("Devices = %+v, %v", devs, err)
	}
	if id, err := db.DeleteDehydratedDevice(ctx, bob); err != nil || id != "D2" {
		t.Fatalf("DeleteDehydratedDevice = %q, %v", id, err)
	}
	if _, err := db.DeleteDehydratedDevice(ctx, bob); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("DeleteDehydratedDevice again: %v", err)
	}
	if devs, _ := db.Devices(ctx, bob); len(devs) != 1 {
		t.Fatalf("Devices after the delete = %+v", devs)
	}
}
