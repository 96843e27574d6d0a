package sqlite

import (
	"database/sql"

	"github.com/persistentchat/homeserver/roomdag"
)

// takeExtremities deletes the room's stored forward extremities, which the
// event being inserted replaces, and fails with roomdag.ErrRoomChanged
// unless they are exactly built: the extremities of the state the event
// was built on. Anything else means another writer appended to the room
// after that state was read, and the event would fork the room's DAG on a
// stale state (the caller rolls the event's savepoint back and the write
// path rebuilds it). One statement, so the check costs no extra query.
func takeExtremities(tx *sql.Tx, nid int64, built []roomdag.EventID) error {
	rows, err := tx.Query(`DELETE FROM forward_extremities WHERE room_nid = ? RETURNING event_id`, nid)
	if err != nil {
		return err
	}
	defer rows.Close()
	n, changed := 0, false
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return err
		}
		n++
		if !containsEventID(built, roomdag.EventID(id)) {
			changed = true
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if changed || n != len(built) {
		return roomdag.ErrRoomChanged
	}
	return nil
}

func containsEventID(ids []roomdag.EventID, id roomdag.EventID) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}
