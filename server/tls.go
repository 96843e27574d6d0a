package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/persistentchat/homeserver/configs"
)

// selfSignedValidity is how long a generated certificate lasts. Peers
// that accept it skip verification anyway (federation_verify_certificates:
// false), so a long life only spares the operator a renewal.
const selfSignedValidity = 10 * 365 * 24 * time.Hour

// federationTLS is the federation listener's TLS configuration, with the
// configured certificate, or the self-signed one in the data directory,
// which it creates on first start (spec "Server-Server API", "TLS": the
// federation API is served over HTTPS only).
func federationTLS(cfg *configs.Config) (*tls.Config, error) {
	certPath, keyPath, selfSigned := cfg.TLSPaths()
	if selfSigned {
		if err := ensureSelfSigned(cfg.ServerName, certPath, keyPath); err != nil {
			return nil, fmt.Errorf("self-signed federation certificate: %w", err)
		}
	}
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("federation TLS certificate %s / key %s: %w", certPath, keyPath, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

// ensureSelfSigned creates a self-signed certificate for serverName's host
// and its key, unless both files exist. The key is the owner's alone (mode
// 0600); the certificate is public.
func ensureSelfSigned(serverName, certPath, keyPath string) error {
	_, certErr := os.Stat(certPath)
	_, keyErr := os.Stat(keyPath)
	if certErr == nil && keyErr == nil {
		return nil
	}
	if certErr != nil && !errors.Is(certErr, fs.ErrNotExist) {
		return certErr
	}
	if keyErr != nil && !errors.Is(keyErr, fs.ErrNotExist) {
		return keyErr
	}
	host := serverName
	if h, _, err := net.SplitHostPort(serverName); err == nil {
		host = h // a name with a port; an IPv6 literal loses its brackets here
	} else if len(host) > 1 && host[0] == '[' {
		host = host[1 : len(host)-1]
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: host},
		NotBefore:             now.Add(-time.Hour), // peers' clocks differ
		NotAfter:              now.Add(selfSignedValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	// The certificate names the host as a TLS client checks it: an IP
	// literal in the IP SANs, a DNS name in the DNS SANs.
	if a, err := netip.ParseAddr(host); err == nil {
		tmpl.IPAddresses = []net.IP{a.AsSlice()}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	for _, p := range []string{certPath, keyPath} {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return err
		}
	}
	// The key first: a certificate without its key would not be replaced
	// on the next start.
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}
