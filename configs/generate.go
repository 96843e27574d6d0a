package configs

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"
)

// GenerateOptions are the values Generate writes into the sample. An
// empty field keeps the sample's default.
type GenerateOptions struct {
	// ServerName is the Matrix server name. Default: "localhost:8008".
	ServerName string
	// Listen is the client-server API listen address. Default:
	// "127.0.0.1:8008".
	Listen string
	// FederationListen is the federation (TLS) listen address. Default:
	// "" (no federation listener).
	FederationListen string
	// DataDir is the data directory; a relative path is relative to the
	// directory the config file will be written to. Default: "./data".
	DataDir string
	// Registration is "disabled" (the default, also for ""), "open"
	// (enable_registration) or "token" (enable_registration and
	// registration_requires_token, with one random token generated).
	Registration string
	// SharedSecret is the registration_shared_secret. Default: a random
	// one, so that the admin registration endpoint can make the first
	// account.
	SharedSecret string
	// Database is "sqlite3" (the default, also for ""): SQLite in the
	// data directory; or a PostgreSQL connection string, a postgres://
	// URL or libpq's key=value pairs, written as database.args.dsn with
	// database.name postgres.
	Database string
}

// Generate returns a complete configuration file: the documented sample,
// with its comments and layout kept, and the options' values set. Random
// values come from crypto/rand. The result is validated, so it loads
// cleanly; invalid options are an error naming the field.
func Generate(o GenerateOptions) ([]byte, error) {
	set := map[string]*yaml.Node{}
	setString := func(key, v string) {
		if v != "" {
			set[key] = &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v, Style: yaml.DoubleQuotedStyle}
		}
	}
	setBool := func(key string, v bool) {
		set[key] = &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: fmt.Sprint(v)}
	}
	setString("server_name", o.ServerName)
	setString("listen", o.Listen)
	setString("federation_listen", o.FederationListen)
	setString("data_dir", o.DataDir)
	switch o.Registration {
	case "", "disabled":
	case "open":
		setBool("enable_registration", true)
	case "token":
		setBool("enable_registration", true)
		setBool("registration_requires_token", true)
		set["registration_tokens"] = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Style: yaml.FlowStyle, Content: []*yaml.Node{
			{Kind: yaml.ScalarNode, Tag: "!!str", Value: rand.Text(), Style: yaml.DoubleQuotedStyle},
		}}
	default:
		return nil, fmt.Errorf("configs: generate: registration mode %q: want open, token or disabled", o.Registration)
	}
	secret := o.SharedSecret
	if secret == "" {
		secret = rand.Text()
	}
	setString("registration_shared_secret", secret)
	switch db := o.Database; {
	case db == "" || db == EngineSQLite:
	case strings.HasPrefix(db, "postgres://") || strings.HasPrefix(db, "postgresql://") || strings.Contains(db, "="):
		setString("database.name", EnginePostgres)
		setString("database.args.dsn", db)
	default:
		// Not quoted: it may be a connection string with a password.
		return nil, fmt.Errorf("configs: generate: database: want sqlite3, a postgres:// URL or key=value pairs")
	}

	out, err := setValues(sample, set)
	if err != nil {
		return nil, fmt.Errorf("configs: generate: %w", err)
	}
	c, lines, problems, err := decode(out)
	if err != nil {
		return nil, fmt.Errorf("configs: generate: %w", err)
	}
	if len(problems) == 0 {
		problems = c.validate(lines)
	}
	if len(problems) > 0 {
		// Line numbers refer to output the caller has not seen.
		for _, p := range problems {
			p.Line = 0
		}
		return nil, fmt.Errorf("configs: generate: %w", &Error{Problems: problems})
	}
	return out, nil
}

// setValues replaces the values of keys in the YAML document src, each
// named by its dotted path ("database.args.dsn"), keeping every other byte (comments, blank lines, order) as it is.
// It uses the node tree only to find each value and to render the new
// one: re-encoding the whole tree with yaml.v3 would drop the sample's
// blank lines. Each replaced value must sit alone at the end of its line,
// as the sample's values do (a test checks that no value has a trailing
// comment).
func setValues(src []byte, set map[string]*yaml.Node) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, err
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("sample is not a mapping")
	}
	lines := bytes.SplitAfter(src, []byte("\n"))
	for key, nv := range set {
		old := doc.Content[0]
		for name := range strings.SplitSeq(key, ".") {
			var next *yaml.Node
			for i := 0; old.Kind == yaml.MappingNode && i+1 < len(old.Content); i += 2 {
				if old.Content[i].Value == name {
					next = old.Content[i+1]
				}
			}
			old = next
			if old == nil {
				break
			}
		}
		if old == nil {
			return nil, fmt.Errorf("sample has no key %q", key)
		}
		if old.LineComment != "" || old.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 ||
			(old.Kind != yaml.ScalarNode && old.Style&yaml.FlowStyle == 0) {
			return nil, fmt.Errorf("sample value of %q is not alone on its line", key)
		}
		text, err := yaml.Marshal(nv)
		if err != nil {
			return nil, err
		}
		text = bytes.TrimSuffix(text, []byte("\n"))
		if bytes.Contains(text, []byte("\n")) {
			return nil, fmt.Errorf("value of %q does not fit on one line", key)
		}
		line := string(lines[old.Line-1])
		// yaml.v3 counts columns in characters, from 1.
		start, col := -1, 1
		for i := range line {
			if col == old.Column {
				start = i
				break
			}
			col++
		}
		if start < 0 {
			return nil, fmt.Errorf("sample value of %q not found at line %d, column %d", key, old.Line, old.Column)
		}
		end := len(strings.TrimRight(line, "\r\n"))
		lines[old.Line-1] = []byte(line[:start] + string(text) + line[end:])
	}
	return bytes.Join(lines, nil), nil
}
