#!/usr/bin/env bash
# `make run`: a shard on loopback with its own PostgreSQL and Redis and two demo tenants.
# State lives in $ATOLL_RUN_DIR (default /var/lib/atoll-run as root, where the postgres user can
# reach it, ~/.cache/atoll/run otherwise) and survives restarts.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh
if [ "$(id -u)" = 0 ]; then default=/var/lib/atoll-run; else default=${ATOLL_CACHE:-$HOME/.cache/atoll}/run; fi
dir=${ATOLL_RUN_DIR:-$default}
mkdir -p "$dir" bin
bash scripts/services.sh start "$dir/svc" "${ATOLL_RUN_PG_PORT:-55440}" "${ATOLL_RUN_REDIS_PORT:-56390}"
. "$dir/svc/env"
go build -o bin/atoll-homeserver ./cmd/atoll-homeserver
go build -o bin/atollctl ./cmd/atollctl

token_file=$dir/admin-token
[ -s "$token_file" ] || head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$token_file"
cat >"$dir/homeserver.yaml" <<CONF
shard:
  name: shard-0
  advertise_url: http://127.0.0.1:8008
listen:
  client: 127.0.0.1:8008
  admin: 127.0.0.1:8081
  metrics: 127.0.0.1:9090
database:
  url: "$ATOLL_TEST_POSTGRES_URL"
  max_conns: 20
redis:
  url: "$ATOLL_TEST_REDIS_URL"
admin:
  token_file: $token_file
log:
  level: info
  format: text
CONF

bin/atoll-homeserver --config "$dir/homeserver.yaml" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT INT TERM
for _ in $(seq 100); do
	curl -fsS http://127.0.0.1:8008/_matrix/client/versions >/dev/null 2>&1 && break
	sleep 0.1
done
export ATOLL_ADMIN_URL=http://127.0.0.1:8081 ATOLL_ADMIN_TOKEN=$(cat "$token_file")
for t in clinic_a:clinic-a.localhost clinic_b:clinic-b.localhost; do
	id=${t%%:*} host=${t#*:}
	if ! bin/atollctl tenant show "$id" >/dev/null 2>&1; then
		bin/atollctl tenant create --id "$id" --server-name "$host" --registration open --shared-secret demo-secret >/dev/null
	fi
done
cat <<INFO

Atoll is running: a shard on http://127.0.0.1:8008 with two demo tenants.
  clinic-a.localhost and clinic-b.localhost (open registration; *.localhost resolves to 127.0.0.1)
  try:  curl -s http://clinic-a.localhost:8008/_matrix/client/versions
        curl -s -XPOST http://clinic-a.localhost:8008/_matrix/client/v3/register \\
             -d '{"username":"alice","password":"secret","auth":{"type":"m.login.dummy"}}'
  admin: ATOLL_ADMIN_URL=$ATOLL_ADMIN_URL ATOLL_ADMIN_TOKEN=\$(cat $token_file) bin/atollctl tenant list
  metrics: http://127.0.0.1:9090/metrics
Stop with Ctrl-C.
INFO
wait $pid
