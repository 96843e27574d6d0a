package configs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// pw is the password in these tests; no error message or printout may
// contain it.
const pw = "s3cr3t-pw"

func TestLoadDatabase(t *testing.T) {
	type want struct {
		name     string
		path     string // DatabasePath relative to the config's directory, sqlite3 only
		dsn      string // Postgres().DSN, postgres only
		min, max int
	}
	for _, tc := range []struct {
		name, body string
		want       want
	}{
		{"default", "", want{name: "sqlite3", path: "data/homeserver.db", min: 5, max: 10}},
		{"legacy path", "database:\n  path: db/hs.db\n", want{name: "sqlite3", path: "db/hs.db", min: 5, max: 10}},
		{"args.database", "database:\n  name: sqlite3\n  args:\n    database: db/hs.db\n", want{name: "sqlite3", path: "db/hs.db", min: 5, max: 10}},
		{"path and args.database agree", "database:\n  path: db/hs.db\n  args:\n    database: ./db/hs.db\n", want{name: "sqlite3", path: "db/hs.db", min: 5, max: 10}},
		{"sqlite3 ignores pool sizes", "database:\n  args:\n    cp_min: 1\n    cp_max: 2\n", want{name: "sqlite3", path: "data/homeserver.db", min: 1, max: 2}},
		{"postgres URL",
			"database:\n  name: postgres\n  args:\n    dsn: \"postgres://matrix:" + pw + "@db.internal:5433/matrix?sslmode=require\"\n",
			want{name: "postgres", dsn: "postgres://matrix:" + pw + "@db.internal:5433/matrix?sslmode=require", min: 5, max: 10}},
		{"postgresql URL, Unix socket, dbname in the query",
			"database:\n  name: postgres\n  args:\n    dsn: \"postgresql:///?host=/run/postgresql&dbname=matrix\"\n",
			want{name: "postgres", dsn: "postgresql:///?host=/run/postgresql&dbname=matrix", min: 5, max: 10}},
		{"postgres key=value",
			"database:\n  name: postgres\n  args:\n    dsn: \"host=db user=matrix password='" + pw + "' dbname = matrix\"\n    cp_min: 2\n    cp_max: 4\n",
			want{name: "postgres", dsn: "host=db user=matrix password='" + pw + "' dbname = matrix", min: 2, max: 4}},
		{"postgres separate arguments",
			"database:\n  name: postgres\n  args:\n    host: db.internal\n    port: 5433\n    user: matrix\n    password: \"" + pw + "\"\n    dbname: matrix\n    sslmode: verify-full\n    cp_min: 0\n    cp_max: 20\n",
			want{name: "postgres", dsn: "host='db.internal' port='5433' user='matrix' password='" + pw + "' dbname='matrix' sslmode='verify-full'", min: 0, max: 20}},
		{"postgres dbname only", "database:\n  name: postgres\n  args:\n    dbname: matrix\n",
			want{name: "postgres", dsn: "dbname='matrix'", min: 5, max: 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.body)
			c, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			if c.Database.Name != tc.want.name {
				t.Errorf("name %q, want %q", c.Database.Name, tc.want.name)
			}
			if tc.want.path != "" {
				if want := filepath.Join(filepath.Dir(path), tc.want.path); c.DatabasePath() != want {
					t.Errorf("DatabasePath() = %q, want %q", c.DatabasePath(), want)
				}
			}
			pg := c.Database.Postgres()
			if pg.DSN.Reveal() != tc.want.dsn && tc.want.dsn != "" {
				t.Errorf("DSN %q, want %q", pg.DSN.Reveal(), tc.want.dsn)
			}
			if pg.MinConns != tc.want.min || pg.MaxConns != tc.want.max {
				t.Errorf("pool %d..%d, want %d..%d", pg.MinConns, pg.MaxConns, tc.want.min, tc.want.max)
			}
		})
	}
}

// TestPostgresDSNFromArguments: the DSN built from the separate arguments
// reads back, through the driver's own parser, as those arguments, however
// odd the characters in them.
func TestPostgresDSNFromArguments(t *testing.T) {
	for _, password := range []string{pw, `a b`, `it's`, `back\slash`, `'`, `\`, `=x y=`, "tab\tnewline\n"} {
		d := Database{Name: EnginePostgres, Args: DatabaseArgs{
			Host: "db.internal", Port: 6543, User: "o'brien", Password: NewSecret(password), DBName: "my db", SSLMode: "disable",
			CPMin: 1, CPMax: 2,
		}}
		dsn := d.Postgres().DSN.Reveal()
		pc, err := pgconn.ParseConfig(dsn)
		if err != nil {
			t.Errorf("password %q: pgconn cannot parse %q: %v", password, dsn, err)
			continue
		}
		if pc.Host != "db.internal" || pc.Port != 6543 || pc.User != "o'brien" || pc.Password != password || pc.Database != "my db" || pc.TLSConfig != nil {
			t.Errorf("password %q: %q parses as host %q port %d user %q password %q database %q tls %v",
				password, dsn, pc.Host, pc.Port, pc.User, pc.Password, pc.Database, pc.TLSConfig != nil)
		}
		if err := checkDSN(dsn); err != nil {
			t.Errorf("password %q: checkDSN(%q): %v", password, dsn, err)
		}
	}
}

func TestLoadDatabaseErrors(t *testing.T) {
	const pg = "database:\n  name: postgres\n  args:\n"
	for _, tc := range []struct {
		name  string
		body  string
		field string
		line  int
		msg   string
	}{
		{"unknown engine", "database:\n  name: mysql\n", "database.name", 2, `"mysql": must be sqlite3 or postgres`},
		{"Synapse's engine name", "database:\n  name: psycopg2\n", "database.name", 2, "here it is postgres"},
		{"empty engine", "database:\n  name: \"\"\n", "database.name", 2, "must be sqlite3 or postgres"},
		{"cp_min above cp_max", pg + "    dbname: m\n    cp_min: 11\n", "database.args.cp_min", 5, "must not exceed cp_max (10)"},
		{"cp_max zero", pg + "    dbname: m\n    cp_min: 0\n    cp_max: 0\n", "database.args.cp_max", 6, "at least 1"},
		{"lease under a second", "database:\n  name: postgres\n  worker_lease_duration: 500ms\n  args:\n    dbname: m\n", "database.worker_lease_duration", 3, "at least 1s"},
		{"lease in microseconds", "database:\n  worker_lease_duration: 1500100us\n", "database.worker_lease_duration", 2, "whole milliseconds"},
		{"cp_min negative", pg + "    dbname: m\n    cp_min: -1\n", "database.args.cp_min", 5, "at least 0"},
		{"missing dbname", pg + "    host: db\n    user: matrix\n", "database.args.dbname", 0, "not set"},
		{"dsn and host", pg + "    dsn: \"postgres://u:" + pw + "@h/db\"\n    host: h\n", "database.args.dsn", 4, "together with host"},
		{"dsn and password", pg + "    dsn: \"postgres://u@h/db\"\n    password: \"" + pw + "\"\n", "database.args.dsn", 4, "together with password"},
		{"dsn names no database", pg + "    dsn: \"postgres://u:" + pw + "@h:5432\"\n", "database.args.dsn", 4, "names no database"},
		{"key=value names no database", pg + "    dsn: \"host=h password=" + pw + "\"\n", "database.args.dsn", 4, "names no database"},
		{"dsn not a URL", pg + "    dsn: \"postgres://u:" + pw + "@h:port/db\"\n", "database.args.dsn", 4, "not a valid postgres:// URL"},
		{"dsn password with a bad escape", pg + "    dsn: \"postgres://u:" + pw + "%zz@h/db\"\n", "database.args.dsn", 4, "not a valid postgres:// URL"},
		{"dsn neither form", pg + "    dsn: \"" + pw + "\"\n", "database.args.dsn", 4, "neither a postgres:// URL nor key=value"},
		{"dsn key without value", pg + "    dsn: \"dbname=m " + pw + "\"\n", "database.args.dsn", 4, "no \"=\""},
		{"dsn unclosed quote", pg + "    dsn: \"dbname=m password='" + pw + "\"\n", "database.args.dsn", 4, "no closing quote"},
		{"dsn bad sslmode", pg + "    dsn: \"postgres://h/db?sslmode=always\"\n", "database.args.dsn", 4, `sslmode "always"`},
		{"dsn number", pg + "    dsn: 5432\n", "database.args.dsn", 4, "must be a string"},
		{"bad sslmode", pg + "    dbname: m\n    sslmode: yes\n", "database.args.sslmode", 5, `"yes": must be one of disable`},
		{"port too big", pg + "    dbname: m\n    port: 65536\n", "database.args.port", 5, "1 to 65535"},
		{"postgres with path", "database:\n  name: postgres\n  path: hs.db\n  args:\n    dbname: m\n", "database.path", 3, "SQLite's database file"},
		{"postgres with args.database", pg + "    dbname: m\n    database: hs.db\n", "database.args.database", 5, "SQLite's database file"},
		{"sqlite3 with host", "database:\n  args:\n    host: db\n", "database.args.host", 3, "argument for postgres"},
		{"sqlite3 with dsn", "database:\n  name: sqlite3\n  args:\n    dsn: \"postgres://u:" + pw + "@h/db\"\n", "database.args.dsn", 4, "argument for postgres"},
		{"sqlite3 path and args.database differ", "database:\n  path: a.db\n  args:\n    database: b.db\n", "database.args.database", 4, "database.path is"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.body)
			_, err := Load(path)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T) is not a *configs.Error", err, err)
			}
			if len(e.Problems) != 1 {
				t.Fatalf("want one problem, got %d:\n%v", len(e.Problems), err)
			}
			p := e.Problems[0]
			if p.Field != tc.field || p.Line != tc.line {
				t.Errorf("problem at field %q line %d, want field %q line %d: %v", p.Field, p.Line, tc.field, tc.line, err)
			}
			if !strings.Contains(p.Err.Error(), tc.msg) {
				t.Errorf("message %q does not contain %q", p.Err, tc.msg)
			}
			if strings.Contains(err.Error(), pw[2:]) {
				t.Errorf("error shows the password: %v", err)
			}
		})
	}
}

// TestDatabaseSecretsNotPrinted: printing or encoding a config shows
// neither the password nor the DSN that holds one.
func TestDatabaseSecretsNotPrinted(t *testing.T) {
	for _, d := range []Database{
		{Name: EnginePostgres, Args: DatabaseArgs{DSN: NewSecret("postgres://u:" + pw + "@h/db"), CPMin: 5, CPMax: 10}},
		{Name: EnginePostgres, Args: DatabaseArgs{Host: "h", Password: NewSecret(pw), DBName: "db", CPMin: 5, CPMax: 10}},
	} {
		c := Default()
		c.Database = d
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		fmt.Fprintf(&out, "%v %+v %#v", c, c, c)
		fmt.Fprintf(&out, "%v %+v %#v", d.Postgres(), d.Postgres(), d.Postgres())
		slog.New(slog.NewJSONHandler(&out, nil)).Info("config", "database", d, "conn", d.Postgres())
		slog.New(slog.NewTextHandler(&out, nil)).Info("config", "database", d, "conn", d.Postgres())
		j, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		out.Write(j)
		if strings.Contains(out.String(), pw) {
			t.Errorf("the password is printed:\n%s", out.String())
		}
	}
}

func TestGenerateDatabase(t *testing.T) {
	for _, tc := range []struct{ database, name, dsn string }{
		{"", "sqlite3", ""},
		{"sqlite3", "sqlite3", ""},
		{"postgres://matrix:" + pw + "@db.internal/matrix", "postgres", "postgres://matrix:" + pw + "@db.internal/matrix"},
		{"host=/run/postgresql dbname=matrix", "postgres", "host=/run/postgresql dbname=matrix"},
	} {
		t.Run(tc.database, func(t *testing.T) {
			out, err := Generate(GenerateOptions{DataDir: "/srv/hs", SharedSecret: "x", Database: tc.database})
			if err != nil {
				t.Fatal(err)
			}
			c, err := Load(writeConfig(t, string(out)))
			if err != nil {
				t.Fatalf("generated config does not load: %v\n%s", err, out)
			}
			if c.Database.Name != tc.name {
				t.Errorf("database.name %q, want %q", c.Database.Name, tc.name)
			}
			if tc.name == EngineSQLite {
				if c.DatabasePath() != "/srv/hs/homeserver.db" {
					t.Errorf("DatabasePath() = %q, want it under the data dir", c.DatabasePath())
				}
				if tc.database != "" {
					base, err := Generate(GenerateOptions{DataDir: "/srv/hs", SharedSecret: "x"})
					if err != nil || !bytes.Equal(out, base) {
						t.Errorf("--database sqlite3 differs from the default (%v)", err)
					}
				}
				return
			}
			if got := c.Database.Postgres().DSN.Reveal(); got != tc.dsn {
				t.Errorf("dsn %q, want %q", got, tc.dsn)
			}
			// Only the two values changed, the comments and layout kept.
			base, err := Generate(GenerateOptions{DataDir: "/srv/hs", SharedSecret: "x"})
			if err != nil {
				t.Fatal(err)
			}
			bl, ol := strings.Split(string(base), "\n"), strings.Split(string(out), "\n")
			if len(bl) != len(ol) {
				t.Fatalf("%d lines, want %d", len(ol), len(bl))
			}
			var changed []string
			for i := range bl {
				if bl[i] != ol[i] {
					changed = append(changed, strings.TrimSpace(ol[i]))
				}
			}
			want := []string{`name: "postgres"`, fmt.Sprintf("dsn: %q", tc.dsn)}
			if fmt.Sprint(changed) != fmt.Sprint(want) {
				t.Errorf("changed lines %q, want %q", changed, want)
			}
		})
	}
}

func TestGenerateDatabaseErrors(t *testing.T) {
	for _, tc := range []struct{ database, msg string }{
		{"mysql://u:" + pw + "@h/db", "want sqlite3, a postgres:// URL or key=value pairs"},
		{"postgres://u:" + pw + "@h", "names no database"},
		{"host=h password=" + pw, "names no database"},
	} {
		_, err := Generate(GenerateOptions{Database: tc.database})
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("--database %q: error %v, want one saying %q", tc.database, err, tc.msg)
		}
		if err != nil && strings.Contains(err.Error(), pw) {
			t.Errorf("--database %q: error shows the password: %v", tc.database, err)
		}
	}
}
