package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"

	"github.com/persistentchat/homeserver/roomdag"
)

// PushRules returns the user's push rule document (push.UserRules as JSON),
// or nil if the user never changed a rule.
func (db *DB) PushRules(ctx context.Context, user roomdag.UserID) (json.RawMessage, error) {
	var doc string
	err := db.r.QueryRowContext(ctx, `SELECT rules FROM push_rules WHERE user_id = ?`, string(user)).Scan(&doc)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return json.RawMessage(doc), nil
}

// UpdatePushRules changes the user's push rule document in one write
// transaction: fn gets the current document (nil if none) and returns the
// next one and the m.push_rules account data content to store with it, so
// /sync sees every change in order. It returns the account data stream
// position, for the notifier. fn runs on the writer goroutine: it must be
// quick and must not touch the database. An error from fn changes nothing
// and is returned as is.
func (db *DB) UpdatePushRules(ctx context.Context, user roomdag.UserID, fn func(cur json.RawMessage) (next, accountData json.RawMessage, err error)) (int64, error) {
	var pos int64
	err := db.write(func(tx *sql.Tx) error {
		var cur json.RawMessage
		var doc string
		switch err := tx.QueryRow(`SELECT rules FROM push_rules WHERE user_id = ?`, string(user)).Scan(&doc); {
		case err == nil:
			cur = json.RawMessage(doc)
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		next, content, err := fn(cur)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(`INSERT INTO push_rules (user_id, rules) VALUES (?,?)
			ON CONFLICT (user_id) DO UPDATE SET rules = excluded.rules`, string(user), string(next)); err != nil {
			return err
		}
		pos, err = db.putAccountData(tx, user, "", "m.push_rules", string(content))
		return err
	}, nil)
	return pos, err
}
