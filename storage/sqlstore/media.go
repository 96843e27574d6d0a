package sqlstore

import (
	"context"
	"database/sql"

	"github.com/persistentchat/homeserver/media"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// InsertMedia stores a new media record (media.Store); storage.ErrConflict
// if its ID is taken.
func (db *DB) InsertMedia(ctx context.Context, rec media.Record) error {
	return db.write(func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO media (media_id, uploader, sha256, content_type, file_name, size, created_ts, expires_ts, authenticated)
			VALUES (?,?,?,?,?,?,?,?,?)`,
			string(rec.ID), string(rec.Uploader), rec.SHA256, rec.ContentType, rec.FileName, rec.Size, rec.CreatedMS, rec.ExpiresMS, rec.Authenticated)
		if db.d.IsUniqueViolation(err) {
			return storage.ErrConflict
		}
		return err
	}, nil)
}

// MediaRecord returns a media record, or storage.ErrNotFound.
func (db *DB) MediaRecord(ctx context.Context, id media.ID) (*media.Record, error) {
	rec := media.Record{ID: id}
	var uploader string
	err := db.r.QueryRowContext(ctx, `SELECT uploader, sha256, content_type, file_name, size, created_ts, expires_ts, authenticated
		FROM media WHERE media_id = ?`, string(id)).
		Scan(&uploader, &rec.SHA256, &rec.ContentType, &rec.FileName, &rec.Size, &rec.CreatedMS, &rec.ExpiresMS, &rec.Authenticated)
	if err != nil {
		return nil, notFound(err)
	}
	rec.Uploader = roomdag.UserID(uploader)
	return &rec, nil
}

// FillMedia gives a pending media record its content: storage.ErrNotFound
// for an unknown ID, storage.ErrConflict if it has content already. The
// single writer makes the check and the update one step.
func (db *DB) FillMedia(ctx context.Context, id media.ID, sha256, contentType, fileName string, size int64) error {
	return db.write(func(tx *sql.Tx) error {
		var cur string
		if err := tx.QueryRow(`SELECT sha256 FROM media WHERE media_id = ?`, string(id)).Scan(&cur); err != nil {
			return notFound(err)
		}
		if cur != "" {
			return storage.ErrConflict
		}
		_, err := tx.Exec(`UPDATE media SET sha256 = ?, content_type = ?, file_name = ?, size = ?, expires_ts = 0
			WHERE media_id = ?`, sha256, contentType, fileName, size, string(id))
		return err
	}, nil)
}

// PendingMedia counts user's media records awaiting content whose
// reservation lapses after nowMS.
func (db *DB) PendingMedia(ctx context.Context, user roomdag.UserID, nowMS int64) (int, error) {
	var n int
	err := db.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM media WHERE uploader = ? AND sha256 = '' AND expires_ts > ?`,
		string(user), nowMS).Scan(&n)
	return n, err
}

var _ media.Store = (*DB)(nil)
