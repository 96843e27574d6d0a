package main

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/server"
	"github.com/persistentchat/homeserver/testserver"
)

// TestOperatorCommands runs the built binary's subcommands the way an
// operator does: generate a config, generate a key, register a user.
func TestOperatorCommands(t *testing.T) {
	// The usual umask, under which files made without an explicit mode
	// would be readable by every user (the process's: not parallel).
	defer syscall.Umask(syscall.Umask(0o022))
	dir := t.TempDir()
	bin := filepath.Join(dir, "homeserver")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	run := func(args ...string) (string, error) {
		out, err := exec.Command(bin, args...).CombinedOutput()
		return string(out), err
	}
	// The engine the suite runs on: on PostgreSQL, a fresh database.
	database := configs.EngineSQLite
	if testserver.Engine() == configs.EnginePostgres {
		database = testserver.PostgresDatabase(t)
	}
	cfgText, err := run("generate-config", "--server-name", "127.0.0.1:9999", "--listen", "127.0.0.1:9999",
		"--federation-listen", "127.0.0.1:9998", "--data-dir", filepath.Join(dir, "data"), "--registration", "token", "--database", database)
	if err != nil {
		t.Fatalf("generate-config: %v\n%s", err, cfgText)
	}
	cfgPath := filepath.Join(dir, "homeserver.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := configs.Load(cfgPath)
	if err != nil {
		t.Fatalf("generated config does not load: %v", err)
	}
	if !cfg.EnableRegistration || !cfg.RegistrationRequiresToken || len(cfg.RegistrationTokens) != 1 {
		t.Errorf("token registration not configured: %+v", cfg)
	}
	if cfg.FederationListen != "127.0.0.1:9998" {
		t.Errorf("generate-config --federation-listen: federation_listen %q", cfg.FederationListen)
	}
	if cfg.Database.Name != testserver.Engine() {
		t.Errorf("generate-config --database %s: database.name %q", testserver.Engine(), cfg.Database.Name)
	}
	if out, err := run("generate-config", "--registration", "sometimes"); err == nil {
		t.Errorf("bad registration mode accepted: %s", out)
	}
	// --database with a PostgreSQL URL writes a postgres section; a bad one
	// is refused without echoing its password.
	pgText, err := run("generate-config", "--database", "postgres://matrix:pw-9f3k@db.internal/matrix")
	if err != nil {
		t.Fatalf("generate-config --database postgres://...: %v\n%s", err, pgText)
	}
	pgPath := filepath.Join(dir, "pg.yaml")
	if err := os.WriteFile(pgPath, []byte(pgText), 0o600); err != nil {
		t.Fatal(err)
	}
	if pg, err := configs.Load(pgPath); err != nil || pg.Database.Name != configs.EnginePostgres ||
		pg.Database.Postgres().DSN.Reveal() != "postgres://matrix:pw-9f3k@db.internal/matrix" {
		t.Errorf("generate-config --database postgres://...: %v, %+v", err, pg)
	}
	if out, err := run("generate-config", "--database", "postgres://matrix:pw-9f3k@db.internal"); err == nil || strings.Contains(out, "pw-9f3k") {
		t.Errorf("generate-config with a DSN naming no database: %v: %s", err, out)
	}
	// --out writes the config for its owner only (it holds the shared
	// secret), and does not overwrite one.
	outPath := filepath.Join(dir, "out.yaml")
	if out, err := run("generate-config", "--data-dir", filepath.Join(dir, "data"), "--out", outPath); err != nil {
		t.Fatalf("generate-config --out: %v\n%s", err, out)
	}
	wantOwnerOnly(t, outPath)
	if _, err := configs.Load(outPath); err != nil {
		t.Errorf("config written by --out does not load: %v", err)
	}
	if out, err := run("generate-config", "--out", outPath); err == nil || !strings.Contains(out, "refusing") {
		t.Errorf("generate-config --out overwrote a config: %s", out)
	}

	keyPath := filepath.Join(dir, "k.key")
	if out, err := run("generate-keys", "--server-name", "127.0.0.1:9999", "--out", keyPath); err != nil {
		t.Fatalf("generate-keys: %v\n%s", err, out)
	}
	b, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := roomdag.ParseSigningKey("127.0.0.1:9999", b); err != nil {
		t.Errorf("generated key does not parse: %v", err)
	}
	wantOwnerOnly(t, keyPath)
	if out, err := run("generate-keys", "--out", keyPath); err == nil || !strings.Contains(out, "refusing") {
		t.Errorf("generate-keys overwrote a key: %s", out)
	}

	if out, err := run("register-user", "--config", cfgPath, "--user", "admin", "--password", "long enough pw", "--admin"); err != nil {
		t.Fatalf("register-user: %v\n%s", err, out)
	}
	if out, err := run("register-user", "--config", cfgPath, "--user", "admin", "--password", "long enough pw"); err == nil {
		t.Errorf("registering a taken user succeeded: %s", out)
	}
	if out, err := run("register-user", "--config", cfgPath, "--user", "Bad Name", "--password", "long enough pw"); err == nil {
		t.Errorf("bad localpart accepted: %s", out)
	}
	db, err := server.OpenStore(cfg, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	u, err := db.User(context.Background(), "@admin:127.0.0.1:9999")
	if err != nil || !u.Admin || u.PasswordHash == "" {
		t.Errorf("registered admin = %+v, %v", u, err)
	}
	if cfg.Database.Name == configs.EngineSQLite {
		wantOwnerOnly(t, cfg.DatabasePath()) // made by register-user
	}
	if out, err := run("frobnicate"); err == nil {
		t.Errorf("unknown command accepted: %s", out)
	}
}

// wantOwnerOnly fails the test if group or others may use the file.
func wantOwnerOnly(t *testing.T, path string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Error(err)
		return
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		t.Errorf("%s has mode %v, want no access for group or others", path, perm)
	}
}
