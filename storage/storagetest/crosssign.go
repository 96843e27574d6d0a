package storagetest

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// testCrossSigningStore: keys replace keys of their usage, signatures
// their own, and replacing a key drops the signatures made by it and of it.
func testCrossSigningStore(t *testing.T, open Opener) {
	db := open(t)
	ctx := context.Background()
	const a, b roomdag.UserID = "@a:hs", "@b:hs"
	put := func(user roomdag.UserID, usage, id string) {
		t.Helper()
		if err := db.PutCrossSigningKeys(ctx, user, []storage.CrossSigningKey{{User: user, Usage: usage, KeyID: id, JSON: json.RawMessage(`{"k":"` + id + `"}`)}}); err != nil {
			t.Fatal(err)
		}
	}
	put(a, "master", "A1")
	put(a, "user_signing", "AU1")
	put(b, "master", "B1")
	if err := db.PutKeySignatures(ctx, []storage.KeySignature{
		{TargetUser: b, TargetKeyID: "B1", Signer: a, SignerKeyID: "ed25519:AU1", Signature: "s1"},
		{TargetUser: a, TargetKeyID: "A1", Signer: a, SignerKeyID: "ed25519:DEV", Signature: "s2"},
		{TargetUser: a, TargetKeyID: "DEV", Signer: a, SignerKeyID: "ed25519:ASS", Signature: "s3"},
	}); err != nil {
		t.Fatal(err)
	}
	// The same signature again replaces.
	if err := db.PutKeySignatures(ctx, []storage.KeySignature{{TargetUser: b, TargetKeyID: "B1", Signer: a, SignerKeyID: "ed25519:AU1", Signature: "s1b"}}); err != nil {
		t.Fatal(err)
	}
	sigsOf := func(u roomdag.UserID) map[string]string {
		t.Helper()
		got, err := db.KeySignatures(ctx, []roomdag.UserID{u})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, s := range got {
			out[s.TargetKeyID+"/"+s.SignerKeyID] = s.Signature
		}
		return out
	}
	if got := sigsOf(b); len(got) != 1 || got["B1/ed25519:AU1"] != "s1b" {
		t.Fatalf("b's signatures: %v", got)
	}
	keys, err := db.CrossSigningKeys(ctx, []roomdag.UserID{a, b, "@nobody:hs"})
	if err != nil || len(keys) != 3 {
		t.Fatalf("keys: %v, %v", keys, err)
	}
	// Replacing a's user-signing key drops its signature of b's master;
	// replacing a's master drops the device's signature of it and keeps
	// the self-signing key's of the device.
	put(a, "user_signing", "AU2")
	if got := sigsOf(b); len(got) != 0 {
		t.Fatalf("b's signatures after a's user-signing key changed: %v", got)
	}
	put(a, "master", "A1") // the same key: nothing dropped
	if got := sigsOf(a); len(got) != 2 {
		t.Fatalf("a's signatures after re-putting the same master: %v", got)
	}
	put(a, "master", "A2")
	if got := sigsOf(a); len(got) != 1 || got["DEV/ed25519:ASS"] != "s3" {
		t.Fatalf("a's signatures after the master changed: %v", got)
	}
}

// testKeyBackupStore: versions are numbered per user and never reused,
// writes go to the newest only, the replacement rule decides, and etag
// and count follow the sessions.
func testKeyBackupStore(t *testing.T, open Opener) {
	db := open(t)
	ctx := context.Background()
	const a roomdag.UserID = "@a:hs"
	if _, err := db.Backup(ctx, a, 0); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("no backup: %v", err)
	}
	v1, err := db.CreateBackup(ctx, a, "alg", json.RawMessage(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	v2, err := db.CreateBackup(ctx, a, "alg", json.RawMessage(`{}`))
	if err != nil || v2 <= v1 {
		t.Fatalf("second version %d after %d: %v", v2, v1, err)
	}
	if other, err := db.CreateBackup(ctx, "@b:hs", "alg", json.RawMessage(`{}`)); err != nil || other != 1 {
		t.Fatalf("another user's first version: %d, %v", other, err)
	}
	sess := func(fmi int64, data string) storage.BackupSession {
		return storage.BackupSession{Room: "!r:hs", Session: "s", FirstMessageIndex: fmi, SessionData: json.RawMessage(`{"d":"` + data + `"}`)}
	}
	lower := func(old, new *storage.BackupSession) bool { return new.FirstMessageIndex < old.FirstMessageIndex }
	var wrong *storage.WrongBackupVersion
	if _, err := db.PutBackupSessions(ctx, a, v1, []storage.BackupSession{sess(1, "x")}, lower); !errors.As(err, &wrong) || wrong.Current != v2 {
		t.Fatalf("put to the old version: %v", err)
	}
	b1, err := db.PutBackupSessions(ctx, a, v2, []storage.BackupSession{sess(5, "first")}, lower)
	if err != nil || b1.Count != 1 {
		t.Fatalf("put: %+v, %v", b1, err)
	}
	b2, err := db.PutBackupSessions(ctx, a, v2, []storage.BackupSession{sess(6, "worse")}, lower)
	if err != nil || b2.ETag != b1.ETag {
		t.Fatalf("a refused replacement: %+v after %+v, %v", b2, b1, err)
	}
	b3, err := db.PutBackupSessions(ctx, a, v2, []storage.BackupSession{sess(4, "better")}, lower)
	if err != nil || b3.ETag == b1.ETag || b3.Count != 1 {
		t.Fatalf("a replacement: %+v after %+v, %v", b3, b1, err)
	}
	got, err := db.BackupSessions(ctx, a, v2, "!r:hs", "s")
	if err != nil || len(got) != 1 || string(got[0].SessionData) != `{"d":"better"}` {
		t.Fatalf("session: %+v, %v", got, err)
	}
	if err := db.DeleteBackup(ctx, a, v2); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteBackup(ctx, a, v2); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("deleting twice: %v", err)
	}
	if _, err := db.BackupSessions(ctx, a, v2, "", ""); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("sessions of a deleted version: %v", err)
	}
	if cur, err := db.Backup(ctx, a, 0); err != nil || cur.Version != v1 {
		t.Fatalf("current after deleting the newest: %+v, %v", cur, err)
	}
	if v3, err := db.CreateBackup(ctx, a, "alg", json.RawMessage(`{}`)); err != nil || v3 <= v2 {
		t.Fatalf("a version after a deleted one: %d, %v", v3, err)
	}
}
