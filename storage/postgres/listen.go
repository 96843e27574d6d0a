package postgres

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
)

// CommitChannel is the NOTIFY channel on which every process sharing the
// database announces its commits (storage.EncodeChange) and typing
// (storage.EncodeTyping).
const CommitChannel = "homeserver_changes"

// AnnounceCommit sends payload on CommitChannel in the writer's
// transaction: PostgreSQL delivers it at the commit, in commit order, and
// drops it on a rollback (sqlstore.CommitAnnouncer).
func (Dialect) AnnounceCommit(tx *sql.Tx, payload string) error {
	_, err := tx.Exec(`SELECT pg_notify(?, ?)`, CommitChannel, payload)
	return err
}

// AnnounceNow sends payload on CommitChannel outside any transaction, for
// what is not stored (typing), through one of the read pool's connections.
func (Dialect) AnnounceNow(ctx context.Context, r *sql.DB, payload string) error {
	_, err := r.ExecContext(ctx, `SELECT pg_notify(?, ?)`, CommitChannel, payload)
	return err
}

// Listener backoff between connection attempts.
const (
	listenMinBackoff = 50 * time.Millisecond
	listenMaxBackoff = 5 * time.Second
)

// Listen holds a connection of its own LISTENing on CommitChannel until ctx
// ends. After each (re)connection, once LISTEN is in effect, it calls
// connected, then deliver for each payload, in the order the transactions
// committed. Notifications sent while no connection listened are lost:
// connected is where the caller catches up, by reading the streams from
// the positions it knows (every payload delivered after connected returns
// is newer than what that read could miss... or already seen, so the
// caller must tolerate repeats). It reconnects with backoff.
//
// The connection's application_name is ListenAppName(origin), so that an
// operator (or a test) can tell each process's listening connection in
// pg_stat_activity. gate, if not nil, runs before each reconnection (not
// the first connection) and may hold it back: tests use it to commit while
// nobody listens.
func Listen(ctx context.Context, dsn, origin string, log *slog.Logger, gate func(context.Context), connected func(), deliver func(payload string)) {
	backoff := listenMinBackoff
	for first := true; ctx.Err() == nil; first = false {
		if !first && gate != nil {
			gate(ctx)
		}
		err := listenOnce(ctx, dsn, ListenAppName(origin), func() { backoff = listenMinBackoff; connected() }, deliver)
		if ctx.Err() != nil {
			return
		}
		log.Warn("listening for other processes' changes; reconnecting", "err", err, "in", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(2*backoff, listenMaxBackoff)
	}
}

// ListenAppName is the application_name of the listening connection of
// the process that announces its changes as origin.
func ListenAppName(origin string) string { return "homeserver-listen-" + origin }

func listenOnce(ctx context.Context, dsn, appName string, connected func(), deliver func(string)) error {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return err
	}
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	cfg.RuntimeParams["application_name"] = appName
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	conn, err := pgx.ConnectConfig(cctx, cfg)
	cancel()
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, `LISTEN `+CommitChannel); err != nil {
		return err
	}
	connected()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if errors.Is(err, context.Canceled) && ctx.Err() != nil {
				return nil
			}
			return err
		}
		deliver(n.Payload)
	}
}
