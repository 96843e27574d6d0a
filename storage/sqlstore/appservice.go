package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// The application service transaction queues (see the migration): per
// service, a position in the event stream and the transactions built but
// not yet acknowledged.

// errAppServiceMoved: the stored position is not where the caller started.
var errAppServiceMoved = errors.New("storage: the application service position moved under its sender")

// AppServiceStream returns a service's stored queue, creating it at the
// newest event if the service is new: a service added to a running
// server receives what happens from then on, not the history.
func (db *DB) AppServiceStream(ctx context.Context, id string) (storage.AppServiceStream, error) {
	err := db.write(func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO appservice_streams (as_id, event_pos, last_txn)
			SELECT ?, COALESCE(MAX(stream_pos), 0), 0 FROM events WHERE true
			ON CONFLICT (as_id) DO NOTHING`, id)
		return err
	}, nil)
	if err != nil {
		return storage.AppServiceStream{}, err
	}
	var st storage.AppServiceStream
	err = db.readTx(ctx, func(tx *sql.Tx) error {
		var pos int64
		if err := tx.QueryRow(`SELECT event_pos, last_txn FROM appservice_streams WHERE as_id = ?`, id).Scan(&pos, &st.LastTxn); err != nil {
			return err
		}
		st.EventPos = roomdag.StreamPos(pos)
		rows, err := tx.Query(`SELECT txn_id, body, up_to FROM appservice_txns WHERE as_id = ? ORDER BY txn_id`, id)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var t storage.AppServiceTxn
			var upTo int64
			if err := rows.Scan(&t.ID, &t.Body, &upTo); err != nil {
				return err
			}
			t.UpTo = roomdag.StreamPos(upTo)
			st.Pending = append(st.Pending, t)
		}
		return rows.Err()
	})
	return st, err
}

// PutAppServiceTxn stores a new pending transaction and moves the
// service's position from from to t.UpTo, in one transaction, so a crash
// leaves either both or neither. It fails, changing nothing, if the stored
// position is not from or t.ID is not the next transaction ID.
func (db *DB) PutAppServiceTxn(ctx context.Context, id string, from roomdag.StreamPos, t storage.AppServiceTxn) error {
	return db.write(func(tx *sql.Tx) error {
		if err := checkAppServicePos(tx, id, from); err != nil {
			return err
		}
		res, err := tx.Exec(`UPDATE appservice_streams SET event_pos = ?, last_txn = ? WHERE as_id = ? AND last_txn = ?`,
			int64(t.UpTo), t.ID, id, t.ID-1)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("%w: transaction %d is not the next one", errAppServiceMoved, t.ID)
		}
		_, err = tx.Exec(`INSERT INTO appservice_txns (as_id, txn_id, body, up_to) VALUES (?, ?, ?, ?)`,
			id, t.ID, []byte(t.Body), int64(t.UpTo))
		return err
	}, nil)
}

// DeleteAppServiceTxn forgets a transaction the service acknowledged.
func (db *DB) DeleteAppServiceTxn(ctx context.Context, id string, txnID int64) error {
	return db.write(func(tx *sql.Tx) error {
		_, err := tx.Exec(`DELETE FROM appservice_txns WHERE as_id = ? AND txn_id = ?`, id, txnID)
		return err
	}, nil)
}

// SetAppServicePos moves a service's position past events it has no
// interest in; it fails, changing nothing, if the position is not from.
func (db *DB) SetAppServicePos(ctx context.Context, id string, from, to roomdag.StreamPos) error {
	return db.write(func(tx *sql.Tx) error {
		if err := checkAppServicePos(tx, id, from); err != nil {
			return err
		}
		_, err := tx.Exec(`UPDATE appservice_streams SET event_pos = ? WHERE as_id = ?`, int64(to), id)
		return err
	}, nil)
}

func checkAppServicePos(tx *sql.Tx, id string, from roomdag.StreamPos) error {
	var cur int64
	if err := tx.QueryRow(`SELECT event_pos FROM appservice_streams WHERE as_id = ?`, id).Scan(&cur); err != nil {
		return err
	}
	if cur != int64(from) {
		return fmt.Errorf("%w: at %d, expected %d", errAppServiceMoved, cur, from)
	}
	return nil
}
