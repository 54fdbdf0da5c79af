// Package interop checks that an Atoll tenant federates with a homeserver nobody here wrote:
// Dendrite v0.15.2. Users of both servers join each other's rooms and exchange messages, and
// the outcome of every step is written to RESULTS.md.
//
// Run it with `make interop` (scripts/interop.sh), which builds Dendrite from the Go module
// proxy, issues TLS certificates from a private CA, starts PostgreSQL, Redis, Dendrite and an
// atoll-homeserver shard on loopback, creates the tenant and then runs `go test ./e2e/interop`.
// Without ATOLL_INTEROP=1 every test skips in TestMain. The script passes:
//
//   - ATOLL_INTEROP_DENDRITE_URL, ATOLL_INTEROP_DENDRITE_SERVER: Dendrite's client API (plain
//     HTTP) and server name (localhost:<its TLS federation port>);
//   - ATOLL_INTEROP_ATOLL_URL, ATOLL_INTEROP_ATOLL_SERVER: the shard's client listener and the
//     tenant's server name (localhost:<the shard's TLS federation port>), sent as Host;
//   - ATOLL_INTEROP_CA: the CA both servers' certificates chain to;
//   - ATOLL_INTEROP_RESULTS: where to write the results (Markdown), with
//     ATOLL_INTEROP_DENDRITE_VERSION and ATOLL_INTEROP_ATOLL_REVISION for its heading.
package interop
