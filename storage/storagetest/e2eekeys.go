package storagetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	gosync "sync"
	"testing"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// testE2EEKeys checks the key store (e2ee.Store): uploads with conflicts
// refused as a whole, claims oldest first then the fallback key, claims
// from many goroutines never sharing a key, and the device-list stream
// with its announcements.
func testE2EEKeys(t *testing.T, open Opener) {
	db := open(t)
	ctx := context.Background()
	var mu gosync.Mutex
	var announced []storage.UserPos
	db.SetCommitHook(func(c *storage.Change) {
		mu.Lock()
		announced = append(announced, c.DeviceLists...)
		mu.Unlock()
	})
	const alice = roomdag.UserID("@alice:test.local")
	key := func(alg, id string) storage.OneTimeKey {
		j, _ := json.Marshal(map[string]string{"key": id})
		return storage.OneTimeKey{Algorithm: alg, KeyID: id, JSON: j, Match: storage.KeyMatch(j)}
	}
	dk := json.RawMessage(`{"device_id":"D","user_id":"@alice:test.local"}`)
	counts, err := db.UploadKeys(ctx, alice, "D", storage.KeyUpload{DeviceKeys: dk, OneTime: []storage.OneTimeKey{key("a", "2"), key("a", "1"), key("b", "1")}})
	if err != nil || counts["a"] != 2 || counts["b"] != 1 {
		t.Fatalf("upload: %v %v", counts, err)
	}
	pos, err := db.DeviceListPos(ctx)
	if err != nil || pos != 1 {
		t.Fatalf("device-list position after new device keys: %d %v", pos, err)
	}
	// The same device keys again change nothing; a conflicting key
	// refuses the whole upload.
	conflict := key("a", "1")
	conflict.JSON, conflict.Match = json.RawMessage(`"other"`), "other"
	_, err = db.UploadKeys(ctx, alice, "D", storage.KeyUpload{DeviceKeys: dk, OneTime: []storage.OneTimeKey{key("a", "3"), conflict}})
	var kc *storage.KeyConflictError
	if !errors.As(err, &kc) || kc.KeyID != "a:1" {
		t.Fatalf("conflicting upload: %v", err)
	}
	if counts, _ := db.OneTimeKeyCounts(ctx, alice, "D"); counts["a"] != 2 {
		t.Fatalf("a refused upload stored keys: %v", counts)
	}
	if pos, _ := db.DeviceListPos(ctx); pos != 1 {
		t.Fatalf("unchanged device keys advanced the stream to %d", pos)
	}
	if _, err := db.UploadKeys(ctx, alice, "D", storage.KeyUpload{Fallback: []storage.OneTimeKey{key("a", "F")}}); err != nil {
		t.Fatal(err)
	}
	claim := []storage.KeyClaim{{User: alice, Device: "D", Algorithm: "a"}}
	for i, want := range []string{"2", "1", "F", "F"} { // upload order, then the fallback
		got, err := db.ClaimKeys(ctx, claim)
		if err != nil || len(got) != 1 || got[0].KeyID != want {
			t.Fatalf("claim %d: %+v %v, want %s", i, got, err, want)
		}
	}
	if fb, _ := db.UnusedFallbackKeyTypes(ctx, alice, "D"); len(fb) != 0 {
		t.Fatalf("used fallback key reported unused: %v", fb)
	}
	// Many claimers at once share no key.
	var keys []storage.OneTimeKey
	for i := range 30 {
		keys = append(keys, key("c", fmt.Sprintf("k%02d", i)))
	}
	if _, err := db.UploadKeys(ctx, alice, "D", storage.KeyUpload{OneTime: keys}); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var wg gosync.WaitGroup
	for range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := db.ClaimKeys(ctx, []storage.KeyClaim{{User: alice, Device: "D", Algorithm: "c"}})
			mu.Lock()
			defer mu.Unlock()
			if err != nil || len(got) != 1 || seen[got[0].KeyID] {
				t.Errorf("concurrent claim: %+v %v", got, err)
				return
			}
			seen[got[0].KeyID] = true
		}()
	}
	wg.Wait()
	// The device list stream: one row per user at its newest change.
	p2, err := db.DeviceListChanged(ctx, "@bob:test.local")
	if err != nil || p2 != 2 {
		t.Fatalf("bob's change at %d %v", p2, err)
	}
	p3, _ := db.DeviceListChanged(ctx, alice)
	users, err := db.DeviceListsChangedSince(ctx, 0, p3)
	if err != nil || fmt.Sprint(users) != "[@bob:test.local @alice:test.local]" {
		t.Fatalf("changed since 0: %v %v", users, err)
	}
	if users, _ := db.DeviceListsChangedSince(ctx, p2, p3); fmt.Sprint(users) != "[@alice:test.local]" {
		t.Fatalf("changed since %d: %v", p2, users)
	}
	if h, err := db.StreamHeads(ctx); err != nil || h.DeviceLists != p3 {
		t.Fatalf("stream heads: %+v %v", h, err)
	}
	mu.Lock()
	got := fmt.Sprint(announced)
	mu.Unlock()
	if want := fmt.Sprint([]storage.UserPos{{User: alice, Pos: 1}, {User: "@bob:test.local", Pos: 2}, {User: alice, Pos: 3}}); got != want {
		t.Fatalf("announced %s, want %s", got, want)
	}
}
