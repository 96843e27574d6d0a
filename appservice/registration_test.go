package appservice

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/persistentchat/homeserver/roomdag"
)

const server = roomdag.ServerName("example.org")

const goodRegistration = `
id: "IRC Bridge"
url: "http://127.0.0.1:1234"
as_token: "30c05ae90a248a4188e620216fa72e349803310ec83e2a77b34fe90be6081f46"
hs_token: "312df522183efd404ec1cd22d2ffa4bbc76a8c1ccf541dd692eef281356bb74e"
sender_localpart: "_irc_bot"
namespaces:
  users:
    - exclusive: true
      regex: "@_irc_bridge_.*"
  aliases:
    - exclusive: false
      regex: "#_irc_bridge_.*"
  rooms: []
protocols: ["irc"]
receive_ephemeral: true
io.element.msc4190: true
`

func TestParseSpecExample(t *testing.T) {
	r, err := Parse([]byte(goodRegistration), "irc.yaml", server)
	if err != nil {
		t.Fatal(err)
	}
	if r.ID != "IRC Bridge" || r.URL != "http://127.0.0.1:1234" || r.Sender != "@_irc_bot:example.org" {
		t.Errorf("got id %q url %q sender %q", r.ID, r.URL, r.Sender)
	}
	if !r.ASToken.Equal("30c05ae90a248a4188e620216fa72e349803310ec83e2a77b34fe90be6081f46") {
		t.Error("as_token not read")
	}
	if len(r.Users) != 1 || !r.Users[0].Exclusive || len(r.Aliases) != 1 || r.Aliases[0].Exclusive || len(r.Rooms) != 0 {
		t.Errorf("namespaces: %+v %+v %+v", r.Users, r.Aliases, r.Rooms)
	}
	if !r.ReceiveEphemeral || r.RateLimited || !r.HasProtocol("irc") {
		t.Errorf("flags: ephemeral %v rate_limited %v protocols %v", r.ReceiveEphemeral, r.RateLimited, r.Protocols)
	}
	for _, c := range []struct {
		user       roomdag.UserID
		owns, excl bool
	}{
		{"@_irc_bridge_bob:example.org", true, true},
		{"@_irc_bot:example.org", true, true},              // the sender
		{"@_irc_bridge_bob:other.org", false, false},       // users namespaces are local only
		{"@alice:example.org", false, false},               //
		{"@x_irc_bridge_bob:example.org", false, false},    // anchored at the start
		{"@_irc_bridge_:example.org", true, true},          // .* may be empty
		{"@_irc_bot:example.org.evil", false, false},       // the sender is exact
		{"@_irc_bridge_a:example.org:1", false, false},     // another server name
		{"@_IRC_bridge_bob:example.org", false, false},     // case matters
		{"@_irc_bridge_bob:example.org/x", false, false},   //
		{"@_irc_bridge_bob\n:example.org", false, false},   //
		{"@_irc_bridge_bob:example.org\n", false, false},   // $ is the very end
		{"@_irc_bridge_bob:example.orgx", false, false},    //
		{"@_irc_bridge_bob:example.or", false, false},      //
		{"@_irc_bridge_bob:exampleXorg", false, false},     //
		{"@_irc_bridge_bob:example.org ", false, false},    //
		{"@_irc_bridge_\u00e9:example.org", true, true},    // any localpart the regex takes
		{"@_irc_bridge_bob:sub.example.org", false, false}, //
	} {
		if got := r.OwnsUser(c.user); got != c.owns {
			t.Errorf("OwnsUser(%q) = %v, want %v", c.user, got, c.owns)
		}
		if got := r.ExclusiveUser(c.user); got != c.excl {
			t.Errorf("ExclusiveUser(%q) = %v, want %v", c.user, got, c.excl)
		}
	}
	if !r.InAliasNamespace("#_irc_bridge_x:example.org") || r.ExclusiveAlias("#_irc_bridge_x:example.org") {
		t.Error("alias namespace")
	}
}

func TestParseNullURLAndDefaults(t *testing.T) {
	r, err := Parse([]byte(`id: bot
url: null
as_token: a
hs_token: h
sender_localpart: bot
namespaces: {}
`), "bot.yaml", server)
	if err != nil {
		t.Fatal(err)
	}
	if r.URL != "" || r.RateLimited || r.ReceiveEphemeral {
		t.Errorf("url %q rate_limited %v ephemeral %v", r.URL, r.RateLimited, r.ReceiveEphemeral)
	}
	r, err = Parse([]byte(`{id: b, url: null, as_token: a, hs_token: h, sender_localpart: b, namespaces: {},
de.sorunome.msc2409.push_ephemeral: true, rate_limited: true}`), "b.yaml", server)
	if err != nil || !r.ReceiveEphemeral || !r.RateLimited {
		t.Fatalf("unstable ephemeral flag: %v %+v", err, r)
	}
}

// Every problem names the file, the line and the field.
func TestParseErrorsNameFileLineAndField(t *testing.T) {
	for _, c := range []struct {
		name, yaml string
		want       []string
	}{
		{"missing keys", `id: x`, []string{
			"f.yaml: url: is required", "f.yaml: as_token: is required", "f.yaml: hs_token: is required",
			"f.yaml: sender_localpart: is required", "f.yaml: namespaces: is required"}},
		{"bad types", `id: 5
url: "ftp://x"
as_token: 123
hs_token: ""
sender_localpart: "Bad Name"
namespaces: {users: [{regex: "(", exclusive: yes}], rooms: {}, things: []}
rate_limited: "no"
`, []string{
			"f.yaml:1: id: must be a string",
			`f.yaml:2: url: "ftp://x": must start with http:// or https://`,
			"f.yaml:3: as_token: must be a string",
			"f.yaml:4: hs_token: must not be empty",
			`f.yaml:5: sender_localpart: "Bad Name": must be a user ID localpart`,
			`f.yaml:6: namespaces.users[0].regex: "(": error parsing regexp`,
			"f.yaml:6: namespaces.users[0].exclusive: must be true or false",
			"f.yaml:6: namespaces.rooms: must be a list",
			"f.yaml:6: namespaces.things: unknown namespace",
			"f.yaml:7: rate_limited: must be true or false",
		}},
		{"namespace without exclusive", `{id: x, url: null, as_token: a, hs_token: h, sender_localpart: b,
namespaces: {users: [{regex: "@a.*"}]}}`, []string{"f.yaml:2: namespaces.users[0].exclusive: is required"}},
		{"empty url", `{id: x, url: "", as_token: a, hs_token: h, sender_localpart: b, namespaces: {}}`,
			[]string{"f.yaml:1: url: must not be empty; write null"}},
		{"not a mapping", `- a`, []string{"f.yaml:1: must be a mapping"}},
		{"empty", ``, []string{"f.yaml: the file is empty"}},
		{"duplicate key", "id: a\nid: b\n", []string{"f.yaml:2: id: duplicate key"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.yaml), "f.yaml", server)
			if err == nil {
				t.Fatal("parsed")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Errorf("no *FieldError in %v", err)
			}
		})
	}
}

func writeReg(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func regYAML(id, as, hs, sender string) string {
	return "id: " + id + "\nurl: null\nas_token: " + as + "\nhs_token: " + hs + "\nsender_localpart: " + sender + "\nnamespaces: {}\n"
}

func TestLoadRefusesDuplicates(t *testing.T) {
	dir := t.TempDir()
	a := writeReg(t, dir, "a.yaml", regYAML("one", "tokA", "hsA", "bota"))
	for _, c := range []struct {
		body, field string
	}{
		{regYAML("one", "tokB", "hsB", "botb"), "id"},
		{regYAML("two", "tokA", "hsB", "botb"), "as_token"},
		{regYAML("two", "tokB", "hsA", "botb"), "hs_token"},
		{regYAML("two", "tokB", "hsB", "bota"), "sender_localpart"},
	} {
		b := writeReg(t, dir, "b.yaml", c.body)
		_, err := Load([]string{a, b}, server)
		if err == nil {
			t.Errorf("%s: duplicate accepted", c.field)
			continue
		}
		if want := b + ": " + c.field + ": is the same as in " + a; !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %q lacks %q", c.field, err, want)
		}
		// The message names the other file, never a token's value.
		if strings.Contains(err.Error(), "tokA") || strings.Contains(err.Error(), "hsA") {
			t.Errorf("%s: error shows a token: %v", c.field, err)
		}
	}
	b := writeReg(t, dir, "b.yaml", regYAML("two", "tokB", "hsB", "botb"))
	g, err := Load([]string{a, b}, server)
	if err != nil {
		t.Fatal(err)
	}
	if g.ByASToken("tokB").ID != "two" || g.ByASToken("tokA").ID != "one" || g.ByASToken("tok") != nil || g.ByASToken("") != nil {
		t.Error("ByASToken")
	}
	if _, err := Load([]string{filepath.Join(dir, "missing.yaml")}, server); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
}

func TestClaims(t *testing.T) {
	bridge, err := Parse([]byte(`{id: bridge, url: null, as_token: a, hs_token: h, sender_localpart: bridgebot,
namespaces: {users: [{regex: "@_br_.*", exclusive: true}, {regex: "@shared_.*", exclusive: false}],
aliases: [{regex: "#_br_.*", exclusive: true}]}}`), "b.yaml", server)
	if err != nil {
		t.Fatal(err)
	}
	logger, err := Parse([]byte(`{id: logger, url: null, as_token: a2, hs_token: h2, sender_localpart: logbot,
namespaces: {users: [{regex: "@.*", exclusive: false}], aliases: [{regex: "#.*", exclusive: false}]}}`), "l.yaml", server)
	if err != nil {
		t.Fatal(err)
	}
	g, err := NewRegistry(server, []*Registration{bridge, logger})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		reg  *Registration
		user roomdag.UserID
		ok   bool
	}{
		{nil, "@alice:example.org", true},
		{nil, "@_br_alice:example.org", false}, // exclusive to bridge
		{nil, "@bridgebot:example.org", false}, // a sender is exclusive
		{nil, "@shared_x:example.org", true},   // not exclusive
		{bridge, "@_br_alice:example.org", true},
		{bridge, "@alice:example.org", false}, // outside its namespaces
		{logger, "@alice:example.org", true},
		{logger, "@_br_alice:example.org", false}, // logger's namespace covers it, but bridge holds it
	} {
		if got := g.MayClaimUser(c.reg, c.user); got != c.ok {
			t.Errorf("MayClaimUser(%v, %s) = %v", c.reg != nil, c.user, got)
		}
	}
	if g.MayClaimAlias(nil, "#_br_x:example.org") || !g.MayClaimAlias(bridge, "#_br_x:example.org") ||
		g.MayClaimAlias(bridge, "#other:example.org") || !g.MayClaimAlias(nil, "#other:example.org") {
		t.Error("MayClaimAlias")
	}
}

// The documented sample in configs/ is a valid registration.
func TestSampleRegistration(t *testing.T) {
	r, err := ReadFile("../configs/appservice-registration.yaml", server)
	if err != nil {
		t.Fatal(err)
	}
	if r.ID != "irc" || r.Sender != "@_irc_bot:example.org" || !r.ExclusiveUser("@_irc_x:example.org") || !r.HasProtocol("irc") {
		t.Errorf("sample read as %+v", r)
	}
}
