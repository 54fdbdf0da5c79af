#!/usr/bin/env bash
# Installs the Node dependencies of a test directory (one holding package.json and
# package-lock.json) with `npm ci` into the cache, outside the checkout:
#   ${ATOLL_CACHE:-$HOME/.cache/atoll}/npm/<name>/<lockfile sha256>/node_modules
# and points <dir>/node_modules (gitignored) at it, so Node resolves the packages from scripts
# in <dir>. Idempotent: when that lockfile is already installed it asks no registry.
#   scripts/npm.sh DIR [NAME]   (NAME defaults to DIR's base name); prints the node_modules path.
set -euo pipefail

dir=$(cd "$1" && pwd)
name=${2:-$(basename "$dir")}
cache=${ATOLL_CACHE:-$HOME/.cache/atoll}
for f in package.json package-lock.json; do
	[ -f "$dir/$f" ] || { echo "npm.sh: $dir/$f missing" >&2; exit 1; }
done
command -v npm >/dev/null 2>&1 || { echo "npm.sh: npm not found (scripts/deps.sh installs it)" >&2; exit 1; }

hash=$(cat "$dir/package.json" "$dir/package-lock.json" | sha256sum | cut -c1-16)
base="$cache/npm/$name"
dest="$base/$hash"
mkdir -p "$base"

link() {
	# Replace the link only when it points elsewhere; a real directory is left alone.
	if [ -L "$dir/node_modules" ] && [ "$(readlink "$dir/node_modules")" = "$dest/node_modules" ]; then
		:
	elif [ -e "$dir/node_modules" ] && [ ! -L "$dir/node_modules" ]; then
		echo "npm.sh: $dir/node_modules is a directory; remove it to use the cache" >&2
		exit 1
	else
		ln -sfn "$dest/node_modules" "$dir/node_modules.tmp.$$"
		mv -Tf "$dir/node_modules.tmp.$$" "$dir/node_modules"
	fi
	echo "$dest/node_modules"
}

if [ -f "$dest/.installed" ]; then
	link
	exit 0
fi

# One installer at a time per name; the others wait and then find it installed.
exec 9>"$base/.lock"
flock 9
if [ ! -f "$dest/.installed" ]; then
	tmp=$(mktemp -d "$base/.tmp.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	cp "$dir/package.json" "$dir/package-lock.json" "$tmp/"
	echo "npm.sh: npm ci for $name ($hash)" >&2
	(cd "$tmp" && npm ci --no-audit --no-fund --loglevel=error >&2)
	touch "$tmp/.installed"
	rm -rf "$dest"
	mv "$tmp" "$dest"
	trap - EXIT
fi
link
