package configs

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestGenerate(t *testing.T) {
	for _, tc := range []struct {
		mode          string
		open, byToken bool
	}{
		{mode: ""},
		{mode: "disabled"},
		{mode: "open", open: true},
		{mode: "token", open: true, byToken: true},
	} {
		t.Run("mode="+tc.mode, func(t *testing.T) {
			out, err := Generate(GenerateOptions{
				ServerName:   "chat.example.org",
				Listen:       "0.0.0.0:8080",
				DataDir:      "/var/lib/homeserver",
				Registration: tc.mode,
			})
			if err != nil {
				t.Fatal(err)
			}

			// It loads cleanly, with the options' values.
			c, err := Load(writeConfig(t, string(out)))
			if err != nil {
				t.Fatalf("Generate's output does not load: %v\n%s", err, out)
			}
			if c.ServerName != "chat.example.org" || c.Listen != "0.0.0.0:8080" || c.DataDir != "/var/lib/homeserver" {
				t.Errorf("server_name %q, listen %q, data_dir %q: options not applied", c.ServerName, c.Listen, c.DataDir)
			}
			if c.EnableRegistration != tc.open || c.RegistrationRequiresToken != tc.byToken {
				t.Errorf("enable_registration %v, registration_requires_token %v; want %v, %v",
					c.EnableRegistration, c.RegistrationRequiresToken, tc.open, tc.byToken)
			}
			if wantTokens := map[bool]int{false: 0, true: 1}[tc.byToken]; len(c.RegistrationTokens) != wantTokens {
				t.Errorf("%d registration tokens, want %d", len(c.RegistrationTokens), wantTokens)
			}
			if len(c.RegistrationSharedSecret.Reveal()) < 20 {
				t.Errorf("registration_shared_secret %q is not a fresh random secret", c.RegistrationSharedSecret.Reveal())
			}

			// It decodes strictly with yaml.v3's own decoder too.
			dec := yaml.NewDecoder(bytes.NewReader(out))
			dec.KnownFields(true)
			var strict Config
			if err := dec.Decode(&strict); err != nil {
				t.Errorf("strict decode: %v", err)
			}

			// It is the sample, line for line, except for the values set.
			changed := map[string]bool{
				"server_name": true, "listen": true, "data_dir": true, "registration_shared_secret": true,
				"enable_registration": tc.open, "registration_requires_token": tc.byToken, "registration_tokens": tc.byToken,
			}
			checkOnlyValuesChanged(t, sample, out, changed)
		})
	}
}

// checkOnlyValuesChanged fails unless got has the same lines as want, with
// only the lines of the top-level keys marked true in changed differing,
// and those only after the key.
func checkOnlyValuesChanged(t *testing.T, want, got []byte, changed map[string]bool) {
	t.Helper()
	wl, gl := strings.Split(string(want), "\n"), strings.Split(string(got), "\n")
	if len(wl) != len(gl) {
		t.Fatalf("output has %d lines, sample %d", len(gl), len(wl))
	}
	seen := map[string]bool{}
	for i := range wl {
		key, _, _ := strings.Cut(wl[i], ": ")
		if wl[i] == gl[i] {
			continue
		}
		if !changed[key] || !strings.HasPrefix(gl[i], key+": ") {
			t.Errorf("line %d changed:\n  sample: %s\n  output: %s", i+1, wl[i], gl[i])
		}
		seen[key] = true
	}
	for key, c := range changed {
		if c && !seen[key] {
			t.Errorf("%s was not changed", key)
		}
	}
}

func TestGenerateRandomness(t *testing.T) {
	a, err := Generate(GenerateOptions{Registration: "token"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Generate(GenerateOptions{Registration: "token"})
	if err != nil {
		t.Fatal(err)
	}
	ca, _, _, _ := decode(a)
	cb, _, _, _ := decode(b)
	if ca.RegistrationSharedSecret.Equal(cb.RegistrationSharedSecret.Reveal()) {
		t.Error("two generated configs share a registration_shared_secret")
	}
	if ca.RegistrationTokens[0].Equal(cb.RegistrationTokens[0].Reveal()) {
		t.Error("two generated configs share a registration token")
	}
}

func TestGenerateDefaults(t *testing.T) {
	out, err := Generate(GenerateOptions{SharedSecret: "given-secret"})
	if err != nil {
		t.Fatal(err)
	}
	checkOnlyValuesChanged(t, sample, out, map[string]bool{"registration_shared_secret": true})
	c, _, _, _ := decode(out)
	want := Default()
	want.RegistrationSharedSecret = NewSecret("given-secret")
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Generate with only SharedSecret gives %#v\nwant %#v", c, want)
	}
}

// TestGenerateRelativeDataDir checks that a relative data_dir is relative
// to the directory the config is written to.
func TestGenerateRelativeDataDir(t *testing.T) {
	out, err := Generate(GenerateOptions{DataDir: "state"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "homeserver.yaml")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "state"); c.DataDir != want {
		t.Errorf("data_dir = %q, want %q", c.DataDir, want)
	}
}

func TestGenerateErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  GenerateOptions
		field string // "" when the error is not a field problem
		msg   string
	}{
		{"unknown mode", GenerateOptions{Registration: "invite-only"}, "", `registration mode "invite-only"`},
		{"bad server name", GenerateOptions{ServerName: "my server"}, "server_name", "server_name"},
		{"bad listen", GenerateOptions{Listen: "8008"}, "listen", "listen"},
		{"quote in server name", GenerateOptions{ServerName: `a"b`}, "server_name", "server_name"},
		{"bad federation listen", GenerateOptions{FederationListen: "8448"}, "federation_listen", "federation_listen"},
		{"federation on the client listener", GenerateOptions{Listen: "127.0.0.1:8008", FederationListen: "127.0.0.1:8008"}, "federation_listen", "client API"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := Generate(tc.opts)
			if err == nil {
				t.Fatalf("Generate succeeded:\n%s", out)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not contain %q", err, tc.msg)
			}
			var fe *FieldError
			if got := errors.As(err, &fe); got != (tc.field != "") || (got && fe.Field != tc.field) {
				t.Errorf("error %q: want a problem with field %q, got %v", err, tc.field, fe)
			}
		})
	}
}
