#!/usr/bin/env bash
# Starts a fresh homeserver on a loopback port with rate limits off, runs the
# load tool against it (all scenarios), prints the figures and stops it.
# Usage: [RUNS=n] scripts/loadbench.sh [extra loadtest flags]
# RUNS > 1 repeats the whole load against the same server, to show whether
# its memory (the rss columns) stays flat across runs.
set -euo pipefail
cd "$(dirname "$0")/.."
port=${PORT:-18448}
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
bin/homeserver generate-config --server-name "127.0.0.1:$port" --listen "127.0.0.1:$port" \
	--data-dir "$dir/data" --registration open > "$dir/homeserver.yaml"
# The one switch that turns every rate limit off (only for load tests).
sed -i '/^rate_limiting:/,/enabled:/ s/enabled: true/enabled: false/' "$dir/homeserver.yaml"
sed -i 's/^bcrypt_rounds: .*/bcrypt_rounds: 4/' "$dir/homeserver.yaml"
bin/homeserver serve --config "$dir/homeserver.yaml" 2> "$dir/server.log" &
pid=$!
for _ in $(seq 100); do
	curl -sf "http://127.0.0.1:$port/_matrix/client/versions" >/dev/null && break
	sleep 0.1
done
for run in $(seq "${RUNS:-1}"); do
	echo "== run $run"
	bin/loadtest -url "http://127.0.0.1:$port" -pid "$pid" "$@"
done
