package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/storage/port"
)

// portDB is migrate-sqlite-to-postgres: it copies a SQLite database into an
// empty PostgreSQL one (storage/port says how), so that the department can
// switch engines. The source is the --sqlite file, or the database of
// --config when that config is on sqlite3; the target is --postgres, or the
// database of --config when that config is on postgres. So both an
// operator who still runs the SQLite config and one who has already written
// the PostgreSQL config need only one flag besides it.
func portDB(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("migrate-sqlite-to-postgres", flag.ExitOnError)
	cfgPath := fs.String("config", "", "homeserver.yaml: the SQLite database of a sqlite3 config, or the PostgreSQL database of a postgres one")
	litePath := fs.String("sqlite", "", "the SQLite database file to copy (default: the config's)")
	dsn := fs.String("postgres", "", "the PostgreSQL database to copy into, which must be empty: postgres://user:password@host/dbname or key=value pairs (default: the config's)")
	sample := fs.Int("sample", 1000, "how many random events to compare column by column after the copy")
	fs.Parse(args)
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	opts := port.Options{SQLitePath: *litePath, PostgresDSN: *dsn, SampleEvents: *sample,
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	if *cfgPath != "" {
		cfg, err := configs.Load(*cfgPath)
		if err != nil {
			return err
		}
		switch cfg.Database.Name {
		case configs.EngineSQLite:
			if opts.SQLitePath == "" {
				opts.SQLitePath = cfg.DatabasePath()
			}
		case configs.EnginePostgres:
			if opts.PostgresDSN == "" {
				opts.PostgresDSN = cfg.Database.Postgres().DSN.Reveal()
			}
		}
	}
	switch {
	case opts.SQLitePath == "":
		return errors.New("no SQLite database: give --sqlite PATH, or --config of a server on sqlite3")
	case opts.PostgresDSN == "":
		return errors.New("no PostgreSQL database: give --postgres DSN, or --config of a server on postgres")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	sum, err := port.Run(ctx, opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "ported %s to PostgreSQL:\n%s", opts.SQLitePath, sum)
	return nil
}
