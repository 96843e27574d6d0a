// Package mautrixe2e holds end-to-end tests that drive a real homeserver
// process with mautrix-go (maunium.net/go/mautrix), the library most Go
// bridges and bots are built on: its client and sync loop, and its
// application service package.
//
// It is a module of its own so that mautrix and its dependencies stay out
// of the homeserver's go.mod. The tests are skipped unless HOMESERVER_BIN
// names the built homeserver binary:
//
//	make build
//	cd e2e/mautrix && HOMESERVER_BIN=$PWD/../../bin/homeserver go test -tags goolm -race -count=1 ./...
//
// The goolm tag selects mautrix's pure-Go Olm for TestCrypto; without it
// that test skips (mautrix's default links libolm through cgo).
package mautrixe2e
