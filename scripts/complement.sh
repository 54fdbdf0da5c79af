#!/usr/bin/env bash
# Runs Complement (the Matrix community's homeserver test suite) against Atoll and writes the
# summary to e2e/complement/ (summary.md, results.tsv). Called by `make complement`.
#
#   scripts/complement.sh [extra go test flags, e.g. -run TestLogin]
#
# Steps: a Docker daemon (scripts/docker.sh ensure); libolm-dev for Complement's cgo; the image
# (go run ./cmd/atoll-complement/mkimage: atoll-homeserver + atoll-complement + PostgreSQL from
# Debian packages, plus atoll-media + MinIO when MinIO is cached) loaded with `docker load`; then `go test -json` of Complement's packages
# `tests` and `tests/csapi`, one package at a time, from a module directory of its own under
# ${ATOLL_CACHE}/complement (the repository's go.mod is not touched); finally the summariser.
#
# Environment:
#   ATOLL_COMPLEMENT_REV      build the image from this git revision (a `git archive` snapshot)
#                             instead of the working tree, e.g. HEAD
#   ATOLL_COMPLEMENT_PKGS     packages to run (default "tests/csapi tests")
#   ATOLL_COMPLEMENT_TIMEOUT  go test -timeout per package (default 45m)
#   ATOLL_COMPLEMENT_OUT      summary directory (default e2e/complement)
#   ATOLL_COMPLEMENT_PARALLEL go test -parallel (default 2)
#   ATOLL_COMPLEMENT_MEDIA    1 (default): when ${ATOLL_CACHE}/bin/minio exists (scripts/minio.sh),
#                             the image also runs atoll-media on MinIO and serves media; 0: no media
set -euo pipefail
export LC_ALL=C # sort and comm agree

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cache=${ATOLL_CACHE:-$HOME/.cache/atoll}
version=v0.0.0-20240126134841-458bfba5f7f3
cdir=$cache/complement
rundir=$cdir/run
image=atoll-complement:latest
pkgs=${ATOLL_COMPLEMENT_PKGS:-tests/csapi tests}
timeout=${ATOLL_COMPLEMENT_TIMEOUT:-45m}
out=${ATOLL_COMPLEMENT_OUT:-e2e/complement}
parallel=${ATOLL_COMPLEMENT_PARALLEL:-2}
say() { echo "complement.sh: $*" >&2; }
mkdir -p "$rundir" "$cdir/results"

# 1. Docker.
if [ -f scripts/docker.sh ]; then
	bash scripts/docker.sh ensure
else
	say "scripts/docker.sh is missing"; exit 1
fi
# Complement's Docker client (v24) asks for API 1.43; Debian's docker.io 20.10 speaks 1.41.
export DOCKER_API_VERSION=1.41

# 2. Complement needs cgo and libolm.
if ! dpkg -s libolm-dev >/dev/null 2>&1; then
	say "installing libolm-dev"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libolm-dev >/dev/null
fi

# 3. The image.
src=$root
revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "${ATOLL_COMPLEMENT_REV:-}" ]; then
	revision=$(git rev-parse --short "$ATOLL_COMPLEMENT_REV")
	src=$cdir/src
	rm -rf "$src"
	mkdir -p "$src"
	git archive "$ATOLL_COMPLEMENT_REV" | tar -x -C "$src"
	say "building the image from $revision (git archive)"
elif [ -n "$(git status --porcelain -- homeserver internal cmd/atoll-homeserver cmd/atoll-complement go.mod go.sum 2>/dev/null)" ]; then
	revision="$revision+dirty"
fi
t0=$(date +%s)
minio=$cache/bin/minio
[ "${ATOLL_COMPLEMENT_MEDIA:-1}" = 1 ] || minio=
imageline=$(go run ./cmd/atoll-complement/mkimage --module "$src" --work "$cdir/build" --cache "$cache" \
	--out "$cdir/atoll-complement.tar" --tag "$image" --revision "$revision" --minio "$minio")
docker load -q -i "$cdir/atoll-complement.tar" >/dev/null
digest=$(cut -f2 <<<"$imageline")
media=$(cut -f4 <<<"$imageline")
say "image $image $digest ($media) loaded in $(($(date +%s) - t0))s"

# 4. Complement from its own module directory.
cat >"$rundir/go.mod" <<EOF
module atoll.local/complement-run

go 1.22

require github.com/matrix-org/complement $version
EOF
skip_re=
if [ -f "$out/skip.txt" ]; then
	# Each name anchored: ^TestA$|^TestB$ (top-level tests only).
	skip_re=$(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' -e 's/.*/^&$/' "$out/skip.txt" | paste -sd'|' -)
fi
# Old blueprint images and containers of an interrupted run would be reused or collide.
docker ps -aq --filter label=complement_pkg | xargs -r docker rm -f >/dev/null
docker images -q --filter label=complement_pkg | xargs -r docker rmi -f >/dev/null 2>&1 || true
docker network ls -q --filter name=complement_ | xargs -r docker network rm >/dev/null 2>&1 || true

# Keep the homeserver log of every failed test (server errors are logged with their cause and
# the request ID the client saw); Complement calls this before it removes a container.
rm -rf "$cdir/logs"
mkdir -p "$cdir/logs"
cat >"$cdir/post-test.sh" <<EOF
#!/bin/sh
[ "\$3" = true ] || exit 0
docker logs "\$1" >"$cdir/logs/\$(echo "\$2" | tr '/ ' '__').\$(echo "\$1" | cut -c1-12).log" 2>&1
EOF
chmod +x "$cdir/post-test.sh"

# gotest PKG JSON [go test args...] runs one pass of a package into JSON.
gotest() {
	local pkg=$1 json=$2
	shift 2
	(
		cd "$rundir"
		args=(-json -mod=mod -count=1 -p 1 -parallel "$parallel" -timeout "$timeout")
		[ -z "$skip_re" ] || args+=(-skip "$skip_re")
		COMPLEMENT_BASE_IMAGE=$image COMPLEMENT_SPAWN_HS_TIMEOUT_SECS=60 CGO_ENABLED=1 \
			COMPLEMENT_POST_TEST_SCRIPT=$cdir/post-test.sh \
			go test "${args[@]}" "$@" "github.com/matrix-org/complement/$pkg" >"$json" 2>"$json.stderr" || true
	)
}

# reported JSON... prints the top-level tests that reported a result.
reported() {
	jq -rR 'fromjson? | select(.Test != null and (.Test | contains("/") | not) and (.Action == "pass" or .Action == "fail" or .Action == "skip")) | .Test' "$@" | sort -u
}

rm -f "$cdir"/results/*.json "$cdir"/results/*.stderr "$cdir"/results/*.list
streams=()
lists=()
for p in $pkgs; do
	name=${p//\//_}
	t0=$(date +%s)
	json=$cdir/results/$name.0.json
	streams+=("$json")
	say "go test $p (timeout $timeout, log $json)"
	gotest "$p" "$json" "$@"
	# A test that panics ends its package's binary, and the tests after it never start. Run
	# the ones without a result again (not with caller-given arguments, which may select).
	if [ $# -eq 0 ]; then
		all=$(cd "$rundir" && COMPLEMENT_BASE_IMAGE=$image go test -mod=mod -list '^Test' "github.com/matrix-org/complement/$p" | grep '^Test' | sort -u)
		[ -z "$skip_re" ] || all=$(grep -Ev "$skip_re" <<<"$all" || true)
		echo "$all" >"$cdir/results/$name.list"
		lists+=(--list "$p=$cdir/results/$name.list")
		prev=
		for part in 1 2 3 4 5 6 7 8; do
			left=$(comm -23 <(echo "$all") <(reported "${streams[@]}"))
			[ -n "$left" ] && [ "$left" != "$prev" ] || break
			prev=$left
			json=$cdir/results/$name.$part.json
			streams+=("$json")
			say "$p: $(wc -l <<<"$left") tests did not run (a test before them crashed the package); running them ($json)"
			gotest "$p" "$json" -run "$(sed 's/.*/^&$/' <<<"$left" | paste -sd'|' -)"
		done
	fi
	say "$p finished in $(($(date +%s) - t0))s"
done

# 5. Summary.
go run ./cmd/atoll-complement/summarise --out "$out" --skip "$out/skip.txt" \
	--src "$(go env GOMODCACHE)/github.com/matrix-org/complement@$version" "${lists[@]}" \
	--image "$image@$digest ($media)" --revision "$revision" \
	--machine "$(nproc) cores, $(. /etc/os-release && echo "$PRETTY_NAME"), docker.io $(docker version --format '{{.Server.Version}}' 2>/dev/null)" \
	"${streams[@]}"
say "summary written to $out/summary.md; homeserver logs of failed tests in $cdir/logs"
