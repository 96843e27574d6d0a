package sqlstore

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// ProfileFields returns a user's profile fields other than the display
// name and avatar URL (none: an empty map). It does not check that the
// user exists.
func (db *DB) ProfileFields(ctx context.Context, user roomdag.UserID) (map[string]json.RawMessage, error) {
	return profileFields(ctx, db.r, user)
}

// UpdateProfile reads the user's whole profile, lets change edit it, and
// stores what it changed, in one write transaction, so that a check change
// makes over the whole profile (its size) holds against concurrent
// updates. An error from change is returned as it is and nothing is
// stored; storage.ErrNotFound if there is no such user. It returns the
// profile as stored.
func (db *DB) UpdateProfile(ctx context.Context, user roomdag.UserID, change func(p *storage.Profile) error) (*storage.Profile, error) {
	var out *storage.Profile
	err := db.write(func(tx *sql.Tx) error {
		p := &storage.Profile{}
		if err := tx.QueryRow(`SELECT displayname, avatar_url FROM users WHERE user_id = ?`, string(user)).Scan(&p.DisplayName, &p.AvatarURL); err != nil {
			return notFound(err)
		}
		old, err := profileFields(context.Background(), tx, user) // the writer's transaction outlives no request
		if err != nil {
			return err
		}
		p.Fields = make(map[string]json.RawMessage, len(old))
		for k, v := range old {
			p.Fields[k] = v
		}
		if err := change(p); err != nil {
			return err
		}
		if _, err := tx.Exec(`UPDATE users SET displayname = ?, avatar_url = ? WHERE user_id = ?`, p.DisplayName, p.AvatarURL, string(user)); err != nil {
			return err
		}
		for k := range old {
			if _, kept := p.Fields[k]; !kept {
				if _, err := tx.Exec(`DELETE FROM profile_fields WHERE user_id = ? AND field = ?`, string(user), k); err != nil {
					return err
				}
			}
		}
		for k, v := range p.Fields {
			var compact bytes.Buffer
			if err := json.Compact(&compact, v); err != nil {
				return err
			}
			if prev, had := old[k]; had && bytes.Equal(prev, compact.Bytes()) {
				continue
			}
			if _, err := tx.Exec(`INSERT INTO profile_fields (user_id, field, value) VALUES (?,?,?)
				ON CONFLICT (user_id, field) DO UPDATE SET value = excluded.value`, string(user), k, compact.String()); err != nil {
				return err
			}
			p.Fields[k] = json.RawMessage(compact.Bytes())
		}
		out = p
		return nil
	}, nil)
	return out, err
}

func profileFields(ctx context.Context, q querier, user roomdag.UserID) (map[string]json.RawMessage, error) {
	rows, err := q.QueryContext(ctx, `SELECT field, value FROM profile_fields WHERE user_id = ?`, string(user))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]json.RawMessage{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, err
		}
		out[k] = json.RawMessage(v)
	}
	return out, rows.Err()
}
