package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"github.com/persistentchat/homeserver/storage/sqlite"
	"github.com/persistentchat/homeserver/storage/sqlstore"
	"github.com/persistentchat/homeserver/storage/storagetest"
)

func engines(b *testing.B) map[string]func(b *testing.B) *sqlstore.DB {
	return map[string]func(b *testing.B) *sqlstore.DB{
		"sqlite": func(b *testing.B) *sqlstore.DB {
			db, err := sqlite.Open(filepath.Join(b.TempDir(), "hs.db"), discard())
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { db.Close() })
			return db
		},
		"postgres": func(b *testing.B) *sqlstore.DB {
			db, err := Open(Options{DSN: testDSN(b)}, discard())
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { db.Close() })
			return db
		},
	}
}

// BenchmarkAppendMessage: one sender, one room, each event durable before the next.
func BenchmarkAppendMessage(b *testing.B) {
	for name, open := range engines(b) {
		b.Run(name, func(b *testing.B) {
			db := open(b)
			rooms := storagetest.NewRooms(b, db)
			room := roomdag.RoomID("!bench:test.local")
			owner := storagetest.CreateRoom(b, rooms, room)
			ctx := context.Background()
			i := 0
			for b.Loop() {
				i++
				if _, _, err := rooms.Append(ctx, room, roomdag.ProtoEvent{Type: roomdag.TypeMessage, Sender: owner,
					Content: json.RawMessage(fmt.Sprintf(`{"msgtype":"m.text","body":"message %d about the deploy of build %d"}`, i, i%97))}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSearch: a prefix word over 5000 messages, of which 1 in 97 match, newest 50.
func BenchmarkSearch(b *testing.B) {
	for name, open := range engines(b) {
		b.Run(name, func(b *testing.B) {
			db := open(b)
			rooms := storagetest.NewRooms(b, db)
			room := roomdag.RoomID("!bench:test.local")
			owner := storagetest.CreateRoom(b, rooms, room)
			ctx := context.Background()
			for i := range 5000 {
				if _, _, err := rooms.Append(ctx, room, roomdag.ProtoEvent{Type: roomdag.TypeMessage, Sender: owner,
					Content: json.RawMessage(fmt.Sprintf(`{"msgtype":"m.text","body":"message %d about build%d of the thing"}`, i, i%97))}); err != nil {
					b.Fatal(err)
				}
			}
			q := storage.SearchQuery{Phrases: storage.ParseSearchTerm("about build42"), Rooms: []roomdag.RoomID{room}, Limit: 50}
			for b.Loop() {
				hits, err := db.SearchEvents(ctx, q)
				if err != nil || len(hits) < 50 {
					b.Fatal(len(hits), err)
				}
			}
		})
	}
}

// BenchmarkTakeRateToken: one shared rate limit take on a bucket that
// always has tokens, the cost a limited request pays when buckets are in
// the database (api/ratelimit.go); in memory the same take is a map
// lookup under a mutex (api's BenchmarkLimiter). parallel: 8 takes at once
// on one key, the contention of a flood.
func BenchmarkTakeRateToken(b *testing.B) {
	for name, open := range engines(b) {
		b.Run(name, func(b *testing.B) {
			db := open(b)
			ctx := context.Background()
			now := int64(1 << 40)
			for b.Loop() {
				if _, err := db.TakeRateToken(ctx, "login @u:x", now, 1, 1<<30); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/parallel", func(b *testing.B) {
			db := open(b)
			ctx := context.Background()
			now := int64(1 << 40)
			b.SetParallelism(4) // 8 goroutines on 2 cores
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := db.TakeRateToken(ctx, "login @u:x", now, 1, 1<<30); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
