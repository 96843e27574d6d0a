package server

import (
	"fmt"
	"log/slog"

	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/storage/postgres"
	"github.com/persistentchat/homeserver/storage/sqlite"
	"github.com/persistentchat/homeserver/storage/sqlstore"
)

// OpenStore opens the database cfg.Database names, creating its tables or
// migrating them. It is the one place that knows the engines; New and the
// operator commands (register-user) both open storage through it. The
// caller closes the store.
func OpenStore(cfg *configs.Config, log *slog.Logger) (*sqlstore.DB, error) {
	switch cfg.Database.Name {
	case configs.EngineSQLite:
		return sqlite.Open(cfg.DatabasePath(), log)
	case configs.EnginePostgres:
		pg := cfg.Database.Postgres()
		return postgres.Open(postgres.Options{DSN: pg.DSN.Reveal(), MinConns: pg.MinConns, MaxConns: pg.MaxConns}, log)
	}
	// Validate refuses any other name.
	return nil, fmt.Errorf("database.name %q: unknown engine", cfg.Database.Name)
}
