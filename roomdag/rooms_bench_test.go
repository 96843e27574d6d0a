package roomdag

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkRoomsState: State of cached rooms from parallel readers, the
// hit path every request takes.
func BenchmarkRoomsState(b *testing.B) {
	rooms, _ := newTestRoomsSize(b, 0)
	ids := make([]RoomID, 100)
	for i := range ids {
		ids[i] = RoomID(fmt.Sprintf("!s%d:test.local", i))
		createTestRoom(b, rooms, ids[i])
	}
	ctx := context.Background()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := rooms.State(ctx, ids[i%len(ids)]); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

// BenchmarkRoomsAppend: the write path's own work for one message (build,
// hash, sign, authorise, publish) on a store without I/O.
func BenchmarkRoomsAppend(b *testing.B) {
	rooms, _ := newTestRoomsSize(b, 0)
	id := RoomID("!a:test.local")
	owner := createTestRoom(b, rooms, id)
	ctx := context.Background()
	p := message(owner, "a typical message of modest length in a topic room")
	b.ResetTimer()
	for range b.N {
		if _, _, err := rooms.Append(ctx, id, p); err != nil {
			b.Fatal(err)
		}
	}
}
