package configs

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The engines Database.Name may name.
const (
	EngineSQLite   = "sqlite3"
	EnginePostgres = "postgres"
)

// PostgresConn is what the PostgreSQL engine needs to connect: the
// connection string and the pool's bounds.
type PostgresConn struct {
	// DSN is a libpq connection string (URL or key=value), to be given to
	// the driver as it is. It may hold the password: Reveal it only there.
	DSN Secret
	// MinConns and MaxConns bound the connection pool (cp_min, cp_max).
	MinConns, MaxConns int
}

// Postgres returns the connection of the postgres engine: args.dsn as it
// is, or else a key=value DSN built from the separate arguments, and the
// pool sizes. Only meaningful when Name is "postgres" and the config is
// valid.
func (d *Database) Postgres() PostgresConn {
	a := d.Args
	conn := PostgresConn{DSN: a.DSN, MinConns: a.CPMin, MaxConns: a.CPMax}
	if !a.DSN.IsZero() {
		return conn
	}
	var pairs []string
	add := func(key, value string) {
		if value != "" {
			pairs = append(pairs, key+"="+quoteDSNValue(value))
		}
	}
	add("host", a.Host)
	if a.Port != 0 {
		add("port", strconv.Itoa(a.Port))
	}
	add("user", a.User)
	add("password", a.Password.Reveal())
	add("dbname", a.DBName)
	add("sslmode", a.SSLMode)
	conn.DSN = NewSecret(strings.Join(pairs, " "))
	return conn
}

// DefaultWorkerLeaseDuration is Database.WorkerLeaseDuration's default.
const DefaultWorkerLeaseDuration = 15 * time.Second

// LeaseDuration is WorkerLeaseDuration, or its default when it is 0.
func (d *Database) LeaseDuration() time.Duration {
	if d.WorkerLeaseDuration == 0 {
		return DefaultWorkerLeaseDuration
	}
	return d.WorkerLeaseDuration.Std()
}

// quoteDSNValue quotes a value for a key=value connection string, as
// libpq reads it: in single quotes, with \ and ' escaped by a backslash.
func quoteDSNValue(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

var sslModes = []string{"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}

// validateDatabase adds the problems of the database section. No message
// quotes the DSN or the password, not even in part.
func (c *Config) validateDatabase(bad func(field, format string, args ...any)) {
	d, a := &c.Database, &c.Database.Args
	const args = "database.args."
	// 0 is the default (a Database built in code rather than loaded).
	if lease := d.WorkerLeaseDuration.Std(); lease != 0 && (lease < time.Second || lease%time.Millisecond != 0) {
		bad("database.worker_lease_duration", "is %v; must be at least 1s, in whole milliseconds", lease)
	}
	if a.CPMin < 0 {
		bad(args+"cp_min", "is %d; must be at least 0", a.CPMin)
	}
	if a.CPMax < 1 {
		bad(args+"cp_max", "is %d; must be at least 1", a.CPMax)
	} else if a.CPMin > a.CPMax {
		bad(args+"cp_min", "is %d; must not exceed cp_max (%d)", a.CPMin, a.CPMax)
	}
	// The PostgreSQL arguments that are set, in the order of the sample.
	var pgSet []string
	for _, f := range []struct {
		key string
		set bool
	}{
		{"dsn", !a.DSN.IsZero()}, {"host", a.Host != ""}, {"port", a.Port != 0}, {"user", a.User != ""},
		{"password", !a.Password.IsZero()}, {"dbname", a.DBName != ""}, {"sslmode", a.SSLMode != ""},
	} {
		if f.set {
			pgSet = append(pgSet, f.key)
		}
	}

	switch d.Name {
	case EngineSQLite:
		for _, key := range pgSet {
			bad(args+key, "is an argument for postgres, but database.name is sqlite3")
		}
		if a.Database != "" && d.Path != "" && filepath.Clean(a.Database) != filepath.Clean(d.Path) {
			bad(args+"database", "is %q but database.path is %q; they name the same setting, so set only one", a.Database, d.Path)
		}
	case EnginePostgres:
		if d.Path != "" {
			bad("database.path", "is SQLite's database file, but database.name is postgres; name the PostgreSQL database with database.args.dbname or in database.args.dsn")
		}
		if a.Database != "" {
			bad(args+"database", "is SQLite's database file, but database.name is postgres; name the PostgreSQL database with database.args.dbname or in database.args.dsn")
		}
		if !a.DSN.IsZero() {
			if len(pgSet) > 1 {
				bad(args+"dsn", "is set together with %s; give either dsn or the separate arguments, not both", strings.Join(pgSet[1:], ", "))
			}
			if err := checkDSN(a.DSN.Reveal()); err != nil {
				bad(args+"dsn", "%v", err)
			}
			break
		}
		if a.DBName == "" {
			bad(args+"dbname", "is not set; name the PostgreSQL database to use (or give database.args.dsn)")
		}
		if a.Port < 0 || a.Port > 65535 {
			bad(args+"port", "is %d; must be from 1 to 65535 (or 0 for 5432)", a.Port)
		}
		if a.SSLMode != "" && !checkSSLMode(a.SSLMode) {
			bad(args+"sslmode", "%q: must be one of %s", a.SSLMode, strings.Join(sslModes, ", "))
		}
	case "psycopg2":
		bad("database.name", `"psycopg2" is Synapse's name for PostgreSQL; here it is postgres (its args: dsn, or host, port, user, password, dbname and sslmode; cp_min, cp_max)`)
	default:
		bad("database.name", "%q: must be %s or %s", d.Name, EngineSQLite, EnginePostgres)
	}
}

func checkSSLMode(m string) bool {
	for _, s := range sslModes {
		if m == s {
			return true
		}
	}
	return false
}

// checkDSN checks that dsn is a libpq connection string, a postgres:// URL
// or key=value pairs, that names a database and, if it says, a valid
// sslmode. Its errors never quote dsn: it may hold a password.
func checkDSN(dsn string) error {
	var dbname, sslmode string
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			// url's errors quote the URL, password and all.
			return errors.New("is not a valid postgres:// URL (check that special characters in the password are %-encoded)")
		}
		q := u.Query()
		dbname, sslmode = strings.TrimPrefix(u.Path, "/"), q.Get("sslmode")
		if q.Has("dbname") {
			dbname = q.Get("dbname")
		}
	} else {
		pairs, err := parseKeyValueDSN(dsn)
		if err != nil {
			return err
		}
		dbname, sslmode = pairs["dbname"], pairs["sslmode"]
	}
	if dbname == "" {
		return errors.New("names no database; add it (postgres://host/DBNAME, or dbname=DBNAME)")
	}
	if sslmode != "" && !checkSSLMode(sslmode) {
		return fmt.Errorf("sslmode %q: must be one of %s", sslmode, strings.Join(sslModes, ", "))
	}
	return nil
}

// parseKeyValueDSN reads libpq's key=value form: pairs separated by white
// space, spaces allowed around "=", a value either bare or in single
// quotes, with a backslash escaping the next character in both. Its
// errors never quote dsn.
func parseKeyValueDSN(dsn string) (map[string]string, error) {
	pairs := map[string]string{}
	isSpace := func(b byte) bool { return b == ' ' || b == '\t' || b == '\n' || b == '\r' || b == '\f' || b == '\v' }
	i, n := 0, len(dsn)
	skip := func() {
		for i < n && isSpace(dsn[i]) {
			i++
		}
	}
	for skip(); i < n; skip() {
		start := i
		for i < n && dsn[i] != '=' && !isSpace(dsn[i]) {
			i++
		}
		key := dsn[start:i]
		skip()
		if key == "" || i == n || dsn[i] != '=' {
			return nil, fmt.Errorf("is neither a postgres:// URL nor key=value pairs (pair %d has no \"=\")", len(pairs)+1)
		}
		i++
		skip()
		var v strings.Builder
		if i < n && dsn[i] == '\'' {
			i++
			for ; i < n && dsn[i] != '\''; i++ {
				if dsn[i] == '\\' && i+1 < n {
					i++
				}
				v.WriteByte(dsn[i])
			}
			if i == n {
				return nil, errors.New("a quoted value has no closing quote")
			}
			i++
		} else {
			for ; i < n && !isSpace(dsn[i]); i++ {
				if dsn[i] == '\\' && i+1 < n {
					i++
				}
				v.WriteByte(dsn[i])
			}
		}
		pairs[key] = v.String()
	}
	if len(pairs) == 0 {
		return nil, errors.New("is empty")
	}
	return pairs, nil
}
