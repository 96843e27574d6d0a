//go:build !goolm

package mautrixe2e

import "testing"

// TestCrypto needs mautrix's pure-Go Olm (the goolm build tag); without
// it mautrix's crypto links libolm through cgo, which is not installed.
func TestCrypto(t *testing.T) {
	t.Skip("mautrix's crypto test needs -tags goolm (pure-Go Olm): go test -tags goolm ./...")
}
