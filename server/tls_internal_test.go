package server

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"github.com/persistentchat/homeserver/configs"
)

// TestSelfSignedCertificate: without configured files, the first start
// makes a certificate for the server name's host, valid as a TLS client
// checks it, and a key only the owner may read; later starts keep them.
func TestSelfSignedCertificate(t *testing.T) {
	for _, tc := range []struct{ serverName, host string }{
		{"127.0.0.1:8448", "127.0.0.1"},
		{"[::1]:8448", "::1"},
		{"chat.example.org", "chat.example.org"},
		{"chat.example.org:8448", "chat.example.org"},
	} {
		t.Run(tc.serverName, func(t *testing.T) {
			cfg := configs.Default()
			cfg.DataDir = t.TempDir()
			cfg.ServerName = tc.serverName
			c1, err := federationTLS(&cfg)
			if err != nil {
				t.Fatal(err)
			}
			cert, key, _ := cfg.TLSPaths()
			fi, err := os.Stat(key)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm()&0o077 != 0 {
				t.Errorf("key mode %v", fi.Mode().Perm())
			}
			leaf, err := x509.ParseCertificate(c1.Certificates[0].Certificate[0])
			if err != nil {
				t.Fatal(err)
			}
			roots := x509.NewCertPool()
			roots.AddCert(leaf)
			if _, err := leaf.Verify(x509.VerifyOptions{DNSName: tc.host, Roots: roots}); err != nil {
				t.Errorf("certificate not valid for %s: %v", tc.host, err)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "other.example.org", Roots: roots}); err == nil {
				t.Error("certificate valid for another name")
			}
			before, _ := os.ReadFile(cert)
			if _, err := federationTLS(&cfg); err != nil {
				t.Fatal(err)
			}
			if after, _ := os.ReadFile(cert); !bytes.Equal(before, after) {
				t.Error("the certificate was made again on the second start")
			}
		})
	}
}

// TestConfiguredCertificate: tls_certificate_path and
// tls_private_key_path are used as they are, and nothing is made.
func TestConfiguredCertificate(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	if err := ensureSelfSigned("hs.example.org", certPath, keyPath); err != nil {
		t.Fatal(err)
	}
	cfg := configs.Default()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.TLSCertificatePath, cfg.TLSPrivateKeyPath = certPath, keyPath
	c, err := federationTLS(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := tls.LoadX509KeyPair(certPath, keyPath)
	if !bytes.Equal(c.Certificates[0].Certificate[0], want.Certificate[0]) {
		t.Error("not the configured certificate")
	}
	if _, err := os.Stat(cfg.DataDir); err == nil {
		t.Error("a self-signed pair was made although files are configured")
	}
	// A missing file stops start-up rather than being replaced.
	os.Remove(keyPath)
	if _, err := federationTLS(&cfg); err == nil {
		t.Error("a missing configured key was not an error")
	}
}
