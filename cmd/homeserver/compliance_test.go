package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/persistentchat/homeserver/compliance"
	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/testserver"
)

// TestComplianceCommands runs status, verify and export on the data of
// a server that archived a conversation, with the config an operator
// writes. (SQLite: the config names the database by its data directory.)
func TestComplianceCommands(t *testing.T) {
	if testserver.Engine() != configs.EngineSQLite {
		t.Skip("the config written here names a SQLite database")
	}
	srv := testserver.Start(t, testserver.Options{Configure: func(c *configs.Config) {
		c.Compliance.Enabled, c.Compliance.CheckpointRecords = true, 1
	}})
	alice := srv.Register("alice")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	alice.SendText(room, "for the record")
	pos, err := srv.HS.DB().EventPos(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.HS.Compliance.Wait(t.Context(), pos); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	cfgPath := filepath.Join(t.TempDir(), "homeserver.yaml")
	yaml := fmt.Sprintf("server_name: %q\ndata_dir: %q\nsigning_key_path: %q\ncompliance:\n  enabled: true\n",
		srv.Config.ServerName, srv.Config.DataDir, srv.Config.SigningKeyPath())
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := complianceCmd(args, &out)
		return out.String(), err
	}
	if out, err := run("status", "--config", cfgPath); err != nil || !strings.Contains(out, `"records"`) || !strings.Contains(out, `"lag_events": 0`) {
		t.Errorf("status: %v\n%s", err, out)
	}
	if out, err := run("verify", "--config", cfgPath); err != nil || !strings.HasPrefix(out, "ok:") {
		t.Errorf("verify: %v\n%s", err, out)
	}
	out, err := run("export", "--config", cfgPath, "--user", alice.UserID, "--room", room, "--from", "2020-01-01", "--format", "jsonl")
	if err != nil {
		t.Fatalf("export: %v\n%s", err, out)
	}
	if m, n, err := compliance.VerifyExport(strings.NewReader(out), nil); err != nil || n == 0 || !strings.Contains(out, "for the record") {
		t.Errorf("export: %v, %d records, %+v\n%s", err, n, m, out)
	}
	if _, err := run("export", "--config", cfgPath, "--format", "pdf"); err == nil {
		t.Error("an unknown format was accepted")
	}
	if _, err := run("frobnicate", "--config", cfgPath); err == nil {
		t.Error("an unknown subcommand was accepted")
	}
}
