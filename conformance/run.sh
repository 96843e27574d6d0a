#!/usr/bin/env bash
# Builds the homeserver and runs the Docker-free client-server conformance
# suite (conformance/csapi) against real server processes on loopback.
# Writes conformance/results.jsonl (one line per test) and prints
# "N passed, M failed, K skipped". Not part of `make test`.
#
# Usage: conformance/run.sh [-run REGEX]   (extra args go to `go test`)
# KEEP_DATA=1 keeps the servers' data directories and logs.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
mkdir -p "$here/.build"
echo "building homeserver..."
(cd "$repo" && go build -o "$here/.build/homeserver" ./cmd/homeserver)
(cd "$here" && go build -o "$here/.build/results" ./cmd/results)
export HOMESERVER_BIN="$here/.build/homeserver"
cd "$here"
# -p 1 / no t.Parallel: all tests share two server processes; every wait
# inside a test is bounded (sync waits 10 s, HTTP requests 40 s), and the
# whole run is bounded by -timeout.
set +e
go test -count=1 -json -timeout 20m "$@" ./csapi | "$here/.build/results" -out "$here/results.jsonl"
rc=${PIPESTATUS[1]}
set -e
exit "$rc"
