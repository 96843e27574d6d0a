# Two commands set everything up on a fresh machine:
#   make run    build and start the homeserver on 127.0.0.1:8008 (SQLite, generated config and keys)
#   make test   run every test: lint, Go (with -race) on SQLite, Go again on a throwaway PostgreSQL
#               cluster (installed from Debian's packages if missing), and the end-to-end tests
#               (matrix-js-sdk, matrix-bot-sdk, mautrix-go)
GO       ?= go
BIN      := bin
CONFIG   ?= homeserver.yaml
STATICCHECK_VERSION := v0.8.2

.PHONY: build run test gotest gotest-postgres lint e2e bench fuzz conformance clean

build:
	$(GO) build -o $(BIN)/homeserver ./cmd/homeserver
	$(GO) build -o $(BIN)/loadtest ./cmd/loadtest
	$(GO) build -o $(BIN)/webhook-bridge ./cmd/webhook-bridge

# The first run writes homeserver.yaml (open registration: it binds loopback)
# and the data directory with the signing key and database.
run: build
	@test -f $(CONFIG) || $(BIN)/homeserver generate-config --server-name localhost:8008 \
		--listen 127.0.0.1:8008 --data-dir ./data --registration open --out $(CONFIG)
	$(BIN)/homeserver serve --config $(CONFIG)

test: lint gotest gotest-postgres e2e

gotest:
	$(GO) test -race -count=1 -timeout 30m ./...

# The whole suite again with every test server on PostgreSQL (see
# testserver.PostgresEnv): a throwaway cluster in a temporary directory,
# stopped and removed whatever the tests do. PGTESTFLAGS adds go test flags
# (the race detector by default; PGTESTFLAGS= runs without it).
PGTESTFLAGS ?= -race
gotest-postgres:
	@d=$$(mktemp -d /tmp/homeserver-pg.XXXXXX); \
	trap './scripts/pgcluster.sh stop "$$d"; rm -rf "$$d"' EXIT; trap 'exit 130' INT TERM; \
	start=$$(date +%s); ./scripts/pgcluster.sh start "$$d" >/dev/null || exit 1; \
	echo "PostgreSQL cluster started in $$(( $$(date +%s) - start ))s: $$(cat "$$d/dsn")"; \
	HOMESERVER_TEST_POSTGRES=$$(cat "$$d/dsn") $(GO) test $(PGTESTFLAGS) -count=1 -timeout 30m ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

# The end-to-end tests against a real server process: matrix-js-sdk as a
# client, matrix-bot-sdk as an application service, then mautrix-go as both
# (e2e/mautrix is a module of its own, kept out of ./... and go.mod).
e2e: build
	cd e2e && npm ci --no-audit --no-fund && HOMESERVER_BIN=$(CURDIR)/$(BIN)/homeserver node --test --test-reporter=spec
	cd e2e/mautrix && HOMESERVER_BIN=$(CURDIR)/$(BIN)/homeserver $(GO) test -tags goolm -race -count=1 -timeout 30m ./...

# Go benchmarks of the hot paths, then the load tool against a fresh server.
bench: build
	$(GO) test -run '^$$' -bench . -benchmem ./...
	./scripts/loadbench.sh

# Our black-box client-server conformance suite (see conformance/README.md).
# Not part of `make test`: its failing tests are the features still to build.
# It rewrites conformance/results.jsonl, the pass list kept in the repository.
conformance:
	./conformance/run.sh

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzCanonicalJSON -fuzztime 30s ./roomdag/
	$(GO) test -run '^$$' -fuzz FuzzParseFilter -fuzztime 30s ./sync/
	$(GO) test -run '^$$' -fuzz FuzzSearchTerm -fuzztime 30s ./storage/sqlite/
	$(GO) test -run '^$$' -fuzz FuzzGlob -fuzztime 30s ./push/
	$(GO) test -run '^$$' -fuzz FuzzParseXMatrix -fuzztime 30s ./federation/

clean:
	rm -rf $(BIN)
