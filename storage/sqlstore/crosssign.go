package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// Cross-signing keys and the signatures uploaded for keys (e2ee/crosssign.go).

// CrossSigningKeys returns the cross-signing keys of each of users that
// has any.
func (db *DB) CrossSigningKeys(ctx context.Context, users []roomdag.UserID) ([]storage.CrossSigningKey, error) {
	var out []storage.CrossSigningKey
	err := db.readTx(ctx, func(tx *sql.Tx) error {
		for _, u := range users {
			rows, err := tx.QueryContext(ctx, `SELECT usage, key_id, key_json FROM e2e_cross_signing_keys WHERE user_id = ?`, string(u))
			if err != nil {
				return err
			}
			for rows.Next() {
				k := storage.CrossSigningKey{User: u}
				var js string
				if err := rows.Scan(&k.Usage, &k.KeyID, &js); err != nil {
					rows.Close()
					return err
				}
				k.JSON = json.RawMessage(js)
				out = append(out, k)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}

// PutCrossSigningKeys stores keys, all of one user, replacing the keys of
// the same usages. The signatures made by a replaced key and those made
// of it are deleted with it: they vouch for a key that is gone.
func (db *DB) PutCrossSigningKeys(ctx context.Context, user roomdag.UserID, keys []storage.CrossSigningKey) error {
	return db.write(func(tx *sql.Tx) error {
		for _, k := range keys {
			var old string
			err := tx.QueryRow(`SELECT key_id FROM e2e_cross_signing_keys WHERE user_id = ? AND usage = ?`, string(user), k.Usage).Scan(&old)
			if err != nil && err != sql.ErrNoRows {
				return err
			}
			if err == nil && old != k.KeyID {
				if _, err := tx.Exec(`DELETE FROM e2e_cross_signing_sigs WHERE signer_user = ? AND signer_key_id = ?`, string(user), "ed25519:"+old); err != nil {
					return err
				}
				if _, err := tx.Exec(`DELETE FROM e2e_cross_signing_sigs WHERE target_user = ? AND target_key_id = ?`, string(user), old); err != nil {
					return err
				}
			}
			if _, err := tx.Exec(`INSERT INTO e2e_cross_signing_keys (user_id, usage, key_id, key_json) VALUES (?,?,?,?)
				ON CONFLICT (user_id, usage) DO UPDATE SET key_id = excluded.key_id, key_json = excluded.key_json`,
				string(user), k.Usage, k.KeyID, string(k.JSON)); err != nil {
				return err
			}
		}
		return nil
	}, nil)
}

// PutKeySignatures stores sigs, each replacing the signature of the same
// signing key over the same key.
func (db *DB) PutKeySignatures(ctx context.Context, sigs []storage.KeySignature) error {
	return db.write(func(tx *sql.Tx) error {
		for _, s := range sigs {
			if _, err := tx.Exec(`INSERT INTO e2e_cross_signing_sigs (target_user, target_key_id, signer_user, signer_key_id, signature)
				VALUES (?,?,?,?,?) ON CONFLICT (target_user, target_key_id, signer_user, signer_key_id) DO UPDATE SET signature = excluded.signature`,
				string(s.TargetUser), s.TargetKeyID, string(s.Signer), s.SignerKeyID, s.Signature); err != nil {
				return err
			}
		}
		return nil
	}, nil)
}

// KeySignatures returns the uploaded signatures of the keys of users.
func (db *DB) KeySignatures(ctx context.Context, users []roomdag.UserID) ([]storage.KeySignature, error) {
	var out []storage.KeySignature
	err := db.readTx(ctx, func(tx *sql.Tx) error {
		for _, u := range users {
			rows, err := tx.QueryContext(ctx, `SELECT target_key_id, signer_user, signer_key_id, signature
				FROM e2e_cross_signing_sigs WHERE target_user = ? ORDER BY target_key_id, signer_user, signer_key_id`, string(u))
			if err != nil {
				return err
			}
			for rows.Next() {
				s := storage.KeySignature{TargetUser: u}
				var signer string
				if err := rows.Scan(&s.TargetKeyID, &signer, &s.SignerKeyID, &s.Signature); err != nil {
					rows.Close()
					return err
				}
				s.Signer = roomdag.UserID(signer)
				out = append(out, s)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}
