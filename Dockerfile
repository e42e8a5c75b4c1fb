# CloudMart images: the workspace is compiled once, and every image is a
# small stage that copies one binary out of that build.
#
#   docker build --target gateway -t gateway:latest .
#
# Targets (image name = binary name = target):
#   gateway  api-service  auth-service  order-service  database-service
#   notification-service  cloudmart (the CLI: load generator and smoke test)
#
# scripts/build-and-import.sh builds all seven; docker compose builds them
# through `build.target`. Building the second target reuses the `builder`
# stage from the layer cache, so only the first one compiles anything.
#
# Dependency caching: plain layers, no BuildKit-only syntax, so it works the
# same with BuildKit, the legacy builder and podman. The `skeleton` stage
# keeps only Cargo.toml, Cargo.lock and every crate's manifest, with empty
# lib.rs/main.rs stubs; `builder` compiles the dependencies against that
# skeleton in its own layer, which stays cached until a manifest or the
# lockfile changes. Only then are the real sources copied in and the
# workspace crates compiled. (The skeleton is rebuilt whenever a source
# changes, but its output is byte-identical, so the COPY that follows is a
# cache hit.) BuildKit cache mounts would need `# syntax` and BuildKit;
# cargo-chef would need a download that an offline build cannot make.
#
# Architectures: only official multi-arch images and crates.io; nothing is
# downloaded per architecture, so the same file builds on amd64 and arm64.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS toolchain
WORKDIR /src
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0

# Manifests plus empty stubs: everything cargo needs to resolve and build
# the dependency graph, and nothing that changes when code changes.
FROM toolchain AS skeleton
COPY Cargo.toml Cargo.lock ./
COPY crates crates
RUN set -eu; \
    mkdir -p /skeleton; \
    cp Cargo.toml Cargo.lock /skeleton/; \
    for dir in crates/*/; do \
      dir=${dir%/}; \
      mkdir -p "/skeleton/$dir/src"; \
      cp "$dir/Cargo.toml" "/skeleton/$dir/Cargo.toml"; \
      if [ -f "$dir/src/lib.rs" ]; then : > "/skeleton/$dir/src/lib.rs"; fi; \
      if [ -f "$dir/src/main.rs" ]; then echo 'fn main() {}' > "/skeleton/$dir/src/main.rs"; fi; \
      if [ -d "$dir/src/bin" ]; then \
        mkdir -p "/skeleton/$dir/src/bin"; \
        for bin in "$dir"/src/bin/*.rs; do echo 'fn main() {}' > "/skeleton/$bin"; done; \
      fi; \
    done

FROM toolchain AS builder
# 1. Dependencies only (cached until a manifest or Cargo.lock changes).
#    Profile `image` (Cargo.toml): release without LTO, so a laptop
#    builds the images in about half the time (11 minutes instead of 22
#    on 2 cores, measured cold).
COPY --from=skeleton /skeleton/ ./
RUN cargo build --profile image --locked --workspace --bins
# 2. The workspace itself. COPY keeps the sources' original mtimes, which
#    can be older than the stub build above; touching them makes cargo
#    rebuild every workspace crate instead of keeping the stubs.
COPY crates crates
# The CLI embeds the fault catalogue (cloudmart scenario, cloudmart doctor).
COPY docs/instructor/faults.yaml docs/instructor/faults.yaml
RUN find crates -name '*.rs' -exec touch {} + \
 && cargo build --profile image --locked --workspace --bins \
 && mkdir -p /out \
 && for bin in gateway api-service auth-service order-service database-service notification-service cloudmart; do \
      cp "target/image/$bin" /out/; \
    done

# Shared runtime base. debian:bookworm-slim rather than distroless: the
# workshop's hints run `kubectl exec <pod> -- env` and DNS checks such as
# `getent hosts database-service`, which need coreutils and libc-bin.
# The binaries need only glibc and libgcc (no OpenSSL: no TLS in-cluster).
FROM debian:bookworm-slim AS runtime
RUN groupadd --gid 10001 cloudmart \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin cloudmart
WORKDIR /tmp
USER 10001:10001
# JSON log lines even under `docker run -t` or `kubectl run -it`, where
# stdout is a terminal and the services would otherwise write text.
ENV LOG_FORMAT=json

FROM runtime AS gateway
COPY --from=builder /out/gateway /usr/local/bin/gateway
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/gateway", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/gateway"]

FROM runtime AS api-service
COPY --from=builder /out/api-service /usr/local/bin/api-service
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/api-service", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/api-service"]

FROM runtime AS auth-service
COPY --from=builder /out/auth-service /usr/local/bin/auth-service
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/auth-service", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/auth-service"]

FROM runtime AS order-service
COPY --from=builder /out/order-service /usr/local/bin/order-service
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/order-service", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/order-service"]

# Without MONGODB_URI the embedded store writes DATA_DIR/<DB_NAME>.jsonl;
# /var/lib/cloudmart is the one directory the unprivileged user owns.
FROM runtime AS database-service
USER root
RUN install -d -o 10001 -g 10001 /var/lib/cloudmart
USER 10001:10001
ENV DATA_DIR=/var/lib/cloudmart
COPY --from=builder /out/database-service /usr/local/bin/database-service
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/database-service", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/database-service"]

FROM runtime AS notification-service
COPY --from=builder /out/notification-service /usr/local/bin/notification-service
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/notification-service", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/notification-service"]

# The CLI is a client (load generator, smoke test): it serves nothing, so
# there is nothing for a health check to ask.
FROM runtime AS cloudmart
COPY --from=builder /out/cloudmart /usr/local/bin/cloudmart
HEALTHCHECK NONE
ENTRYPOINT ["/usr/local/bin/cloudmart"]
CMD ["--help"]
