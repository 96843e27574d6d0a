package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"strings"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// End-to-end encryption key storage (e2ee.Store): device keys, one-time
// and fallback keys, and the device-list stream. Every write runs on the
// writer, which orders them across processes too, so a claim cannot hand
// out a key another claim took.

// UploadKeys stores an upload for a device in one transaction and returns
// the device's count of unclaimed one-time keys per algorithm. A one-time
// key whose ID is stored with other content fails the whole upload with a
// *storage.KeyConflictError; the same key again is accepted and changes
// nothing. New or changed device keys advance the user's device list.
func (db *DB) UploadKeys(ctx context.Context, user roomdag.UserID, device string, up storage.KeyUpload) (map[string]int64, error) {
	var counts map[string]int64
	err := db.write(func(tx *sql.Tx) error {
		if up.DeviceKeys != nil {
			var old string
			err := tx.QueryRow(`SELECT key_json FROM e2e_device_keys WHERE user_id = ? AND device_id = ?`, string(user), device).Scan(&old)
			if err != nil && err != sql.ErrNoRows {
				return err
			}
			if err == sql.ErrNoRows || old != string(up.DeviceKeys) {
				if _, err := tx.Exec(`INSERT INTO e2e_device_keys (user_id, device_id, key_json) VALUES (?,?,?)
					ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json`,
					string(user), device, string(up.DeviceKeys)); err != nil {
					return err
				}
				if err := db.deviceListChanged(tx, user, storage.DeviceChange{Device: device}); err != nil {
					return err
				}
			}
		}
		if len(up.OneTime) > 0 {
			var seq int64
			if err := tx.QueryRow(`SELECT COALESCE(MAX(seq), 0) FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ?`,
				string(user), device).Scan(&seq); err != nil {
				return err
			}
			for _, k := range up.OneTime {
				var old string
				err := tx.QueryRow(`SELECT key_json FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ? AND algorithm = ? AND key_id = ?`,
					string(user), device, k.Algorithm, k.KeyID).Scan(&old)
				switch {
				case err == sql.ErrNoRows:
					seq++
					if _, err := tx.Exec(`INSERT INTO e2e_one_time_keys (user_id, device_id, algorithm, key_id, key_json, seq) VALUES (?,?,?,?,?,?)`,
						string(user), device, k.Algorithm, k.KeyID, string(k.JSON), seq); err != nil {
						return err
					}
				case err != nil:
					return err
				default:
					if storage.KeyMatch(json.RawMessage(old)) != k.Match {
						return &storage.KeyConflictError{KeyID: k.Algorithm + ":" + k.KeyID}
					}
				}
			}
		}
		for _, k := range up.Fallback {
			var oldID, old string
			err := tx.QueryRow(`SELECT key_id, key_json FROM e2e_fallback_keys WHERE user_id = ? AND device_id = ? AND algorithm = ?`,
				string(user), device, k.Algorithm).Scan(&oldID, &old)
			if err != nil && err != sql.ErrNoRows {
				return err
			}
			if err == nil && oldID == k.KeyID && storage.KeyMatch(json.RawMessage(old)) == k.Match {
				continue // the same key again: it stays used if it was
			}
			if _, err := tx.Exec(`INSERT INTO e2e_fallback_keys (user_id, device_id, algorithm, key_id, key_json, used) VALUES (?,?,?,?,?,0)
				ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET key_id = excluded.key_id, key_json = excluded.key_json, used = 0`,
				string(user), device, k.Algorithm, k.KeyID, string(k.JSON)); err != nil {
				return err
			}
		}
		var err error
		counts, err = oneTimeKeyCounts(ctx, tx, user, device)
		return err
	}, nil)
	if err != nil {
		return nil, err
	}
	return counts, nil
}

// OneTimeKeyCounts returns a device's unclaimed one-time keys per
// algorithm.
func (db *DB) OneTimeKeyCounts(ctx context.Context, user roomdag.UserID, device string) (map[string]int64, error) {
	return oneTimeKeyCounts(ctx, db.r, user, device)
}

func oneTimeKeyCounts(ctx context.Context, q querier, user roomdag.UserID, device string) (map[string]int64, error) {
	rows, err := q.QueryContext(ctx, `SELECT algorithm, COUNT(*) FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ? GROUP BY algorithm`,
		string(user), device)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var alg string
		var n int64
		if err := rows.Scan(&alg, &n); err != nil {
			return nil, err
		}
		out[alg] = n
	}
	return out, rows.Err()
}

// UnusedFallbackKeyTypes returns the algorithms of a device's fallback
// keys that no claim has used yet.
func (db *DB) UnusedFallbackKeyTypes(ctx context.Context, user roomdag.UserID, device string) ([]string, error) {
	return queryStrings(ctx, db.r, `SELECT algorithm FROM e2e_fallback_keys WHERE user_id = ? AND device_id = ? AND used = 0 ORDER BY algorithm`,
		string(user), device)
}

// DeviceKeysOf returns the stored device keys of the given users' devices:
// for a user mapped to no device IDs, all of their devices. Devices
// without keys are absent.
func (db *DB) DeviceKeysOf(ctx context.Context, users map[roomdag.UserID][]string) ([]storage.DeviceKeys, error) {
	var out []storage.DeviceKeys
	for user, devices := range users {
		q := `SELECT k.device_id, k.key_json, COALESCE(d.display_name, '') FROM e2e_device_keys k
			LEFT JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id WHERE k.user_id = ?`
		args := []any{string(user)}
		if len(devices) > 0 {
			if len(devices) > 500 {
				devices = devices[:500] // well below SQLite's variable limit; the caller bounds requests
			}
			q += ` AND k.device_id IN (?` + strings.Repeat(",?", len(devices)-1) + `)`
			for _, d := range devices {
				args = append(args, d)
			}
		}
		rows, err := db.r.QueryContext(ctx, q+` ORDER BY k.device_id`, args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			dk := storage.DeviceKeys{User: user}
			var js string
			if err := rows.Scan(&dk.Device, &js, &dk.DisplayName); err != nil {
				rows.Close()
				return nil, err
			}
			dk.JSON = json.RawMessage(js)
			out = append(out, dk)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ClaimKeys hands out, in one transaction, one key per claim: the
// device's oldest one-time key of the algorithm, which is deleted, or,
// when it has none left, its fallback key of the algorithm, which is
// marked used and stays. Claims of devices with neither get nothing.
func (db *DB) ClaimKeys(ctx context.Context, claims []storage.KeyClaim) ([]storage.ClaimedKey, error) {
	var out []storage.ClaimedKey
	err := db.write(func(tx *sql.Tx) error {
		out = out[:0]
		// The statements run once per claim: prepared once for all.
		oldest, err := tx.Prepare(`SELECT key_id, key_json FROM e2e_one_time_keys
			WHERE user_id = ? AND device_id = ? AND algorithm = ? ORDER BY seq LIMIT 1`)
		if err != nil {
			return err
		}
		defer oldest.Close()
		del, err := tx.Prepare(`DELETE FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ? AND algorithm = ? AND key_id = ?`)
		if err != nil {
			return err
		}
		defer del.Close()
		for _, c := range claims {
			var keyID, js string
			err := oldest.QueryRow(string(c.User), c.Device, c.Algorithm).Scan(&keyID, &js)
			if err == nil {
				if _, err := del.Exec(string(c.User), c.Device, c.Algorithm, keyID); err != nil {
					return err
				}
				out = append(out, storage.ClaimedKey{KeyClaim: c, KeyID: keyID, JSON: json.RawMessage(js)})
				continue
			}
			if err != sql.ErrNoRows {
				return err
			}
			err = tx.QueryRow(`UPDATE e2e_fallback_keys SET used = 1 WHERE user_id = ? AND device_id = ? AND algorithm = ?
				RETURNING key_id, key_json`, string(c.User), c.Device, c.Algorithm).Scan(&keyID, &js)
			if err == sql.ErrNoRows {
				continue
			}
			if err != nil {
				return err
			}
			out = append(out, storage.ClaimedKey{KeyClaim: c, KeyID: keyID, JSON: json.RawMessage(js)})
		}
		return nil
	}, nil)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DeviceListChanged advances user's device list for a change of their
// cross-signing keys (or of signatures of them) and returns its new
// position in the device-list stream, once durable; the change is
// announced to every process, and, for a local user, other servers are
// sent the keys (m.signing_key_update).
func (db *DB) DeviceListChanged(ctx context.Context, user roomdag.UserID) (int64, error) {
	return db.devicesChanged(user, []storage.DeviceChange{{}})
}

// DevicesChanged advances a local user's device list for a change of
// the keys of devices (signatures uploaded for them), as DeviceListChanged,
// and other servers are sent the devices' keys (m.device_list_update).
func (db *DB) DevicesChanged(ctx context.Context, user roomdag.UserID, devices []string) (int64, error) {
	changes := make([]storage.DeviceChange, len(devices))
	for i, d := range devices {
		changes[i] = storage.DeviceChange{Device: d}
	}
	return db.devicesChanged(user, changes)
}

func (db *DB) devicesChanged(user roomdag.UserID, changes []storage.DeviceChange) (int64, error) {
	var pos int64
	err := db.write(func(tx *sql.Tx) error {
		var err error
		pos, err = db.deviceListChange(tx, user, changes)
		return err
	}, nil)
	return pos, err
}

// deviceListChanged advances user's device list within a writer
// transaction. changes, for a local user, are what changed: each goes
// in the outbox for other servers, at the new position, with the user's
// previous device position as its prev_id. A remote user (their server
// told us) has none.
func (db *DB) deviceListChanged(tx *sql.Tx, user roomdag.UserID, changes ...storage.DeviceChange) error {
	_, err := db.deviceListChange(tx, user, changes)
	return err
}

func (db *DB) deviceListChange(tx *sql.Tx, user roomdag.UserID, changes []storage.DeviceChange) (int64, error) {
	var prev int64
	if len(changes) > 0 {
		err := tx.QueryRow(`SELECT device_pos FROM device_lists WHERE user_id = ?`, string(user)).Scan(&prev)
		if err != nil && err != sql.ErrNoRows {
			return 0, err
		}
	}
	pos, err := db.deviceListPos(tx, user)
	if err != nil {
		return 0, err
	}
	devices := false
	for _, c := range changes {
		deleted := 0
		if c.Deleted {
			deleted = 1
		}
		if _, err := tx.Exec(`INSERT INTO device_list_outbox (stream_pos, user_id, device_id, deleted, prev_pos) VALUES (?,?,?,?,?)
			ON CONFLICT (stream_pos, device_id) DO NOTHING`, pos, string(user), c.Device, deleted, prev); err != nil {
			return 0, err
		}
		devices = devices || c.Device != ""
	}
	if devices {
		if _, err := tx.Exec(`UPDATE device_lists SET device_pos = ? WHERE user_id = ?`, pos, string(user)); err != nil {
			return 0, err
		}
	}
	return pos, nil
}

func (db *DB) deviceListPos(tx *sql.Tx, user roomdag.UserID) (int64, error) {
	// Only the writer assigns positions (ordered across processes), so
	// MAX+1 is the next free one (an index lookup).
	var pos int64
	if err := tx.QueryRow(`SELECT COALESCE(MAX(stream_pos), 0) + 1 FROM device_lists`).Scan(&pos); err != nil {
		return 0, err
	}
	if _, err := tx.Exec(`INSERT INTO device_lists (user_id, stream_pos) VALUES (?,?)
		ON CONFLICT (user_id) DO UPDATE SET stream_pos = excluded.stream_pos`, string(user), pos); err != nil {
		return 0, err
	}
	db.change.DeviceLists = append(db.change.DeviceLists, storage.UserPos{User: user, Pos: pos})
	return pos, nil
}

// deleteDeviceKeys removes a device's keys within a writer transaction
// and advances its user's device list.
func (db *DB) deleteDeviceKeys(tx *sql.Tx, user roomdag.UserID, device string) error {
	for _, q := range []string{
		`DELETE FROM e2e_device_keys WHERE user_id = ? AND device_id = ?`,
		`DELETE FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ?`,
		`DELETE FROM e2e_fallback_keys WHERE user_id = ? AND device_id = ?`,
	} {
		if _, err := tx.Exec(q, string(user), device); err != nil {
			return err
		}
	}
	// Signatures of the device's keys (by the self-signing key) go too:
	// they sign keys that no longer exist, and a device later created
	// with the same ID has new keys they would be merged into. A device
	// ID and a cross-signing key ID share the signed keys' namespace, so
	// a device named like one of the user's cross-signing keys leaves
	// that key's signatures alone. Signatures made by the device (on the
	// master key) are kept, as Synapse keeps them: clients ignore a
	// signature by a device they do not know.
	_, err := tx.Exec(`DELETE FROM e2e_cross_signing_sigs WHERE target_user = ? AND target_key_id = ?
		AND target_key_id NOT IN (SELECT key_id FROM e2e_cross_signing_keys WHERE user_id = ?)`, string(user), device, string(user))
	return err
}

// DeviceListsChangedSince returns the users whose device list changed in
// (after, upTo] of the device-list stream.
func (db *DB) DeviceListsChangedSince(ctx context.Context, after, upTo int64) ([]roomdag.UserID, error) {
	ids, err := queryStrings(ctx, db.r, `SELECT user_id FROM device_lists WHERE stream_pos > ? AND stream_pos <= ? ORDER BY stream_pos`, after, upTo)
	out := make([]roomdag.UserID, len(ids))
	for i, id := range ids {
		out[i] = roomdag.UserID(id)
	}
	return out, err
}

// DeviceListPos is the newest position of the device-list stream.
func (db *DB) DeviceListPos(ctx context.Context) (int64, error) {
	var pos int64
	err := db.r.QueryRowContext(ctx, `SELECT COALESCE(MAX(stream_pos), 0) FROM device_lists`).Scan(&pos)
	return pos, err
}

// MembershipChangesSince returns, for the rooms user is or was in, the
// members whose membership (their latest) changed at an event position in
// (after, upTo], with that membership, user's own included.
func (db *DB) MembershipChangesSince(ctx context.Context, user roomdag.UserID, after, upTo roomdag.StreamPos) ([]storage.MemberChange, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT r.room_id, b.user_id, b.membership, a.membership FROM memberships a
		JOIN memberships b ON b.room_nid = a.room_nid
		JOIN rooms r ON r.room_nid = a.room_nid
		WHERE a.user_id = ? AND b.event_pos > ? AND b.event_pos <= ?`, string(user), int64(after), int64(upTo))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []storage.MemberChange
	for rows.Next() {
		var room, u, m, mine string
		if err := rows.Scan(&room, &u, &m, &mine); err != nil {
			return nil, err
		}
		out = append(out, storage.MemberChange{Room: roomdag.RoomID(room), User: roomdag.UserID(u), Membership: m, Mine: mine})
	}
	return out, rows.Err()
}

// JoinedMembersOf returns the users joined to a room.
func (db *DB) JoinedMembersOf(ctx context.Context, room roomdag.RoomID) ([]roomdag.UserID, error) {
	ids, err := queryStrings(ctx, db.r, `SELECT m.user_id FROM memberships m JOIN rooms r ON r.room_nid = m.room_nid
		WHERE r.room_id = ? AND m.membership = 'join'`, string(room))
	out := make([]roomdag.UserID, len(ids))
	for i, id := range ids {
		out[i] = roomdag.UserID(id)
	}
	return out, err
}
