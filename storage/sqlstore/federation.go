package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// Federation transactions: the responses given to inbound ones (for
// deduplication), and the outbound per-destination queues
// (federation.Sender). Only the holder of the "federation_sender" lease
// writes the outbound tables.

// FederationInboundTxn is the response stored for origin's transaction
// txnID, or storage.ErrNotFound when it was never processed.
func (db *DB) FederationInboundTxn(ctx context.Context, origin roomdag.ServerName, txnID string) ([]byte, error) {
	var resp []byte
	err := db.r.QueryRowContext(ctx, `SELECT response FROM federation_inbound_txns WHERE origin = ? AND txn_id = ?`,
		string(origin), txnID).Scan(&resp)
	return resp, notFound(err)
}

// PutFederationInboundTxn records the response to origin's transaction
// txnID; the first one recorded stays.
func (db *DB) PutFederationInboundTxn(ctx context.Context, origin roomdag.ServerName, txnID string, response []byte, nowMS int64) error {
	return db.write(func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO federation_inbound_txns (origin, txn_id, response, received_ms) VALUES (?,?,?,?)
			ON CONFLICT (origin, txn_id) DO NOTHING`, string(origin), txnID, response, nowMS)
		return err
	}, nil)
}

// PruneFederationInboundTxns forgets the responses received before
// beforeMS: a sender retries a transaction for minutes, not days.
func (db *DB) PruneFederationInboundTxns(ctx context.Context, beforeMS int64) error {
	return db.write(func(tx *sql.Tx) error {
		_, err := tx.Exec(`DELETE FROM federation_inbound_txns WHERE received_ms < ?`, beforeMS)
		return err
	}, nil)
}

// FederationSenderPos is the event stream position up to which every
// event was queued. On first use it is the stream's head: a server that
// starts federating does not send its history.
func (db *DB) FederationSenderPos(ctx context.Context) (roomdag.StreamPos, error) {
	err := db.write(func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO federation_sender (id, event_pos)
			SELECT 1, COALESCE(MAX(stream_pos), 0) FROM events WHERE true
			ON CONFLICT (id) DO NOTHING`)
		return err
	}, nil)
	if err != nil {
		return 0, err
	}
	var pos int64
	err = db.r.QueryRowContext(ctx, `SELECT event_pos FROM federation_sender WHERE id = 1`).Scan(&pos)
	return roomdag.StreamPos(pos), err
}

// errFederationMoved: the sender's position is not the one a step
// started from (another process stepped).
var errFederationMoved = errors.New("federation sender position moved")

// QueueFederationPDUs appends items to their destinations' queues and
// moves the sender's position from from to to, in one transaction; it
// fails, storing nothing, when the position is not from. A destination
// met for the first time numbers its transactions from nowMS, so that
// IDs stay unique to it even if this database is ever started afresh
// (the destination keeps the IDs it saw, to deduplicate).
func (db *DB) QueueFederationPDUs(ctx context.Context, from, to roomdag.StreamPos, items map[roomdag.ServerName][]storage.FederationItem, nowMS int64) error {
	return db.write(func(tx *sql.Tx) error {
		res, err := tx.Exec(`UPDATE federation_sender SET event_pos = ? WHERE id = 1 AND event_pos = ?`, int64(to), int64(from))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("%w: not at %d", errFederationMoved, from)
		}
		return queueFederation(tx, items, nowMS)
	}, nil)
}

// QueueFederationEDUs appends items to their destinations' queues outside
// the event stream: EDUs, and PDUs forwarded for another server.
func (db *DB) QueueFederationEDUs(ctx context.Context, items map[roomdag.ServerName][]storage.FederationItem, nowMS int64) error {
	return db.write(func(tx *sql.Tx) error { return queueFederation(tx, items, nowMS) }, nil)
}

func queueFederation(tx *sql.Tx, items map[roomdag.ServerName][]storage.FederationItem, nowMS int64) error {
	for dest, list := range items {
		if len(list) == 0 {
			continue
		}
		if _, err := tx.Exec(`INSERT INTO federation_destinations (destination, last_txn, failures, retry_at_ms, down_since_ms)
			VALUES (?, ?, 0, 0, 0) ON CONFLICT (destination) DO NOTHING`, string(dest), nowMS); err != nil {
			return err
		}
		var next int64
		if err := tx.QueryRow(`SELECT COALESCE(MAX(seq), 0) + 1 FROM federation_queue WHERE destination = ?`, string(dest)).Scan(&next); err != nil {
			return err
		}
		for _, it := range list {
			edu := it.EDU
			if edu == nil {
				edu = []byte{}
			}
			if _, err := tx.Exec(`INSERT INTO federation_queue (destination, seq, room_id, event_id, edu, txn_id) VALUES (?,?,?,?,?,0)`,
				string(dest), next, string(it.Room), string(it.Event), edu); err != nil {
				return err
			}
			next++
		}
	}
	return nil
}

// FederationDestinations lists the destinations with something queued.
func (db *DB) FederationDestinations(ctx context.Context) ([]storage.FederationDestination, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT destination, last_txn, failures, retry_at_ms, down_since_ms
		FROM federation_destinations d WHERE EXISTS (SELECT 1 FROM federation_queue q WHERE q.destination = d.destination)
		ORDER BY destination`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []storage.FederationDestination
	for rows.Next() {
		var d storage.FederationDestination
		var name string
		if err := rows.Scan(&name, &d.LastTxn, &d.Failures, &d.RetryAtMS, &d.DownSinceMS); err != nil {
			return nil, err
		}
		d.Server = roomdag.ServerName(name)
		out = append(out, d)
	}
	return out, rows.Err()
}

// FederationDestination returns one destination's state, or
// storage.ErrNotFound.
func (db *DB) FederationDestination(ctx context.Context, dest roomdag.ServerName) (storage.FederationDestination, error) {
	d := storage.FederationDestination{Server: dest}
	err := db.r.QueryRowContext(ctx, `SELECT last_txn, failures, retry_at_ms, down_since_ms FROM federation_destinations WHERE destination = ?`,
		string(dest)).Scan(&d.LastTxn, &d.Failures, &d.RetryAtMS, &d.DownSinceMS)
	return d, notFound(err)
}

// FederationQueue returns up to limit items queued for dest, in order.
func (db *DB) FederationQueue(ctx context.Context, dest roomdag.ServerName, limit int) ([]storage.FederationItem, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT seq, room_id, event_id, edu, txn_id FROM federation_queue
		WHERE destination = ? ORDER BY seq LIMIT ?`, string(dest), limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []storage.FederationItem
	for rows.Next() {
		var it storage.FederationItem
		var room, event string
		if err := rows.Scan(&it.Seq, &room, &event, &it.EDU, &it.Txn); err != nil {
			return nil, err
		}
		it.Room, it.Event = roomdag.RoomID(room), roomdag.EventID(event)
		if len(it.EDU) == 0 {
			it.EDU = nil
		}
		out = append(out, it)
	}
	return out, rows.Err()
}

// StartFederationTxn puts the queued items seqs of dest into a new
// transaction and returns its ID, the destination's next.
func (db *DB) StartFederationTxn(ctx context.Context, dest roomdag.ServerName, seqs []int64) (int64, error) {
	var id int64
	err := db.write(func(tx *sql.Tx) error {
		if err := tx.QueryRow(`SELECT last_txn + 1 FROM federation_destinations WHERE destination = ?`, string(dest)).Scan(&id); err != nil {
			return err
		}
		if _, err := tx.Exec(`UPDATE federation_destinations SET last_txn = ? WHERE destination = ?`, id, string(dest)); err != nil {
			return err
		}
		for _, s := range seqs {
			if _, err := tx.Exec(`UPDATE federation_queue SET txn_id = ? WHERE destination = ? AND seq = ?`, id, string(dest), s); err != nil {
				return err
			}
		}
		return nil
	}, nil)
	return id, err
}

// FederationTxnDone forgets the items of dest's transaction txn, which
// the destination accepted, and clears its back-off.
func (db *DB) FederationTxnDone(ctx context.Context, dest roomdag.ServerName, txn int64) error {
	return db.write(func(tx *sql.Tx) error {
		if _, err := tx.Exec(`DELETE FROM federation_queue WHERE destination = ? AND txn_id = ?`, string(dest), txn); err != nil {
			return err
		}
		_, err := tx.Exec(`UPDATE federation_destinations SET failures = 0, retry_at_ms = 0, down_since_ms = 0 WHERE destination = ?`, string(dest))
		return err
	}, nil)
}

// FederationTxnFailed records a failed attempt on dest: its back-off
// state becomes d's.
func (db *DB) FederationTxnFailed(ctx context.Context, d storage.FederationDestination) error {
	return db.write(func(tx *sql.Tx) error {
		_, err := tx.Exec(`UPDATE federation_destinations SET failures = ?, retry_at_ms = ?, down_since_ms = ? WHERE destination = ?`,
			d.Failures, d.RetryAtMS, d.DownSinceMS, string(d.Server))
		return err
	}, nil)
}

// DropFederationItems removes items of dest that will not be sent (the
// history a destination that was down for long fetches itself).
func (db *DB) DropFederationItems(ctx context.Context, dest roomdag.ServerName, seqs []int64) error {
	return db.write(func(tx *sql.Tx) error {
		for _, s := range seqs {
			if _, err := tx.Exec(`DELETE FROM federation_queue WHERE destination = ? AND seq = ?`, string(dest), s); err != nil {
				return err
			}
		}
		return nil
	}, nil)
}
