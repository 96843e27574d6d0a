package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"slices"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// To-device messages (e2ee.ToDeviceStore, sync.ToDeviceStore): a row per
// message and recipient device in to_device, each at its own position of
// the to-device stream. Positions come from to_device_position, the last
// one allocated, raised by the writer alone (on PostgreSQL under the lock
// that orders every process's batches, see commit), so they are dense,
// in commit order and never reused although rows are deleted.

// SendToDevice stores the messages of one send for the recipients' existing
// devices, in one transaction, and reports whether it stored them: false
// when (SenderDevice, TxnID) was used in the TxnLifetimeMS before NowMS (a
// replay; nothing is stored).
// The recipients are announced with the batch (storage.Change.ToDevice).
func (db *DB) SendToDevice(_ context.Context, s storage.ToDeviceSend) (bool, error) {
	stored := false
	err := db.write(func(tx *sql.Tx) error {
		stored = false
		if s.TxnID != "" {
			if _, err := tx.Exec(`DELETE FROM to_device_txns WHERE user_id = ? AND device_id = ? AND created_ms < ?`,
				string(s.Sender), s.SenderDevice, s.NowMS-storage.TxnLifetimeMS); err != nil {
				return err
			}
			res, err := tx.Exec(`INSERT INTO to_device_txns (user_id, device_id, txn_id, created_ms) VALUES (?,?,?,?)
				ON CONFLICT (user_id, device_id, txn_id) DO NOTHING`, string(s.Sender), s.SenderDevice, s.TxnID, s.NowMS)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil || n == 0 {
				return err
			}
		}
		stored = true
		var pos int64
		if err := tx.QueryRow(`SELECT pos FROM to_device_position WHERE id = 1`).Scan(&pos); err != nil {
			return err
		}
		start := pos
		users := make([]roomdag.UserID, 0, len(s.Messages))
		for u := range s.Messages {
			users = append(users, u)
		}
		slices.Sort(users)
		for _, u := range users {
			byDevice := s.Messages[u]
			// Not the request's context: a cancelled statement would fail
			// the job in the middle of a batch that others share.
			existing, err := queryStrings(context.Background(), tx, `SELECT device_id FROM devices WHERE user_id = ? ORDER BY device_id`, string(u))
			if err != nil {
				return err
			}
			userPos := int64(0)
			for _, d := range existing {
				content, ok := byDevice[d]
				if !ok {
					if content, ok = byDevice["*"]; !ok {
						continue
					}
				}
				ev, err := json.Marshal(struct {
					Content json.RawMessage `json:"content"`
					Sender  string          `json:"sender"`
					Type    string          `json:"type"`
				}{content, string(s.Sender), s.Type})
				if err != nil {
					return err
				}
				pos++
				if _, err := tx.Exec(`INSERT INTO to_device (user_id, device_id, stream_pos, event) VALUES (?,?,?,?)`,
					string(u), d, pos, string(ev)); err != nil {
					return err
				}
				userPos = pos
			}
			if userPos != 0 {
				db.change.ToDevice = append(db.change.ToDevice, storage.UserPos{User: u, Pos: userPos})
			}
		}
		if pos == start {
			return nil
		}
		_, err := tx.Exec(`UPDATE to_device_position SET pos = ? WHERE id = 1`, pos)
		return err
	}, nil)
	return stored, err
}

// ToDeviceSince returns up to limit of the device's messages with positions
// in (after, upTo], oldest first.
func (db *DB) ToDeviceSince(ctx context.Context, user roomdag.UserID, device string, after, upTo int64, limit int) ([]storage.ToDeviceMessage, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT stream_pos, event FROM to_device
		WHERE user_id = ? AND device_id = ? AND stream_pos > ? AND stream_pos <= ? ORDER BY stream_pos LIMIT ?`,
		string(user), device, after, upTo, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []storage.ToDeviceMessage
	for rows.Next() {
		var m storage.ToDeviceMessage
		var ev string
		if err := rows.Scan(&m.Pos, &ev); err != nil {
			return nil, err
		}
		m.Event = json.RawMessage(ev)
		out = append(out, m)
	}
	return out, rows.Err()
}

// AckToDevice deletes the device's messages at or below upTo (its client
// acknowledged them). It reads first, and writes only when there is
// something to delete: most syncs acknowledge nothing new.
func (db *DB) AckToDevice(ctx context.Context, user roomdag.UserID, device string, upTo int64) error {
	var one int
	err := db.r.QueryRowContext(ctx, `SELECT 1 FROM to_device WHERE user_id = ? AND device_id = ? AND stream_pos <= ? LIMIT 1`,
		string(user), device, upTo).Scan(&one)
	if err == sql.ErrNoRows {
		return nil
	}
	if err != nil {
		return err
	}
	return db.write(func(tx *sql.Tx) error {
		_, err := tx.Exec(`DELETE FROM to_device WHERE user_id = ? AND device_id = ? AND stream_pos <= ?`, string(user), device, upTo)
		return err
	}, nil)
}

// ToDevicePos is the newest committed position of the to-device stream.
func (db *DB) ToDevicePos(ctx context.Context) (int64, error) {
	var p int64
	err := db.r.QueryRowContext(ctx, `SELECT pos FROM to_device_position WHERE id = 1`).Scan(&p)
	return p, err
}

// deviceDeletes remove a device and everything that is its own: tokens,
// pushers, the to-device messages waiting for it, the transaction IDs
// of the messages it sent, and its being the user's dehydrated device.
// Each takes (user_id, device_id).
var deviceDeletes = []string{
	`DELETE FROM devices WHERE user_id = ? AND device_id = ?`,
	`DELETE FROM access_tokens WHERE user_id = ? AND device_id = ?`,
	`DELETE FROM refresh_tokens WHERE user_id = ? AND device_id = ?`,
	`DELETE FROM pushers WHERE user_id = ? AND device_id = ?`,
	`DELETE FROM to_device WHERE user_id = ? AND device_id = ?`,
	`DELETE FROM to_device_txns WHERE user_id = ? AND device_id = ?`,
	`DELETE FROM dehydrated_devices WHERE user_id = ? AND device_id = ?`,
}

func (db *DB) deleteDevice(tx *sql.Tx, user roomdag.UserID, device string) error {
	// A deleted device's end-to-end keys go with it (spec: "DELETE
	// /devices/{deviceId}" invalidates them), and its user's device list
	// changes.
	if err := db.deleteDeviceKeys(tx, user, device); err != nil {
		return err
	}
	for _, q := range deviceDeletes {
		if _, err := tx.Exec(q, string(user), device); err != nil {
			return err
		}
	}
	return nil
}

// PutDehydratedDevice makes device the user's dehydrated device (MSC3814)
// with its data, creating the device (without an access token; name is its
// display name), and deletes the one it replaces, if another, as a deleted
// device (deleteDevice). It returns the replaced device's ID ("" if none).
// A device ID the user already has as an ordinary device is
// storage.ErrConflict.
func (db *DB) PutDehydratedDevice(_ context.Context, user roomdag.UserID, device string, data json.RawMessage, name *string) (string, error) {
	var old string
	err := db.write(func(tx *sql.Tx) error {
		old = ""
		err := tx.QueryRow(`SELECT device_id FROM dehydrated_devices WHERE user_id = ?`, string(user)).Scan(&old)
		if err != nil && err != sql.ErrNoRows {
			return err
		}
		if old != device {
			var one int
			err := tx.QueryRow(`SELECT 1 FROM devices WHERE user_id = ? AND device_id = ?`, string(user), device).Scan(&one)
			if err == nil {
				return storage.ErrConflict
			}
			if err != sql.ErrNoRows {
				return err
			}
			if old != "" {
				if err := db.deleteDevice(tx, user, old); err != nil {
					return err
				}
				// Those tracking the user's devices (other servers too)
				// learn that the replaced one is gone.
				if err := db.deviceListChanged(tx, user, storage.DeviceChange{Device: old, Deleted: true}); err != nil {
					return err
				}
			}
			if _, err := tx.Exec(`INSERT INTO devices (user_id, device_id, display_name) VALUES (?,?,?)`, string(user), device, name); err != nil {
				return err
			}
		}
		_, err = tx.Exec(`INSERT INTO dehydrated_devices (user_id, device_id, device_data) VALUES (?,?,?)
			ON CONFLICT (user_id) DO UPDATE SET device_id = excluded.device_id, device_data = excluded.device_data`,
			string(user), device, string(data))
		return err
	}, nil)
	if old == device {
		old = ""
	}
	return old, err
}

// DehydratedDevice returns the user's dehydrated device, or
// storage.ErrNotFound.
func (db *DB) DehydratedDevice(ctx context.Context, user roomdag.UserID) (storage.DehydratedDevice, error) {
	var d storage.DehydratedDevice
	var data string
	err := db.r.QueryRowContext(ctx, `SELECT device_id, device_data FROM dehydrated_devices WHERE user_id = ?`, string(user)).
		Scan(&d.DeviceID, &data)
	d.Data = json.RawMessage(data)
	return d, notFound(err)
}

// DeleteDehydratedDevice deletes the user's dehydrated device, as a deleted
// device, and returns its ID, or storage.ErrNotFound if there is none.
func (db *DB) DeleteDehydratedDevice(_ context.Context, user roomdag.UserID) (string, error) {
	var device string
	err := db.write(func(tx *sql.Tx) error {
		if err := tx.QueryRow(`SELECT device_id FROM dehydrated_devices WHERE user_id = ?`, string(user)).Scan(&device); err != nil {
			return notFound(err)
		}
		if _, err := tx.Exec(`DELETE FROM dehydrated_devices WHERE user_id = ?`, string(user)); err != nil {
			return err
		}
		if err := db.deleteDevice(tx, user, device); err != nil {
			return err
		}
		return db.deviceListChanged(tx, user, storage.DeviceChange{Device: device, Deleted: true})
	}, nil)
	return device, err
}
