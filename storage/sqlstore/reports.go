package sqlstore

import (
	"context"
	"database/sql"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// AddReport stores a report and returns its ID.
func (db *DB) AddReport(ctx context.Context, r storage.Report) (int64, error) {
	var id int64
	err := db.write(func(tx *sql.Tx) error {
		var score sql.NullInt64
		if r.Score != nil {
			score = sql.NullInt64{Int64: int64(*r.Score), Valid: true}
		}
		id = next(&db.ctr.report)
		_, err := tx.Exec(`INSERT INTO reports (report_id, kind, reporter, room_id, event_id, target_user, reason, score, received_ts)
			VALUES (?,?,?,?,?,?,?,?,?)`, id, string(r.Kind), string(r.Reporter), string(r.RoomID), string(r.EventID),
			string(r.TargetUser), r.Reason, score, r.ReceivedMS)
		return err
	}, nil)
	return id, err
}

// Reports lists the reports of one kind, newest first (or oldest first
// with forward), skipping the first `from`, at most limit of them, and
// says how many there are in all.
func (db *DB) Reports(ctx context.Context, kind storage.ReportKind, from, limit int, forward bool) ([]storage.Report, int, error) {
	var out []storage.Report
	var total int
	err := db.readTx(ctx, func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM reports WHERE kind = ?`, string(kind)).Scan(&total); err != nil {
			return err
		}
		order := "DESC"
		if forward {
			order = "ASC"
		}
		rows, err := tx.QueryContext(ctx, `SELECT report_id, reporter, room_id, event_id, target_user, reason, score, received_ts
			FROM reports WHERE kind = ? ORDER BY report_id `+order+` LIMIT ? OFFSET ?`, string(kind), limit, from)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			r := storage.Report{Kind: kind}
			var reporter, room, event, target string
			var score sql.NullInt64
			if err := rows.Scan(&r.ID, &reporter, &room, &event, &target, &r.Reason, &score, &r.ReceivedMS); err != nil {
				return err
			}
			r.Reporter, r.RoomID, r.EventID, r.TargetUser = roomdag.UserID(reporter), roomdag.RoomID(room), roomdag.EventID(event), roomdag.UserID(target)
			if score.Valid {
				s := int(score.Int64)
				r.Score = &s
			}
			out = append(out, r)
		}
		return rows.Err()
	})
	return out, total, err
}
