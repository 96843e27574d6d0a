package storagetest

import (
	"context"
	gosync "sync"
	"testing"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// testTyping: stored typing changes (the typing stream of processes that
// share a database) take dense positions, are announced in their batch's
// change, are read back above a position with the head, and an expiry is
// stored only once the stored notification has run out.
func testTyping(t *testing.T, open Opener) {
	db := open(t)
	ctx := context.Background()
	var mu gosync.Mutex
	var heard []storage.TypingRow
	db.SetCommitHook(func(c *storage.Change) {
		mu.Lock()
		heard = append(heard, c.Typing...)
		mu.Unlock()
	})
	for i, put := range []struct {
		room, user string
		expires    int64
	}{{"!a:hs", "@u:hs", 5000}, {"!a:hs", "@v:hs", 6000}, {"!a:hs", "@u:hs", 0}, {"!b:hs", "@u:hs", 7000}} {
		pos, err := db.PutTyping(ctx, roomdag.RoomID(put.room), roomdag.UserID(put.user), put.expires)
		if err != nil || pos != int64(i+1) {
			t.Fatalf("PutTyping %d = %d, %v; want position %d", i, pos, err, i+1)
		}
	}
	rows, head, err := db.TypingSince(ctx, 1)
	if err != nil || head != 4 {
		t.Fatalf("TypingSince(1) head %d, %v; want 4", head, err)
	}
	// @u in !a was overwritten at 3; the row at 1 is gone.
	want := []storage.TypingRow{{Room: "!a:hs", User: "@v:hs", ExpiresMS: 6000, Pos: 2},
		{Room: "!a:hs", User: "@u:hs", Pos: 3}, {Room: "!b:hs", User: "@u:hs", ExpiresMS: 7000, Pos: 4}}
	if len(rows) != len(want) {
		t.Fatalf("TypingSince(1) = %+v, want %+v", rows, want)
	}
	for i := range want {
		if rows[i] != want[i] {
			t.Fatalf("TypingSince(1) = %+v, want %+v", rows, want)
		}
	}
	if ok, err := db.ExpireTyping(ctx, "!b:hs", "@u:hs", 6999); err != nil || ok {
		t.Fatalf("ExpireTyping before its end = %v, %v", ok, err)
	}
	if ok, err := db.ExpireTyping(ctx, "!b:hs", "@u:hs", 7000); err != nil || !ok {
		t.Fatalf("ExpireTyping at its end = %v, %v", ok, err)
	}
	if ok, err := db.ExpireTyping(ctx, "!b:hs", "@u:hs", 8000); err != nil || ok {
		t.Fatalf("ExpireTyping again = %v, %v; the first expiry stopped it", ok, err)
	}
	rows, head, err = db.TypingSince(ctx, 4)
	if err != nil || head != 5 || len(rows) != 1 || rows[0] != (storage.TypingRow{Room: "!b:hs", User: "@u:hs", Pos: 5}) {
		t.Fatalf("TypingSince(4) = %+v, head %d, %v", rows, head, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(heard) != 5 || heard[4].Pos != 5 || heard[0].Pos != 1 {
		t.Fatalf("the commit hook heard %+v, want the five changes", heard)
	}
}
