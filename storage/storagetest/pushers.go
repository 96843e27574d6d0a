package storagetest

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

func testPushers(t *testing.T, open Opener) {
	db := open(t)
	ctx := context.Background()
	pusher := func(user, device, key string) storage.Pusher {
		return storage.Pusher{User: roomdag.UserID(user), DeviceID: device, Kind: "http", AppID: "app", PushKey: key,
			AppDisplayName: "App", DeviceDisplayName: "Phone", Lang: "en",
			Data: json.RawMessage(`{"url":"https://gw.example/_matrix/push/v1/notify"}`), PushKeyTS: 1000}
	}
	if _, err := db.SetPusher(ctx, pusher("@a:x", "DEV1", "k1"), false); err != nil {
		t.Fatal(err)
	}
	ps, err := db.Pushers(ctx, "@a:x")
	if err != nil || len(ps) != 1 {
		t.Fatalf("pushers = %+v, %v", ps, err)
	}
	first := ps[0]
	if err := db.PusherProgress(ctx, first.ID, 40, 0); err != nil {
		t.Fatal(err)
	}
	if err := db.PusherProgress(ctx, first.ID, 30, 7); err != nil {
		t.Fatal(err)
	}
	update := pusher("@a:x", "DEV2", "k1")
	update.Lang = "de"
	if _, err := db.SetPusher(ctx, update, false); err != nil {
		t.Fatal(err)
	}
	got, err := db.Pusher(ctx, first.ID)
	if err != nil || got.Lang != "de" || got.DeviceID != "DEV1" || got.LastPos != 40 || got.FailingSince != 0 {
		t.Fatalf("after progress and update: %+v, %v; want lang de, device DEV1, position 40, not failing", got, err)
	}

	// Without append, another user's pusher with the same key goes.
	removed, err := db.SetPusher(ctx, pusher("@b:x", "DEVB", "k1"), false)
	if err != nil || len(removed) != 1 || removed[0] != "@a:x" {
		t.Fatalf("removed = %v, %v; want [@a:x]", removed, err)
	}
	if _, err := db.Pusher(ctx, first.ID); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("replaced pusher: %v, want ErrNotFound", err)
	}
	if err := db.PusherProgress(ctx, first.ID, 50, 0); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("progress of a deleted pusher: %v, want ErrNotFound", err)
	}

	if _, err := db.SetPusher(ctx, pusher("@a:x", "DEV1", "k2"), true); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteDevices(ctx, "@a:x", []string{"DEV1"}, ""); err != nil {
		t.Fatal(err)
	}
	all, err := db.AllPushers(ctx)
	if err != nil || len(all) != 1 || all[0].User != "@b:x" {
		t.Fatalf("after deleting @a:x's device: %+v, %v; want only @b:x's pusher", all, err)
	}
}
