package configs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestSecretDoesNotLeak prints, logs and marshals a Config holding secrets
// every usual way and checks that the secrets never appear.
func TestSecretDoesNotLeak(t *testing.T) {
	c := Default()
	c.RegistrationSharedSecret = NewSecret("shared-XYZZY")
	c.RegistrationTokens = []Secret{NewSecret("token-PLUGH")}

	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "config", c, "secret", c.RegistrationSharedSecret)
	jsonOut, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	yamlOut, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for name, out := range map[string]string{
		"%v":  fmt.Sprintf("%v", c),
		"%+v": fmt.Sprintf("%+v", c),
		"%#v": fmt.Sprintf("%#v", c),
		//lint:ignore S1025 the test is about what the %s verb prints
		"%s":   fmt.Sprintf("%s", c.RegistrationSharedSecret),
		"%q":   fmt.Sprintf("%q", c.RegistrationTokens),
		"slog": logged.String(),
		"json": string(jsonOut),
		"yaml": string(yamlOut),
	} {
		if strings.Contains(out, "XYZZY") || strings.Contains(out, "PLUGH") {
			t.Errorf("%s shows a secret: %s", name, out)
		}
		if !strings.Contains(out, "[redacted]") {
			t.Errorf("%s does not show that a secret is set: %s", name, out)
		}
	}

	// What yaml.Marshal wrote does not load back as a config with secrets.
	path := writeConfig(t, string(yamlOut))
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "placeholder") {
		t.Errorf("loading a marshalled Config: %v, want the placeholder refused", err)
	}
}

func TestSecretEqual(t *testing.T) {
	s := NewSecret("abc")
	if !s.Equal("abc") || s.Equal("abd") || s.Equal("ab") || s.Equal("") {
		t.Error("Equal does not compare the value")
	}
	if (Secret{}).Equal("") {
		t.Error("an empty secret equals the empty guess")
	}
	if !(Secret{}).IsZero() || s.IsZero() || s.Reveal() != "abc" {
		t.Error("IsZero or Reveal is wrong")
	}
	if (Secret{}).String() != "" {
		t.Error("an empty secret does not print as empty")
	}
}
