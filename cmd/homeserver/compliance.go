package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/compliance"
	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/server"
)

// complianceCmd runs `homeserver compliance status|verify|export`, on
// the database and signing key the config names, whether or not the
// server runs. Each verify and export is queued as an admin_action; the
// server's archiver appends it to the chain at its next step.
func complianceCmd(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("compliance: a subcommand is needed (status, verify, export, hold)")
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("compliance "+sub, flag.ExitOnError)
	path := fs.String("config", "homeserver.yaml", "config file")
	from := fs.Int64("from", 0, "verify: the first record to check")
	user := fs.String("user", "", "export: the user whose records to export")
	room := fs.String("room", "", "export: the room whose records to export")
	fromT := fs.String("from-time", "", "export: from this time (RFC 3339, date, or ms)")
	toT := fs.String("to", "", "export: up to this time, exclusive")
	format := fs.String("format", "jsonl", "export: jsonl, csv, eml or xml")
	out := fs.String("out", "", "export: the file to write (default: standard output)")
	if sub == "export" {
		// --from is a time for export, a record number for verify.
		fs = flag.NewFlagSet("compliance export", flag.ExitOnError)
		path = fs.String("config", "homeserver.yaml", "config file")
		user = fs.String("user", "", "the user whose records to export (all when empty)")
		room = fs.String("room", "", "the room whose records to export (all when empty)")
		fromT = fs.String("from", "", "from this time (RFC 3339, date, or ms since the epoch)")
		toT = fs.String("to", "", "up to this time, exclusive")
		format = fs.String("format", "jsonl", "jsonl, csv, eml or xml")
		out = fs.String("out", "", "the file to write (default: standard output)")
	}
	fs.Parse(args)
	cfg, err := configs.Load(*path)
	if err != nil {
		return err
	}
	if !cfg.Compliance.Enabled {
		return errors.New("compliance is not enabled in the config (compliance: {enabled: true})")
	}
	key, err := server.LoadOrCreateKey(cfg.SigningKeyPath(), roomdag.ServerName(cfg.ServerName))
	if err != nil {
		return err
	}
	db, err := server.OpenStore(cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		return err
	}
	defer db.Close()
	srv := roomdag.ServerName(cfg.ServerName)
	svc := &compliance.Service{Store: db, Recorder: compliance.NewRecorder(db, clock.Real{}, nil),
		Exporter: &compliance.Exporter{Store: db, Key: key, Server: srv}, Public: key.Public()}
	ctx := context.Background()
	actor := roomdag.UserID("")
	switch sub {
	case "status":
		st, err := svc.Status(ctx)
		if err != nil {
			return err
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	case "verify":
		began := time.Now()
		rep, err := svc.Verify(ctx, actor, "cli", *from)
		if err != nil {
			return err
		}
		if !rep.OK() {
			return fmt.Errorf("verify: record %d: %s (%d records checked before it)", rep.BadSeq, rep.Problem, rep.Records)
		}
		fmt.Fprintf(stdout, "ok: %d records and %d checkpoints verified, head %d (%s)\n", rep.Records, rep.Checkpoints, rep.Head, time.Since(began).Round(time.Millisecond))
		return nil
	case "export":
		q := compliance.Query{Actor: *user, Room: *room, Format: *format}
		if *user != "" {
			if _, err := roomdag.ParseUserID(*user); err != nil {
				return fmt.Errorf("--user: %w", err)
			}
		}
		if *room != "" {
			if _, err := roomdag.ParseRoomID(*room); err != nil {
				return fmt.Errorf("--room: %w", err)
			}
		}
		for _, p := range []struct {
			s string
			t *time.Time
		}{{*fromT, &q.From}, {*toT, &q.To}} {
			if p.s != "" {
				if *p.t, err = compliance.ParseTime(p.s); err != nil {
					return err
				}
			}
		}
		w := stdout
		if *out != "" {
			f, err := os.Create(*out)
			if err != nil {
				return err
			}
			defer f.Close()
			w = f
		}
		m, err := svc.Export(ctx, actor, "cli", w, q)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "exported %d records (%d to %d)\n", m.Records, m.FirstSeq, m.LastSeq)
		return nil
	}
	return fmt.Errorf("compliance: unknown subcommand %q (status, verify, export)", sub)
}
