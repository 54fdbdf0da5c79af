#!/usr/bin/env bash
# A working Docker daemon on a Debian bookworm build machine, idempotently.
#
#   scripts/docker.sh ensure    install docker.io if dockerd is missing, register the runc
#                               wrapper as dockerd's default runtime, start dockerd if it is not
#                               answering; prints nothing else when all is already in place
#   scripts/docker.sh wrapper   print the runc wrapper script (kind node images embed it)
#   scripts/docker.sh stop      stop a dockerd this script started (by its pid file)
#
# Why the wrapper: these machines' capability bounding set lacks CAP_SYS_RESOURCE, so runc
# refuses any container that asks for it, and --privileged asks for every capability. The
# wrapper, /usr/local/libexec/atoll/runc, deletes CAP_SYS_RESOURCE from the OCI config of each
# container it creates (and from `runc exec`'s process spec), raises an oom_score_adj below its
# own to its own (lowering it needs that capability too), then runs the real runc.
#
# Environment: ATOLL_DOCKER_LOG (default /var/log/atoll-dockerd.log) is dockerd's log when this
# script starts it (the machines have no systemd, so dockerd runs under nohup).
set -euo pipefail

wrapper_path=/usr/local/libexec/atoll/runc
pidfile=/run/atoll-dockerd.pid
log=${ATOLL_DOCKER_LOG:-/var/log/atoll-dockerd.log}

say() { echo "docker.sh: $*" >&2; }

# wrapper_script prints the runc wrapper. It only needs sh and jq, and finds the real runc at
# /usr/sbin/runc (Debian's) or /usr/bin/runc.
wrapper_script() {
	cat <<'EOF'
#!/bin/sh
# atoll runc wrapper (scripts/docker.sh): drop CAP_SYS_RESOURCE, which is outside this machine's
# capability bounding set, from a container's OCI config, then run the real runc.
for r in /usr/sbin/runc /usr/bin/runc; do [ -x "$r" ] && real=$r && break; done
[ -n "${real:-}" ] || { echo "atoll runc wrapper: no runc in /usr/sbin or /usr/bin" >&2; exit 127; }
# create/run read the container's config.json from the bundle; exec reads a process.json
# given with --process. Both carry the capability lists.
bundle=. create= process=
prev=
for a in "$@"; do
	case "$prev" in
	--bundle | -b) bundle=$a ;;
	--process | -p) process=$a ;;
	esac
	case "$a" in
	--bundle=*) bundle=${a#--bundle=} ;;
	--process=*) process=${a#--process=} ;;
	create | run) create=1 ;;
	esac
	prev=$a
done
drop() { # drop FILE JQ-PATH
	[ -f "$1" ] || return 0
	tmp="$1.atoll.$$"
	if jq -c "if $2 then $2 |= with_entries(.value |= (if type == \"array\" then map(select(. != \"CAP_SYS_RESOURCE\")) else . end)) else . end" "$1" >"$tmp"; then
		mv "$tmp" "$1"
	else
		rm -f "$tmp"
	fi
}
[ -z "$create" ] || drop "$bundle/config.json" .process.capabilities
# Lowering oom_score_adj needs CAP_SYS_RESOURCE too: keep a container's at or above ours.
if [ -n "$create" ] && [ -f "$bundle/config.json" ] && min=$(cat /proc/self/oom_score_adj 2>/dev/null); then
	tmp="$bundle/config.json.atoll.$$"
	if jq -c --argjson min "$min" 'if (.process.oomScoreAdj // $min) < $min then .process.oomScoreAdj = $min else . end' \
		"$bundle/config.json" >"$tmp"; then
		mv "$tmp" "$bundle/config.json"
	else
		rm -f "$tmp"
	fi
fi
[ -z "$process" ] || drop "$process" .capabilities
exec "$real" "$@"
EOF
}

install_packages() {
	local need=()
	command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
	command -v jq >/dev/null 2>&1 || need+=(jq)
	command -v iptables >/dev/null 2>&1 || need+=(iptables)
	if ((${#need[@]})); then
		say "installing ${need[*]} from Debian"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		# A temporary policy-rc.d stops the package from starting dockerd itself (through
		# /etc/init.d, before the wrapper is registered); ensure starts it below.
		local policy=
		if [ ! -e /usr/sbin/policy-rc.d ]; then
			printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
			chmod 0755 /usr/sbin/policy-rc.d
			policy=1
		fi
		apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null || { [ -z "$policy" ] || rm -f /usr/sbin/policy-rc.d; return 1; }
		[ -z "$policy" ] || rm -f /usr/sbin/policy-rc.d
	fi
}

install_wrapper() {
	mkdir -p "$(dirname "$wrapper_path")"
	local tmp
	tmp=$(mktemp)
	wrapper_script >"$tmp"
	if ! cmp -s "$tmp" "$wrapper_path" 2>/dev/null; then
		install -m 0755 "$tmp" "$wrapper_path"
		say "installed runc wrapper $wrapper_path"
	fi
	rm -f "$tmp"
}

# configure_daemon registers the wrapper as the default runtime in /etc/docker/daemon.json,
# keeping any other keys already there. It prints "changed" when the file changed.
configure_daemon() {
	mkdir -p /etc/docker
	local cur='{}' next
	[ -s /etc/docker/daemon.json ] && cur=$(cat /etc/docker/daemon.json)
	next=$(jq --arg p "$wrapper_path" '.runtimes["atoll-runc"] = {path: $p} | ."default-runtime" = "atoll-runc"' <<<"$cur")
	if [ "$(jq -S . <<<"$cur")" != "$(jq -S . <<<"$next")" ]; then
		printf '%s\n' "$next" >/etc/docker/daemon.json
		say "registered atoll-runc as dockerd's default runtime in /etc/docker/daemon.json"
		echo changed
	fi
}

daemon_up() { docker info >/dev/null 2>&1; }

default_runtime() { docker info --format '{{.DefaultRuntime}}' 2>/dev/null; }

start_daemon() {
	say "starting dockerd (log: $log)"
	# Debian's docker.io ships /usr/sbin/dockerd; cgroupfs is the only driver without systemd.
	nohup dockerd --exec-opt native.cgroupdriver=cgroupfs >>"$log" 2>&1 &
	echo $! >"$pidfile"
	local i
	for i in $(seq 1 60); do
		daemon_up && return 0
		if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
			say "dockerd exited; last lines of $log:"
			tail -n 30 "$log" >&2
			return 1
		fi
		sleep 1
	done
	say "dockerd did not answer within 60s; last lines of $log:"
	tail -n 30 "$log" >&2
	return 1
}

stop_daemon() {
	[ -s "$pidfile" ] || { say "no $pidfile: dockerd was not started by this script"; return 0; }
	local pid
	pid=$(cat "$pidfile")
	if kill -0 "$pid" 2>/dev/null; then
		kill "$pid"
		for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
	fi
	rm -f "$pidfile"
}

ensure() {
	install_packages
	install_wrapper
	local changed
	changed=$(configure_daemon)
	if daemon_up; then
		if [ "$(default_runtime)" != atoll-runc ]; then
			if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
				say "restarting dockerd to pick up the runc wrapper"
				stop_daemon
				start_daemon
			else
				say "dockerd is running (not started by this script) without the atoll-runc default runtime;"
				say "restart it so it reads /etc/docker/daemon.json (e.g. 'systemctl restart docker')"
				return 1
			fi
		elif [ -n "$changed" ]; then
			# daemon.json changed but atoll-runc is already the default: reload is enough.
			pkill -HUP -F "$pidfile" 2>/dev/null || true
		fi
	else
		start_daemon
	fi
	[ "$(default_runtime)" = atoll-runc ] || { say "dockerd's default runtime is $(default_runtime), want atoll-runc"; return 1; }
}

case "${1:-}" in
ensure) ensure ;;
wrapper) wrapper_script ;;
stop) stop_daemon ;;
*)
	echo "usage: $0 ensure|wrapper|stop" >&2
	exit 2
	;;
esac
