// Command homeserver runs a Matrix homeserver for persistent, topic-based
// chat rooms, and its operator subcommands.
//
//	homeserver [serve] --config FILE
//	homeserver generate-config --server-name NAME --listen ADDR [--federation-listen ADDR] --data-dir DIR [--registration open|token|disabled] [--database sqlite3|postgres://...] [--out FILE]
//	homeserver generate-keys --server-name NAME --out FILE
//	homeserver register-user --config FILE --user NAME --password PW [--admin]
//	homeserver migrate-sqlite-to-postgres (alias port-db) [--config FILE] [--sqlite PATH] [--postgres DSN]
//	homeserver compliance hold create|list|release --config FILE ... (compliance_hold.go)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/persistentchat/homeserver/api"
	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/server"
	"github.com/persistentchat/homeserver/storage"
)

func main() {
	args := os.Args[1:]
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = serve(args)
	case "generate-config":
		err = generateConfig(args)
	case "generate-keys":
		err = generateKeys(args)
	case "register-user":
		err = registerUser(args)
	case "migrate-sqlite-to-postgres", "port-db":
		err = portDB(args, os.Stdout)
	case "compliance":
		err = complianceMain(args, os.Stdout)
	default:
		err = fmt.Errorf("unknown command %q (serve, generate-config, generate-keys, register-user, migrate-sqlite-to-postgres, compliance)", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "homeserver:", err)
		os.Exit(1)
	}
}

// shutdownGrace is how long running requests get to finish on SIGTERM;
// long-polling syncs are cut after it.
const shutdownGrace = 10 * time.Second

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	path := fs.String("config", "homeserver.yaml", "config file")
	fs.Parse(args)
	cfg, err := configs.Load(*path)
	if err != nil {
		return err
	}
	log := server.NewLogger(cfg, os.Stderr)
	hs, err := server.New(cfg, log, clock.Real{})
	if err != nil {
		return err
	}
	if err := hs.Listen(); err != nil {
		hs.Shutdown(context.Background())
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve() }()
	select {
	case err := <-errc:
		hs.Shutdown(context.Background())
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	return hs.Shutdown(sctx)
}

func generateConfig(args []string) error {
	fs := flag.NewFlagSet("generate-config", flag.ExitOnError)
	var o configs.GenerateOptions
	fs.StringVar(&o.ServerName, "server-name", "localhost:8008", "the Matrix server name")
	fs.StringVar(&o.Listen, "listen", "127.0.0.1:8008", "client API listen address")
	fs.StringVar(&o.FederationListen, "federation-listen", "", "federation (TLS) listen address; empty for none")
	fs.StringVar(&o.DataDir, "data-dir", "./data", "data directory")
	fs.StringVar(&o.Registration, "registration", "disabled", "open, token or disabled")
	fs.StringVar(&o.SharedSecret, "shared-secret", "", "registration shared secret (random if empty)")
	fs.StringVar(&o.Database, "database", "sqlite3", "sqlite3 (in the data directory), or a PostgreSQL connection string: postgres://user:password@host/dbname or key=value pairs")
	file := fs.String("out", "", "file to write, mode 0600; it must not exist (default: standard output)")
	fs.Parse(args)
	out, err := configs.Generate(o)
	if err != nil {
		return err
	}
	if *file == "" {
		_, err = os.Stdout.Write(out)
		return err
	}
	// The config holds the registration shared secret (which makes admin
	// accounts) and registration tokens: only its owner may read it.
	f, err := os.OpenFile(*file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s exists; refusing to overwrite a config", *file)
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(out); err != nil {
		f.Close()
		os.Remove(*file)
		return err
	}
	return f.Close()
}

func generateKeys(args []string) error {
	fs := flag.NewFlagSet("generate-keys", flag.ExitOnError)
	name := fs.String("server-name", "localhost:8008", "the Matrix server name")
	out := fs.String("out", "signing.key", "file to write; it must not exist")
	fs.Parse(args)
	sn, err := roomdag.ParseServerName(*name)
	if err != nil {
		return fmt.Errorf("bad server name %q", *name)
	}
	if _, err := os.Stat(*out); err == nil {
		return fmt.Errorf("%s exists; refusing to overwrite a signing key", *out)
	}
	_, err = server.LoadOrCreateKey(*out, sn)
	return err
}

func registerUser(args []string) error {
	fs := flag.NewFlagSet("register-user", flag.ExitOnError)
	path := fs.String("config", "homeserver.yaml", "config file")
	user := fs.String("user", "", "localpart of the new user")
	password := fs.String("password", "", "password (at least 8 characters)")
	admin := fs.Bool("admin", false, "make the user a server admin")
	fs.Parse(args)
	cfg, err := configs.Load(*path)
	if err != nil {
		return err
	}
	if !roomdag.ValidLocalpart(*user) {
		return fmt.Errorf("user must be a localpart of a-z, 0-9 and ._=-/+")
	}
	if len(*password) < 8 {
		return fmt.Errorf("password must be at least 8 characters")
	}
	hash, err := api.HashPassword(*password, cfg.BcryptRounds)
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
	id := roomdag.NewUserID(*user, roomdag.ServerName(cfg.ServerName))
	err = db.CreateUser(context.Background(), storage.User{ID: id, PasswordHash: hash, Admin: *admin}, time.Now().UnixMilli())
	if errors.Is(err, storage.ErrConflict) {
		return fmt.Errorf("%s already exists", id)
	}
	if err == nil {
		fmt.Println("created", id)
	}
	return err
}
