package configs

import (
	"path/filepath"
	"strings"
)

// TLSPaths returns the federation listener's certificate and key files:
// TLSCertificatePath and TLSPrivateKeyPath, or, when neither is set, the
// self-signed pair in DataDir (selfSigned true), which the server creates
// on first start if it is missing.
func (c *Config) TLSPaths() (cert, key string, selfSigned bool) {
	if c.TLSCertificatePath != "" {
		return c.TLSCertificatePath, c.TLSPrivateKeyPath, false
	}
	return filepath.Join(c.DataDir, "federation.tls.crt"), filepath.Join(c.DataDir, "federation.tls.key"), true
}

// FederationAllowed reports whether federation_domain_whitelist lets this
// server send requests to the server named dest: always when the list is
// empty. Server names compare exactly, except that a DNS name's letters
// compare without case (DNS names are case-insensitive, RFC 4343).
func (c *Config) FederationAllowed(dest string) bool {
	if len(c.FederationDomainWhitelist) == 0 {
		return true
	}
	for _, d := range c.FederationDomainWhitelist {
		if strings.EqualFold(d, dest) {
			return true
		}
	}
	return false
}

// validateFederation checks the federation listener's settings.
func (c *Config) validateFederation(bad func(field, format string, args ...any)) {
	if c.FederationListen != "" {
		if err := checkListen(c.FederationListen); err != nil {
			bad("federation_listen", "%q: %v", c.FederationListen, err)
		} else if sameListener(c.FederationListen, c.Listen) {
			bad("federation_listen", "%q is the client API's listener (listen); federation needs one of its own, served over TLS", c.FederationListen)
		} else if c.Metrics.Enabled && sameListener(c.FederationListen, c.Metrics.Listen) {
			bad("federation_listen", "%q is the metrics listener (metrics.listen)", c.FederationListen)
		}
	}
	if (c.TLSCertificatePath == "") != (c.TLSPrivateKeyPath == "") {
		bad("tls_certificate_path", "set both tls_certificate_path and tls_private_key_path, or neither (for a self-signed certificate)")
	}
	for i, d := range c.FederationDomainWhitelist {
		if err := checkServerName(d); err != nil {
			bad("federation_domain_whitelist", "entry %d: %q: %v", i, d, err)
		}
	}
}
