package server_test

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/testserver"
)

// TestFilesAreOwnerOnly: the SQLite database (with its -wal and -shm files), the
// signing key and the data directory are the owner's alone, under the
// usual umask (022), under which SQLite would have made the database and
// its companions readable by every user of the machine. Not parallel: the
// umask is the process's.
func TestFilesAreOwnerOnly(t *testing.T) {
	defer syscall.Umask(syscall.Umask(0o022))
	// A data directory the server makes, and a write, so that the WAL and
	// shared-memory files exist while the server runs.
	srv := testserver.Start(t, testserver.Options{DataDir: filepath.Join(t.TempDir(), "data")})
	srv.Register("alice")
	paths := []string{srv.Config.SigningKeyPath(), srv.DataDir}
	if srv.Config.Database.Name == configs.EngineSQLite {
		// PostgreSQL's files are the database server's, not ours.
		db := srv.Config.DatabasePath()
		paths = append(paths, db, db+"-wal", db+"-shm")
	}
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("%s has mode %v, want no access for group or others", p, perm)
		}
	}
}
