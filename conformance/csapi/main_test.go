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
	"testing"

	"github.com/persistentchat/homeserver/conformance/deploy"
)

var dep *deploy.Deployment

func TestMain(m *testing.M) {
	bin := os.Getenv("HOMESERVER_BIN")
	if bin == "" {
		bin, _ = filepath.Abs("../../bin/homeserver")
	}
	root, err := os.MkdirTemp("", "complement-hs-")
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
	if os.Getenv("KEEP_DATA") == "" {
		os.RemoveAll(root)
	} else {
		fmt.Fprintln(os.Stderr, "server data and logs kept in", root)
	}
	os.Exit(code)
}

var ctx = context.Background()
