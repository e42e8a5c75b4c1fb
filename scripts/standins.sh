#!/usr/bin/env bash
# Builds the third-party images of docker-compose.offline.yml, for machines
# that cannot pull them (see docker/standins/):
#
#   scripts/standins.sh
#
# First it fetches what the builds take from the host: nx-27017's wheels
# from PyPI (for the image's Python, whatever the host runs) and the OTLP
# sink binary (crates/testkit/examples/otlp-sink.rs). Then it runs
# `docker-compose build` for mongodb, rabbitmq, redis, prometheus and
# otel-collector, and prints their sizes.
set -euo pipefail
cd "$(dirname "$0")/.."

die() {
  echo "scripts/standins.sh: $*" >&2
  exit 1
}

env_lines=$(scripts/engine.sh env) || die "no Docker engine answers (eval \"\$(scripts/engine.sh up)\" starts one)"
eval "$env_lines"
scripts/engine.sh bases

wheels=docker/standins/mongodb/wheels
nx_version=$(sed -n 's/^readonly NX_VERSION="\(.*\)"$/\1/p' scripts/mongo-test-server.sh)
[ -n "$nx_version" ] || die "cannot read NX_VERSION from scripts/mongo-test-server.sh"
if ! ls "$wheels"/nx_27017-"$nx_version"-*.whl >/dev/null 2>&1; then
  rm -rf "$wheels"
  # Debian bookworm's Python is CPython 3.11.
  python3 -m pip download -q --disable-pip-version-check --only-binary=:all: \
    --python-version 3.11 --implementation cp --abi cp311 --abi none \
    --platform "manylinux2014_$(uname -m)" --platform any \
    -d "$wheels" "nx-27017==$nx_version" \
    || die "cannot download nx-27017==$nx_version and its dependencies from PyPI"
fi
cargo build --quiet -p cloudmart-testkit --example otlp-sink
install -m 755 target/debug/examples/otlp-sink docker/standins/otlp-sink/otlp-sink

log=$(mktemp "${TMPDIR:-/tmp}/cloudmart-standins.XXXXXX")
trap 'rm -f "$log"' EXIT
if ! docker-compose -f docker-compose.yml -f docker-compose.offline.yml \
  build -q mongodb rabbitmq redis prometheus otel-collector >"$log" 2>&1; then
  tail -n 30 "$log" >&2
  die "building the stand-ins failed (the last lines of the build are above)"
fi
docker image ls --filter 'reference=cloudmart-standin/*' --format 'table {{.Repository}}:{{.Tag}}\t{{.Size}}'
