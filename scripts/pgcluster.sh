#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests.
#
#   scripts/pgcluster.sh start DIR   make a cluster in DIR and start it; prints
#                                    the admin DSN and writes it to DIR/dsn
#   scripts/pgcluster.sh stop DIR    stop it (nothing to do if it is not running)
#
# The cluster listens on 127.0.0.1 only, on a free port (PGCLUSTER_PORT to
# choose one), and on a Unix socket in DIR; the superuser "postgres" logs in
# without a password (trust: loopback and the socket only). fsync is off: the
# data is thrown away. When initdb is missing it installs Debian's postgresql
# (as root). The server runs as an unprivileged user: as root, the "postgres"
# system user (made if missing), which must be able to reach DIR (a mktemp -d
# under /tmp will do); otherwise the current user. Remove DIR after stop.
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1 dir=$2

# max_connections: every test server opens up to cp_max (4) + 2 connections
# (and up to 4 more while it holds named locks, which few tests do),
# test binaries run in parallel (go test -p, up to the number of cores) and a
# test may run several servers, plus servers that are still closing.
max_connections=${PGCLUSTER_MAX_CONNECTIONS:-500}

bindir() {
	local d
	if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
		dirname "$(command -v initdb)"
		return
	fi
	d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
	if [ -n "$d" ] && [ -x "$d/initdb" ]; then
		echo "$d"
	fi
}

install_postgres() {
	if [ "$(id -u)" != 0 ]; then
		echo "pgcluster: PostgreSQL is not installed (no initdb); install Debian's postgresql package, or run this as root to have it installed" >&2
		exit 1
	fi
	echo "pgcluster: installing PostgreSQL (apt-get install postgresql)" >&2
	# Debian's package would make and start a cluster of its own ("main", on
	# port 5432); only ours is wanted. This is postgresql-common's own switch.
	if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
		mkdir -p /etc/postgresql-common
		echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf
	fi
	export DEBIAN_FRONTEND=noninteractive
	local opts=(-y -qq -o Dpkg::Options::=--force-confold)
	apt-get install "${opts[@]}" postgresql >/dev/null ||
		{ apt-get update -qq && apt-get install "${opts[@]}" postgresql >/dev/null; }
}

# as CMD...: run CMD as the cluster's owner.
as() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

# listening PORT: whether something listens on TCP port PORT already.
listening() {
	# The local address is field 2 (hex address:hex port); state 0A is LISTEN.
	awk -v p="$(printf ':%04X' "$1")" '$4 == "0A" && substr($2, length($2) - 4) == p { f = 1 } END { exit !f }' \
		/proc/net/tcp /proc/net/tcp6 2>/dev/null
}

start() {
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	local bin
	bin=$(bindir)
	if [ -z "$bin" ]; then
		install_postgres
		bin=$(bindir)
		[ -n "$bin" ] || { echo "pgcluster: no initdb after installing postgresql" >&2; exit 1; }
	fi
	if [ -f "$dir/data/postmaster.pid" ] && as "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
		cat "$dir/dsn"
		return
	fi
	if [ "$(id -u)" = 0 ]; then
		if ! id postgres >/dev/null 2>&1; then
			useradd --system --user-group --home-dir /var/lib/postgresql --no-create-home --shell /usr/sbin/nologin postgres
		fi
		chown postgres "$dir"
		if ! runuser -u postgres -- test -w "$dir"; then
			echo "pgcluster: the postgres user cannot write to $dir (is a parent directory private?); use a directory under /tmp" >&2
			exit 1
		fi
	fi
	if [ ! -f "$dir/data/PG_VERSION" ]; then
		# C collation and UTF-8, as Synapse asks of its databases.
		as "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1 ||
			{ cat "$dir/initdb.log" >&2; exit 1; }
	fi
	local port tries=0
	while :; do
		port=${PGCLUSTER_PORT:-$((20000 + RANDOM % 40000))}
		tries=$((tries + 1))
		if [ -z "${PGCLUSTER_PORT:-}" ] && listening "$port"; then
			continue
		fi
		if as "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 start -o \
			"-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=$max_connections" >/dev/null; then
			break
		fi
		# Another process may have taken the port between the check and
		# the start; try another, unless the port was chosen for us.
		if [ -n "${PGCLUSTER_PORT:-}" ] || [ "$tries" -ge 10 ] || ! grep -q "could not bind\|Address already in use" "$dir/log"; then
			echo "pgcluster: the server did not start; its log ($dir/log):" >&2
			tail -n 20 "$dir/log" >&2
			exit 1
		fi
	done
	echo "postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable" >"$dir/dsn"
	cat "$dir/dsn"
}

stop() {
	[ -f "$dir/data/postmaster.pid" ] || return 0
	local bin
	bin=$(bindir)
	[ -n "$bin" ] || { echo "pgcluster: no pg_ctl to stop the cluster in $dir with" >&2; exit 1; }
	# immediate: the data is thrown away, so there is nothing to flush.
	as "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 ||
		! as "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1
}

case $cmd in
start) start ;;
stop) stop ;;
*) usage ;;
esac
