#!/usr/bin/env bash
# How long CloudMart's images take to build, as a trainee's laptop builds
# them from the root Dockerfile:
#
#   scripts/bench-images.sh                    warm: after a one-line source change
#   BENCH_IMAGES=cold scripts/bench-images.sh  also cold: every layer rebuilt (--no-cache)
#
# The warm build must reuse the dependency layer: it prints how many crates
# it compiled and which of them are not the workspace's own (there should be
# none). The builds run on a copy of the build context in a temp directory,
# under throwaway tags, so the checkout and the real images are untouched.
# Needs an engine (scripts/engine.sh up).
set -euo pipefail
cd "$(dirname "$0")/.."

die() {
  echo "scripts/bench-images.sh: $*" >&2
  exit 1
}

env_lines=$(scripts/engine.sh env) || die "no Docker engine answers (eval \"\$(scripts/engine.sh up)\" starts one)"
eval "$env_lines"
scripts/engine.sh bases
build_flags=()
[ "${CLOUDMART_BUILD_NETWORK:-}" = host ] && build_flags+=(--network host)

mapfile -t images < <(scripts/images.sh --list)
workspace=$(sed -n 's/^name = "\(cloudmart[^"]*\)"$/\1/p' crates/*/Cargo.toml | sort -u)

work=$(mktemp -d "${TMPDIR:-/tmp}/cloudmart-bench-images.XXXXXX")
tags=()
cleanup() {
  if [ "${#tags[@]}" -gt 0 ]; then
    docker image rm "${tags[@]}" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# The build context, as .dockerignore lets it through.
ctx=$work/ctx
mkdir -p "$ctx/docs/instructor"
cp Dockerfile .dockerignore Cargo.toml Cargo.lock "$ctx/"
cp docs/instructor/faults.yaml "$ctx/docs/instructor/"
tar -C . --exclude='crates/*/target' -cf - crates | tar -C "$ctx" -xf -

# Builds every target from $ctx under throwaway tags; prints seconds, and
# leaves the compile's log in $work/$1.log.
build_all() {
  local label=$1; shift
  local start=$SECONDS
  : >"$work/$label.log"
  for image in "${images[@]}"; do
    local tag="cloudmart-bench/$image:$label"
    DOCKER_BUILDKIT=0 docker build "${build_flags[@]}" "$@" --target "$image" -t "$tag" "$ctx" \
      >>"$work/$label.log" 2>&1 || { tail -n 20 "$work/$label.log" >&2; die "$label build of $image failed"; }
    tags+=("$tag")
    # Only the first target builds; the others reuse its layers.
    shift $#
  done
  echo $((SECONDS - start))
}

compiled() {
  # Legacy-builder output carries colour codes around cargo's words.
  sed 's/\x1b\[[0-9;]*m//g' "$work/$1.log" | sed -n 's/^ *Compiling \([^ ]*\) .*/\1/p'
}

echo "image build times ($(nproc) cores, docker $(docker version --format '{{.Server.Version}}'), all ${#images[@]} targets):"
if [ "${BENCH_IMAGES:-}" = cold ]; then
  cold=$(build_all cold --no-cache)
  echo "  cold (--no-cache, crates downloaded): ${cold} s, $(compiled cold | wc -l) crates compiled"
fi
base=$(build_all base)
echo "  unchanged sources (layer cache):       ${base} s, $(compiled base | wc -l) crates compiled"

# One line changed in one service.
echo "// bench-images: a one-line change at $(date +%s)" >>"$ctx/crates/gateway/src/lib.rs"
warm=$(build_all warm)
all=$(compiled warm | sort -u)
ours=$(comm -12 <(echo "$all") <(echo "$workspace") | wc -l)
deps=$(comm -23 <(echo "$all") <(echo "$workspace"))
echo "  after a one-line change in gateway:    ${warm} s, $(echo "$all" | grep -c . || true) crates compiled ($ours of the workspace's own; dependencies: ${deps:-none})"
[ -z "$deps" ] || die "the warm build recompiled dependencies: the dependency layer was not reused"

echo
echo "image sizes:"
filters=()
for image in "${images[@]}"; do filters+=(--filter "reference=$image:latest"); done
docker image ls --format '  {{.Repository}}:{{.Tag}}\t{{.Size}}' "${filters[@]}"
