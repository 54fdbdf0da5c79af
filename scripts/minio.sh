#!/usr/bin/env bash
# Builds a pinned MinIO from the Go module proxy (cached, rebuilt only when the pin changes) and
# starts or stops a private MinIO server on loopback for tests, writing DIR/env with the
# ATOLL_TEST_S3_* variables that internal/atolltest/s3test reads.
#
#   scripts/minio.sh build
#   scripts/minio.sh start DIR [PORT]     (PORT defaults to 59000)
#   scripts/minio.sh stop DIR
set -euo pipefail

# The newest version the module proxy serves (upstream stopped tagging semver releases, so this is
# a pseudo-version of the master branch); it builds with Go 1.26.
version=v0.0.0-20260212201848-7aac2a2c5b7c
cache=${ATOLL_CACHE:-$HOME/.cache/atoll}
bindir=$cache/bin
bin=$bindir/minio
stamp=$bindir/minio.version

# Fixed, test-only credentials: the server only listens on 127.0.0.1.
access_key=atolltest
secret_key=atolltest-secret-key

build() {
	if [ -x "$bin" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$version" ]; then
		return 0
	fi
	mkdir -p "$bindir"
	echo "minio: building github.com/minio/minio@$version (takes ~10 minutes on 2 cores)" >&2
	rm -f "$bin" "$stamp"
	# Outside any module so the repository's go.mod is neither used nor touched.
	(cd "$bindir" && GOFLAGS=-mod=mod GOBIN="$bindir" CGO_ENABLED=0 GO111MODULE=on \
		go install "github.com/minio/minio@$version")
	echo "$version" >"$stamp"
}

start() {
	local dir=${1:?usage: minio.sh start DIR [PORT]} port=${2:-59000}
	build
	mkdir -p "$dir/data"
	dir=$(cd "$dir" && pwd)
	if [ -f "$dir/minio.pid" ] && kill -0 "$(cat "$dir/minio.pid")" 2>/dev/null; then
		port=$(cat "$dir/minio.port")
	else
		MINIO_ROOT_USER=$access_key MINIO_ROOT_PASSWORD=$secret_key \
			MINIO_BROWSER=off MINIO_UPDATE=off MINIO_CI_CD=1 \
			nohup "$bin" server --quiet --address "127.0.0.1:$port" "$dir/data" \
			>"$dir/minio.log" 2>&1 </dev/null &
		echo $! >"$dir/minio.pid"
		echo "$port" >"$dir/minio.port"
	fi
	local ok=
	for _ in $(seq 300); do
		if curl -fsS -o /dev/null "http://127.0.0.1:$port/minio/health/live" 2>/dev/null; then ok=1; break; fi
		if ! kill -0 "$(cat "$dir/minio.pid")" 2>/dev/null; then break; fi
		sleep 0.2
	done
	if [ -z "$ok" ]; then
		echo "minio: server did not become ready; see $dir/minio.log" >&2
		tail -n 20 "$dir/minio.log" >&2 || true
		exit 1
	fi
	cat >"$dir/env" <<ENV
export ATOLL_TEST_S3_ENDPOINT=127.0.0.1:$port ATOLL_TEST_S3_ACCESS_KEY=$access_key ATOLL_TEST_S3_SECRET_KEY=$secret_key
ENV
	echo "minio: S3 on 127.0.0.1:$port ($dir)" >&2
}

stop() {
	local dir=${1:?usage: minio.sh stop DIR}
	[ -f "$dir/minio.pid" ] || return 0
	local pid
	pid=$(cat "$dir/minio.pid")
	if kill "$pid" 2>/dev/null; then
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	fi
	rm -f "$dir/minio.pid"
}

case "${1:-}" in
build) build ;;
start) start "${2:-}" "${3:-}" ;;
stop) stop "${2:-}" ;;
*) echo "usage: minio.sh build | start DIR [PORT] | stop DIR" >&2; exit 2 ;;
esac
