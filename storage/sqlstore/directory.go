package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// Published reports whether a room is listed in the public room directory;
// storage.ErrNotFound for a room this server does not know.
func (db *DB) Published(ctx context.Context, room roomdag.RoomID) (bool, error) {
	var p bool
	err := db.r.QueryRowContext(ctx, `SELECT published FROM rooms WHERE room_id = ?`, string(room)).Scan(&p)
	return p, notFound(err)
}

// PublishedRooms lists the rooms in the public room directory, in no
// particular order: callers sort by what they read from each room's state.
func (db *DB) PublishedRooms(ctx context.Context) ([]roomdag.RoomID, error) {
	ids, err := queryStrings(ctx, db.r, `SELECT room_id FROM rooms WHERE published = 1 ORDER BY room_nid`)
	if err != nil {
		return nil, err
	}
	out := make([]roomdag.RoomID, len(ids))
	for i, id := range ids {
		out[i] = roomdag.RoomID(id)
	}
	return out, nil
}

// UpdateAccountData reads, changes and writes one account data item on the
// writer, so concurrent read-modify-write updates (room tags) cannot lose
// each other's changes. fn gets nil when the item does not exist; when fn
// returns nil content nothing is written and the position is 0. Otherwise it
// returns the item's new account data stream position.
func (db *DB) UpdateAccountData(ctx context.Context, user roomdag.UserID, room roomdag.RoomID, typ string,
	fn func(cur json.RawMessage) (json.RawMessage, error)) (int64, error) {
	var pos int64
	err := db.write(func(tx *sql.Tx) error {
		var cur json.RawMessage
		var c string
		switch err := tx.QueryRow(`SELECT content FROM account_data WHERE user_id = ? AND room_id = ? AND type = ?`,
			string(user), string(room), typ).Scan(&c); {
		case err == nil:
			cur = json.RawMessage(c)
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		next, err := fn(cur)
		if err != nil || next == nil {
			return err
		}
		pos, err = db.putAccountData(tx, user, room, typ, string(next))
		return err
	}, nil)
	return pos, err
}

// SearchUserDirectory finds local, active users matching every one of
// terms: each term is contained in the user ID or the display name
// (case-insensitively for ASCII: SQLite's lower() folds only ASCII). As
// in Synapse's default (users_in_public_rooms and
// users_who_share_private_rooms), the users must be joined to a public
// room (join rule public, or history world_readable), or to a room the
// searcher is joined to; the searcher shares no room with themselves, so
// they find themselves only through a public room (Complement "Bob can
// find Alice by mxid"). It returns at most limit users, ordered by user
// ID, and whether more matched; no terms match nobody.
func (db *DB) SearchUserDirectory(ctx context.Context, searcher roomdag.UserID, terms []string, limit int) ([]storage.User, bool, error) {
	if len(terms) == 0 {
		return nil, false, nil
	}
	args := []any{string(searcher), limit + 1}
	var match strings.Builder
	for _, t := range terms {
		args = append(args, "%"+likeEscaper.Replace(strings.ToLower(t))+"%")
		n := len(args)
		fmt.Fprintf(&match, "\n  AND (lower(u.user_id) LIKE ?%d ESCAPE '\\' OR lower(COALESCE(u.displayname, '')) LIKE ?%d ESCAPE '\\')", n, n)
	}
	query, args := positional(`
WITH shared_rooms AS (
	SELECT room_nid FROM memberships WHERE user_id = ?1 AND membership = 'join'
), public_rooms AS (
	SELECT cs.room_nid FROM current_state cs JOIN events e ON e.event_id = cs.event_id
	WHERE cs.state_key = '' AND (
	  cs.type = 'm.room.join_rules' AND `+db.d.JSONText("e.json", "content", "join_rule")+` = 'public'
	  OR cs.type = 'm.room.history_visibility' AND `+db.d.JSONText("e.json", "content", "history_visibility")+` = 'world_readable')
)
SELECT u.user_id, u.displayname, u.avatar_url FROM users u
WHERE u.deactivated = 0`+match.String()+`
  AND EXISTS (SELECT 1 FROM memberships m WHERE m.user_id = u.user_id AND m.membership = 'join'
              AND (m.room_nid IN (SELECT room_nid FROM public_rooms)
                   OR u.user_id != ?1 AND m.room_nid IN (SELECT room_nid FROM shared_rooms)))
ORDER BY u.user_id
LIMIT ?2`, args...)
	rows, err := db.r.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, false, err
	}
	defer rows.Close()
	var out []storage.User
	for rows.Next() {
		var u storage.User
		if err := rows.Scan(&u.ID, &u.DisplayName, &u.AvatarURL); err != nil {
			return nil, false, err
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, false, err
	}
	if len(out) > limit {
		return out[:limit], true, nil
	}
	return out, false, nil
}

// likeEscaper escapes LIKE's wildcards (ESCAPE '\').
var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
