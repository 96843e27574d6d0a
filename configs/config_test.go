package configs

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// yamlPaths returns the dotted YAML path of every field of t, recursing
// into nested config structs (but not into types that decode themselves,
// such as Secret). It fails the test for an exported field without a yaml
// tag, which no YAML key could set.
func yamlPaths(t *testing.T, typ reflect.Type, prefix string) []string {
	t.Helper()
	var paths []string
	for i := range typ.NumField() {
		f := typ.Field(i)
		if !f.IsExported() {
			continue
		}
		name := yamlName(f)
		if name == "" {
			t.Errorf("%s.%s has no yaml tag", typ.Name(), f.Name)
			continue
		}
		p := join(prefix, name)
		paths = append(paths, p)
		if f.Type.Kind() == reflect.Struct && !reflect.PointerTo(f.Type).Implements(unmarshalerType) {
			paths = append(paths, yamlPaths(t, f.Type, p)...)
		}
	}
	return paths
}

// sampleKeys returns the key node of every mapping key in the sample, by
// dotted path.
func sampleKeys(t *testing.T) map[string]*yaml.Node {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal(sample, &doc); err != nil {
		t.Fatal(err)
	}
	keys := map[string]*yaml.Node{}
	var walk func(n *yaml.Node, prefix string)
	walk = func(n *yaml.Node, prefix string) {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := join(prefix, k.Value)
			keys[p] = k
			if v.Kind == yaml.MappingNode {
				walk(v, p)
			}
		}
	}
	walk(doc.Content[0], "")
	return keys
}

func TestSampleListsEveryField(t *testing.T) {
	keys := sampleKeys(t)
	paths := yamlPaths(t, reflect.TypeFor[Config](), "")
	for _, p := range paths {
		if keys[p] == nil {
			t.Errorf("field %s is missing from homeserver.yaml", p)
		}
	}
	// The converse is TestSampleDecodesStrictly's job, but say it plainly.
	known := map[string]bool{}
	for _, p := range paths {
		known[p] = true
	}
	for p := range keys {
		if !known[p] {
			t.Errorf("homeserver.yaml has key %s, which Config lacks", p)
		}
	}
}

func TestSampleDecodesStrictly(t *testing.T) {
	dec := yaml.NewDecoder(bytes.NewReader(sample))
	dec.KnownFields(true)
	// Decode into the zero Config, not Default(), so that every value
	// comes from the sample.
	var c Config
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("strict decode: %v", err)
	}
	if want := Default(); !reflect.DeepEqual(c, want) {
		t.Errorf("sample decodes to\n%#v\nwant Default()\n%#v", c, want)
	}
}

func TestSampleDecodesToDefault(t *testing.T) {
	c, _, problems, err := decode(sample)
	if err != nil || problems != nil {
		t.Fatalf("decode: %v %v", err, problems)
	}
	if want := Default(); !reflect.DeepEqual(c, want) {
		t.Errorf("sample decodes to\n%#v\nwant Default()\n%#v", c, want)
	}
}

func TestDefaultIsValid(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestSampleComments checks that every key has a comment above it, that
// every key with a plain value states its default there, and that no value
// has a comment after it on its line (which Generate could not keep).
func TestSampleComments(t *testing.T) {
	var doc yaml.Node
	if err := yaml.Unmarshal(sample, &doc); err != nil {
		t.Fatal(err)
	}
	var walk func(n *yaml.Node, prefix string)
	walk = func(n *yaml.Node, prefix string) {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := join(prefix, k.Value)
			comment := k.HeadComment
			if p == "server_name" {
				// yaml.v3 gives the first key's comment to the document.
				comment = doc.HeadComment + "\n" + k.HeadComment
			}
			switch {
			case strings.TrimSpace(comment) == "":
				t.Errorf("line %d: %s has no comment above it", k.Line, p)
			case v.Kind != yaml.MappingNode && !strings.Contains(comment, "Default: "):
				t.Errorf("line %d: %s: comment does not state the default (\"Default: ...\")", k.Line, p)
			}
			if k.LineComment != "" || v.LineComment != "" {
				t.Errorf("line %d: %s has a comment after its value", k.Line, p)
			}
			if v.Kind == yaml.MappingNode {
				walk(v, p)
			}
		}
	}
	walk(doc.Content[0], "")
}

// TestFieldDocs checks that every field of every struct in config.go has a
// doc comment stating its default.
func TestFieldDocs(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "config.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	structs := 0
	ast.Inspect(f, func(n ast.Node) bool {
		ts, ok := n.(*ast.TypeSpec)
		if !ok {
			return true
		}
		st, ok := ts.Type.(*ast.StructType)
		if !ok {
			return true
		}
		structs++
		for _, field := range st.Fields.List {
			for _, name := range field.Names {
				if !name.IsExported() {
					continue
				}
				if doc := field.Doc.Text(); !strings.Contains(doc, "Default: ") {
					t.Errorf("%s: %s.%s: doc comment does not state the default (\"Default: ...\")", fset.Position(name.Pos()), ts.Name.Name, name.Name)
				}
			}
		}
		return true
	})
	if structs < 4 {
		t.Fatalf("found %d structs in config.go; the test is looking in the wrong place", structs)
	}
}

func TestDerivedPaths(t *testing.T) {
	c := Default()
	c.DataDir = "/srv/hs"
	for _, tc := range []struct{ name, got, want string }{
		{"DatabasePath", c.DatabasePath(), "/srv/hs/homeserver.db"},
		{"SigningKeyPath", c.SigningKeyPath(), "/srv/hs/signing.key"},
		{"MediaDir", c.MediaDir(), "/srv/hs/media"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %q, want %q", tc.name, tc.got, tc.want)
		}
	}
	c.Database.Path = "/db/x.db"
	c.SigningKeyFile = "/keys/k"
	if got := c.DatabasePath(); got != "/db/x.db" {
		t.Errorf("DatabasePath = %q, want the configured path", got)
	}
	if got := c.SigningKeyPath(); got != "/keys/k" {
		t.Errorf("SigningKeyPath = %q, want the configured path", got)
	}
}

func TestBaseURL(t *testing.T) {
	for _, tc := range []struct{ baseURL, listen, want string }{
		{"", "127.0.0.1:8008", "http://127.0.0.1:8008/"},
		{"", "0.0.0.0:8008", "http://localhost:8008/"},
		{"", "[::]:8008", "http://localhost:8008/"},
		{"", ":8008", "http://localhost:8008/"},
		{"", "[::1]:8448", "http://[::1]:8448/"},
		{"", "matrix.local:80", "http://matrix.local:80/"},
		{"https://matrix.example.org", "127.0.0.1:8008", "https://matrix.example.org/"},
		{"https://example.org/matrix/", "127.0.0.1:8008", "https://example.org/matrix/"},
	} {
		c := Default()
		c.PublicBaseURL, c.Listen = tc.baseURL, tc.listen
		if got := c.BaseURL(); got != tc.want {
			t.Errorf("public_baseurl %q, listen %q: BaseURL() = %q, want %q", tc.baseURL, tc.listen, got, tc.want)
		}
	}
}

func TestSlogLevel(t *testing.T) {
	c := Default()
	for _, l := range []string{"debug", "info", "warn", "error"} {
		c.LogLevel = l
		if got := c.SlogLevel().String(); !strings.EqualFold(got, l) {
			t.Errorf("log_level %q: SlogLevel() = %v", l, got)
		}
	}
}

func TestSampleIsACopy(t *testing.T) {
	s := Sample()
	s[0] = 'X'
	if sample[0] == 'X' {
		t.Fatal("Sample() returned the embedded bytes themselves")
	}
}
