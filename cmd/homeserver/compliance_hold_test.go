package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/retention"
	"github.com/persistentchat/homeserver/server"
	"github.com/persistentchat/homeserver/testserver"
)

// TestComplianceHoldCommands: homeserver compliance hold create, list and
// release on the database a config names, and what they refuse.
func TestComplianceHoldCommands(t *testing.T) {
	dir := t.TempDir()
	database := configs.EngineSQLite
	if testserver.Engine() == configs.EnginePostgres {
		database = testserver.PostgresDatabase(t)
	}
	text, err := configs.Generate(configs.GenerateOptions{ServerName: "localhost", DataDir: filepath.Join(dir, "data"), Database: database})
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "homeserver.yaml")
	if err := os.WriteFile(cfgPath, text, 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := complianceMain(append(args, "--config", cfgPath), &out)
		return out.String(), err
	}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"no subcommand", []string{}, "usage"},
		{"unknown", []string{"frobnicate"}, "usage"},
		{"unknown hold command", []string{"hold", "frobnicate"}, "unknown command"},
		{"no target", []string{"hold", "create", "--reason", "x"}, "exactly one of"},
		{"both targets", []string{"hold", "create", "--user", "@a:localhost", "--room", "!r:localhost", "--reason", "x"}, "exactly one of"},
		{"bad user", []string{"hold", "create", "--user", "alice", "--reason", "x"}, "malformed user_id"},
		{"no reason", []string{"hold", "create", "--user", "@a:localhost"}, "reason"},
		{"bad by", []string{"hold", "create", "--user", "@a:localhost", "--reason", "x", "--by", "admin"}, "not a user ID"},
		{"release no id", []string{"hold", "release"}, "--id"},
		{"release unknown", []string{"hold", "release", "--id", "42"}, "no such hold"},
	} {
		if out, err := run(c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v (%s), want an error with %q", c.name, err, out, c.want)
		}
	}
	out, err := run("hold", "create", "--user", "@alice:localhost", "--reason", "matter 7", "--by", "@boss:localhost")
	if err != nil || out != "created hold 1 on user @alice:localhost\n" {
		t.Fatalf("create: %v %q", err, out)
	}
	if out, err := run("hold", "create", "--room", "!room:localhost", "--reason", "matter 8"); err != nil || !strings.Contains(out, "hold 2 on room !room:localhost") {
		t.Fatalf("create room hold: %v %q", err, out)
	}
	out, err = run("hold", "list")
	if err != nil || !strings.Contains(out, "@alice:localhost") || !strings.Contains(out, `"matter 7"`) || !strings.Contains(out, "(command line)") {
		t.Fatalf("list: %v\n%s", err, out)
	}

	// The server sees the hold: erasing alice is refused.
	cfg, err := configs.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	db, err := server.OpenStore(cfg, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	holds := retention.NewHolds(db, clock.Real{}, slog.Default(), nil)
	if err := holds.CheckErasure(context.Background(), "@alice:localhost"); err == nil {
		t.Error("erasure of a user held on the command line allowed")
	}
	db.Close()

	if out, err := run("hold", "release", "--id", "1", "--by", "@boss:localhost"); err != nil || out != "released hold 1 on user @alice:localhost\n" {
		t.Fatalf("release: %v %q", err, out)
	}
	if _, err := run("hold", "release", "--id", "1"); err == nil || !strings.Contains(err.Error(), "released already") {
		t.Errorf("second release: %v", err)
	}
	out, err = run("hold", "list", "--all", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var got []retention.HoldJSON
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var h retention.HoldJSON
		if err := json.Unmarshal([]byte(line), &h); err != nil {
			t.Fatalf("list --json line %q: %v", line, err)
		}
		got = append(got, h)
	}
	if len(got) != 2 || got[0].Active || got[0].ReleasedBy != "@boss:localhost" || got[0].CreatedBy != "@boss:localhost" || !got[1].Active {
		t.Errorf("list --all --json: %+v", got)
	}
	if out, err := run("hold", "list"); err != nil || strings.Contains(out, "@alice") || !strings.Contains(out, "!room:localhost") {
		t.Errorf("list after release: %v\n%s", err, out)
	}
}
