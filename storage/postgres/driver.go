package postgres

import (
	"context"
	"database/sql"
	"database/sql/driver"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// Why pgx: it is the maintained pure-Go PostgreSQL driver with the widest
// support of the server's protocol and types (lib/pq is in maintenance
// mode), and it has LISTEN/NOTIFY and COPY, which several processes
// sharing one database (notifier, cache invalidation) and the SQLite to
// PostgreSQL port need. The shared SQL layer is written against
// database/sql (*sql.Tx), so the store uses pgx through its database/sql
// adapter, pgx/v5/stdlib, wrapped here to translate placeholders.

// DriverName is the database/sql driver registered by this package: pgx
// with the shared layer's `?` placeholders rewritten to `$n` (rebind).
// sql.Open(DriverName, dsn) accepts any DSN pgx.ParseConfig does.
const DriverName = "pgx-homeserver"

func init() {
	sql.Register(DriverName, rebindDriver{})
}

// rebindDriver opens pgx connections that rebind their queries.
type rebindDriver struct{}

func (rebindDriver) Open(dsn string) (driver.Conn, error) {
	c, err := rebindDriver{}.OpenConnector(dsn)
	if err != nil {
		return nil, err
	}
	return c.Connect(context.Background())
}

func (rebindDriver) OpenConnector(dsn string) (driver.Connector, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	return newConnector(cfg), nil
}

// connector wraps pgx's connector; every connection it makes shares one
// cache of rewritten queries.
type connector struct {
	inner driver.Connector
	cache *rebindCache
}

func newConnector(cfg *pgx.ConnConfig, opts ...stdlib.OptionOpenDB) *connector {
	return &connector{inner: stdlib.GetConnector(*cfg, opts...), cache: &rebindCache{}}
}

func (c *connector) Connect(ctx context.Context) (driver.Conn, error) {
	dc, err := c.inner.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &conn{Conn: dc.(*stdlib.Conn), cache: c.cache}, nil
}

func (c *connector) Driver() driver.Driver { return rebindDriver{} }

// conn is a pgx connection whose query entry points rebind. Everything
// else (transactions, pings, session reset, argument conversion) is pgx's
// own, promoted from the embedded *stdlib.Conn.
type conn struct {
	*stdlib.Conn
	cache *rebindCache
}

// PgxConn is the pgx connection under c, for what database/sql has no call
// for: COPY, which the SQLite port (storage/port) runs through
// sql.Conn.Raw. (The embedded field's name hides stdlib.Conn's own Conn
// method.)
func (c *conn) PgxConn() *pgx.Conn { return c.Conn.Conn() }

func (c *conn) Prepare(query string) (driver.Stmt, error) {
	return c.Conn.Prepare(c.cache.get(query))
}

func (c *conn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return c.Conn.PrepareContext(ctx, c.cache.get(query))
}

func (c *conn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	return c.Conn.ExecContext(ctx, c.cache.get(query), args)
}

func (c *conn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	return c.Conn.QueryContext(ctx, c.cache.get(query), args)
}

// CheckNamedValue binds a Go bool as the integer 1 or 0, as go-sqlite3
// does: the schema keeps flags in INTEGER columns on both engines
// (schema.go), so the shared layer passes bools to them everywhere, and
// pgx would refuse a bool for an integer parameter. Other values go to
// pgx's own conversion.
func (c *conn) CheckNamedValue(nv *driver.NamedValue) error {
	if b, ok := nv.Value.(bool); ok {
		nv.Value = int64(0)
		if b {
			nv.Value = int64(1)
		}
		return nil
	}
	return c.Conn.CheckNamedValue(nv)
}

// Interface guards: database/sql finds these by type assertion, and
// without one it would fall back to slower paths silently.
var (
	_ driver.ConnPrepareContext = (*conn)(nil)
	_ driver.ConnBeginTx        = (*conn)(nil)
	_ driver.ExecerContext      = (*conn)(nil)
	_ driver.QueryerContext     = (*conn)(nil)
	_ driver.Pinger             = (*conn)(nil)
	_ driver.SessionResetter    = (*conn)(nil)
	_ driver.NamedValueChecker  = (*conn)(nil)
	_ driver.DriverContext      = rebindDriver{}
)
