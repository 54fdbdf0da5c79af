#!/usr/bin/env bash
# make e2e: the complete stack on an air-gapped kind cluster (see e2e/README.md).
#
#   1. dockerd with the runc wrapper (scripts/docker.sh ensure)
#   2. kind (go install sigs.k8s.io/kind@v0.27.0 into the cache)
#   3. the kind node image, built locally (scripts/kind-node.sh)
#   4. the bundle of HEAD: every Atoll image and the packaged chart (cmd/atoll-images)
#   5. a kind cluster, the bundle's images loaded into it, hostPath volumes for the datastores
#   6. the e2e suite (ATOLL_E2E=1 go test ./e2e): installs the chart and checks the stack
#   7. the cluster deleted, unless ATOLL_E2E_KEEP=1
#
# Environment:
#   ATOLL_CACHE            cache root (default ~/.cache/atoll)
#   ATOLL_E2E_CLUSTER      kind cluster name (default atoll-e2e)
#   ATOLL_E2E_KEEP=1       keep the cluster afterwards (kubeconfig: $ATOLL_CACHE/e2e/kubeconfig);
#                          a kept cluster is reused by the next run
#   ATOLL_E2E_VALUES       extra values files for the install, comma-separated (e.g. to break it)
#   ATOLL_E2E_RUN          go test -run pattern
#   ATOLL_E2E_TIMEOUT      go test -timeout (default 40m)
#   ATOLL_E2E_SOURCE       head (default): test the committed HEAD, exported under the cache;
#                          worktree: test the checkout as it is, uncommitted changes included
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cache=${ATOLL_CACHE:-$HOME/.cache/atoll}
export ATOLL_CACHE=$cache
work=$cache/e2e
cluster=${ATOLL_E2E_CLUSTER:-atoll-e2e}
registry=atoll.local
kubeconfig=$work/kubeconfig
mkdir -p "$work" "$cache/bin"

t0=$(date +%s)
step_start=0
step() { step_start=$(date +%s); echo "e2e: $*" >&2; }
step_done() { echo "e2e:   done in $(($(date +%s) - step_start))s" >&2; }

step "dockerd"
bash scripts/docker.sh ensure
step_done

kind=$cache/bin/kind
if ! "$kind" version 2>/dev/null | grep -q 'v0.27.0'; then
	step "installing kind v0.27.0"
	(cd /tmp && GOBIN=$cache/bin go install sigs.k8s.io/kind@v0.27.0)
	step_done
fi

step "kind node image"
node_image=$(bash scripts/kind-node.sh)
echo "e2e:   $node_image" >&2
step_done
kbin=$(dirname "$(ls "$cache"/kindnode/k8s-*/bin/kubectl | head -n1)")
kubectl=$kbin/kubectl

# The stack under test: the committed HEAD, exported to the cache (the checkout is shared and
# may be mid-edit), or the working tree as it is with ATOLL_E2E_SOURCE=worktree.
src=$root
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ "${ATOLL_E2E_SOURCE:-head}" != worktree ]; then
	src=$work/src
	rm -rf "$src"
	mkdir -p "$src"
	git archive HEAD | tar -x -C "$src"
else
	revision+="-dirty"
fi
version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$src"/charts/atoll/Chart.yaml)
step "bundle $version ($revision, from $src): go run ./cmd/atoll-images"
rm -rf "$work/bundle"
(cd "$src" && nice -n 10 go run ./cmd/atoll-images -module . -out "$work/images" -work "$work/build" \
	-version "$version" -revision "$revision" -chart charts/atoll -bundle "$work/atoll-bundle.tar" >"$work/images.txt")
(cd "$src" && go build -o "$work/atollctl" ./cmd/atollctl)
mkdir -p "$work/bundle"
tar -xf "$work/atoll-bundle.tar" -C "$work/bundle"
go run ./images/kindnode bundle -layout "$work/bundle/oci" -registry "$registry" -out "$work/bundle-images.tar"
# The suite's helpers: the fake push provider and the in-cluster client of the upgrade test.
mkdir -p "$work/helpers"
for h in fakepush loadclient; do
	CGO_ENABLED=0 go build -trimpath -o "$work/helpers/$h" "./e2e/$h"
	go run ./images/kindnode binary -bin "$work/helpers/$h" -ref "$registry/atoll-e2e/$h:e2e" -out "$work/helpers/$h.tar"
done
step_done

cleanup() {
	local rc=$?
	if [ "${ATOLL_E2E_KEEP:-}" = 1 ]; then
		echo "e2e: keeping cluster $cluster (KUBECONFIG=$kubeconfig)" >&2
	else
		"$kind" delete cluster --name "$cluster" >/dev/null 2>&1 || true
	fi
	echo "e2e: total $(($(date +%s) - t0))s, exit $rc" >&2
}
trap cleanup EXIT

node=$cluster-control-plane
if "$kind" get clusters 2>/dev/null | grep -qx "$cluster" &&
	[ "$(docker inspect -f '{{.Config.Image}}' "$node" 2>/dev/null)" = "$node_image" ] &&
	KUBECONFIG=$kubeconfig "$kubectl" get --raw /readyz >/dev/null 2>&1; then
	step "reusing cluster $cluster"
	step_done
else
	"$kind" delete cluster --name "$cluster" >/dev/null 2>&1 || true
	step "creating kind cluster $cluster"
	cat >"$work/kind.yaml" <<-EOF
		kind: Cluster
		apiVersion: kind.x-k8s.io/v1alpha4
		networking:
		  # the node image's bridge CNI config is the pod network (no kindnetd image)
		  disableDefaultCNI: true
		nodes:
		  - role: control-plane
	EOF
	"$kind" create cluster --name "$cluster" --image "$node_image" --config "$work/kind.yaml" \
		--kubeconfig "$kubeconfig" --wait 5m || {
		echo "e2e: kind create failed; node logs:" >&2
		docker exec "$node" journalctl --no-pager -n 80 -u kubelet -u containerd -u atoll-import-images 2>/dev/null >&2 || true
		exit 1
	}
	step_done
fi
export KUBECONFIG=$kubeconfig

step "loading the bundle's images into $cluster"
"$kind" load image-archive --name "$cluster" "$work/bundle-images.tar"
for h in "$work"/helpers/*.tar; do "$kind" load image-archive --name "$cluster" "$h"; done
step_done

# Datastore volumes: the node has no dynamic provisioner (kind's local-path image is not
# available), so PVCs bind to these hostPath PVs in kind's default class "standard".
step "hostPath volumes"
namespace=atoll-e2e
"$kubectl" delete namespace "$namespace" "$namespace-argocd" --ignore-not-found --wait=true --timeout=3m >/dev/null
"$kubectl" delete pv -l atoll-e2e=true --ignore-not-found --wait=true >/dev/null
docker exec "$node" rm -rf /var/local/atoll-e2e
for i in 1 2 3 4 5 6; do
	docker exec "$node" mkdir -p -m 0777 "/var/local/atoll-e2e/pv$i"
	cat <<-EOF
		apiVersion: v1
		kind: PersistentVolume
		metadata:
		  name: atoll-e2e-pv$i
		  labels: {atoll-e2e: "true"}
		spec:
		  capacity: {storage: 50Gi}
		  accessModes: [ReadWriteOnce]
		  persistentVolumeReclaimPolicy: Retain
		  storageClassName: standard
		  hostPath: {path: /var/local/atoll-e2e/pv$i, type: Directory}
		---
	EOF
done | "$kubectl" apply -f - >/dev/null
step_done

step "e2e suite"
values=$work/bundle/values-bundle.yaml
[ -z "${ATOLL_E2E_VALUES:-}" ] || values+=",$ATOLL_E2E_VALUES"
ATOLL_E2E=1 \
	ATOLL_E2E_KUBECONFIG=$kubeconfig \
	ATOLL_E2E_KUBECTL=$kubectl \
	ATOLL_E2E_CHART=$(ls "$work"/bundle/chart/atoll-*.tgz) \
	ATOLL_E2E_VALUES=$values \
	ATOLL_E2E_REGISTRY=$registry \
	ATOLL_E2E_NAMESPACE=$namespace \
	ATOLL_E2E_ATOLLCTL=$work/atollctl \
	go test ./e2e -count=1 -v -timeout "${ATOLL_E2E_TIMEOUT:-40m}" ${ATOLL_E2E_RUN:+-run "$ATOLL_E2E_RUN"}
step_done
