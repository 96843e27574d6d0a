package sqlstore

import (
	"database/sql"
	"strings"

	"github.com/persistentchat/homeserver/roomdag"
)

// takeExtremities deletes the room's stored forward extremities, which the
// event being inserted replaces, and fails with roomdag.ErrRoomChanged
// unless they are exactly built: the extremities of the state the event
// was built on. Anything else means another writer appended to the room
// after that state was read, and the event would fork the room's DAG on a
// stale state (the caller rolls the event's savepoint back and the write
// path rebuilds it). Two deletes whose counts tell, rather than a
// DELETE ... RETURNING: a query with rows costs the writer about three
// times as much as these statements.
func takeExtremities(tx *sql.Tx, nid int64, built []roomdag.EventID) error {
	if len(built) > 0 {
		args := make([]any, 0, len(built)+1)
		args = append(args, nid)
		for _, id := range built {
			args = append(args, string(id))
		}
		res, err := tx.Exec(`DELETE FROM forward_extremities WHERE room_nid = ? AND event_id NOT IN (?`+
			strings.Repeat(", ?", len(built)-1)+`)`, args...)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n != 0 {
			return changedOr(err)
		}
	}
	res, err := tx.Exec(`DELETE FROM forward_extremities WHERE room_nid = ?`, nid)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n != int64(len(built)) {
		return changedOr(err)
	}
	return nil
}

// changedOr returns err, or roomdag.ErrRoomChanged when it is nil.
func changedOr(err error) error {
	if err != nil {
		return err
	}
	return roomdag.ErrRoomChanged
}
