package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// Device lists over federation (server-server API, "Device Management"):
// the outbox of local changes that the device-list sender turns into
// EDUs (federation/devicelists.go), and the cache of other servers'
// users' devices that their EDUs and resyncs fill (e2ee/devicelistfed.go).

// DeviceListSenderPos is the device-list stream position up to which
// every outbox entry was queued for other servers.
func (db *DB) DeviceListSenderPos(ctx context.Context) (roomdag.StreamPos, error) {
	err := db.write(func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO device_list_sender (id, pos) VALUES (1, 0) ON CONFLICT (id) DO NOTHING`)
		return err
	}, nil)
	if err != nil {
		return 0, err
	}
	var pos int64
	err = db.r.QueryRowContext(ctx, `SELECT pos FROM device_list_sender WHERE id = 1`).Scan(&pos)
	return roomdag.StreamPos(pos), err
}

// DeviceListOutbox returns the outbox entries after pos, in stream
// order, at most limit positions' worth (a position's entries are never
// split).
func (db *DB) DeviceListOutbox(ctx context.Context, after roomdag.StreamPos, limit int) ([]storage.DeviceListOutboxEntry, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT stream_pos, user_id, device_id, deleted, prev_pos FROM device_list_outbox
		WHERE stream_pos > ? AND stream_pos <= (SELECT COALESCE(MAX(stream_pos), 0) FROM
			(SELECT DISTINCT stream_pos FROM device_list_outbox WHERE stream_pos > ? ORDER BY stream_pos LIMIT ?) firsts)
		ORDER BY stream_pos, device_id`, int64(after), int64(after), limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []storage.DeviceListOutboxEntry
	for rows.Next() {
		var e storage.DeviceListOutboxEntry
		var user string
		var deleted int
		if err := rows.Scan(&e.Pos, &user, &e.Device, &deleted, &e.Prev); err != nil {
			return nil, err
		}
		e.User, e.Deleted = roomdag.UserID(user), deleted != 0
		out = append(out, e)
	}
	return out, rows.Err()
}

// QueueDeviceListEDUs appends items to their destinations' queues,
// moves the device-list sender from from to to and drops the outbox
// entries up to it, in one transaction; it fails, storing nothing, when
// the position is not from (another process stepped).
func (db *DB) QueueDeviceListEDUs(ctx context.Context, from, to roomdag.StreamPos, items map[roomdag.ServerName][]storage.FederationItem, nowMS int64) error {
	return db.write(func(tx *sql.Tx) error {
		res, err := tx.Exec(`UPDATE device_list_sender SET pos = ? WHERE id = 1 AND pos = ?`, int64(to), int64(from))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("device-list sender position moved: not at %d", from)
		}
		if _, err := tx.Exec(`DELETE FROM device_list_outbox WHERE stream_pos <= ?`, int64(to)); err != nil {
			return err
		}
		return queueFederation(tx, items, nowMS)
	}, nil)
}

// DevicePos is a local user's latest device-list position at which a
// device changed: the stream_id of the last m.device_list_update about
// them (0: none).
func (db *DB) DevicePos(ctx context.Context, user roomdag.UserID) (int64, error) {
	var pos int64
	err := db.r.QueryRowContext(ctx, `SELECT device_pos FROM device_lists WHERE user_id = ?`, string(user)).Scan(&pos)
	if err == sql.ErrNoRows {
		return 0, nil
	}
	return pos, err
}

// RemoteDeviceStream is the stream_id of the last update applied to the
// cached device list of another server's user; ok false when none is
// cached.
func (db *DB) RemoteDeviceStream(ctx context.Context, user roomdag.UserID) (streamID int64, ok bool, err error) {
	err = db.r.QueryRowContext(ctx, `SELECT stream_id FROM remote_device_lists WHERE user_id = ?`, string(user)).Scan(&streamID)
	if err == sql.ErrNoRows {
		return 0, false, nil
	}
	return streamID, err == nil, err
}

// ApplyRemoteDeviceUpdates applies incremental updates (m.device_list_update)
// to a cached device list, in one transaction: devices with keys are
// stored, deleted ones and ones without keys dropped, and the list's
// stream_id raised to streamID (never lowered: the caller has checked
// the updates follow what is cached). The user's device list advances, so that
// local users sharing a room with them refetch it. It returns false,
// changing nothing, when no list is cached (the caller resyncs).
func (db *DB) ApplyRemoteDeviceUpdates(ctx context.Context, user roomdag.UserID, streamID int64, updates []storage.RemoteDevice) (bool, error) {
	applied := false
	err := db.write(func(tx *sql.Tx) error {
		res, err := tx.Exec(`UPDATE remote_device_lists SET stream_id = CASE WHEN stream_id < ? THEN ? ELSE stream_id END WHERE user_id = ?`,
			streamID, streamID, string(user))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		applied = true
		for _, u := range updates {
			if err := putRemoteDevice(tx, user, u); err != nil {
				return err
			}
		}
		return db.deviceListChanged(tx, user)
	}, nil)
	return applied, err
}

func putRemoteDevice(tx *sql.Tx, user roomdag.UserID, d storage.RemoteDevice) error {
	if d.Deleted || d.Keys == nil {
		_, err := tx.Exec(`DELETE FROM remote_device_keys WHERE user_id = ? AND device_id = ?`, string(user), d.Device)
		return err
	}
	_, err := tx.Exec(`INSERT INTO remote_device_keys (user_id, device_id, key_json) VALUES (?,?,?)
		ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json`, string(user), d.Device, string(d.Keys))
	return err
}

// ReplaceRemoteDeviceList stores a resync (GET /user/devices) of another
// server's user as their cached device list, replacing what was cached,
// in one transaction, and advances the user's device list. The list is
// valid from the event stream's head at the time (ValidFrom).
func (db *DB) ReplaceRemoteDeviceList(ctx context.Context, user roomdag.UserID, list storage.RemoteDeviceList) error {
	return db.write(func(tx *sql.Tx) error {
		for _, q := range []string{`DELETE FROM remote_device_keys WHERE user_id = ?`, `DELETE FROM remote_cross_signing_keys WHERE user_id = ?`} {
			if _, err := tx.Exec(q, string(user)); err != nil {
				return err
			}
		}
		// The resync holds from the event stream's head now: memberships
		// that change later are checked against it (SharedSince).
		if _, err := tx.Exec(`INSERT INTO remote_device_lists (user_id, stream_id, valid_from)
			SELECT ?, ?, COALESCE(MAX(stream_pos), 0) FROM events WHERE true
			ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id, valid_from = excluded.valid_from`, string(user), list.StreamID); err != nil {
			return err
		}
		for d, keys := range list.Devices {
			if err := putRemoteDevice(tx, user, storage.RemoteDevice{Device: d, Keys: keys}); err != nil {
				return err
			}
		}
		if err := putRemoteCrossSigning(tx, user, list.Master, list.SelfSigning); err != nil {
			return err
		}
		return db.deviceListChanged(tx, user)
	}, nil)
}

func putRemoteCrossSigning(tx *sql.Tx, user roomdag.UserID, master, selfSigning json.RawMessage) error {
	for _, k := range []struct {
		usage string
		key   json.RawMessage
	}{{"master", master}, {"self_signing", selfSigning}} {
		if k.key == nil {
			continue
		}
		if _, err := tx.Exec(`INSERT INTO remote_cross_signing_keys (user_id, usage, key_json) VALUES (?,?,?)
			ON CONFLICT (user_id, usage) DO UPDATE SET key_json = excluded.key_json`, string(user), k.usage, string(k.key)); err != nil {
			return err
		}
	}
	return nil
}

// PutRemoteCrossSigningKeys stores the cross-signing keys of another
// server's user (m.signing_key_update; nil: that key unchanged) and
// advances their device list, in one transaction.
func (db *DB) PutRemoteCrossSigningKeys(ctx context.Context, user roomdag.UserID, master, selfSigning json.RawMessage) error {
	return db.write(func(tx *sql.Tx) error {
		if err := putRemoteCrossSigning(tx, user, master, selfSigning); err != nil {
			return err
		}
		return db.deviceListChanged(tx, user)
	}, nil)
}

// DropRemoteDeviceList forgets the cached device list of another
// server's user (a resync failed: it can no longer be trusted), and
// advances their device list.
func (db *DB) DropRemoteDeviceList(ctx context.Context, user roomdag.UserID) error {
	return db.write(func(tx *sql.Tx) error {
		for _, q := range []string{`DELETE FROM remote_device_lists WHERE user_id = ?`,
			`DELETE FROM remote_device_keys WHERE user_id = ?`, `DELETE FROM remote_cross_signing_keys WHERE user_id = ?`} {
			if _, err := tx.Exec(q, string(user)); err != nil {
				return err
			}
		}
		return db.deviceListChanged(tx, user)
	}, nil)
}

// RemoteDeviceLists returns the cached device lists of those of users
// that have one.
func (db *DB) RemoteDeviceLists(ctx context.Context, users []roomdag.UserID) (map[roomdag.UserID]*storage.RemoteDeviceList, error) {
	out := map[roomdag.UserID]*storage.RemoteDeviceList{}
	for start := 0; start < len(users); start += 500 { // below SQLite's variable limit
		part := users[start:min(start+500, len(users))]
		in := `(?` + strings.Repeat(",?", len(part)-1) + `)`
		args := make([]any, len(part))
		for i, u := range part {
			args[i] = string(u)
		}
		if err := scanRows(ctx, db.r, `SELECT user_id, stream_id, valid_from FROM remote_device_lists WHERE user_id IN `+in, args, func(rows *sql.Rows) error {
			var u string
			var l storage.RemoteDeviceList
			var from int64
			if err := rows.Scan(&u, &l.StreamID, &from); err != nil {
				return err
			}
			l.Devices, l.ValidFrom = map[string]json.RawMessage{}, roomdag.StreamPos(from)
			out[roomdag.UserID(u)] = &l
			return nil
		}); err != nil {
			return nil, err
		}
		if err := scanRows(ctx, db.r, `SELECT user_id, device_id, key_json FROM remote_device_keys WHERE user_id IN `+in, args, func(rows *sql.Rows) error {
			var u, d, js string
			if err := rows.Scan(&u, &d, &js); err != nil {
				return err
			}
			if l := out[roomdag.UserID(u)]; l != nil {
				l.Devices[d] = json.RawMessage(js)
			}
			return nil
		}); err != nil {
			return nil, err
		}
		if err := scanRows(ctx, db.r, `SELECT user_id, usage, key_json FROM remote_cross_signing_keys WHERE user_id IN `+in, args, func(rows *sql.Rows) error {
			var u, usage, js string
			if err := rows.Scan(&u, &usage, &js); err != nil {
				return err
			}
			if l := out[roomdag.UserID(u)]; l != nil {
				switch usage {
				case "master":
					l.Master = json.RawMessage(js)
				case "self_signing":
					l.SelfSigning = json.RawMessage(js)
				}
			}
			return nil
		}); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// SharedSince reports whether user (of another server) and a local user
// (one with an account here) are joined to one room whose memberships
// of both have not changed after pos: they have shared it since then, so
// the user's server has sent this server their device changes since.
// With pos at the head, it says whether they share a room now.
func (db *DB) SharedSince(ctx context.Context, user roomdag.UserID, pos roomdag.StreamPos) (bool, error) {
	var one int
	err := db.r.QueryRowContext(ctx, `SELECT 1 FROM memberships a JOIN memberships b ON b.room_nid = a.room_nid
		JOIN users u ON u.user_id = b.user_id
		WHERE a.user_id = ? AND a.membership = 'join' AND b.membership = 'join' AND a.event_pos <= ? AND b.event_pos <= ? LIMIT 1`,
		string(user), int64(pos), int64(pos)).Scan(&one)
	if err == sql.ErrNoRows {
		return false, nil
	}
	return err == nil, err
}

func scanRows(ctx context.Context, q querier, query string, args []any, each func(*sql.Rows) error) error {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := each(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}
