// Package e2e tests the complete Atoll stack, installed by its umbrella chart with in-cluster
// PostgreSQL, Redis and MinIO, on a real Kubernetes cluster (kind, air-gapped).
//
// Run it with `make e2e` (scripts/e2e.sh), which prepares everything below and then runs
// `go test ./e2e`. Without ATOLL_E2E=1 every test skips in TestMain, so `go test ./...` stays
// quick and needs no cluster.
//
// Prerequisites, all provided by scripts/e2e.sh (see e2e/README.md for timings and caches):
//
//   - a cluster whose kubeconfig is ATOLL_E2E_KUBECONFIG, with the bundle's images loaded under
//     the registry name ATOLL_E2E_REGISTRY (nothing can be pulled) and a default StorageClass
//     that binds the datastores' PVCs;
//   - ATOLL_E2E_CHART, the packaged chart (bundle/chart/atoll-<version>.tgz) or its directory,
//     and ATOLL_E2E_VALUES, comma-separated values files (bundle/values-bundle.yaml pins every
//     image by digest);
//   - ATOLL_E2E_KUBECTL, a kubectl for port-forwards (default: kubectl on PATH);
//   - ATOLL_E2E_ATOLLCTL, the atollctl to create tenants with (default: built from this checkout);
//   - ATOLL_E2E_NAMESPACE, the namespace to install into (default atoll-e2e); it is deleted
//     first if it exists.
//
// TestMain installs the release with the Helm SDK and waits until every pod is ready. It
// fails fast, printing the failing pods' state, events and logs, when a pod cannot start (an
// image that is not there, a crash loop, a failed hook Job) or when the stack is not ready
// within ATOLL_E2E_READY_TIMEOUT (default 10m). The tests then talk to the stack only through
// port-forwards to loopback: the shard admin API through atollctl (built from this checkout),
// the client API with tenants chosen by Host header, as an ingress would.
package e2e
