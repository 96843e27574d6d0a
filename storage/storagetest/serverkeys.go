package storagetest

import (
	"bytes"
	"context"
	"testing"

	"github.com/persistentchat/homeserver/storage"
)

// testServerKeys: keys are stored per (server, key ID), replaced whole
// by a later store, and listed per server in key ID order.
func testServerKeys(t *testing.T, open Opener) {
	db := open(t)
	ctx := context.Background()
	if keys, err := db.ServerKeys(ctx, "a.test"); err != nil || len(keys) != 0 {
		t.Fatalf("empty store: %v, %v", keys, err)
	}
	k1 := storage.ServerKey{ServerName: "a.test", KeyID: "ed25519:b", PublicKey: []byte{1, 2, 0, 255},
		ValidUntilTS: 2000, FetchedTS: 1000, Response: []byte(`{"server_name":"a.test"}`)}
	k2 := storage.ServerKey{ServerName: "a.test", KeyID: "ed25519:a", PublicKey: []byte{3}, ExpiredTS: 500, FetchedTS: 1000, Response: []byte(`{}`)}
	other := storage.ServerKey{ServerName: "b.test", KeyID: "ed25519:a", PublicKey: []byte{9}, ValidUntilTS: 1, Response: []byte(`{}`)}
	if err := db.StoreServerKeys(ctx, []storage.ServerKey{k1, k2, other}); err != nil {
		t.Fatal(err)
	}
	k1.ValidUntilTS, k1.ExpiredTS, k1.FetchedTS, k1.Response = 9000, 8000, 3000, []byte(`{"v":2}`)
	if err := db.StoreServerKeys(ctx, []storage.ServerKey{k1}); err != nil {
		t.Fatal(err)
	}
	keys, err := db.ServerKeys(ctx, "a.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0].KeyID != "ed25519:a" || keys[1].KeyID != "ed25519:b" {
		t.Fatalf("keys of a.test: %+v", keys)
	}
	got := keys[1]
	if !bytes.Equal(got.PublicKey, k1.PublicKey) || got.ValidUntilTS != 9000 || got.ExpiredTS != 8000 ||
		got.FetchedTS != 3000 || string(got.Response) != `{"v":2}` {
		t.Errorf("replaced key read back as %+v", got)
	}
	if keys[0].ExpiredTS != 500 || !bytes.Equal(keys[0].PublicKey, []byte{3}) {
		t.Errorf("old key read back as %+v", keys[0])
	}
}
