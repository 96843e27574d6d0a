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
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/retention"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/server"
)

// The compliance subcommands for legal holds:
//
//	homeserver compliance hold create --config FILE (--user ID | --room ID) --reason TEXT [--by ADMIN]
//	homeserver compliance hold list --config FILE [--all] [--json]
//	homeserver compliance hold release --config FILE --id N [--by ADMIN]
//
// They work on the database the config names, beside a running server:
// the server reads the holds at each purge and each erasure, so a hold
// made here applies at once. --by names the administrator on whose
// behalf the operator acts, for the record; without it the hold shows
// as made on the command line (created_by empty).

// complianceCommands are the compliance subcommands by name.
var complianceCommands = map[string]func(args []string, out io.Writer) error{
	"hold": complianceHold,
}

// complianceMain runs a compliance subcommand: hold here, the archive's
// (status, verify, export) in compliance.go.
func complianceMain(args []string, out io.Writer) error {
	if len(args) > 0 && complianceCommands[args[0]] != nil {
		return complianceCommands[args[0]](args[1:], out)
	}
	if len(args) > 0 && (args[0] == "status" || args[0] == "verify" || args[0] == "export") {
		return complianceCmd(args, out)
	}
	return errors.New("usage: homeserver compliance status|verify|export|hold ... --config FILE [flags]")
}

func complianceHold(args []string, out io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: homeserver compliance hold create|list|release --config FILE [flags]")
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("compliance hold "+sub, flag.ContinueOnError)
	path := fs.String("config", "homeserver.yaml", "config file")
	var user, room, reason, by *string
	var id *int64
	var all, asJSON *bool
	switch sub {
	case "create":
		user = fs.String("user", "", "the user ID whose events to hold")
		room = fs.String("room", "", "the room ID to hold")
		reason = fs.String("reason", "", "why (required)")
		by = fs.String("by", "", "the administrator's user ID, for the record")
	case "list":
		all = fs.Bool("all", false, "released holds too")
		asJSON = fs.Bool("json", false, "one JSON object per line")
	case "release":
		id = fs.Int64("id", 0, "the hold ID")
		by = fs.String("by", "", "the administrator's user ID, for the record")
	default:
		return fmt.Errorf("unknown command compliance hold %q (create, list, release)", sub)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	var admin roomdag.UserID
	if by != nil && *by != "" {
		u, err := roomdag.ParseUserID(*by)
		if err != nil {
			return fmt.Errorf("--by %q is not a user ID", *by)
		}
		admin = u
	}
	// Checked before the database is opened.
	var u roomdag.UserID
	var r roomdag.RoomID
	switch sub {
	case "create":
		var err error
		if u, r, err = retention.ParseTarget(*user, *room, *user != "", *room != ""); err != nil {
			return cliError(err)
		}
		if *reason == "" || len(*reason) > retention.MaxReasonLength {
			return fmt.Errorf("--reason: why the hold is made (at most %d bytes)", retention.MaxReasonLength)
		}
	case "release":
		if *id <= 0 {
			return errors.New("--id: the hold ID to release")
		}
	}
	cfg, err := configs.Load(*path)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return err
	}
	db, err := server.OpenStore(cfg, slog.Default())
	if err != nil {
		return err
	}
	defer db.Close()
	ctx := context.Background()
	holds := retention.NewHolds(db, clock.Real{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	switch sub {
	case "create":
		h, err := holds.Create(ctx, admin, u, r, *reason)
		if err != nil {
			return cliError(err)
		}
		fmt.Fprintf(out, "created hold %d on %s\n", h.ID, target(retention.ToJSON(h)))
	case "release":
		h, err := holds.Release(ctx, admin, *id)
		if err != nil {
			return cliError(err)
		}
		fmt.Fprintf(out, "released hold %d on %s\n", h.ID, target(retention.ToJSON(h)))
	case "list":
		hs, err := holds.List(ctx, *all)
		if err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(out)
			for _, h := range hs {
				if err := enc.Encode(retention.ToJSON(h)); err != nil {
					return err
				}
			}
			return nil
		}
		w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "ID\tTARGET\tSTATUS\tCREATED\tBY\tREASON")
		for _, h := range hs {
			j := retention.ToJSON(h)
			status := "active"
			if !j.Active {
				status = "released " + time.UnixMilli(j.ReleasedTS).UTC().Format(time.RFC3339)
			}
			createdBy := j.CreatedBy
			if createdBy == "" {
				createdBy = "(command line)"
			}
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\n", j.ID, target(j), status,
				time.UnixMilli(j.CreatedTS).UTC().Format(time.RFC3339), createdBy, strconv.Quote(j.Reason))
		}
		return w.Flush()
	}
	return nil
}

func target(h retention.HoldJSON) string {
	if h.UserID != "" {
		return "user " + h.UserID
	}
	return "room " + h.RoomID
}

// cliError turns the Matrix error of the holds service into a plain one.
func cliError(err error) error {
	var me *httpapi.Error
	if errors.As(err, &me) {
		return errors.New(me.Message)
	}
	return err
}
