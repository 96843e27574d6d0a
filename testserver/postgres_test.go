package testserver

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/persistentchat/homeserver/configs"
)

// TestPostgresDatabasePerDataDir: under PostgresEnv, a data directory gets
// a database of its own, the same one again for a restart, and the test
// that made it drops it when it ends.
func TestPostgresDatabasePerDataDir(t *testing.T) {
	if Engine() != configs.EnginePostgres {
		t.Skipf("%s is not set", PostgresEnv)
	}
	admin, err := adminDB()
	if err != nil {
		t.Fatal(err)
	}
	exists := func(name string) bool {
		t.Helper()
		var ok bool
		if err := admin.QueryRowContext(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	}
	dbName := func(c *configs.Config) string {
		t.Helper()
		pc, err := pgconn.ParseConfig(c.Database.Postgres().DSN.Reveal())
		if err != nil {
			t.Fatal(err)
		}
		return pc.Database
	}
	dir := t.TempDir()
	var first, other string
	t.Run("server", func(t *testing.T) {
		a, b, c := configs.Default(), configs.Default(), configs.Default()
		usePostgres(t, &a, dir)
		usePostgres(t, &b, dir) // a restart on the same DataDir
		usePostgres(t, &c, t.TempDir())
		if err := a.Validate(); err != nil {
			t.Fatal(err)
		}
		first, other = dbName(&a), dbName(&c)
		if !strings.HasPrefix(first, "hs_test_") || dbName(&b) != first {
			t.Errorf("databases %q then %q for one data directory, want one hs_test_ database", first, dbName(&b))
		}
		if other == first {
			t.Errorf("two data directories share database %q", first)
		}
		if !exists(first) || !exists(other) {
			t.Errorf("databases %q, %q not created", first, other)
		}
		if pg := a.Database.Postgres(); a.Database.Name != configs.EnginePostgres || pg.MaxConns != postgresPool {
			t.Errorf("database config %+v", a.Database)
		}
		// The server's own connection works, as the server's role.
		db, err := (&Server{t: t, Config: &a}).SQL().Conn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		db.Close()
	})
	if exists(first) || exists(other) {
		t.Errorf("databases %q, %q left after the test", first, other)
	}
	if b, err := os.ReadFile(dir + "/" + dbNameFile); err != nil || strings.TrimSpace(string(b)) != first {
		t.Errorf("name file: %q, %v", b, err)
	}
}
