package api

import (
	"context"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// RemoteBackfiller fetches a room's history older than this server holds
// from the other servers in it (federation.RoomPDUs).
type RemoteBackfiller interface {
	// Backfill receives the events before oldest, the oldest event of
	// room in the timeline here, and returns how many joined the timeline.
	Backfill(ctx context.Context, room roomdag.RoomID, oldest roomdag.EventID) (int, error)
}

// backfill is /messages' call when paging back reached the oldest event
// held: oldest, or when the page read none, the event at cursor (the
// token a previous page ended on). It reports whether older events came.
// A failure leaves the page as it is: the room's other servers may be
// down, and what this server holds is still worth answering.
func (s *Server) backfill(ctx context.Context, room roomdag.RoomID, oldest *roomdag.StoredEvent, cursor storage.TopoPos) bool {
	if s.cfg.RemoteBackfill == nil {
		return false
	}
	if oldest == nil {
		// The event at the token: the store pages strictly after a place.
		evs, _, err := s.store.RoomEventsTopo(ctx, room, storage.TopoPos{Depth: cursor.Depth, Pos: cursor.Pos - 1}, false, 1)
		if err != nil || len(evs) == 0 {
			return false
		}
		oldest = evs[0]
	}
	n, err := s.cfg.RemoteBackfill.Backfill(ctx, room, oldest.ID())
	if err != nil {
		s.log.Info("backfill from other servers failed", "room", room, "from", oldest.ID(), "err", err)
	}
	return n > 0
}
