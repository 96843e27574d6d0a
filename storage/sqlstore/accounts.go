package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// CreateUser inserts a new account; storage.ErrConflict if the ID is taken.
func (db *DB) CreateUser(ctx context.Context, u storage.User, createdMS int64) error {
	return db.write(func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO users (user_id, password_hash, is_admin, displayname, created_ts) VALUES (?,?,?,?,?)`,
			string(u.ID), u.PasswordHash, u.Admin, u.DisplayName, createdMS)
		if db.d.IsUniqueViolation(err) {
			return storage.ErrConflict
		}
		return err
	}, nil)
}

// User returns an account or storage.ErrNotFound.
func (db *DB) User(ctx context.Context, id roomdag.UserID) (*storage.User, error) {
	u := &storage.User{ID: id}
	err := db.r.QueryRowContext(ctx, `SELECT password_hash, is_admin, deactivated, displayname, avatar_url, locked, suspended FROM users WHERE user_id = ?`,
		string(id)).Scan(&u.PasswordHash, &u.Admin, &u.Deactivated, &u.DisplayName, &u.AvatarURL, &u.Locked, &u.Suspended)
	if err != nil {
		return nil, notFound(err)
	}
	return u, nil
}

// SetPasswordHash replaces a user's password hash.
func (db *DB) SetPasswordHash(ctx context.Context, id roomdag.UserID, hash string) error {
	return db.write(func(tx *sql.Tx) error {
		_, err := tx.Exec(`UPDATE users SET password_hash = ? WHERE user_id = ?`, hash, string(id))
		return err
	}, nil)
}

// SetProfile sets the display name and avatar URL (nil clears).
func (db *DB) SetProfile(ctx context.Context, id roomdag.UserID, displayName, avatarURL *string) error {
	return db.write(func(tx *sql.Tx) error {
		_, err := tx.Exec(`UPDATE users SET displayname = ?, avatar_url = ? WHERE user_id = ?`, displayName, avatarURL, string(id))
		return err
	}, nil)
}

// CreateSession creates the device if new and stores its token(s).
func (db *DB) CreateSession(ctx context.Context, s storage.Session) error {
	return db.write(func(tx *sql.Tx) error { return db.insertSession(tx, s) }, nil)
}

func (db *DB) insertSession(tx *sql.Tx, s storage.Session) error {
	// A known device keeps its name: the spec ignores
	// initial_device_display_name when the device exists.
	res, err := tx.Exec(`INSERT INTO devices (user_id, device_id, display_name) VALUES (?,?,?)
		ON CONFLICT (user_id, device_id) DO NOTHING`,
		string(s.UserID), s.DeviceID, s.DisplayName)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 1 {
		// A new device: the user's other devices and room-mates see it
		// in device_lists.changed (as Synapse announces new devices).
		if err := db.deviceListChanged(tx, s.UserID, storage.DeviceChange{Device: s.DeviceID}); err != nil {
			return err
		}
	}
	if _, err := tx.Exec(`INSERT INTO access_tokens (token_hash, user_id, device_id, expires_ts, refresh_hash) VALUES (?,?,?,?,?)`,
		s.TokenHash, string(s.UserID), s.DeviceID, s.ExpiresMS, s.RefreshHash); err != nil {
		return err
	}
	if s.RefreshHash != nil {
		if _, err := tx.Exec(`INSERT INTO refresh_tokens (token_hash, user_id, device_id) VALUES (?,?,?)`,
			s.RefreshHash, string(s.UserID), s.DeviceID); err != nil {
			return err
		}
	}
	return nil
}

// TokenOwner looks up an access token by its hash.
func (db *DB) TokenOwner(ctx context.Context, hash []byte) (storage.TokenOwner, error) {
	var o storage.TokenOwner
	err := db.r.QueryRowContext(ctx, `SELECT t.user_id, t.device_id, t.expires_ts, coalesce(u.locked, 0), coalesce(u.suspended, 0)
		FROM access_tokens t LEFT JOIN users u ON u.user_id = t.user_id WHERE t.token_hash = ?`, hash).
		Scan(&o.UserID, &o.DeviceID, &o.ExpiresMS, &o.Locked, &o.Suspended)
	return o, notFound(err)
}

// Refresh swaps a refresh token for a new session on the same device: the
// old refresh token and the access tokens issued with it stop working.
func (db *DB) Refresh(ctx context.Context, oldRefresh []byte, next storage.Session) (roomdag.UserID, string, error) {
	var user, device string
	err := db.write(func(tx *sql.Tx) error {
		if err := tx.QueryRow(`SELECT user_id, device_id FROM refresh_tokens WHERE token_hash = ?`, oldRefresh).Scan(&user, &device); err != nil {
			return notFound(err)
		}
		if _, err := tx.Exec(`DELETE FROM refresh_tokens WHERE token_hash = ?`, oldRefresh); err != nil {
			return err
		}
		if _, err := tx.Exec(`DELETE FROM access_tokens WHERE refresh_hash = ?`, oldRefresh); err != nil {
			return err
		}
		next.UserID, next.DeviceID = roomdag.UserID(user), device
		return db.insertSession(tx, next)
	}, nil)
	return roomdag.UserID(user), device, err
}

// DeleteDevices removes devices and all that is theirs (deleteDevice). With no
// device IDs it removes every device of the user except keep ("" keeps
// none).
func (db *DB) DeleteDevices(ctx context.Context, user roomdag.UserID, devices []string, keep string) error {
	return db.write(func(tx *sql.Tx) error {
		if devices == nil {
			var err error
			if devices, err = queryStrings(ctx, tx, `SELECT device_id FROM devices WHERE user_id = ? AND device_id != ? ORDER BY device_id`, string(user), keep); err != nil {
				return err
			}
		}
		for _, d := range devices {
			if err := db.deleteDevice(tx, user, d); err != nil {
				return err
			}
		}
		if len(devices) > 0 {
			db.change.SessionsEnded = append(db.change.SessionsEnded, user)
			// Everyone who shares a room with the user learns of it.
			changes := make([]storage.DeviceChange, len(devices))
			for i, d := range devices {
				changes[i] = storage.DeviceChange{Device: d, Deleted: true}
			}
			if err := db.deviceListChanged(tx, user, changes...); err != nil {
				return err
			}
		}
		return nil
	}, nil)
}

// DeactivateUser deactivates an account in one transaction (api's
// Accounts documents what it removes). The user's row stays, so the ID is
// never registered again.
func (db *DB) DeactivateUser(ctx context.Context, user roomdag.UserID, erase bool) error {
	return db.write(func(tx *sql.Tx) error {
		res, err := tx.Exec(`UPDATE users SET deactivated = 1, password_hash = '', erased = CASE WHEN ? = 1 THEN 1 ELSE erased END WHERE user_id = ?`, erase, string(user))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return storage.ErrNotFound
		}
		// Other servers hear of each device's deletion.
		gone, err := queryStrings(ctx, tx, `SELECT device_id FROM devices WHERE user_id = ?
			UNION SELECT device_id FROM e2e_device_keys WHERE user_id = ?`, string(user), string(user))
		if err != nil {
			return err
		}
		qs := []string{
			`DELETE FROM devices WHERE user_id = ?`,
			`DELETE FROM access_tokens WHERE user_id = ?`,
			`DELETE FROM refresh_tokens WHERE user_id = ?`,
			`DELETE FROM pushers WHERE user_id = ?`,
			`DELETE FROM account_data WHERE user_id = ?`,
			`DELETE FROM push_rules WHERE user_id = ?`,
			`DELETE FROM to_device WHERE user_id = ?`,
			`DELETE FROM to_device_txns WHERE user_id = ?`,
			`DELETE FROM dehydrated_devices WHERE user_id = ?`,
			`DELETE FROM e2e_device_keys WHERE user_id = ?`,
			`DELETE FROM e2e_one_time_keys WHERE user_id = ?`,
			`DELETE FROM e2e_fallback_keys WHERE user_id = ?`,
		}
		if erase {
			qs = append(qs, `UPDATE users SET displayname = NULL, avatar_url = NULL WHERE user_id = ?`,
				`DELETE FROM profile_fields WHERE user_id = ?`)
		}
		for _, q := range qs {
			if _, err := tx.Exec(q, string(user)); err != nil {
				return err
			}
		}
		db.change.SessionsEnded = append(db.change.SessionsEnded, user)
		changes := make([]storage.DeviceChange, len(gone))
		for i, d := range gone {
			changes[i] = storage.DeviceChange{Device: d, Deleted: true}
		}
		if err := db.deviceListChanged(tx, user, changes...); err != nil {
			return err
		}
		if erase {
			db.change.Erased = append(db.change.Erased, user)
		}
		return nil
	}, func() {
		if erase {
			db.addErased(user)
		}
	})
}

// ErasedUsers returns the erased users (sync.MembershipStore documents
// it), from memory: the set is tiny and read on every timeline served.
func (db *DB) ErasedUsers() map[roomdag.UserID]bool {
	return *db.erased.Load()
}

// loadErased reads the erased users at Open.
func (db *DB) loadErased() error { return db.ReloadErased(context.Background()) }

// addErased adds user to the erased set. It runs on the writer goroutine
// after the erasure commits, so replacements never race each other, and
// readers of the old map are not disturbed.
func (db *DB) addErased(user roomdag.UserID) {
	old := *db.erased.Load()
	if old[user] {
		return
	}
	m := make(map[roomdag.UserID]bool, len(old)+1)
	for u := range old {
		m[u] = true
	}
	m[user] = true
	db.erased.Store(&m)
}

// DeactivatedMembers lists the deactivated users who are still joined
// to, invited to or knocking on a room: those whose deactivation stopped
// before it had left every room.
func (db *DB) DeactivatedMembers(ctx context.Context) ([]roomdag.UserID, error) {
	ids, err := queryStrings(ctx, db.r, `SELECT DISTINCT m.user_id FROM memberships m JOIN users u ON u.user_id = m.user_id
		WHERE u.deactivated = 1 AND m.membership IN ('join', 'invite', 'knock') ORDER BY m.user_id`)
	out := make([]roomdag.UserID, len(ids))
	for i, id := range ids {
		out[i] = roomdag.UserID(id)
	}
	return out, err
}

// Devices lists a user's devices.
func (db *DB) Devices(ctx context.Context, user roomdag.UserID) ([]storage.Device, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM devices WHERE user_id = ? ORDER BY device_id`, string(user))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []storage.Device{}
	for rows.Next() {
		var d storage.Device
		if err := rows.Scan(&d.DeviceID, &d.DisplayName, &d.LastSeenTS, &d.LastSeenIP); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// CreateDevice creates a device with no access token unless the user has
// it already, and says whether it did.
func (db *DB) CreateDevice(ctx context.Context, user roomdag.UserID, device string, name *string) (bool, error) {
	var created bool
	err := db.write(func(tx *sql.Tx) error {
		res, err := tx.Exec(`INSERT INTO devices (user_id, device_id, display_name) VALUES (?,?,?)
			ON CONFLICT (user_id, device_id) DO NOTHING`, string(user), device, name)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil || n != 1 {
			return err
		}
		created = true
		// A new device of a local user: servers sharing a room with them
		// hear of it, as of one made by a login.
		return db.deviceListChanged(tx, user, storage.DeviceChange{Device: device})
	}, nil)
	return created, err
}

// SetDeviceName renames a device; storage.ErrNotFound if it does not exist.
func (db *DB) SetDeviceName(ctx context.Context, user roomdag.UserID, device string, name string) error {
	return db.write(func(tx *sql.Tx) error {
		res, err := tx.Exec(`UPDATE devices SET display_name = ? WHERE user_id = ? AND device_id = ?`, name, string(user), device)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return storage.ErrNotFound
		}
		// The name is in /keys/query's unsigned.device_display_name:
		// those who track the user's devices refetch them.
		return db.deviceListChanged(tx, user, storage.DeviceChange{Device: device})
	}, nil)
}

// SeenDevice records a device's last use.
func (db *DB) SeenDevice(ctx context.Context, user roomdag.UserID, device, ip string, ms int64) error {
	return db.write(func(tx *sql.Tx) error {
		_, err := tx.Exec(`UPDATE devices SET last_seen_ts = ?, last_seen_ip = ? WHERE user_id = ? AND device_id = ?`, ms, ip, string(user), device)
		return err
	}, nil)
}

// PutAccountData stores global (room "") or per-room account data and
// returns its position in the account data stream, once durable.
func (db *DB) PutAccountData(ctx context.Context, user roomdag.UserID, room roomdag.RoomID, typ string, content json.RawMessage) (int64, error) {
	var pos int64
	err := db.write(func(tx *sql.Tx) error {
		var err error
		pos, err = db.putAccountData(tx, user, room, typ, string(content))
		return err
	}, nil)
	return pos, err
}

// putAccountData stores an account data item in the writer's tx and
// returns its new account data stream position.
func (db *DB) putAccountData(tx *sql.Tx, user roomdag.UserID, room roomdag.RoomID, typ, content string) (int64, error) {
	pos := next(&db.ctr.accountData)
	_, err := tx.Exec(`INSERT INTO account_data (user_id, room_id, type, content, stream_pos) VALUES (?,?,?,?,?)
		ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = excluded.content, stream_pos = excluded.stream_pos`,
		string(user), string(room), typ, content, pos)
	if err == nil {
		db.change.AccountData = append(db.change.AccountData, storage.UserPos{User: user, Pos: pos})
	}
	return pos, err
}

// AccountData returns one account data item or storage.ErrNotFound.
func (db *DB) AccountData(ctx context.Context, user roomdag.UserID, room roomdag.RoomID, typ string) (json.RawMessage, error) {
	var c string
	err := db.r.QueryRowContext(ctx, `SELECT content FROM account_data WHERE user_id = ? AND room_id = ? AND type = ?`,
		string(user), string(room), typ).Scan(&c)
	return json.RawMessage(c), notFound(err)
}

// RoomAccountData returns the user's room account data of one type, by
// room: one query where reading each room's would take one per room.
func (db *DB) RoomAccountData(ctx context.Context, user roomdag.UserID, typ string) (map[roomdag.RoomID]json.RawMessage, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT room_id, content FROM account_data WHERE user_id = ? AND room_id != '' AND type = ?`,
		string(user), typ)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[roomdag.RoomID]json.RawMessage{}
	for rows.Next() {
		var room, c string
		if err := rows.Scan(&room, &c); err != nil {
			return nil, err
		}
		out[roomdag.RoomID(room)] = json.RawMessage(c)
	}
	return out, rows.Err()
}

// AccountDataSince lists a user's account data changed in (after, upTo].
func (db *DB) AccountDataSince(ctx context.Context, user roomdag.UserID, after, upTo int64) ([]storage.AccountDataItem, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT room_id, type, content FROM account_data WHERE user_id = ? AND stream_pos > ? AND stream_pos <= ?
		ORDER BY stream_pos`, string(user), after, upTo)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []storage.AccountDataItem
	for rows.Next() {
		var it storage.AccountDataItem
		var c string
		if err := rows.Scan(&it.RoomID, &it.Type, &c); err != nil {
			return nil, err
		}
		it.Content = json.RawMessage(c)
		out = append(out, it)
	}
	return out, rows.Err()
}

// AccountDataPos is the newest committed account data position.
func (db *DB) AccountDataPos(ctx context.Context) (int64, error) {
	var p int64
	err := db.r.QueryRowContext(ctx, `SELECT COALESCE(MAX(stream_pos), 0) FROM account_data`).Scan(&p)
	return p, err
}

// EventPos is the newest committed event stream position.
func (db *DB) EventPos(ctx context.Context) (roomdag.StreamPos, error) {
	var p int64
	err := db.r.QueryRowContext(ctx, `SELECT COALESCE(MAX(stream_pos), 0) FROM events`).Scan(&p)
	return roomdag.StreamPos(p), err
}

// PutFilter stores a filter and returns its ID (per user, from 0).
func (db *DB) PutFilter(ctx context.Context, user roomdag.UserID, filter json.RawMessage) (int64, error) {
	var id int64
	err := db.write(func(tx *sql.Tx) error {
		if err := tx.QueryRow(`SELECT COALESCE(MAX(filter_id) + 1, 0) FROM filters WHERE user_id = ?`, string(user)).Scan(&id); err != nil {
			return err
		}
		_, err := tx.Exec(`INSERT INTO filters (user_id, filter_id, filter) VALUES (?,?,?)`, string(user), id, string(filter))
		return err
	}, nil)
	return id, err
}

// Filter returns a stored filter or storage.ErrNotFound.
func (db *DB) Filter(ctx context.Context, user roomdag.UserID, id int64) (json.RawMessage, error) {
	var f string
	err := db.r.QueryRowContext(ctx, `SELECT filter FROM filters WHERE user_id = ? AND filter_id = ?`, string(user), id).Scan(&f)
	return json.RawMessage(f), notFound(err)
}

// PutAlias maps an alias to a room; storage.ErrConflict if it exists.
func (db *DB) PutAlias(ctx context.Context, alias roomdag.RoomAlias, room roomdag.RoomID, creator roomdag.UserID) error {
	return db.write(func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO room_aliases (alias, room_id, creator) VALUES (?,?,?)`, string(alias), string(room), string(creator))
		if db.d.IsUniqueViolation(err) {
			return storage.ErrConflict
		}
		return err
	}, nil)
}

// Alias resolves an alias, returning the room and who created the alias.
func (db *DB) Alias(ctx context.Context, alias roomdag.RoomAlias) (roomdag.RoomID, roomdag.UserID, error) {
	var room, creator string
	err := db.r.QueryRowContext(ctx, `SELECT room_id, creator FROM room_aliases WHERE alias = ?`, string(alias)).Scan(&room, &creator)
	return roomdag.RoomID(room), roomdag.UserID(creator), notFound(err)
}

// DeleteAlias removes an alias.
func (db *DB) DeleteAlias(ctx context.Context, alias roomdag.RoomAlias) error {
	return db.write(func(tx *sql.Tx) error {
		_, err := tx.Exec(`DELETE FROM room_aliases WHERE alias = ?`, string(alias))
		return err
	}, nil)
}

// MoveAliases points every local alias of room from at room to, in one
// statement, so no alias is ever free or lost in between (a room upgrade
// moves them, spec: "Room Upgrades").
func (db *DB) MoveAliases(ctx context.Context, from, to roomdag.RoomID) error {
	return db.write(func(tx *sql.Tx) error {
		_, err := tx.Exec(`UPDATE room_aliases SET room_id = ? WHERE room_id = ?`, string(to), string(from))
		return err
	}, nil)
}

// RoomAliases lists the local aliases of a room.
func (db *DB) RoomAliases(ctx context.Context, room roomdag.RoomID) ([]string, error) {
	out, err := queryStrings(ctx, db.r, `SELECT alias FROM room_aliases WHERE room_id = ? ORDER BY alias`, string(room))
	if out == nil {
		out = []string{}
	}
	return out, err
}

// UserRooms lists every room the user has a membership in.
func (db *DB) UserRooms(ctx context.Context, user roomdag.UserID) ([]storage.RoomMembership, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT r.room_id, m.membership, m.event_pos, m.forgotten FROM memberships m
		JOIN rooms r ON r.room_nid = m.room_nid WHERE m.user_id = ? ORDER BY m.room_nid`, string(user))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []storage.RoomMembership
	for rows.Next() {
		var m storage.RoomMembership
		if err := rows.Scan(&m.RoomID, &m.Membership, &m.Pos, &m.Forgotten); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// UserMembership returns the user's membership in one room, or
// storage.ErrNotFound if they have none there.
func (db *DB) UserMembership(ctx context.Context, user roomdag.UserID, room roomdag.RoomID) (storage.RoomMembership, error) {
	m := storage.RoomMembership{RoomID: room}
	err := db.r.QueryRowContext(ctx, `SELECT m.membership, m.event_pos, m.forgotten FROM memberships m
		JOIN rooms r ON r.room_nid = m.room_nid WHERE m.user_id = ? AND r.room_id = ?`, string(user), string(room)).
		Scan(&m.Membership, &m.Pos, &m.Forgotten)
	if errors.Is(err, sql.ErrNoRows) {
		return m, storage.ErrNotFound
	}
	return m, err
}

// JoinedRooms lists the rooms the user is joined to.
func (db *DB) JoinedRooms(ctx context.Context, user roomdag.UserID) ([]roomdag.RoomID, error) {
	ids, err := queryStrings(ctx, db.r, `SELECT r.room_id FROM memberships m JOIN rooms r ON r.room_nid = m.room_nid
		WHERE m.user_id = ? AND m.membership = 'join' ORDER BY m.room_nid`, string(user))
	out := make([]roomdag.RoomID, len(ids))
	for i, id := range ids {
		out[i] = roomdag.RoomID(id)
	}
	return out, err
}

// RoomsWithEventsSince returns the rooms the user has any membership in
// whose newest event is after the given position.
func (db *DB) RoomsWithEventsSince(ctx context.Context, user roomdag.UserID, after roomdag.StreamPos) (map[roomdag.RoomID]bool, error) {
	ids, err := queryStrings(ctx, db.r, `SELECT r.room_id FROM memberships m JOIN rooms r ON r.room_nid = m.room_nid
		WHERE m.user_id = ? AND r.last_pos > ?`, string(user), int64(after))
	out := make(map[roomdag.RoomID]bool, len(ids))
	for _, id := range ids {
		out[roomdag.RoomID(id)] = true
	}
	return out, err
}

// InviteState returns the stripped state kept with an invite event.
func (db *DB) InviteState(ctx context.Context, pos roomdag.StreamPos) (json.RawMessage, error) {
	var s string
	err := db.r.QueryRowContext(ctx, `SELECT stripped FROM invite_state WHERE event_pos = ?`, int64(pos)).Scan(&s)
	return json.RawMessage(s), notFound(err)
}

// Forget hides a left room from the user's sync.
func (db *DB) Forget(ctx context.Context, user roomdag.UserID, room roomdag.RoomID) error {
	nid, _, err := db.roomNID(ctx, db.r, room)
	if err != nil {
		return err
	}
	return db.write(func(tx *sql.Tx) error {
		_, err := tx.Exec(`UPDATE memberships SET forgotten = 1 WHERE room_nid = ? AND user_id = ?`, nid, string(user))
		return err
	}, nil)
}

// Members returns, per room, the users whose membership is one of the given
// values, for the notifier's start-up state.
func (db *DB) Members(ctx context.Context, memberships ...string) (map[roomdag.RoomID][]roomdag.UserID, error) {
	out := map[roomdag.RoomID][]roomdag.UserID{}
	rows, err := db.r.QueryContext(ctx, `SELECT r.room_id, m.user_id, m.membership FROM memberships m JOIN rooms r ON r.room_nid = m.room_nid ORDER BY m.room_nid, m.user_id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var room, user, m string
		if err := rows.Scan(&room, &user, &m); err != nil {
			return nil, err
		}
		for _, want := range memberships {
			if m == want {
				out[roomdag.RoomID(room)] = append(out[roomdag.RoomID(room)], roomdag.UserID(user))
			}
		}
	}
	return out, rows.Err()
}
