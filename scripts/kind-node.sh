#!/usr/bin/env bash
# Builds a kind node image without pulling anything: a Debian bookworm rootfs from debootstrap
# (systemd, containerd, runc + the atoll runc wrapper, CNI plugins), Kubernetes binaries built
# from k8s.io/kubernetes through the Go module proxy, and the control plane's images (made from
# those binaries with go-containerregistry, plus pause and CoreDNS built from source), which the
# node imports into containerd when it boots.
#
#   scripts/kind-node.sh            build (or reuse) the image; prints its reference on stdout
#   scripts/kind-node.sh rootfs     only the Debian rootfs step
#
# Everything is cached under ${ATOLL_CACHE:-$HOME/.cache/atoll}/kindnode (see e2e/README.md);
# a second run with the same inputs only checks that the image is in dockerd. Progress goes to
# stderr with each step's duration. Needs root and a running dockerd (scripts/docker.sh ensure).
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.31.4}
K8S_STAGING_VERSION=v0${K8S_VERSION#v1}
COREDNS_VERSION=${COREDNS_VERSION:-v1.11.3}
KIND_VERSION=v0.27.0
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${ATOLL_CACHE:-$HOME/.cache/atoll}
dir=$cache/kindnode
gomodcache=$(go env GOMODCACHE)
kindsrc=$gomodcache/sigs.k8s.io/kind@$KIND_VERSION
nice=(nice -n 10)
mkdir -p "$dir"

step_start=0
step() { step_start=$(date +%s); echo "kind-node: $*" >&2; }
step_done() { echo "kind-node:   done in $(($(date +%s) - step_start))s" >&2; }

# Packages of the node rootfs, beyond debootstrap's minbase.
packages=(
	systemd systemd-sysv dbus
	containerd runc containernetworking-plugins
	conntrack iptables nftables iproute2 ethtool util-linux mount kmod ebtables socat
	libseccomp2 ca-certificates jq procps bash gzip
)

ensure_tools() {
	local need=()
	command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
	command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
	command -v jq >/dev/null 2>&1 || need+=(jq)
	if ((${#need[@]})); then
		step "installing ${need[*]} from Debian"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
			{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
		step_done
	fi
	if [ ! -d "$kindsrc/images/base/files" ]; then
		(cd /tmp && GOFLAGS= go mod download sigs.k8s.io/kind@$KIND_VERSION)
	fi
}

# 1. Debian rootfs (cached as a tarball keyed by the package list).
rootfs_tar() {
	local key tar
	key=$(printf '%s\n' bookworm "$MIRROR" "${packages[@]}" | sha256sum | cut -c1-12)
	tar=$dir/rootfs-bookworm-$key.tar
	if [ ! -s "$tar" ]; then
		step "debootstrap bookworm (${#packages[@]} packages)"
		local tmp
		tmp=$(mktemp -d "$dir/debootstrap.XXXXXX")
		"${nice[@]}" debootstrap --variant=minbase --include="$(
			IFS=,
			echo "${packages[*]}"
		)" bookworm "$tmp" "$MIRROR" >"$dir/debootstrap.log" 2>&1 || {
			tail -n 30 "$dir/debootstrap.log" >&2
			rm -rf "$tmp"
			return 1
		}
		rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*
		tar -C "$tmp" --numeric-owner -cf "$tar.part" .
		mv "$tar.part" "$tar"
		rm -rf "$tmp"
		step_done
	fi
	echo "$tar"
}

# 2. Kubernetes binaries from the module proxy, in a module of their own under the cache.
k8s_bins() {
	local src=$dir/k8s-$K8S_VERSION
	local bin=$src/bin
	local want=(kubeadm kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy etcd)
	local missing=0 b
	for b in "${want[@]}"; do [ -x "$bin/$b" ] || missing=1; done
	if ((missing)); then
		step "building Kubernetes $K8S_VERSION binaries (cold: ~25-35 min on 2 cores)"
		mkdir -p "$src"
		local mod
		mod=$(cd /tmp && GOFLAGS= go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | jq -r .GoMod)
		{
			echo "module atoll.invalid/kindnode-k8s"
			echo
			echo "go 1.22.0"
			echo
			echo "require k8s.io/kubernetes $K8S_VERSION"
			echo
			sed -n '/^require/,/^)/p' "$mod" | grep -v '^[[:space:]]*k8s.io/'
			echo
			echo "replace ("
			sed -n '/^replace/,/^)/p' "$mod" | grep '=>' |
				sed -E "s#^[[:space:]]*(k8s.io/[a-z0-9-]+) => .*#\t\1 => \1 $K8S_STAGING_VERSION#"
			echo ")"
		} >"$src/go.mod"
		local ld="-s -w" p minor
		minor=$(cut -d. -f2 <<<"$K8S_VERSION")
		for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
			ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
			ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
		done
		mkdir -p "$bin"
		(
			cd "$src"
			export CGO_ENABLED=0 GOFLAGS=-mod=mod
			"${nice[@]}" go build -p 2 -trimpath -ldflags "$ld" -o bin/ \
				k8s.io/kubernetes/cmd/kubeadm k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kubectl \
				k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
				k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-proxy
			# etcd at the version k8s.io/kubernetes requires (go.etcd.io/etcd/server/v3 is package main).
			"${nice[@]}" go build -p 2 -trimpath -ldflags "-s -w" -o bin/etcd go.etcd.io/etcd/server/v3
		)
		step_done
	fi
	echo "$bin"
}

# 3. CoreDNS and pause from source.
coredns_bin() {
	local bin=$dir/coredns-$COREDNS_VERSION/coredns
	if [ ! -x "$bin" ]; then
		step "building CoreDNS $COREDNS_VERSION (cold: ~5-8 min)"
		mkdir -p "$(dirname "$bin")"
		(cd /tmp && CGO_ENABLED=0 GOBIN=$(dirname "$bin") "${nice[@]}" go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION")
		step_done
	fi
	echo "$bin"
}

pause_bin() {
	local bin=$dir/pause-$K8S_VERSION/pause
	if [ ! -x "$bin" ]; then
		step "compiling pause from k8s.io/kubernetes@$K8S_VERSION/build/pause"
		mkdir -p "$(dirname "$bin")"
		local srcdir
		srcdir=$(cd /tmp && GOFLAGS= go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | jq -r .Dir)/build/pause/linux
		gcc -Os -Wall -Werror -static -DVERSION=3.10-atoll -o "$bin" "$srcdir/pause.c"
		step_done
	fi
	echo "$bin"
}

# 4. Image tarballs for containerd, from the binaries (images/kindnode).
control_plane_images() {
	local kbin=$1 coredns=$2 pause=$3 rootfs=$4
	local out=$dir/images-$K8S_VERSION
	local list
	list=$("$kbin/kubeadm" config images list --kubernetes-version "$K8S_VERSION" 2>/dev/null)
	local stamp
	stamp=$( (printf '%s\n' "$list"; sha256sum "$kbin"/* "$coredns" "$pause" "$root"/images/kindnode/main.go; echo "$rootfs") | sha256sum | cut -c1-16)
	if [ "$(cat "$out/stamp" 2>/dev/null)" != "$stamp" ]; then
		step "making control-plane images: $(tr '\n' ' ' <<<"$list")"
		rm -rf "$out"
		mkdir -p "$out"
		(cd "$root" && go run ./images/kindnode control-plane -bin "$kbin" -coredns "$coredns" -pause "$pause" \
			-rootfs "$rootfs" -out "$out" $list)
		echo "$stamp" >"$out/stamp"
		step_done
	fi
	echo "$out"
}

# 5. The node rootfs: base + kind's base-image files + binaries + images, imported into dockerd.
node_image() {
	local rootfs=$1 kbin=$2 imgs=$3
	local key
	key=$( (cat "$0"; bash "$root/scripts/docker.sh" wrapper; cat "$imgs/stamp"; echo "$rootfs"; sha256sum "$kbin"/kube{adm,let,ctl}) | sha256sum | cut -c1-12)
	local ref=atoll.local/kind-node:$K8S_VERSION-$key
	if docker image inspect "$ref" >/dev/null 2>&1; then
		echo "$ref"
		return
	fi
	local tar=$dir/node-$K8S_VERSION-$key.tar
	if [ ! -s "$tar" ]; then
		step "assembling node rootfs $ref"
		local t
		t=$(mktemp -d "$dir/node.XXXXXX")
		tar -C "$t" -xf "$rootfs"
		local f=$kindsrc/images/base/files
		install -m 0755 "$f"/usr/local/bin/entrypoint "$t"/usr/local/bin/entrypoint
		mkdir -p "$t"/kind/bin "$t"/kind/images "$t"/etc/containerd "$t"/etc/systemd/system/kubelet.service.d \
			"$t"/etc/kubernetes/manifests "$t"/etc/cni/net.d "$t"/opt/cni "$t"/usr/local/libexec/atoll
		install -m 0755 "$f"/kind/bin/*.sh "$t"/kind/bin/
		install -m 0644 "$f"/etc/default/kubelet "$t"/etc/default/kubelet
		install -m 0644 "$f"/etc/sysctl.d/* "$t"/etc/sysctl.d/
		install -m 0644 "$f"/etc/systemd/system/kubelet.slice "$f"/etc/systemd/system/kubelet.service \
			"$f"/etc/systemd/system/undo-mount-hacks.service "$t"/etc/systemd/system/
		install -m 0644 "$f"/etc/systemd/system/kubelet.service.d/* "$t"/etc/systemd/system/kubelet.service.d/
		sed 's#^ExecStart=/usr/local/bin/containerd#ExecStart=/usr/bin/containerd#' \
			"$f"/etc/systemd/system/containerd.service >"$t"/etc/systemd/system/containerd.service
		bash "$root/scripts/docker.sh" wrapper >"$t"/usr/local/libexec/atoll/runc
		chmod 0755 "$t"/usr/local/libexec/atoll/runc
		cat >"$t"/etc/containerd/config.toml <<-'EOF'
			# atoll kind node (scripts/kind-node.sh): kind's base config for Debian's containerd 1.6,
			# with runc behind the atoll wrapper that drops CAP_SYS_RESOURCE.
			version = 2
			[plugins."io.containerd.grpc.v1.cri"]
			  sandbox_image = "registry.k8s.io/pause:3.10"
			  tolerate_missing_hugepages_controller = true
			  # no CAP_SYS_RESOURCE: never ask for an oom_score_adj below containerd's own
			  restrict_oom_score_adj = true
			[plugins."io.containerd.grpc.v1.cri".containerd]
			  discard_unpacked_layers = true
			  snapshotter = "overlayfs"
			  default_runtime_name = "runc"
			[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
			  runtime_type = "io.containerd.runc.v2"
			[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
			  SystemdCgroup = true
			  BinaryName = "/usr/local/libexec/atoll/runc"
			[plugins."io.containerd.grpc.v1.cri".cni]
			  bin_dir = "/usr/lib/cni"
			  conf_dir = "/etc/cni/net.d"
		EOF
		# One node, so the bridge plugin is the whole pod network (kind's kindnetd image is not
		# available); kind is told disableDefaultCNI. The subnet is kind's default podSubnet.
		cat >"$t"/etc/cni/net.d/10-atoll-bridge.conflist <<-'EOF'
			{
			  "cniVersion": "1.0.0",
			  "name": "atoll",
			  "plugins": [
			    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
			     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
			    {"type": "portmap", "capabilities": {"portMappings": true}}
			  ]
			}
		EOF
		ln -sfn /usr/lib/cni "$t"/opt/cni/bin
		printf 'runtime-endpoint: unix:///run/containerd/containerd.sock\nimage-endpoint: unix:///run/containerd/containerd.sock\n' >"$t"/etc/crictl.yaml
		# Images: imported into containerd's k8s.io namespace on boot, before multi-user.target
		# (kind waits for that target before it runs kubeadm).
		cp "$imgs"/*.tar "$t"/kind/images/
		cat >"$t"/etc/systemd/system/atoll-import-images.service <<-'EOF'
			[Unit]
			Description=Import the control plane's images into containerd
			After=containerd.service
			Requires=containerd.service
			Before=kubelet.service multi-user.target
			[Service]
			Type=oneshot
			RemainAfterExit=yes
			ExecStart=/bin/sh -c 'for i in /kind/images/*.tar; do ctr -n k8s.io images import --all-platforms "$i" >/dev/null || exit 1; done'
			[Install]
			WantedBy=multi-user.target
		EOF
		install -m 0755 "$kbin"/kubeadm "$kbin"/kubelet "$kbin"/kubectl "$t"/usr/bin/
		echo "$K8S_VERSION" >"$t"/kind/version
		# What kind's base Dockerfile does after installing packages.
		(
			cd "$t"
			find lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete
			rm -f lib/systemd/system/multi-user.target.wants/* etc/systemd/system/*.wants/* \
				lib/systemd/system/local-fs.target.wants/* lib/systemd/system/sockets.target.wants/*udev* \
				lib/systemd/system/sockets.target.wants/*initctl* lib/systemd/system/basic.target.wants/*
			echo "ReadKMsg=no" >>etc/systemd/journald.conf
			mkdir -p etc/systemd/system/multi-user.target.wants
			for u in kubelet containerd undo-mount-hacks atoll-import-images; do
				ln -sfn "/etc/systemd/system/$u.service" "etc/systemd/system/multi-user.target.wants/$u.service"
			done
			ln -sfn /dev/null etc/systemd/system/systemd-binfmt.service
			ln -sfn /lib/systemd/systemd sbin/init
			: >etc/machine-id
		)
		tar -C "$t" --numeric-owner -cf "$tar.part" .
		mv "$tar.part" "$tar"
		rm -rf "$t"
		step_done
	fi
	# Older node images and rootfs tarballs are superseded (a running cluster keeps its image).
	local old
	for old in $(docker images --format '{{.Repository}}:{{.Tag}}' atoll.local/kind-node); do
		[ "$old" = "$ref" ] || docker rmi "$old" >/dev/null 2>&1 || true
	done
	find "$dir" -maxdepth 1 -name "node-*.tar" ! -name "$(basename "$tar")" -delete
	step "importing $ref into dockerd"
	docker import \
		-c 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' \
		-c 'ENV container=docker' \
		"$tar" "$ref" >/dev/null
	step_done
	echo "$ref"
}

ensure_tools
rootfs=$(rootfs_tar)
[ "${1:-}" != rootfs ] || exit 0
kbin=$(k8s_bins)
coredns=$(coredns_bin)
pause=$(pause_bin)
imgs=$(control_plane_images "$kbin" "$coredns" "$pause" "$rootfs")
node_image "$rootfs" "$kbin" "$imgs"
