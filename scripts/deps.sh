#!/usr/bin/env bash
# Installs what the project needs on a Debian bookworm machine. Idempotent: a machine that
# already has everything installs nothing and asks no registry.
set -euo pipefail

need=()
command -v /usr/lib/postgresql/15/bin/postgres >/dev/null 2>&1 || need+=(postgresql-15 postgresql-contrib)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v node >/dev/null 2>&1 || need+=(nodejs npm)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v runuser >/dev/null 2>&1 || need+=(util-linux)

if ((${#need[@]})); then
	echo "deps: installing ${need[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

