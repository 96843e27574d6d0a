package sqlite

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage/storagetest"
)

// BenchmarkWriteMessage: the durable write path for one message (build,
// sign, authorise, insert, index, fsync'd group commit), from one sender
// in one room, and from 8 senders across 8 rooms whose writes share
// commits.
func BenchmarkWriteMessage(b *testing.B) {
	for _, senders := range []int{1, 8} {
		b.Run(fmt.Sprintf("senders=%d", senders), func(b *testing.B) {
			db := openTest(b)
			rooms := storagetest.NewRooms(b, db)
			ids := make([]roomdag.RoomID, senders)
			var owner roomdag.UserID
			for i := range ids {
				ids[i] = roomdag.RoomID(fmt.Sprintf("!w%d:test.local", i))
				owner = storagetest.CreateRoom(b, rooms, ids[i])
			}
			content := json.RawMessage(`{"msgtype":"m.text","body":"a typical message of modest length in a topic room"}`)
			b.ResetTimer()
			var wg sync.WaitGroup
			for s := range senders {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := s; i < b.N; i += senders {
						if _, _, err := rooms.Append(context.Background(), ids[s], roomdag.ProtoEvent{Type: roomdag.TypeMessage, Sender: owner, Content: content}); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
		})
	}
}
