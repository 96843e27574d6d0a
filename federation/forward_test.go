package federation_test

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/federation"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage/sqlstore"
	"github.com/persistentchat/homeserver/storage/storagetest"
)

// fixedDests sends everything to its servers.
type fixedDests []roomdag.ServerName

func (f fixedDests) Servers(context.Context, *roomdag.StoredEvent) ([]roomdag.ServerName, error) {
	return f, nil
}

func (f fixedDests) RoomServers(context.Context, roomdag.RoomID) ([]roomdag.ServerName, error) {
	return f, nil
}

// TestSenderForward: an event forwarded for its origin is queued, in the
// database, for the room's other servers, neither for the origin nor for
// this server.
func TestSenderForward(t *testing.T) {
	engines(t, func(t *testing.T, open func(t *testing.T) *sqlstore.DB) {
		db := open(t)
		defer db.Close()
		ctx := context.Background()
		clk := clock.NewFake(time.Unix(1_700_000_000, 0))
		const us = roomdag.ServerName("test.local")
		key, err := roomdag.GenerateSigningKey(us, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		rooms := roomdag.NewRooms(db, key, clk, rand.Reader, 0)
		room := roomdag.RoomID("!fwd:test.local")
		storagetest.CreateRoom(t, rooms, room)
		st, err := rooms.State(ctx, room)
		if err != nil {
			t.Fatal(err)
		}
		ev := st.State.Get(roomdag.TypeCreate, "")
		s := federation.NewSender(federation.SenderOptions{Server: us, Store: db,
			Destinations: fixedDests{"origin.test", "other.test", us, "third.test"}, Clock: clk, Log: discard()})
		if err := s.Forward(ctx, ev, "origin.test"); err != nil {
			t.Fatal(err)
		}
		for dest, want := range map[roomdag.ServerName]int{"origin.test": 0, us: 0, "other.test": 1, "third.test": 1} {
			q, err := db.FederationQueue(ctx, dest, 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(q) != want || want == 1 && (q[0].Event != ev.ID() || q[0].Room != room || len(q[0].EDU) > 0) {
				t.Errorf("%s's queue: %+v, want %d of %s", dest, q, want, ev.ID())
			}
		}
	})
}
