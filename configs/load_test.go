package configs

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// writeConfig writes body to homeserver.yaml in a new temporary directory
// and returns the file's path.
func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "homeserver.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadEmptyFileGivesDefaults(t *testing.T) {
	path := writeConfig(t, "# nothing set\n")
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(path)
	want := Default()
	want.DataDir = filepath.Join(dir, "data")
	if !reflect.DeepEqual(*c, want) {
		t.Errorf("Load = %#v\nwant %#v", *c, want)
	}
	for _, tc := range []struct{ name, got, want string }{
		{"DatabasePath", c.DatabasePath(), filepath.Join(dir, "data", "homeserver.db")},
		{"SigningKeyPath", c.SigningKeyPath(), filepath.Join(dir, "data", "signing.key")},
		{"MediaDir", c.MediaDir(), filepath.Join(dir, "data", "media")},
		{"BaseURL", c.BaseURL(), "http://127.0.0.1:8008/"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %q, want %q", tc.name, tc.got, tc.want)
		}
	}
}

func TestLoadSampleGivesDefaults(t *testing.T) {
	path := writeConfig(t, string(sample))
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.DataDir = filepath.Join(filepath.Dir(path), "data")
	if !reflect.DeepEqual(*c, want) {
		t.Errorf("Load = %#v\nwant %#v", *c, want)
	}
}

func TestLoadResolvesRelativePaths(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "etc")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "hs.yaml")
	body := `
data_dir: ../var
database:
  path: db/hs.db
signing_key_path: /keys/signing.key
app_service_config_files:
  - bridges/irc.yaml
  - /abs/slack.yaml
`
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	// Load from another working directory, through a relative path, to
	// show that paths follow the file and not the working directory.
	t.Chdir(root)
	c, err := Load(filepath.Join("etc", "hs.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, got, want string }{
		{"data_dir", c.DataDir, filepath.Join(root, "var")},
		{"DatabasePath", c.DatabasePath(), filepath.Join(dir, "db", "hs.db")},
		{"SigningKeyPath", c.SigningKeyPath(), "/keys/signing.key"},
		{"MediaDir", c.MediaDir(), filepath.Join(root, "var", "media")},
		{"app_service_config_files[0]", c.AppServiceConfigFiles[0], filepath.Join(dir, "bridges", "irc.yaml")},
		{"app_service_config_files[1]", c.AppServiceConfigFiles[1], "/abs/slack.yaml"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %q, want %q", tc.name, tc.got, tc.want)
		}
	}
}

func TestLoadValues(t *testing.T) {
	path := writeConfig(t, `
server_name: "example.org"
public_baseurl: "https://matrix.example.org"
listen: "[::]:8080"
enable_registration: true
registration_requires_token: true
registration_tokens: ["abc", "D.e_f~g-h"]
registration_shared_secret: "s3cret"
bcrypt_rounds: 4
default_room_version: "12"
backchat_default: 20
backchat_max: 20
max_request_size: 524288
max_upload_size: "2G"
rate_limiting:
  enabled: false
  message: {per_second: 0.5, burst_count: 3}
refreshable_access_token_lifetime: "5m"
enable_authenticated_media: false
server_notices:
  system_mxid_localpart: notices
  system_mxid_display_name: "Server Notices"
  room_topic: "Messages from the administrators"
  auto_join: true
log_level: debug
log_format: json
metrics:
  enabled: true
  listen: "127.0.0.1:9102"
`)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.ServerName = "example.org"
	want.PublicBaseURL = "https://matrix.example.org"
	want.Listen = "[::]:8080"
	want.DataDir = filepath.Join(filepath.Dir(path), "data")
	want.EnableRegistration = true
	want.RegistrationRequiresToken = true
	want.RegistrationTokens = []Secret{NewSecret("abc"), NewSecret("D.e_f~g-h")}
	want.RegistrationSharedSecret = NewSecret("s3cret")
	want.BcryptRounds = 4
	want.DefaultRoomVersion = "12"
	want.BackchatDefault, want.BackchatMax = 20, 20
	want.MaxRequestSize = 512 * KiB
	want.MaxUploadSize = 2 * GiB
	want.RateLimiting.Enabled = false
	// A partly given mapping keeps the defaults of the keys it leaves out.
	want.RateLimiting.Message = RateLimit{PerSecond: 0.5, BurstCount: 3}
	want.RefreshableAccessTokenLifetime = Duration(5 * time.Minute)
	want.EnableAuthenticatedMedia = false
	want.ServerNotices = ServerNotices{SystemMXIDLocalpart: "notices", SystemMXIDDisplayName: "Server Notices",
		RoomName: "Server Notices", RoomTopic: "Messages from the administrators", AutoJoin: true}
	want.LogLevel = "debug"
	want.LogFormat = "json"
	want.Metrics = Metrics{Enabled: true, Listen: "127.0.0.1:9102"}
	if !reflect.DeepEqual(*c, want) {
		t.Errorf("Load = %#v\nwant %#v", *c, want)
	}
	if got := c.BaseURL(); got != "https://matrix.example.org/" {
		t.Errorf("BaseURL = %q", got)
	}
}

func TestLoadNullKeepsDefault(t *testing.T) {
	c, err := Load(writeConfig(t, "server_name:\nrate_limiting:\nregistration_tokens: ~\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.ServerName != "localhost:8008" || !c.RateLimiting.Enabled || c.RegistrationTokens == nil {
		t.Errorf("empty values did not keep their defaults: %#v", *c)
	}
}

// TestLoadErrors checks that each invalid value is reported against its
// own field, and only that field, with the key's line.
func TestLoadErrors(t *testing.T) {
	const tokenOn = "enable_registration: true\nregistration_requires_token: true\n"
	for _, tc := range []struct {
		name  string
		body  string
		field string
		line  int
		msg   string // part of the message
	}{
		// Structure.
		{"unknown key", "server_name: a.org\nserer_name: b.org\n", "serer_name", 2, "unknown key"},
		{"unknown nested key", "rate_limiting:\n  message:\n    per_sec: 1\n", "rate_limiting.message.per_sec", 3, "unknown key"},
		{"duplicate key", "listen: 127.0.0.1:1\nlisten: 127.0.0.1:2\n", "listen", 2, "duplicate key (first at line 1)"},
		{"not a mapping", "- a\n- b\n", "", 1, "mapping"},
		{"nested not a mapping", "database: homeserver.db\n", "database", 1, "mapping"},
		{"scalar for list", "app_service_config_files: irc.yaml\n", "app_service_config_files", 1, "must be a list"},
		{"null list item", "app_service_config_files:\n  - a.yaml\n  -\n", "app_service_config_files[1]", 3, "empty list item"},
		{"wrong type", "bcrypt_rounds: many\n", "bcrypt_rounds", 1, "whole number"},
		{"int overflow", "backchat_max: 99999999999999999999\n", "backchat_max", 1, "whole number"},
		{"list for string 2", "log_level: [info]\n", "log_level", 1, "cannot unmarshal"},
		{"float for int", "backchat_max: 1.5\n", "backchat_max", 1, "whole number"},
		{"string for int", "bcrypt_rounds: \"12\"\n", "bcrypt_rounds", 1, "whole number"},
		{"list for string", "server_name: [a, b]\n", "server_name", 1, "cannot unmarshal"},

		// Identity and listener.
		{"server_name empty", `server_name: ""`, "server_name", 1, "must not be empty"},
		{"server_name space", "server_name: my server\n", "server_name", 1, "not ' '"},
		{"server_name underscore", "server_name: my_server.org\n", "server_name", 1, "not '_'"},
		{"server_name bare ipv6", `server_name: "::1"`, "server_name", 1, "between [ ]"},
		{"server_name bad ipv6", `server_name: "[::zz]:8448"`, "server_name", 1, "IPv6"},
		{"server_name unclosed ipv6", `server_name: "[::1"`, "server_name", 1, "unclosed"},
		{"server_name port 0", `server_name: "example.org:0"`, "server_name", 1, "port"},
		{"server_name port too big", `server_name: "example.org:65536"`, "server_name", 1, "port"},
		{"server_name empty port", `server_name: "example.org:"`, "server_name", 1, "port"},
		{"server_name empty host", `server_name: ":8448"`, "server_name", 1, "1 to 255"},
		{"server_name text after ipv6", `server_name: "[::1]x"`, "server_name", 1, "after ]"},
		{"public_baseurl scheme", `public_baseurl: "ftp://example.org/"`, "public_baseurl", 1, "http"},
		{"public_baseurl relative", `public_baseurl: "example.org"`, "public_baseurl", 1, "http"},
		{"public_baseurl query", `public_baseurl: "https://example.org/?a=b"`, "public_baseurl", 1, "query"},
		{"public_baseurl user", `public_baseurl: "https://u:p@example.org/"`, "public_baseurl", 1, "user"},
		{"listen no port", `listen: "127.0.0.1"`, "listen", 1, "host:port"},
		{"listen named port", `listen: "127.0.0.1:http"`, "listen", 1, "port"},
		{"listen empty port", `listen: "127.0.0.1:"`, "listen", 1, "port"},
		{"listen bad host", `listen: "my host:80"`, "listen", 1, "host"},
		{"data_dir empty", `data_dir: ""`, "data_dir", 1, "empty"},

		// Registration.
		{"token without registration", "registration_requires_token: true\nregistration_tokens: [abc]\n", "registration_requires_token", 1, "enable_registration"},
		{"token required but none", tokenOn, "registration_tokens", 0, "nobody could register"},
		{"tokens not required", "enable_registration: true\nregistration_tokens: [abc]\n", "registration_tokens", 2, "registration_requires_token is false"},
		{"token bad character", tokenOn + `registration_tokens: ["a b"]`, "registration_tokens[0]", 3, "A-Z"},
		{"token too long", tokenOn + "registration_tokens: [" + strings.Repeat("a", 65) + "]", "registration_tokens[0]", 3, "64"},
		{"token empty", tokenOn + `registration_tokens: ["ok", ""]`, "registration_tokens[1]", 3, "1 to 64"},
		{"token repeated", tokenOn + "registration_tokens:\n  - abc\n  - def\n  - abc\n", "registration_tokens[2]", 6, "repeats registration_tokens[0]"},
		{"token number", tokenOn + "registration_tokens: [123]\n", "registration_tokens[0]", 3, "must be a string"},
		{"shared secret number", "registration_shared_secret: 123456\n", "registration_shared_secret", 1, "must be a string"},
		{"shared secret placeholder", `registration_shared_secret: "[redacted]"`, "registration_shared_secret", 1, "placeholder"},
		{"bcrypt too low", "bcrypt_rounds: 3\n", "bcrypt_rounds", 1, "4 to 31"},
		{"bcrypt too high", "bcrypt_rounds: 32\n", "bcrypt_rounds", 1, "4 to 31"},
		{"password minimum negative", "password_config:\n  policy:\n    minimum_length: -1\n", "password_config.policy.minimum_length", 3, "0 to 512"},
		{"password minimum too long", "password_config:\n  policy:\n    minimum_length: 513\n", "password_config.policy.minimum_length", 3, "0 to 512"},
		{"password require text", "password_config:\n  policy:\n    require_digit: often\n", "password_config.policy.require_digit", 3, "cannot unmarshal"},

		// Rooms.
		{"room version empty", `default_room_version: ""`, "default_room_version", 1, "1 to 32"},
		{"room version upper case", `default_room_version: "V11"`, "default_room_version", 1, "a-z"},
		{"room version too long", "default_room_version: " + strings.Repeat("1", 33), "default_room_version", 1, "1 to 32"},
		{"backchat_default zero", "backchat_default: 0\n", "backchat_default", 1, "at least 1"},
		{"backchat_max negative", "backchat_max: -1\n", "backchat_max", 1, "at least 1"},
		{"backchat_default above max", "backchat_max: 10\nbackchat_default: 11\n", "backchat_default", 2, "backchat_max (10)"},
		{"caches.rooms zero", "caches:\n  rooms: 0\n", "caches.rooms", 2, "at least 1"},

		// Limits.
		{"max_request_size zero", "max_request_size: 0\n", "max_request_size", 1, "at least 1"},
		{"max_request_size negative", `max_request_size: "-1M"`, "max_request_size", 1, "want a size"},
		{"max_request_size negative int", "max_request_size: -5\n", "max_request_size", 1, "want a size"},
		{"max_request_size bad unit", `max_request_size: "1X"`, "max_request_size", 1, "unknown unit"},
		{"max_request_size fraction", `max_request_size: "1.5M"`, "max_request_size", 1, "unknown unit"},
		{"max_request_size float", "max_request_size: 1.5\n", "max_request_size", 1, "want a size"},
		{"max_upload_size zero", `max_upload_size: "0M"`, "max_upload_size", 1, "at least 1"},
		{"max_upload_size overflow", `max_upload_size: "9999999999T"`, "max_upload_size", 1, "too large"},
		{"per_second zero", "rate_limiting:\n  message:\n    per_second: 0\n", "rate_limiting.message.per_second", 3, "greater than 0"},
		{"per_second negative", "rate_limiting:\n  login:\n    per_second: -1\n", "rate_limiting.login.per_second", 3, "greater than 0"},
		{"per_second nan", "rate_limiting:\n  login:\n    per_second: .nan\n", "rate_limiting.login.per_second", 3, "finite"},
		{"per_second inf", "rate_limiting:\n  registration:\n    per_second: .inf\n", "rate_limiting.registration.per_second", 3, "finite"},
		{"per_second text", "rate_limiting:\n  message:\n    per_second: fast\n", "rate_limiting.message.per_second", 3, "cannot unmarshal"},
		{"burst_count zero", "rate_limiting:\n  registration:\n    burst_count: 0\n", "rate_limiting.registration.burst_count", 3, "at least 1"},
		{"rate_limiting.enabled text", "rate_limiting:\n  enabled: sometimes\n", "rate_limiting.enabled", 2, "cannot unmarshal"},

		// Sessions, application services, logging.
		{"lifetime negative", `refreshable_access_token_lifetime: "-5m"`, "refreshable_access_token_lifetime", 1, "negative"},
		{"lifetime words", `refreshable_access_token_lifetime: "soon"`, "refreshable_access_token_lifetime", 1, "want a duration"},
		{"lifetime float", "refreshable_access_token_lifetime: 1.5\n", "refreshable_access_token_lifetime", 1, "want a duration"},
		{"lifetime negative ms", "refreshable_access_token_lifetime: -1\n", "refreshable_access_token_lifetime", 1, "want a duration"},
		{"app service empty", `app_service_config_files: [""]`, "app_service_config_files[0]", 1, "empty"},
		{"app service repeated", "app_service_config_files: [a.yaml, b.yaml, ./a.yaml]\n", "app_service_config_files[2]", 1, "repeats app_service_config_files[0]"},
		{"server notices localpart", "server_notices:\n  system_mxid_localpart: Notices\n", "server_notices.system_mxid_localpart", 2, "localpart"},
		{"server notices avatar", "server_notices:\n  system_mxid_localpart: notices\n  room_avatar_url: https://x/y.png\n", "server_notices.room_avatar_url", 3, "mxc://"},
		{"log_level unknown", "log_level: verbose\n", "log_level", 1, "debug, info, warn or error"},
		{"log_level upper case", "log_level: INFO\n", "log_level", 1, "debug, info, warn or error"},
		{"log_format unknown", "log_format: logfmt\n", "log_format", 1, "text or json"},
		{"log_format upper case", "log_format: JSON\n", "log_format", 1, "text or json"},

		// Metrics.
		{"metrics listen bad", "metrics:\n  enabled: true\n  listen: \"9000\"\n", "metrics.listen", 3, "host:port"},
		{"metrics on the client port", "listen: \"127.0.0.1:8008\"\nmetrics:\n  enabled: true\n  listen: \"127.0.0.1:8008\"\n", "metrics.listen", 4, "client API's listener"},
		{"metrics on the client port, all interfaces", "listen: \"[::]:8008\"\nmetrics:\n  enabled: true\n  listen: \"127.0.0.1:8008\"\n", "metrics.listen", 4, "client API's listener"},
		{"metrics on the client port, no host", "listen: \"127.0.0.1:8008\"\nmetrics:\n  enabled: true\n  listen: \":8008\"\n", "metrics.listen", 4, "client API's listener"},
		{"metrics enabled text", "metrics:\n  enabled: yes please\n", "metrics.enabled", 2, "cannot unmarshal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.body)
			c, err := Load(path)
			if err == nil {
				t.Fatalf("Load succeeded: %#v", *c)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %q (%T) is not a *configs.Error", err, err)
			}
			if e.File != path {
				t.Errorf("Error.File = %q, want %q", e.File, path)
			}
			if len(e.Problems) != 1 {
				t.Fatalf("want one problem, got %d:\n%v", len(e.Problems), err)
			}
			p := e.Problems[0]
			if p.Field != tc.field || p.Line != tc.line {
				t.Errorf("problem is at field %q line %d, want field %q line %d: %v", p.Field, p.Line, tc.field, tc.line, err)
			}
			if !strings.Contains(p.Err.Error(), tc.msg) {
				t.Errorf("message %q does not contain %q", p.Err, tc.msg)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Errorf("error %q does not name the field %q", err, tc.field)
			}
		})
	}
}

func TestLoadReportsEveryProblem(t *testing.T) {
	path := writeConfig(t, "server_name: bad_name\nbcrypt_rounds: 2\nlog_level: loud\n")
	_, err := Load(path)
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v is not a *configs.Error", err)
	}
	var fields []string
	for _, p := range e.Problems {
		fields = append(fields, p.Field)
	}
	if want := []string{"server_name", "bcrypt_rounds", "log_level"}; !reflect.DeepEqual(fields, want) {
		t.Errorf("problems name %v, want %v", fields, want)
	}
	wantText := path + ":1: server_name: \"bad_name\": the host name may contain only letters, digits, '-' and '.', not '_'"
	if first, _, _ := strings.Cut(err.Error(), "\n"); first != "configs: "+wantText {
		t.Errorf("first line of error = %q, want %q", first, "configs: "+wantText)
	}
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "server_name" {
		t.Errorf("errors.As does not reach the first *FieldError: %v", fe)
	}
}

func TestLoadSyntaxErrors(t *testing.T) {
	for _, tc := range []struct{ name, body, msg string }{
		{"unclosed flow", "registration_tokens: [abc\n", "yaml:"},
		{"bad indentation", "rate_limiting:\n  enabled: true\n bad: 1\n", "yaml:"},
		{"two documents", "listen: 127.0.0.1:1\n---\nlisten: 127.0.0.1:2\n", "line 2: a second YAML document"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.body)
			_, err := Load(path)
			if err == nil {
				t.Fatal("Load succeeded")
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q should name the file and contain %q", err, tc.msg)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "missing.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load of a missing file: %v, want os.ErrNotExist", err)
	}
}

func TestValidateWithoutFile(t *testing.T) {
	c := Default()
	c.BackchatMax = 0
	err := c.Validate()
	if err == nil || err.Error() != "configs: backchat_max: is 0; must be at least 1" {
		t.Errorf("Validate = %v", err)
	}
}

// TestMetricsListenerAccepted: the metrics listener may share the client
// API's host, or both may ask for a free port; off, it is not checked.
func TestMetricsListenerAccepted(t *testing.T) {
	for _, body := range []string{
		"listen: \"127.0.0.1:8008\"\nmetrics:\n  enabled: true\n  listen: \"127.0.0.1:9000\"\n",
		"listen: \"127.0.0.1:0\"\nmetrics:\n  enabled: true\n  listen: \"127.0.0.1:0\"\n",
		"listen: \"127.0.0.1:8008\"\nmetrics:\n  enabled: true\n  listen: \"127.0.0.2:8008\"\n",
		"listen: \"127.0.0.1:8008\"\nmetrics:\n  enabled: false\n  listen: \"127.0.0.1:8008\"\n",
	} {
		if _, err := Load(writeConfig(t, body)); err != nil {
			t.Errorf("%s: %v", body, err)
		}
	}
}
