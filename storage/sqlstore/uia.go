package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"slices"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// User-interactive auth sessions live in the database rather than in one
// process's memory: behind a load balancer, the request that begins a flow
// and the one that completes it may reach different processes. They are
// written through the writer, so a session is committed before the 401 that
// names it is sent; a flow that completes within the request that began it
// writes nothing (api/uia.go).

// PutUIASession stores a new session and, in the same transaction, forgets
// every session expired at nowMS (sessions are few and short-lived: the
// index on expires_ms makes that a short range scan). storage.ErrConflict
// if the ID is taken.
func (db *DB) PutUIASession(ctx context.Context, s storage.UIASession, nowMS int64) error {
	completed, err := json.Marshal(nonNil(s.Completed))
	if err != nil {
		return err
	}
	return db.write(func(tx *sql.Tx) error {
		if _, err := tx.Exec(`DELETE FROM uia_sessions WHERE expires_ms < ?`, nowMS); err != nil {
			return err
		}
		_, err := tx.Exec(`INSERT INTO uia_sessions (session_id, endpoint, completed, user_id, expires_ms) VALUES (?, ?, ?, ?, ?)`,
			s.ID, s.Endpoint, string(completed), string(s.User), s.ExpiresMS)
		if db.d.IsUniqueViolation(err) {
			return storage.ErrConflict
		}
		return err
	}, nil)
}

// UIASession returns the session unless it is unknown or expired at nowMS
// (storage.ErrNotFound).
func (db *DB) UIASession(ctx context.Context, id string, nowMS int64) (*storage.UIASession, error) {
	return scanUIASession(db.r.QueryRowContext(ctx, `SELECT session_id, endpoint, completed, user_id, expires_ms FROM uia_sessions
		WHERE session_id = ? AND expires_ms >= ?`, id, nowMS))
}

// CompleteUIAStage adds stage to the session's completed stages (once),
// sets its user if user is not "" and moves its expiry to expiresMS, in one
// write transaction: stages completed at the same time by requests on
// different processes are all kept. It returns the session as stored;
// storage.ErrNotFound if it is unknown or expired at nowMS.
func (db *DB) CompleteUIAStage(ctx context.Context, id, stage string, user roomdag.UserID, expiresMS, nowMS int64) (*storage.UIASession, error) {
	var out *storage.UIASession
	err := db.write(func(tx *sql.Tx) error {
		s, err := scanUIASession(tx.QueryRow(`SELECT session_id, endpoint, completed, user_id, expires_ms FROM uia_sessions
			WHERE session_id = ? AND expires_ms >= ?`, id, nowMS))
		if err != nil {
			return err
		}
		if !slices.Contains(s.Completed, stage) {
			s.Completed = append(s.Completed, stage)
		}
		if user != "" {
			s.User = user
		}
		s.ExpiresMS = expiresMS
		completed, err := json.Marshal(s.Completed)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(`UPDATE uia_sessions SET completed = ?, user_id = ?, expires_ms = ? WHERE session_id = ?`,
			string(completed), string(s.User), s.ExpiresMS, id); err != nil {
			return err
		}
		out = s
		return nil
	}, nil)
	return out, err
}

// DeleteUIASession forgets a session and reports whether it was there and
// unexpired at nowMS. Of requests that complete one session at once, on any
// processes, exactly one is told true: a completed session authorises one
// request.
func (db *DB) DeleteUIASession(ctx context.Context, id string, nowMS int64) (bool, error) {
	var deleted bool
	err := db.write(func(tx *sql.Tx) error {
		res, err := tx.Exec(`DELETE FROM uia_sessions WHERE session_id = ? AND expires_ms >= ?`, id, nowMS)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		deleted = n > 0
		return err
	}, nil)
	return deleted, err
}

func scanUIASession(row *sql.Row) (*storage.UIASession, error) {
	var s storage.UIASession
	var completed, user string
	if err := row.Scan(&s.ID, &s.Endpoint, &completed, &user, &s.ExpiresMS); err != nil {
		return nil, notFound(err)
	}
	if err := json.Unmarshal([]byte(completed), &s.Completed); err != nil {
		return nil, err
	}
	s.User = roomdag.UserID(user)
	return &s, nil
}

func nonNil(list []string) []string {
	if list == nil {
		return []string{}
	}
	return list
}
