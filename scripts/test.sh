#!/usr/bin/env bash
# Runs the test suite against real services: a private PostgreSQL and Redis (scripts/services.sh)
# and MinIO (scripts/minio.sh), started in a temporary directory and stopped afterwards.
#   scripts/test.sh [go test args...]   (default: ./...)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh
dir=$(mktemp -d /tmp/atoll-test.XXXXXX)
chmod 755 "$dir" # PostgreSQL runs as the postgres user and must reach its data directory
cleanup() {
	bash scripts/minio.sh stop "$dir/minio" >/dev/null 2>&1 || true
	bash scripts/services.sh stop "$dir/svc" >/dev/null 2>&1 || true
	rm -rf "$dir"
}
trap cleanup EXIT
# Free ports, so that several runs (and `make run`) can go on at once.
free_port() {
	local p
	for _ in $(seq 200); do
		p=$((20000 + RANDOM % 30000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
	echo "no free port found" >&2
	return 1
}
bash scripts/services.sh start "$dir/svc" "$(free_port)" "$(free_port)"
bash scripts/minio.sh start "$dir/minio" "$(free_port)"
set -a
. "$dir/svc/env"
. "$dir/minio/env"
set +a
export ATOLL_TEST_REQUIRE_SERVICES=1
if [ $# -eq 0 ]; then set -- ./...; fi
go test -count=1 -timeout 25m "$@"
