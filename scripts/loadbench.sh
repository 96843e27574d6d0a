#!/usr/bin/env bash
# Starts a fresh homeserver on loopback ports with rate limits off, runs the
# load tool against it (all scenarios unless the flags say otherwise), prints
# the figures and stops everything it started.
# Usage: [ENGINE=sqlite|postgres] [PROCS=n] [RUNS=n] [PORT=p] \
#        scripts/loadbench.sh [extra loadtest flags]
# ENGINE=postgres starts a throwaway PostgreSQL cluster (scripts/pgcluster.sh;
# PGCLUSTER_PORT to choose its port) and points the server at it, with fsync
# back on (SQLite commits with synchronous=FULL); PG_DURABLE=0 keeps
# pgcluster.sh's fsync=off. PROCS > 1 (PostgreSQL only) starts that many
# processes of one homeserver on one database, on ports PORT, PORT+1, ...:
# the same config but the listen address; the load tool spreads its users over all of them and samples the
# memory of each. RUNS > 1 repeats the whole load against the same server, to
# show whether its memory (the rss columns) stays flat across runs.
set -euo pipefail
cd "$(dirname "$0")/.."
engine=${ENGINE:-sqlite}
procs=${PROCS:-1}
port=${PORT:-18448}
case "$engine" in
sqlite | postgres) ;;
*) echo "loadbench: ENGINE must be sqlite or postgres, not $engine" >&2; exit 2 ;;
esac
if ! [[ "$procs" =~ ^[1-9][0-9]*$ ]]; then
	echo "loadbench: PROCS must be a positive number, not $procs" >&2; exit 2
fi
if [ "$engine" = sqlite ] && [ "$procs" != 1 ]; then
	echo "loadbench: several processes need ENGINE=postgres (SQLite has one writer process)" >&2; exit 2
fi

# Under /tmp so that the postgres system user can reach the cluster in it.
dir=$(mktemp -d /tmp/loadbench.XXXXXX)
chmod 755 "$dir"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	if [ -e "$dir/pg/dsn" ]; then scripts/pgcluster.sh stop "$dir/pg" >/dev/null || true; fi
	rm -rf "$dir"
}
trap cleanup EXIT

database=sqlite3
if [ "$engine" = postgres ]; then
	mkdir "$dir/pg"
	scripts/pgcluster.sh start "$dir/pg" >/dev/null
	database=$(cat "$dir/pg/dsn")
	# pgcluster.sh turns fsync off for tests; SQLite commits with
	# synchronous=FULL, so for a fair comparison a commit goes to disk here
	# too, as on a production PostgreSQL (PG_DURABLE=0 keeps the test
	# settings). All three settings take effect on a reload.
	if [ "${PG_DURABLE:-1}" != 0 ]; then
		psql=$(ls -d /usr/lib/postgresql/*/bin/psql 2>/dev/null | sort -V | tail -n 1)
		psql=${psql:-psql}
		for s in "fsync = on" "synchronous_commit = on" "full_page_writes = on"; do
			"$psql" -X -q -d "$database" -c "ALTER SYSTEM SET $s" >/dev/null
		done
		"$psql" -X -q -d "$database" -c "SELECT pg_reload_conf()" >/dev/null
	fi
fi
bin/homeserver generate-config --server-name "127.0.0.1:$port" --listen "127.0.0.1:$port" \
	--data-dir "$dir/data" --registration open --database "$database" > "$dir/homeserver.yaml"
# The one switch that turns every rate limit off (only for load tests).
sed -i '/^rate_limiting:/,/enabled:/ s/enabled: true/enabled: false/' "$dir/homeserver.yaml"
sed -i 's/^bcrypt_rounds: .*/bcrypt_rounds: 4/' "$dir/homeserver.yaml"
# Metrics stay off (the generated default): one listener per process, and no
# counting in the measured paths.
grep -q '^  enabled: false' <(sed -n '/^metrics:/,/^[^ #]/p' "$dir/homeserver.yaml")

# Every process has the same config (server name, signing key and media in
# the one data directory, the one database) except its listen address.
urls=()
for i in $(seq 0 $((procs - 1))); do
	p=$((port + i))
	sed "s/^listen: .*/listen: \"127.0.0.1:$p\"/" "$dir/homeserver.yaml" > "$dir/homeserver.$i.yaml"
	bin/homeserver serve --config "$dir/homeserver.$i.yaml" 2> "$dir/server.$i.log" &
	pids+=($!)
	urls+=("http://127.0.0.1:$p")
	# Start them one after another: the first one migrates the schema.
	up=
	for _ in $(seq 100); do
		if curl -sf "http://127.0.0.1:$p/_matrix/client/versions" >/dev/null; then up=1; break; fi
		sleep 0.1
	done
	if [ -z "$up" ]; then
		echo "loadbench: process $i (127.0.0.1:$p) did not come up; its log:" >&2
		cat "$dir/server.$i.log" >&2
		exit 1
	fi
done
url_list=$(IFS=,; echo "${urls[*]}")
pid_list=$(IFS=,; echo "${pids[*]}")
echo "== engine $engine, $procs process(es): $url_list"
status=0
for run in $(seq "${RUNS:-1}"); do
	echo "== run $run"
	bin/loadtest -url "$url_list" -pid "$pid_list" "$@" || status=$?
done
if [ "$status" != 0 ]; then
	# The servers' side of the failures; the logs go with the directory.
	for i in $(seq 0 $((procs - 1))); do
		echo "== process $i: last errors of its log" >&2
		grep -i 'level=error\|panic' "$dir/server.$i.log" | tail -n 5 >&2 || true
	done
fi
exit "$status"
