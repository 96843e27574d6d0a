// Command webhook-bridge is an application service that turns HTTP POSTs
// from other systems (monitoring, CI, ticketing) into room messages.
//
//	webhook-bridge generate-registration -url URL [-id ID] [-bot LOCALPART] [-prefix PREFIX] [-out FILE]
//	webhook-bridge serve -registration FILE -homeserver URL [-listen ADDR] [-public-url URL] [-db FILE] ...
//
// A room moderator invites the bridge's bot and says "!hook create
// alerts"; the bot answers with a secret URL. A POST of JSON
// ({"text": "...", "html": "...", "username": "..."}) or of plain text to
// that URL appears in the room as a message from a virtual user named
// after username.
//
// The bridge is a separate process that speaks only the public
// Application Service API and the client-server API to the homeserver
// (it imports nothing of the homeserver), and keeps its state (hooks,
// virtual users, handled transactions) in its own SQLite file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	args := os.Args[1:]
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch args[0] {
	case "generate-registration":
		err = generateCmd(args[1:])
	case "serve":
		err = serveCmd(args[1:])
	default:
		err = fmt.Errorf("unknown command %q\n%s", args[0], usage)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "webhook-bridge:", err)
		os.Exit(1)
	}
}

const usage = `usage:
  webhook-bridge generate-registration -url URL [-id ID] [-bot LOCALPART] [-prefix PREFIX] [-out FILE]
  webhook-bridge serve -registration FILE -homeserver URL [-listen ADDR] [-public-url URL] [-db FILE]
                       [-max-body BYTES] [-rate PER_SECOND] [-burst N] [-min-power LEVEL]`

func generateCmd(args []string) error {
	fs := flag.NewFlagSet("generate-registration", flag.ExitOnError)
	u := fs.String("url", "http://127.0.0.1:9000", "where the bridge listens, as the homeserver reaches it")
	id := fs.String("id", "webhooks", "the application service ID")
	bot := fs.String("bot", "_webhook", "localpart of the bridge's bot")
	prefix := fs.String("prefix", "_webhook_", "localpart prefix of the virtual users")
	out := fs.String("out", "", "file to write (it must not exist); default standard output")
	fs.Parse(args)
	b, err := generateRegistration(*id, *u, *bot, *prefix)
	if err != nil {
		return err
	}
	if *out == "" {
		_, err = os.Stdout.Write(b)
		return err
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func serveCmd(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	regPath := fs.String("registration", "webhook-registration.yaml", "the registration file (generate-registration writes it)")
	hsURL := fs.String("homeserver", "http://127.0.0.1:8008", "the homeserver's client-server API URL")
	listen := fs.String("listen", "", "host:port to listen on (default: the host and port of the registration's url)")
	public := fs.String("public-url", "", "base URL of the hook URLs handed out (default: the registration's url)")
	dbPath := fs.String("db", "webhook-bridge.db", "the bridge's SQLite file")
	maxBody := fs.Int64("max-body", 64<<10, "largest webhook body accepted, in bytes")
	rate := fs.Float64("rate", 1, "sustained webhook posts per second, per hook")
	burst := fs.Int("burst", 10, "webhook posts a hook may make at once after a quiet spell")
	minPower := fs.Int("min-power", 50, "power level needed to create or revoke hooks in a room")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	fs.Parse(args)

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	reg, err := readRegistration(*regPath)
	if err != nil {
		return err
	}
	if *listen == "" {
		u, _ := url.Parse(reg.URL)
		*listen = u.Host
		if u.Port() == "" {
			return errors.New("-listen is required when the registration's url has no port")
		}
	}
	if *public == "" {
		*public = reg.URL
	}
	if *maxBody < 1 || *rate <= 0 || *burst < 1 {
		return errors.New("-max-body, -rate and -burst must be positive")
	}
	st, err := openStore(*dbPath)
	if err != nil {
		return err
	}
	defer st.Close()
	b := newBridge(bridgeConfig{
		Registration: reg, HomeserverURL: strings.TrimSuffix(*hsURL, "/"), PublicURL: strings.TrimSuffix(*public, "/"),
		MaxBody: *maxBody, Rate: *rate, Burst: *burst, MinPower: *minPower,
	}, st, log)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: b.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	log.Info("webhook bridge listening", "addr", l.Addr().String(), "homeserver", *hsURL)
	// The homeserver may start after the bridge: set up in the
	// background, retrying, while transactions are already accepted.
	go b.setUp(ctx)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
