package compliance

import (
	"context"
	"time"

	"github.com/persistentchat/homeserver/roomdag"
)

// PurgeStore is what the archive's retention purge needs of storage
// (storage/sqlstore.PurgeCompliance documents it).
type PurgeStore interface {
	PurgeCompliance(ctx context.Context, room string, beforeTS int64, keep func(kind, actor, room string) bool) (int, error)
}

// ArchivePurge is the retention purge of the archive
// (retention.ArchivePurger): PurgeBefore drops the payload of the
// room's records from before the cut-off, keeping their hashes, so the
// chain and its checkpoints still verify. It never drops a record of a
// held user or room (Held is asked at each purge, so a hold made since
// the purge job read the holds still counts), nor an admin action: those
// are the record of what the operators did, the purges included, and
// outlive any room's retention.
type ArchivePurge struct {
	Store PurgeStore
	// Held reads the active holds (retention.Holds.Held).
	Held func(ctx context.Context) (func(user roomdag.UserID, room roomdag.RoomID) bool, error)
}

// PurgeBefore implements retention.ArchivePurger.
func (p ArchivePurge) PurgeBefore(ctx context.Context, room roomdag.RoomID, before time.Time) (int, error) {
	if room == "" {
		return 0, nil // never the whole archive
	}
	held, err := p.Held(ctx)
	if err != nil {
		return 0, err
	}
	if held("", room) {
		return 0, nil
	}
	return p.Store.PurgeCompliance(ctx, string(room), before.UnixMilli(), func(kind, actor, r string) bool {
		return kind == KindAdminAction || held(roomdag.UserID(actor), roomdag.RoomID(r))
	})
}
