package sqlstore

import (
	"context"
	"database/sql"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// ServerKeys returns every key stored for server, in key ID order.
func (db *DB) ServerKeys(ctx context.Context, server roomdag.ServerName) ([]storage.ServerKey, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT key_id, public_key, valid_until_ts, expired_ts, fetched_ts, response
		FROM server_keys WHERE server_name = ? ORDER BY key_id`, string(server))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []storage.ServerKey
	for rows.Next() {
		k := storage.ServerKey{ServerName: server}
		var resp string
		if err := rows.Scan(&k.KeyID, &k.PublicKey, &k.ValidUntilTS, &k.ExpiredTS, &k.FetchedTS, &resp); err != nil {
			return nil, err
		}
		k.Response = []byte(resp)
		out = append(out, k)
	}
	return out, rows.Err()
}

// StoreServerKeys inserts or replaces keys (by server name and key ID),
// in one transaction.
func (db *DB) StoreServerKeys(ctx context.Context, keys []storage.ServerKey) error {
	return db.write(func(tx *sql.Tx) error {
		for _, k := range keys {
			if _, err := tx.Exec(`INSERT INTO server_keys (server_name, key_id, public_key, valid_until_ts, expired_ts, fetched_ts, response)
				VALUES (?,?,?,?,?,?,?)
				ON CONFLICT (server_name, key_id) DO UPDATE SET public_key = excluded.public_key,
					valid_until_ts = excluded.valid_until_ts, expired_ts = excluded.expired_ts,
					fetched_ts = excluded.fetched_ts, response = excluded.response`,
				string(k.ServerName), k.KeyID, k.PublicKey, k.ValidUntilTS, k.ExpiredTS, k.FetchedTS, string(k.Response)); err != nil {
				return err
			}
		}
		return nil
	}, nil)
}
