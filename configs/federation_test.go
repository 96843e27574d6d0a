package configs

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestGenerateFederationListen(t *testing.T) {
	out, err := Generate(GenerateOptions{ServerName: "127.0.0.1:8448", FederationListen: "127.0.0.1:8448"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := Load(writeConfig(t, string(out)))
	if err != nil {
		t.Fatalf("does not load: %v", err)
	}
	if c.FederationListen != "127.0.0.1:8448" {
		t.Errorf("federation_listen %q", c.FederationListen)
	}
	// No certificate given: the self-signed pair in the data directory.
	cert, key, self := c.TLSPaths()
	if !self || cert != filepath.Join(c.DataDir, "federation.tls.crt") || key != filepath.Join(c.DataDir, "federation.tls.key") {
		t.Errorf("TLSPaths = %q, %q, %v", cert, key, self)
	}
	if !c.FederationVerifyCertificates {
		t.Error("certificates are not checked by default")
	}
}

func TestFederationSettings(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(*Config)
		field string // "" for valid
	}{
		{"both tls paths", func(c *Config) { c.TLSCertificatePath, c.TLSPrivateKeyPath = "/a.crt", "/a.key" }, ""},
		{"certificate without key", func(c *Config) { c.TLSCertificatePath = "/a.crt" }, "tls_certificate_path"},
		{"key without certificate", func(c *Config) { c.TLSPrivateKeyPath = "/a.key" }, "tls_certificate_path"},
		{"bad whitelist entry", func(c *Config) { c.FederationDomainWhitelist = []string{"a b"} }, "federation_domain_whitelist"},
		{"whitelist", func(c *Config) { c.FederationDomainWhitelist = []string{"example.org", "127.0.0.1:8448"} }, ""},
		{"metrics on federation's port", func(c *Config) {
			c.FederationListen, c.Metrics.Enabled, c.Metrics.Listen = "127.0.0.1:9000", true, "127.0.0.1:9000"
		}, "federation_listen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			tc.edit(&c)
			err := c.Validate()
			var e *Error
			switch {
			case tc.field == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.field != "" && !errors.As(err, &e):
				t.Fatalf("Validate = %v, want a problem with %s", err, tc.field)
			case tc.field != "" && !strings.Contains(err.Error(), tc.field):
				t.Errorf("Validate = %v, want a problem with %s", err, tc.field)
			}
		})
	}
}

func TestFederationAllowed(t *testing.T) {
	c := Default()
	if !c.FederationAllowed("anything.example") {
		t.Error("an empty whitelist refuses a server")
	}
	c.FederationDomainWhitelist = []string{"Example.org", "127.0.0.1:8448"}
	for dest, want := range map[string]bool{
		"example.org": true, "EXAMPLE.ORG": true, "127.0.0.1:8448": true,
		"127.0.0.1:8449": false, "example.org:8448": false, "other.org": false,
	} {
		if got := c.FederationAllowed(dest); got != want {
			t.Errorf("FederationAllowed(%q) = %v, want %v", dest, got, want)
		}
	}
}
