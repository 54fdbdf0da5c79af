#!/usr/bin/env bash
# `make bench` density scenario: BenchmarkDensity (homeserver/bench) against a private
# PostgreSQL started by scripts/test.sh. It builds and starts cmd/atoll-homeserver as its own
# process, creates ATOLL_BENCH_TENANTS tenants (default 1000) over HTTP, runs a light send and
# /sync load and prints memory per tenant and latency percentiles. See docs/benchmarks.md.
#
#   scripts/bench-density.sh                        # the full run (9-15 minutes on 2 cores)
#   ATOLL_BENCH_TENANTS=50 scripts/bench-density.sh # a quick one (~3 minutes)
#
# Knobs (environment): ATOLL_BENCH_TENANTS (1000), ATOLL_BENCH_ACTIVE (50), ATOLL_BENCH_LOAD (60s),
# ATOLL_BENCH_IDLE_EVICT (30s), ATOLL_BENCH_WORKERS (8).
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash scripts/test.sh -run XXX -bench BenchmarkDensity -benchtime 1x ./homeserver/bench/ "$@"
