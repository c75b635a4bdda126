# wayback — see README.md. Every target works on a fresh machine with Go and
# PostgreSQL 15 installed (.ci/run installs PostgreSQL when it is missing).
GO ?= go

.PHONY: build demo bench bench-quick bench-shipping bench-rpo bench-takeout test test-long test-short vet fmt clean

build:
	$(GO) build -o bin/wayback ./cmd/wayback

# A throwaway Postgres, the agent on two local stores, an accident and its
# repair. Cleans up after itself.
demo: build
	$(GO) run ./cmd/wayback-demo -wayback bin/wayback

# wayback next to pg_recvlogical, pg_dump, pg_restore and a native
# subscription on the same data in the same run (docs/performance.md), then
# the RPO at flush_interval 250ms. SIZE sets the source database size,
# TXNS the pgbench backlog: make bench SIZE=4GB TXNS=200000
SIZE ?= 1GB
TXNS ?= 100000
BENCH_FLAGS ?=
bench: build
	$(GO) run ./cmd/wayback-bench run -wayback bin/wayback -size $(SIZE) -txns $(TXNS) $(BENCH_FLAGS)
	$(GO) run ./cmd/wayback-bench rpo -duration 20s -flush-interval 250ms

# The same comparison on a small database, in a couple of minutes.
bench-quick: build
	$(GO) run ./cmd/wayback-bench run -wayback bin/wayback -size 100MB -txns 20000 $(BENCH_FLAGS)

# Shipping alone (agent vs pg_recvlogical draining the same backlog), three
# rounds on their own slots, alternating which drains first.
bench-shipping: build
	$(GO) run ./cmd/wayback-bench run -wayback bin/wayback -size 50MB -txns $(TXNS) -only shipping -rounds 3 $(BENCH_FLAGS)

# Commit-to-durable latency (RPO) to an S3 and a GCS server while pgbench
# writes: make bench-rpo RPO_FLAGS="-duration 60s -scale 20"
RPO_FLAGS ?=
bench-rpo:
	$(GO) run ./cmd/wayback-bench rpo $(RPO_FLAGS)

# Peak memory of wayback export on a large table (streams COPY into the zip):
# make bench-takeout TAKEOUT_MB=200
TAKEOUT_MB ?= 200
bench-takeout:
	WAYBACK_TAKEOUT_MB=$(TAKEOUT_MB) $(GO) test -tags takeoutbench -timeout 30m -count=1 ./e2e -run 'TestExportMemory' -v

# Static checks, then every test against real PostgreSQL 15, with the race
# detector.
test: vet
	$(GO) test -race -timeout 25m ./...

# The randomized differential test over many seeds (make test runs three).
# SEEDS is a list (1,5,9), a range (1-50) or a count (50 = seeds 1-50):
# make test-long SEEDS=1-50
SEEDS ?= 1-20
test-long: vet
	WAYBACK_SEEDS=$(SEEDS) $(GO) test -timeout 60m -count=1 ./e2e -run 'TestDifferential' -v

test-short: vet
	$(GO) test -timeout 10m ./wal/... ./config/... ./store/... ./pitr/...

# Container images for restore drills, built without a registry (see
# README, "Restore drills in CI"): PostgreSQL 15 from Debian packages
# (debootstrap; skipped when the image exists, REBUILD=1 forces it), the
# wayback sidecar from ./Dockerfile's "local" target on that Debian base,
# and the in-memory S3/GCS servers FROM scratch. Each build is timed.
POSTGRES_IMAGE ?= wayback-postgres:15-local
WAYBACK_IMAGE ?= wayback:local
TESTSTORES_IMAGE ?= wayback-teststores:local
.PHONY: images image-postgres image-wayback image-teststores test-containers
images: image-postgres image-wayback image-teststores

image-postgres:
	@start=$$(date +%s); docker/postgres/build.sh $(POSTGRES_IMAGE); echo "image-postgres: $$(( $$(date +%s) - start )) s"

image-wayback: image-postgres
	@start=$$(date +%s); \
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o bin/docker/wayback ./cmd/wayback && \
	docker build -q --target local --build-arg RUNTIME_BASE=$(firstword $(subst :, ,$(POSTGRES_IMAGE)))-rootfs:bookworm -t $(WAYBACK_IMAGE) . && \
	echo "image-wayback: $$(( $$(date +%s) - start )) s"

image-teststores:
	@start=$$(date +%s); \
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o bin/docker/teststores/wayback-teststores ./cmd/wayback-teststores && \
	docker build -q -f docker/teststores/Dockerfile -t $(TESTSTORES_IMAGE) bin/docker/teststores && \
	echo "image-teststores: $$(( $$(date +%s) - start )) s"

# The container-mode restore-drill suite (needs Docker and make images).
# Images come from the variables above; nothing is pulled, and
# testcontainers' reaper (an image from a registry) is off: the stack
# removes its containers itself. TESTENV_NETWORK=host because on these
# machines the test process cannot reach Docker's published ports (the
# engine's port proxy gets "connection refused" from container addresses);
# on an ordinary machine or CI runner TESTENV_NETWORK=bridge works too.
TESTENV_NETWORK ?= host
test-containers: images
	WAYBACK_TESTENV=containers WAYBACK_TESTENV_NETWORK=$(TESTENV_NETWORK) \
	WAYBACK_POSTGRES_IMAGE=$(POSTGRES_IMAGE) WAYBACK_IMAGE=$(WAYBACK_IMAGE) \
	WAYBACK_TESTSTORES_IMAGE=$(TESTSTORES_IMAGE) TESTCONTAINERS_RYUK_DISABLED=true \
	$(GO) test -tags containers -count=1 -timeout 20m -v -run 'TestStack|TestCIRestoreDrill' ./testenv/stack/ ./examples/

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

clean:
	rm -rf bin
