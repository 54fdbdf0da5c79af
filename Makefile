# Atoll. `make run` starts a shard with two demo tenants; `make test` runs every test against
# real PostgreSQL, Redis and MinIO that the scripts install and start.
SHELL := /bin/bash
GO ?= go
CACHE ?= $(HOME)/.cache/atoll
export ATOLL_CACHE := $(CACHE)

.PHONY: all build run test test-short lint bench images bundle chart chart-test deps interop e2e complement

all: build

deps:
	bash scripts/deps.sh

build:
	$(GO) build ./...

run:
	bash scripts/run.sh

# Every package's tests with services; CI calls this through .ci/run.
test:
	bash scripts/test.sh ./...

# Unit tests only: packages that need services skip.
test-short:
	$(GO) test -short ./...

lint:
	$(GO) vet ./...
	@test -x $(CACHE)/bin/staticcheck || GOBIN=$(CACHE)/bin $(GO) install honnef.co/go/tools/cmd/staticcheck@v0.8.2
	$(CACHE)/bin/staticcheck ./...

# Benchmarks (ratios against a baseline measured in the same run).
bench:
	bash scripts/test.sh -run XXX -bench . -benchtime 2s ./pushgateway/ ./sidecars/...
	bash scripts/bench-density.sh

VERSION ?= 0.1.0
REVISION := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)

images:
	bash scripts/minio.sh build
	$(GO) run ./cmd/atoll-images -out out/images -version $(VERSION) -revision $(REVISION)

bundle:
	bash scripts/minio.sh build
	$(GO) run ./cmd/atoll-images -out out/images -version $(VERSION) -revision $(REVISION) -bundle out/atoll-bundle.tar

# Regenerates the chart's values.yaml and values.schema.json from charts/atoll/source/.
chart:
	$(GO) run ./cmd/atoll-chartgen

# Part of `make test`; this runs the chart and image tests alone.
chart-test:
	$(GO) test ./charts/... ./images/... ./internal/secretgen ./cmd/atollctl/

# Federation with Dendrite v0.15.2 built from the Go module proxy (docs/interop.md).
interop:
	bash scripts/interop.sh

# The complete stack on an air-gapped kind cluster (e2e/README.md); heavy, not part of `make test`.
e2e:
	bash scripts/e2e.sh

# Complement against a locally built image; writes e2e/complement/summary.md (docs/complement.md).
complement:
	bash scripts/complement.sh
