#!/usr/bin/env bash
# Starts (or stops) a private PostgreSQL and Redis on loopback in a directory of our own, and
# writes DIR/env with the URLs. Used by `make run` (a persistent directory) and `make test`
# (a temporary one). Idempotent: a running instance is reused.
#
#   scripts/services.sh start DIR [PG_PORT REDIS_PORT]
#   scripts/services.sh stop DIR
set -euo pipefail

cmd=${1:?usage: services.sh start|stop DIR [PG_PORT REDIS_PORT]}
dir=${2:?usage: services.sh start|stop DIR [PG_PORT REDIS_PORT]}
pgport=${3:-55432}
redisport=${4:-56379}
pgbin=/usr/lib/postgresql/15/bin

# PostgreSQL refuses to run as root; the Debian package creates the postgres user.
as_pg() {
	if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; chmod 755 "$dir"; fi
	if [ ! -f "$dir/pg/PG_VERSION" ]; then
		mkdir -p "$dir/pg"
		[ "$(id -u)" = 0 ] && chown postgres "$dir/pg"
		if ! as_pg "$pgbin/initdb" -D "$dir/pg" -U atoll --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1; then
			cat "$dir/initdb.log" >&2
			exit 1
		fi
		cat >>"$dir/pg/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $pgport
unix_socket_directories = '$dir'
max_connections = 300
shared_buffers = 128MB
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
	fi
	if ! as_pg "$pgbin/pg_ctl" -D "$dir/pg" status >/dev/null 2>&1; then
		# The port asked for now wins over the one the directory was created with.
		sed -i "s/^port = .*/port = $pgport/" "$dir/pg/postgresql.conf"
		if ! as_pg "$pgbin/pg_ctl" -D "$dir/pg" -l "$dir/pg.log" -w -t 60 start >/dev/null; then
			cat "$dir/pg.log" >&2
			exit 1
		fi
	fi
	port=$(sed -n 's/^port = //p' "$dir/pg/postgresql.conf" | tail -n1)
	as_pg "$pgbin/psql" -h 127.0.0.1 -p "$port" -U atoll -d postgres -tAc \
		"SELECT 1 FROM pg_database WHERE datname='atoll'" | grep -q 1 ||
		as_pg "$pgbin/createdb" -h 127.0.0.1 -p "$port" -U atoll atoll

	if ! { [ -f "$dir/redis.pid" ] && kill -0 "$(cat "$dir/redis.pid")" 2>/dev/null; }; then
		redis-server --bind 127.0.0.1 --port "$redisport" --daemonize yes --save '' --appendonly no \
			--pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --dir "$dir"
		for _ in $(seq 50); do redis-cli -p "$redisport" ping >/dev/null 2>&1 && break; sleep 0.1; done
	fi
	echo "port $redisport" >"$dir/redis.port"
	cat >"$dir/env" <<ENV
export ATOLL_TEST_POSTGRES_URL=postgres://atoll@127.0.0.1:$port/atoll?sslmode=disable
export ATOLL_TEST_REDIS_URL=redis://127.0.0.1:$redisport/0
ENV
	echo "services: PostgreSQL on 127.0.0.1:$port, Redis on 127.0.0.1:$redisport ($dir)" >&2
}

stop() {
	[ -d "$dir" ] || return 0
	if [ -f "$dir/pg/postmaster.pid" ]; then as_pg "$pgbin/pg_ctl" -D "$dir/pg" -m fast -w stop >/dev/null 2>&1 || true; fi
	if [ -f "$dir/redis.pid" ]; then kill "$(cat "$dir/redis.pid")" 2>/dev/null || true; rm -f "$dir/redis.pid"; fi
}

case "$cmd" in
start) start ;;
stop) stop ;;
*) echo "usage: services.sh start|stop DIR" >&2; exit 2 ;;
esac
