package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage/sqlstore"
	"github.com/persistentchat/homeserver/storage/storagetest"
)

// BenchmarkSeveralProcesses: 8 senders, each appending messages and waiting
// for each to be durable, spread over one store or two on one database
// (two homeserver processes), to one shared room or a room per sender.
// Reports messages/s and the p50 and p99 latency of one Append.
func BenchmarkSeveralProcesses(b *testing.B) {
	const senders = 8
	for _, stores := range []int{1, 2} {
		for _, shared := range []bool{true, false} {
			rooms := "room-per-sender"
			if shared {
				rooms = "one-room"
			}
			b.Run(fmt.Sprintf("stores=%d/%s", stores, rooms), func(b *testing.B) {
				ps := openProcesses(b, testDSN(b), stores)
				ids := make([]roomdag.RoomID, senders)
				var owner roomdag.UserID
				for i := range ids {
					ids[i] = roomdag.RoomID(fmt.Sprintf("!bench%d:test.local", i))
					if shared {
						ids[i] = ids[0]
					}
					if i == 0 || !shared {
						owner = storagetest.CreateRoom(b, ps[i%stores].rooms, ids[i])
					}
				}
				ctx := context.Background()
				var left atomic.Int64
				left.Store(int64(b.N))
				lat := make([][]time.Duration, senders)
				var wg sync.WaitGroup
				b.ResetTimer()
				start := time.Now()
				for s := range senders {
					wg.Add(1)
					go func() {
						defer wg.Done()
						p := ps[s%stores]
						for n := 0; left.Add(-1) >= 0; n++ {
							t0 := time.Now()
							if _, _, err := p.rooms.Append(ctx, ids[s], roomdag.ProtoEvent{Type: roomdag.TypeMessage, Sender: owner,
								Content: json.RawMessage(fmt.Sprintf(`{"msgtype":"m.text","body":"sender %d message %d"}`, s, n))}); err != nil {
								b.Error(err)
								return
							}
							lat[s] = append(lat[s], time.Since(t0))
						}
					}()
				}
				wg.Wait()
				elapsed := time.Since(start)
				b.StopTimer()
				all := slices.Concat(lat...)
				slices.Sort(all)
				if len(all) > 0 {
					b.ReportMetric(float64(len(all))/elapsed.Seconds(), "msgs/s")
					b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
					b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
				}
			})
		}
	}
}

// soleWriter is PostgreSQL's dialect claiming that no other process writes
// the database: the writer keeps its counters in memory (as on SQLite)
// instead of reloading them in every batch.
type soleWriter struct{ Dialect }

func (soleWriter) ConcurrentWriters() bool { return false }

// BenchmarkCounterReload: what reloading the counters in every batch costs
// one sender whose every event is a batch of its own (the worst case), on
// a database holding 5000 events: reload is the dialect as shipped,
// in-memory the same store told it is the only writer.
func BenchmarkCounterReload(b *testing.B) {
	for _, mode := range []string{"reload", "in-memory"} {
		b.Run(mode, func(b *testing.B) {
			w, r, err := openMigrated(Options{DSN: testDSN(b)}, discard())
			if err != nil {
				b.Fatal(err)
			}
			var d sqlstore.Dialect = Dialect{}
			if mode == "in-memory" {
				d = soleWriter{}
			}
			db, err := sqlstore.New(w, r, d, discard())
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { db.Close() })
			rooms := storagetest.NewRooms(b, db)
			room := roomdag.RoomID("!bench:test.local")
			owner := storagetest.CreateRoom(b, rooms, room)
			ctx := context.Background()
			msg := func(i int) roomdag.ProtoEvent {
				return roomdag.ProtoEvent{Type: roomdag.TypeMessage, Sender: owner,
					Content: json.RawMessage(fmt.Sprintf(`{"msgtype":"m.text","body":"message %d"}`, i))}
			}
			for i := range 5000 {
				if _, _, err := rooms.Append(ctx, room, msg(i)); err != nil {
					b.Fatal(err)
				}
			}
			i := 0
			for b.Loop() {
				i++
				if _, _, err := rooms.Append(ctx, room, msg(i)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
