# wayback sidecar image.
#
# On a normal machine (a registry reachable) the default target builds from
# source in a Go stage and runs on Debian bookworm-slim with
# postgresql-client-15 (the agent's base backups run pg_dump 15):
#
#   docker build -t wayback .
#
# The binary is static (CGO_ENABLED=0) and the image runs as the non-root
# user 65532. On a machine with no registry, `make images` builds the
# "local" target instead: the same layout on a base it made itself from
# Debian packages (docker/postgres/build.sh), with the binary built on the
# host into bin/docker/. Stages are skipped unless the target needs them,
# so each path only needs its own inputs ("local" is first so that Docker's
# classic builder, which builds every stage up to the target, needs nothing
# from a registry either).

ARG RUNTIME_BASE=debian:bookworm-slim
ARG GO_IMAGE=golang:1.26-bookworm

# --- local: make images (no registry) ---------------------------------------
FROM ${RUNTIME_BASE} AS local
COPY bin/docker/wayback /usr/local/bin/wayback
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["/usr/local/bin/wayback"]
CMD ["agent"]

# --- build: static binary from source ----------------------------------------
FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/wayback ./cmd/wayback

# --- runtime (default) ---------------------------------------------------------
FROM ${RUNTIME_BASE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client-15 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/wayback /usr/local/bin/wayback
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["/usr/local/bin/wayback"]
CMD ["agent"]
