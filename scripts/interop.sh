#!/usr/bin/env bash
# Interoperability with a homeserver nobody here wrote: Dendrite v0.15.2 and an Atoll tenant
# federate over TLS on loopback, and e2e/interop (ATOLL_INTEROP=1) checks that their users join
# each other's rooms and exchange messages. Called by `make interop`; see docs/interop.md.
#
#   scripts/interop.sh [extra go test flags, e.g. -run TestInterop/dendrite_room]
#
# Steps:
#  1. Dendrite: built once into ${ATOLL_CACHE}/dendrite/v0.15.2/bin from the module proxy's
#     github.com/element-hq/dendrite@v0.15.2 (v0.14+ are published under element-hq; the
#     matrix-org path stops at v0.13.8), in a copy of the module's own source tree so that its
#     go.mod and go.sum decide the dependencies; the repository's go.mod is not touched.
#     CGO_ENABLED=0 (Dendrite then links the pure-Go SQLite driver; we use PostgreSQL anyway).
#  2. atoll-homeserver built from the working tree.
#  3. In a temporary directory: a CA and two certificates (openssl), PostgreSQL and Redis
#     (scripts/services.sh), a database `dendrite` beside `atoll`.
#  4. Dendrite, server name localhost:<its TLS port>, TLS federation on 127.0.0.1, its client
#     API on plain HTTP; it trusts the CA through SSL_CERT_FILE (TLS validation stays on).
#  5. atoll-homeserver with listen.federation on 127.0.0.1:<port> (TLS), federation.servers
#     mapping Dendrite's name to its https URL, federation.trust_roots_file = the CA; one
#     tenant whose server name is localhost:<that port>. A server name with an explicit port
#     is contacted directly on that port by both servers (no well-known, no SRV).
#  6. go test ./e2e/interop, which writes e2e/interop/RESULTS.md.
# The logs and configurations of the last run are kept in ${ATOLL_CACHE}/interop/last.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cache=${ATOLL_CACHE:-$HOME/.cache/atoll}
dver=v0.15.2
dmod=github.com/element-hq/dendrite
ddir=$cache/dendrite/$dver
pgbin=/usr/lib/postgresql/15/bin
say() { echo "interop.sh: $*" >&2; }

# 1. Dendrite.
if [ -x "$ddir/bin/dendrite" ] && [ "$("$ddir/bin/dendrite" --version 2>/dev/null)" = "${dver#v}" ]; then
	say "Dendrite $dver cached in $ddir/bin"
else
	t0=$(date +%s)
	say "building Dendrite $dver into $ddir/bin (once)"
	mkdir -p "$ddir"
	# Outside any module, so the repository's go.mod plays no part.
	src=$(cd "$ddir" && GOFLAGS=-mod=mod go mod download -json "$dmod@$dver" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
	[ -d "$src" ] || { say "go mod download $dmod@$dver gave no directory"; exit 1; }
	rm -rf "$ddir/src" "$ddir/bin"
	cp -r "$src" "$ddir/src"
	chmod -R u+w "$ddir/src"
	(cd "$ddir/src" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false nice -n 10 go build -trimpath -o "$ddir/bin/" \
		./cmd/dendrite ./cmd/generate-config ./cmd/generate-keys) >"$ddir/build.log" 2>&1 ||
		{ cat "$ddir/build.log" >&2; exit 1; }
	echo "$(($(date +%s) - t0))" >"$ddir/build.seconds"
	say "Dendrite built in $(cat "$ddir/build.seconds")s"
fi

# 2. atoll-homeserver from the working tree.
work=$(mktemp -d /tmp/atoll-interop.XXXXXX)
chmod 755 "$work" # PostgreSQL runs as the postgres user and must reach its data directory
mkdir -p "$work/bin" "$work/dendrite" "$work/atoll"
t0=$(date +%s)
nice -n 10 go build -o "$work/bin/atoll-homeserver" ./cmd/atoll-homeserver
say "atoll-homeserver built in $(($(date +%s) - t0))s"

pids=()
keep=$cache/interop/last
cleanup() {
	local rc=$?
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do
		for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
	done
	bash scripts/services.sh stop "$work/svc" >/dev/null 2>&1 || true
	rm -rf "$keep"
	mkdir -p "$keep"
	cp "$work"/*.log "$work"/*.yaml "$work/ca.crt" "$keep/" 2>/dev/null || true
	rm -rf "$work"
	say "logs and configurations kept in $keep"
	exit "$rc"
}
trap cleanup EXIT

free_port() {
	local p
	for _ in $(seq 200); do
		p=$((20000 + RANDOM % 30000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && ! grep -qx "$p" "$work/ports" 2>/dev/null; then
			echo "$p" >>"$work/ports"
			echo "$p"
			return
		fi
	done
	say "no free port found"
	return 1
}
pg_port=$(free_port)
redis_port=$(free_port)
d_http=$(free_port)
d_https=$(free_port)
a_client=$(free_port)
a_fed=$(free_port)
a_admin=$(free_port)
d_server=localhost:$d_https
a_server=localhost:$a_fed

# 3. Certificates: one CA, one certificate per server (both name localhost and 127.0.0.1).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=Atoll interop CA" \
	-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
	-keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null
for name in dendrite atoll; do
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
		-keyout "$work/$name.key" -out "$work/$name.csr" 2>/dev/null
	printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n' >"$work/$name.ext"
	openssl x509 -req -in "$work/$name.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" -CAcreateserial -days 2 \
		-extfile "$work/$name.ext" -out "$work/$name.crt" 2>/dev/null
done
say "certificates for $d_server and $a_server signed by $work/ca.crt"

bash scripts/services.sh start "$work/svc" "$pg_port" "$redis_port"
. "$work/svc/env"
"$pgbin/psql" -h 127.0.0.1 -p "$pg_port" -U atoll -d postgres -qc "CREATE DATABASE dendrite" >/dev/null

wait_http() { # URL WHAT PID
	for _ in $(seq 300); do
		curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
		kill -0 "$3" 2>/dev/null || { say "$2 exited"; tail -n 40 "$work/$2.log" >&2; return 1; }
		sleep 0.2
	done
	say "$2 did not answer $1 within 60s"
	tail -n 40 "$work/$2.log" >&2
	return 1
}

# 4. Dendrite.
"$ddir/bin/generate-config" -ci -server "$d_server" \
	-db "postgres://atoll@127.0.0.1:$pg_port/dendrite?sslmode=disable" -dir "$work/dendrite" >"$work/dendrite.yaml"
sed -i -e 's/^  level: trace$/  level: debug/' -e "s#private_key: matrix_key.pem#private_key: $work/dendrite/matrix_key.pem#" "$work/dendrite.yaml"
"$ddir/bin/generate-keys" -private-key "$work/dendrite/matrix_key.pem" >/dev/null
(cd "$work/dendrite" && SSL_CERT_FILE=$work/ca.crt exec "$ddir/bin/dendrite" -config "$work/dendrite.yaml" \
	-http-bind-address "127.0.0.1:$d_http" -https-bind-address "127.0.0.1:$d_https" \
	-tls-cert "$work/dendrite.crt" -tls-key "$work/dendrite.key" -really-enable-open-registration) >"$work/dendrite.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$d_http/_matrix/client/versions" dendrite "$!"
say "Dendrite $dver: $d_server, client API http://127.0.0.1:$d_http"

# 5. atoll-homeserver and its tenant.
admin_token=interop-admin-token-$RANDOM$RANDOM
cat >"$work/atoll.yaml" <<YAML
shard:
  name: interop-0
listen:
  client: 127.0.0.1:$a_client
  federation: 127.0.0.1:$a_fed
  admin: 127.0.0.1:$a_admin
  metrics: ""
tls:
  cert_file: $work/atoll.crt
  key_file: $work/atoll.key
database:
  url: $ATOLL_TEST_POSTGRES_URL
redis:
  url: $ATOLL_TEST_REDIS_URL
admin:
  token: $admin_token
federation:
  servers:
    "$d_server": https://localhost:$d_https
  trust_roots_file: $work/ca.crt
  max_backoff: 10s
log:
  level: debug
  format: text
YAML
"$work/bin/atoll-homeserver" -config "$work/atoll.yaml" >"$work/atoll.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$a_client/_matrix/client/versions" atoll "$!"
curl -fsS -X POST -H "Authorization: Bearer $admin_token" -H 'Content-Type: application/json' \
	-d "{\"id\":\"interop\",\"server_name\":\"$a_server\",\"settings\":{\"registration\":\"open\"}}" \
	"http://127.0.0.1:$a_admin/_atoll/admin/v1/tenants" >/dev/null
say "Atoll tenant $a_server: federation https://127.0.0.1:$a_fed, client API http://127.0.0.1:$a_client"

# 6. The test.
export ATOLL_INTEROP=1
export ATOLL_INTEROP_DENDRITE_URL=http://127.0.0.1:$d_http
export ATOLL_INTEROP_DENDRITE_SERVER=$d_server
export ATOLL_INTEROP_DENDRITE_VERSION=$dver
export ATOLL_INTEROP_ATOLL_URL=http://127.0.0.1:$a_client
export ATOLL_INTEROP_ATOLL_SERVER=$a_server
export ATOLL_INTEROP_ATOLL_REVISION="$(git rev-parse --short HEAD)$([ -n "$(git status --porcelain -- homeserver internal cmd/atoll-homeserver 2>/dev/null)" ] && echo +dirty)"
export ATOLL_INTEROP_CA=$work/ca.crt
export ATOLL_INTEROP_RESULTS=${ATOLL_INTEROP_RESULTS:-$root/e2e/interop/RESULTS.md}
set +e
go test -count=1 -timeout 15m -v "$@" ./e2e/interop/ 2>&1 | tee "$work/test.log"
rc=${PIPESTATUS[0]}
set -e
echo
cat "$ATOLL_INTEROP_RESULTS"
if [ "$rc" != 0 ]; then
	say "failures: warnings and errors of both servers follow (full logs in $keep)"
	grep -E 'level=(WARN|ERROR)' "$work/atoll.log" | tail -n 40 >&2 || true
	grep -E 'level=(warning|error)' "$work/dendrite.log" | tail -n 40 >&2 || true
fi
exit "$rc"
