package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// Server-side key backups (e2ee/backup.go).

// CreateBackup makes a new backup version of user's, numbered after every
// version the user ever had, and returns its number.
func (db *DB) CreateBackup(ctx context.Context, user roomdag.UserID, algorithm string, authData json.RawMessage) (int64, error) {
	var v int64
	err := db.write(func(tx *sql.Tx) error {
		if err := tx.QueryRow(`SELECT COALESCE(MAX(version), 0) + 1 FROM e2e_backup_versions WHERE user_id = ?`, string(user)).Scan(&v); err != nil {
			return err
		}
		_, err := tx.Exec(`INSERT INTO e2e_backup_versions (user_id, version, algorithm, auth_data) VALUES (?,?,?,?)`,
			string(user), v, algorithm, string(authData))
		return err
	}, nil)
	return v, err
}

// Backup returns a version of user's backup, the newest one if version
// is 0; storage.ErrNotFound if there is none (or it was deleted).
func (db *DB) Backup(ctx context.Context, user roomdag.UserID, version int64) (*storage.BackupVersion, error) {
	var b *storage.BackupVersion
	err := db.readTx(ctx, func(tx *sql.Tx) error {
		var err error
		b, err = backupVersion(tx, user, version)
		return err
	})
	return b, err
}

func backupVersion(tx *sql.Tx, user roomdag.UserID, version int64) (*storage.BackupVersion, error) {
	var b storage.BackupVersion
	var auth string
	q := `SELECT version, algorithm, auth_data, etag FROM e2e_backup_versions WHERE user_id = ? AND deleted = 0 AND version = ?`
	args := []any{string(user), version}
	if version == 0 {
		q = `SELECT version, algorithm, auth_data, etag FROM e2e_backup_versions WHERE user_id = ? AND deleted = 0 ORDER BY version DESC LIMIT 1`
		args = args[:1]
	}
	err := tx.QueryRow(q, args...).Scan(&b.Version, &b.Algorithm, &auth, &b.ETag)
	if err == sql.ErrNoRows {
		return nil, storage.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	b.AuthData = json.RawMessage(auth)
	if err := tx.QueryRow(`SELECT COUNT(*) FROM e2e_backup_sessions WHERE user_id = ? AND version = ?`, string(user), b.Version).Scan(&b.Count); err != nil {
		return nil, err
	}
	return &b, nil
}

// UpdateBackupAuth replaces a version's auth_data; storage.ErrNotFound if
// the version does not exist.
func (db *DB) UpdateBackupAuth(ctx context.Context, user roomdag.UserID, version int64, authData json.RawMessage) error {
	return db.write(func(tx *sql.Tx) error {
		res, err := tx.Exec(`UPDATE e2e_backup_versions SET auth_data = ? WHERE user_id = ? AND version = ? AND deleted = 0`,
			string(authData), string(user), version)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return storage.ErrNotFound
		}
		return nil
	}, nil)
}

// DeleteBackup deletes a version and its sessions; storage.ErrNotFound
// if it does not exist. Its number is not used again.
func (db *DB) DeleteBackup(ctx context.Context, user roomdag.UserID, version int64) error {
	return db.write(func(tx *sql.Tx) error {
		res, err := tx.Exec(`UPDATE e2e_backup_versions SET deleted = 1 WHERE user_id = ? AND version = ? AND deleted = 0`, string(user), version)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return storage.ErrNotFound
		}
		_, err = tx.Exec(`DELETE FROM e2e_backup_sessions WHERE user_id = ? AND version = ?`, string(user), version)
		return err
	}, nil)
}

// PutBackupSessions stores sessions in version, which must be user's
// newest: else storage.ErrNotFound if the user has no backup, and
// *storage.WrongBackupVersion naming the newest. A session replaces the
// stored one of the same room and ID only where replaces(old, new) says
// so. It returns the version as it is afterwards; the etag changes if
// any session was stored.
func (db *DB) PutBackupSessions(ctx context.Context, user roomdag.UserID, version int64, sessions []storage.BackupSession,
	replaces func(old, new *storage.BackupSession) bool) (*storage.BackupVersion, error) {
	var b *storage.BackupVersion
	err := db.write(func(tx *sql.Tx) error {
		cur, err := backupVersion(tx, user, 0)
		if err != nil {
			return err
		}
		if cur.Version != version {
			return &storage.WrongBackupVersion{Current: cur.Version}
		}
		changed := false
		for i := range sessions {
			s := &sessions[i]
			old, err := backupSession(tx, user, version, s.Room, s.Session)
			if err != nil && err != storage.ErrNotFound {
				return err
			}
			if old != nil && !replaces(old, s) {
				continue
			}
			if _, err := tx.Exec(`INSERT INTO e2e_backup_sessions (user_id, version, room_id, session_id, first_message_index, forwarded_count, is_verified, session_data)
				VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET
				first_message_index = excluded.first_message_index, forwarded_count = excluded.forwarded_count,
				is_verified = excluded.is_verified, session_data = excluded.session_data`,
				string(user), version, string(s.Room), s.Session, s.FirstMessageIndex, s.ForwardedCount, boolInt(s.IsVerified), string(s.SessionData)); err != nil {
				return err
			}
			changed = true
		}
		if changed {
			if _, err := tx.Exec(`UPDATE e2e_backup_versions SET etag = etag + 1 WHERE user_id = ? AND version = ?`, string(user), version); err != nil {
				return err
			}
		}
		b, err = backupVersion(tx, user, version)
		return err
	}, nil)
	return b, err
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func backupSession(tx *sql.Tx, user roomdag.UserID, version int64, room roomdag.RoomID, session string) (*storage.BackupSession, error) {
	s := storage.BackupSession{Room: room, Session: session}
	var verified int
	var data string
	err := tx.QueryRow(`SELECT first_message_index, forwarded_count, is_verified, session_data FROM e2e_backup_sessions
		WHERE user_id = ? AND version = ? AND room_id = ? AND session_id = ?`, string(user), version, string(room), session).
		Scan(&s.FirstMessageIndex, &s.ForwardedCount, &verified, &data)
	if err == sql.ErrNoRows {
		return nil, storage.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	s.IsVerified, s.SessionData = verified != 0, json.RawMessage(data)
	return &s, nil
}

// BackupSessions returns the sessions of a version of user's backup: all
// of them, those of room (room not ""), or the one session (session not
// ""); storage.ErrNotFound if the version does not exist.
func (db *DB) BackupSessions(ctx context.Context, user roomdag.UserID, version int64, room roomdag.RoomID, session string) ([]storage.BackupSession, error) {
	var out []storage.BackupSession
	err := db.readTx(ctx, func(tx *sql.Tx) error {
		if _, err := backupVersion(tx, user, version); err != nil {
			return err
		}
		q := `SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data FROM e2e_backup_sessions
			WHERE user_id = ? AND version = ?`
		args := []any{string(user), version}
		if room != "" {
			q += ` AND room_id = ?`
			args = append(args, string(room))
			if session != "" {
				q += ` AND session_id = ?`
				args = append(args, session)
			}
		}
		rows, err := tx.QueryContext(ctx, q+` ORDER BY room_id, session_id`, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var s storage.BackupSession
			var r, data string
			var verified int
			if err := rows.Scan(&r, &s.Session, &s.FirstMessageIndex, &s.ForwardedCount, &verified, &data); err != nil {
				return err
			}
			s.Room, s.IsVerified, s.SessionData = roomdag.RoomID(r), verified != 0, json.RawMessage(data)
			out = append(out, s)
		}
		return rows.Err()
	})
	return out, err
}

// DeleteBackupSessions deletes sessions of a version as BackupSessions
// selects them and returns the version as it is afterwards (its etag
// changed if any was deleted); storage.ErrNotFound if the version does
// not exist.
func (db *DB) DeleteBackupSessions(ctx context.Context, user roomdag.UserID, version int64, room roomdag.RoomID, session string) (*storage.BackupVersion, error) {
	var b *storage.BackupVersion
	err := db.write(func(tx *sql.Tx) error {
		if _, err := backupVersion(tx, user, version); err != nil {
			return err
		}
		q := `DELETE FROM e2e_backup_sessions WHERE user_id = ? AND version = ?`
		args := []any{string(user), version}
		if room != "" {
			q += ` AND room_id = ?`
			args = append(args, string(room))
			if session != "" {
				q += ` AND session_id = ?`
				args = append(args, session)
			}
		}
		res, err := tx.Exec(q, args...)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n > 0 {
			if _, err := tx.Exec(`UPDATE e2e_backup_versions SET etag = etag + 1 WHERE user_id = ? AND version = ?`, string(user), version); err != nil {
				return err
			}
		}
		b, err = backupVersion(tx, user, version)
		return err
	}, nil)
	return b, err
}
