#!/usr/bin/env bash
# Builds CloudMart's seven images from the root Dockerfile, all :latest:
#
#   scripts/images.sh            # what `make images` runs
#   scripts/images.sh --list     # only print the image names, one a line
#
# gateway api-service auth-service order-service database-service
# notification-service cloudmart. The first target compiles the workspace
# (stage `builder`); the others reuse that stage from the layer cache. At the
# end it prints how long the build took and each image's size.
#
# It uses whatever engine answers (scripts/engine.sh env), and makes sure the
# Dockerfile's base images exist first (scripts/engine.sh bases: pulled, or
# local stand-ins where nothing can be pulled). On an engine started by
# scripts/engine.sh, containers have no route out, so the build runs with
# `--network host` for cargo to reach crates.io; elsewhere it is a plain
# `docker build`.
set -euo pipefail
cd "$(dirname "$0")/.."

die() {
  echo "scripts/images.sh: $*" >&2
  exit 1
}

images=(gateway api-service auth-service order-service database-service notification-service cloudmart)

if [ "${1:-}" = --list ]; then
  printf '%s\n' "${images[@]}"
  exit 0
fi

env_lines=$(scripts/engine.sh env) || die "no Docker engine answers (eval \"\$(scripts/engine.sh up)\" starts one)"
eval "$env_lines"
scripts/engine.sh bases

build_flags=()
if [ "${CLOUDMART_BUILD_NETWORK:-}" = host ]; then
  build_flags+=(--network host)
fi

log=$(mktemp "${TMPDIR:-/tmp}/cloudmart-images.XXXXXX")
trap 'rm -f "$log"' EXIT

build() {
  DOCKER_BUILDKIT=0 docker build "${build_flags[@]}" "$@" . >"$log" 2>&1
}

# Crates cargo compiled in the last build (the legacy builder wraps cargo's
# words in colour codes).
count_compiled() {
  { sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -o 'Compiling [^ ]*' || true; } | wc -l
}

# The compile, tagged so that its layers stay referenced: pruning dangling
# images (scripts/test-containers.sh on an engine of its own) then frees the
# builds of older manifests and keeps this one's cache.
start=$(date +%s)
echo "==> docker build --target builder -t cloudmart-builder:latest ." >&2
if ! build --target builder -t cloudmart-builder:latest; then
  tail -n 30 "$log" >&2
  die "compiling the workspace failed (the last lines of its build are above)"
fi
builder_crates=$(count_compiled)
compile_s=$(($(date +%s) - start))
echo "    ${compile_s} s, compiled $builder_crates crates" >&2

for image in "${images[@]}"; do
  echo "==> docker build --target $image -t $image:latest ." >&2
  if ! build --target "$image" -t "$image:latest"; then
    tail -n 30 "$log" >&2
    die "building $image failed (the last lines of its build are above)"
  fi
  # How much of the workspace this target compiled: a cache hit compiles nothing.
  compiled=$(count_compiled)
  if [ "$compiled" -gt 0 ]; then echo "    compiled $compiled crates" >&2; fi
done
elapsed=$(($(date +%s) - start))

echo
echo "built ${#images[@]} images in ${elapsed} s (compiling the workspace: ${compile_s} s, $builder_crates crates)"
filters=()
for image in "${images[@]}"; do
  filters+=(--filter "reference=$image:latest")
done
docker image ls --format 'table {{.Repository}}:{{.Tag}}\t{{.ID}}\t{{.Size}}' "${filters[@]}"
