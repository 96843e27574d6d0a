package sqlstore

import (
	"context"
	"database/sql"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// Pushers (storage.Pusher) and what their delivery reads: the user's
// notifications after a pusher's position.

const pusherCols = `pusher_id, user_id, device_id, kind, app_id, pushkey, app_display_name, device_display_name,
	profile_tag, lang, data, pushkey_ts, last_pos, failing_since`

func scanPusher(sc interface{ Scan(...any) error }) (storage.Pusher, error) {
	var p storage.Pusher
	var user, data string
	var pos int64
	err := sc.Scan(&p.ID, &user, &p.DeviceID, &p.Kind, &p.AppID, &p.PushKey, &p.AppDisplayName, &p.DeviceDisplayName,
		&p.ProfileTag, &p.Lang, &data, &p.PushKeyTS, &pos, &p.FailingSince)
	p.User, p.Data, p.LastPos = roomdag.UserID(user), []byte(data), roomdag.StreamPos(pos)
	return p, err
}

func (db *DB) queryPushers(ctx context.Context, query string, args ...any) ([]storage.Pusher, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT `+pusherCols+` FROM pushers `+query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []storage.Pusher
	for rows.Next() {
		p, err := scanPusher(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// Pushers lists the user's pushers, oldest first.
func (db *DB) Pushers(ctx context.Context, user roomdag.UserID) ([]storage.Pusher, error) {
	return db.queryPushers(ctx, `WHERE user_id = ? ORDER BY pusher_id`, string(user))
}

// AllPushers lists every pusher of every user.
func (db *DB) AllPushers(ctx context.Context) ([]storage.Pusher, error) {
	return db.queryPushers(ctx, `ORDER BY pusher_id`)
}

// Pusher returns one pusher by ID, or storage.ErrNotFound.
func (db *DB) Pusher(ctx context.Context, id int64) (storage.Pusher, error) {
	p, err := scanPusher(db.r.QueryRowContext(ctx, `SELECT `+pusherCols+` FROM pushers WHERE pusher_id = ?`, id))
	return p, notFound(err)
}

// SetPusher creates p, or updates the user's pusher with p's app ID and
// pushkey, and returns the users whose pushers it removed. An update
// keeps the pusher's ID, device and delivery position; a new pusher
// starts at the notification worker's position, so it delivers only
// notifications that come after it. Unless appendPusher, it removes the
// pushers of other users with the same app ID and pushkey, in the same
// transaction (spec: the append parameter of POST /pushers/set).
func (db *DB) SetPusher(ctx context.Context, p storage.Pusher, appendPusher bool) ([]roomdag.UserID, error) {
	var removed []roomdag.UserID
	err := db.write(func(tx *sql.Tx) error {
		removed = removed[:0]
		if !appendPusher {
			users, err := queryStrings(ctx, tx, `DELETE FROM pushers WHERE app_id = ? AND pushkey = ? AND user_id != ?
				RETURNING user_id`, p.AppID, p.PushKey, string(p.User))
			if err != nil {
				return err
			}
			for _, u := range users {
				removed = append(removed, roomdag.UserID(u))
			}
		}
		_, err := tx.Exec(`INSERT INTO pushers (user_id, device_id, kind, app_id, pushkey, app_display_name,
				device_display_name, profile_tag, lang, data, pushkey_ts, last_pos)
			VALUES (?,?,?,?,?,?,?,?,?,?,?, (SELECT event_pos FROM notify_position WHERE id = 1))
			ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET kind = excluded.kind,
				app_display_name = excluded.app_display_name, device_display_name = excluded.device_display_name,
				profile_tag = excluded.profile_tag, lang = excluded.lang, data = excluded.data,
				pushkey_ts = excluded.pushkey_ts, failing_since = 0`,
			string(p.User), p.DeviceID, p.Kind, p.AppID, p.PushKey, p.AppDisplayName,
			p.DeviceDisplayName, p.ProfileTag, p.Lang, string(p.Data), p.PushKeyTS)
		return err
	}, nil)
	return removed, err
}

// DeletePusher deletes the user's pusher with the app ID and pushkey, if
// there is one.
func (db *DB) DeletePusher(ctx context.Context, user roomdag.UserID, appID, pushKey string) error {
	return db.write(func(tx *sql.Tx) error {
		_, err := tx.Exec(`DELETE FROM pushers WHERE user_id = ? AND app_id = ? AND pushkey = ?`, string(user), appID, pushKey)
		return err
	}, nil)
}

// PusherProgress records a pusher's delivery: its position moves forward
// to pos (never back) and its failing_since becomes failingSince (ms, 0:
// not failing). storage.ErrNotFound if the pusher is gone.
func (db *DB) PusherProgress(ctx context.Context, id int64, pos roomdag.StreamPos, failingSince int64) error {
	return db.write(func(tx *sql.Tx) error {
		res, err := tx.Exec(`UPDATE pushers SET last_pos = CASE WHEN last_pos > ? THEN last_pos ELSE ? END, failing_since = ?
			WHERE pusher_id = ?`, int64(pos), int64(pos), failingSince, id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return storage.ErrNotFound
		}
		return nil
	}, nil)
}

// pushNotifications is PushNotifications' query.
var pushNotifications = numberedQuery(`SELECT event_pos, room_id, actions, highlight, ts FROM (
			SELECT e.event_pos, e.room_id, e.actions, e.highlight, e.ts FROM notify_spans s
			JOIN event_notifications e ON e.room_id = s.room_id
				AND e.event_pos > CASE WHEN s.joined_pos > ?2 THEN s.joined_pos ELSE ?2 END
				AND (s.left_pos IS NULL OR e.event_pos <= s.left_pos)
			WHERE s.user_id = ?1 AND (s.left_pos IS NULL OR s.left_pos > ?2)
				AND NOT EXISTS (SELECT 1 FROM notification_exceptions x WHERE x.user_id = ?1 AND x.event_pos = e.event_pos)
			UNION ALL
			SELECT event_pos, room_id, actions, highlight, ts FROM notification_exceptions
			WHERE user_id = ?1 AND event_pos > ?2 AND actions IS NOT NULL) n
		ORDER BY event_pos DESC LIMIT ?3`)

// PushNotifications returns the newest limit of the user's notifications
// for events after position after, oldest first, with EventID and Read
// filled. It reads the default rows of the user's join spans that reach
// past after (one index range per span) and the user's exceptions, an
// exception replacing the default of its event.
func (db *DB) PushNotifications(ctx context.Context, user roomdag.UserID, after roomdag.StreamPos, limit int) ([]storage.Notification, error) {
	if limit <= 0 {
		return nil, nil
	}
	rows, err := db.r.QueryContext(ctx, pushNotifications.query, pushNotifications.args(string(user), int64(after), limit)...)
	if err != nil {
		return nil, err
	}
	var out []storage.Notification
	for rows.Next() {
		n := storage.Notification{User: user}
		var pos int64
		var room, actions string
		if err := rows.Scan(&pos, &room, &actions, &n.Highlight, &n.TS); err != nil {
			rows.Close()
			return nil, err
		}
		n.EventPos, n.Room, n.Actions = roomdag.StreamPos(pos), roomdag.RoomID(room), []byte(actions)
		out = append(out, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	if err := db.fillNotifications(ctx, user, out); err != nil {
		return nil, err
	}
	return out, nil
}
