package main

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"time"

	sqlite3 "github.com/mattn/go-sqlite3"
)

// store is the bridge's own state, in its own SQLite file: the hooks, the
// virtual users it made, the rooms they joined, and the transactions it
// has handled (the homeserver may send one again).
type store struct {
	db *sql.DB
}

var schema = []string{
	`
CREATE TABLE hooks (
	id          INTEGER PRIMARY KEY,
	room_id     TEXT NOT NULL,
	name        TEXT NOT NULL,
	secret_hash BLOB NOT NULL UNIQUE, -- SHA-256 of the secret in the URL; the secret itself is not kept
	creator     TEXT NOT NULL,
	created_ts  INTEGER NOT NULL,
	revoked_ts  INTEGER
);
CREATE UNIQUE INDEX hooks_live_name ON hooks(room_id, name) WHERE revoked_ts IS NULL;
CREATE TABLE txns (
	txn_id  TEXT PRIMARY KEY,
	done_ts INTEGER NOT NULL
);
CREATE TABLE ghosts (
	user_id     TEXT PRIMARY KEY,
	displayname TEXT NOT NULL
);
CREATE TABLE members (
	room_id TEXT NOT NULL,
	user_id TEXT NOT NULL,
	PRIMARY KEY (room_id, user_id)
);
`,
}

func openStore(path string) (*store, error) {
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_synchronous=FULL&_busy_timeout=10000&_txlock=immediate")
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1) // one writer; the bridge's load is small
	var have int
	if err := db.QueryRow(`PRAGMA user_version`).Scan(&have); err != nil {
		db.Close()
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	for i := have; i < len(schema); i++ {
		if _, err := db.Exec(schema[i]); err != nil {
			db.Close()
			return nil, fmt.Errorf("migrating %s: %w", path, err)
		}
		if _, err := db.Exec(fmt.Sprintf(`PRAGMA user_version = %d`, i+1)); err != nil {
			db.Close()
			return nil, err
		}
	}
	return &store{db: db}, nil
}

func (s *store) Close() error { return s.db.Close() }

// hook is one webhook: its room and name.
type hook struct {
	ID      int64
	RoomID  string
	Name    string
	Creator string
	Revoked bool
}

var (
	errNameTaken = errors.New("a live hook of that name exists in the room")
	errNoHook    = errors.New("no such hook")
)

func secretHash(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

func (s *store) createHook(ctx context.Context, room, name, creator, secret string) (*hook, error) {
	res, err := s.db.ExecContext(ctx, `INSERT INTO hooks (room_id, name, secret_hash, creator, created_ts) VALUES (?, ?, ?, ?, ?)`,
		room, name, secretHash(secret), creator, time.Now().UnixMilli())
	var se sqlite3.Error
	if errors.As(err, &se) && se.Code == sqlite3.ErrConstraint {
		return nil, errNameTaken
	}
	if err != nil {
		return nil, err
	}
	id, err := res.LastInsertId()
	return &hook{ID: id, RoomID: room, Name: name, Creator: creator}, err
}

// hookBySecret finds the hook a URL's secret belongs to, revoked or not.
func (s *store) hookBySecret(ctx context.Context, secret string) (*hook, error) {
	var h hook
	var revoked sql.NullInt64
	err := s.db.QueryRowContext(ctx, `SELECT id, room_id, name, creator, revoked_ts FROM hooks WHERE secret_hash = ?`, secretHash(secret)).
		Scan(&h.ID, &h.RoomID, &h.Name, &h.Creator, &revoked)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errNoHook
	}
	h.Revoked = revoked.Valid
	return &h, err
}

func (s *store) revokeHook(ctx context.Context, room, name string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE hooks SET revoked_ts = ? WHERE room_id = ? AND name = ? AND revoked_ts IS NULL`,
		time.Now().UnixMilli(), room, name)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errNoHook
	}
	return nil
}

func (s *store) liveHooks(ctx context.Context, room string) ([]hook, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, room_id, name, creator FROM hooks WHERE room_id = ? AND revoked_ts IS NULL ORDER BY name`, room)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []hook
	for rows.Next() {
		var h hook
		if err := rows.Scan(&h.ID, &h.RoomID, &h.Name, &h.Creator); err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, rows.Err()
}

func (s *store) txnDone(ctx context.Context, id string) (bool, error) {
	var one int
	err := s.db.QueryRowContext(ctx, `SELECT 1 FROM txns WHERE txn_id = ?`, id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

func (s *store) markTxn(ctx context.Context, id string) error {
	_, err := s.db.ExecContext(ctx, `INSERT OR IGNORE INTO txns (txn_id, done_ts) VALUES (?, ?)`, id, time.Now().UnixMilli())
	return err
}

// ghost returns a virtual user's display name as last set, and whether
// the bridge has registered it.
func (s *store) ghost(ctx context.Context, user string) (string, bool, error) {
	var name string
	err := s.db.QueryRowContext(ctx, `SELECT displayname FROM ghosts WHERE user_id = ?`, user).Scan(&name)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	return name, err == nil, err
}

func (s *store) putGhost(ctx context.Context, user, displayname string) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO ghosts (user_id, displayname) VALUES (?, ?)
		ON CONFLICT (user_id) DO UPDATE SET displayname = excluded.displayname`, user, displayname)
	return err
}

func (s *store) isMember(ctx context.Context, room, user string) (bool, error) {
	var one int
	err := s.db.QueryRowContext(ctx, `SELECT 1 FROM members WHERE room_id = ? AND user_id = ?`, room, user).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

func (s *store) setMember(ctx context.Context, room, user string, member bool) error {
	q := `INSERT OR IGNORE INTO members (room_id, user_id) VALUES (?, ?)`
	if !member {
		q = `DELETE FROM members WHERE room_id = ? AND user_id = ?`
	}
	_, err := s.db.ExecContext(ctx, q, room, user)
	return err
}
