package homeserver_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestRoomCoreIsPure keeps roomdag free of I/O, as DESIGN.md and STYLE.md
// require: no HTTP, no SQL, no storage engine, no other layer of ours.
func TestRoomCoreIsPure(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "./roomdag").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	forbidden := []string{
		"net/http", "database/sql", "os/exec",
		"github.com/persistentchat/homeserver/storage",
		"github.com/persistentchat/homeserver/api",
		"github.com/persistentchat/homeserver/sync",
		"github.com/persistentchat/homeserver/federation",
		"github.com/persistentchat/homeserver/server",
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, f+"/") {
				t.Errorf("roomdag depends on %s", dep)
			}
		}
	}
}

// TestImportsPointDown: nothing imports the binary's wiring or the test
// helper except tests, and lower layers never import higher ones.
func TestImportsPointDown(t *testing.T) {
	rules := map[string][]string{
		"./storage/...": {"/api", "/sync", "/server", "/federation"},
		"./sync":        {"/api", "/server", "/federation"},
		"./api":         {"/server", "/testserver", "/federation"},
		// The errors and handler adapter both APIs share sit below both.
		"./httpapi":    {"/api", "/federation", "/server", "/sync", "/storage", "/testserver"},
		"./federation": {"/api", "/server", "/testserver"},
		"./metrics":    {"/api", "/server", "/sync", "/storage/sqlite", "/storage/sqlstore"},
	}
	for pkg, banned := range rules {
		out, err := exec.Command("go", "list", "-deps", pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, b := range banned {
				if dep == "github.com/persistentchat/homeserver"+b {
					t.Errorf("%s depends on %s", pkg, dep)
				}
			}
		}
	}
}
