// Package csapi is a Docker-free client-server conformance suite in the
// style of Complement's tests/csapi: top-level test names follow
// Complement's, the assertions follow the Matrix spec. Tests are written
// for this repository; none of Complement's code is copied.
package csapi

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	gosync "sync"
	"testing"

	"github.com/persistentchat/homeserver/conformance/deploy"
)

var (
	dep  *deploy.Deployment
	bin  string // the homeserver binary
	root string // the servers' data directories

	custom struct {
		once gosync.Once
		hs   *deploy.Homeserver
		err  error
	}
)

func TestMain(m *testing.M) {
	bin = os.Getenv("HOMESERVER_BIN")
	if bin == "" {
		bin, _ = filepath.Abs("../../bin/homeserver")
	}
	var err error
	root, err = os.MkdirTemp("", "complement-hs-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	n := 2 // the second server is for tests that need federation
	dep, err = deploy.Start(bin, root, n)
	if err != nil {
		fmt.Fprintln(os.Stderr, "deploy:", err)
		os.Exit(1)
	}
	code := m.Run()
	dep.Stop()
	if custom.hs != nil {
		custom.hs.StopServer()
	}
	if os.Getenv("KEEP_DATA") == "" {
		os.RemoveAll(root)
	} else {
		fmt.Fprintln(os.Stderr, "server data and logs kept in", root)
	}
	os.Exit(code)
}

var ctx = context.Background()

// strongPassword satisfies the password policy of the configured server.
const strongPassword = "Complement-Passw0rd!"

// noticesLocalpart is the configured server's server notices user.
const noticesLocalpart = "notices"

// configured returns a third server, started on first use, whose config
// turns on what the generated config leaves off: server notices (as
// @notices, "Server Notices Bot"), the legacy unauthenticated media
// endpoints (enable_authenticated_media: false) and a strict password
// policy (at least 10 characters, with a digit, a symbol, an upper-case
// and a lower-case letter). Its users need strongPassword.
func configured(t *testing.T) *deploy.Homeserver {
	t.Helper()
	custom.once.Do(func() {
		custom.hs, custom.err = deploy.StartOne(bin, filepath.Join(root, "hs-configured"), func(cfg string) (string, error) {
			var err error
			for _, kv := range [][2]string{
				{"system_mxid_localpart", `"` + noticesLocalpart + `"`},
				{"system_mxid_display_name", `"Server Notices Bot"`},
				{"enable_authenticated_media", "false"},
				{"minimum_length", "10"},
				{"require_digit", "true"},
				{"require_symbol", "true"},
				{"require_lowercase", "true"},
				{"require_uppercase", "true"},
			} {
				if cfg, err = deploy.SetConfig(cfg, kv[0], kv[1]); err != nil {
					return "", err
				}
			}
			return cfg, nil
		})
	})
	if custom.err != nil {
		t.Fatalf("configured server: %v", custom.err)
	}
	return custom.hs
}
