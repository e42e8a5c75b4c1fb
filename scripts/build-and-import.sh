#!/usr/bin/env bash
# Builds every CloudMart image from the root Dockerfile and imports it into a
# k3d cluster, so pods start from the local images (imagePullPolicy:
# IfNotPresent) without a registry.
#
#   scripts/build-and-import.sh <cluster>
#
# Images, all tagged latest: gateway api-service auth-service order-service
# database-service notification-service cloudmart. The first build compiles
# the workspace; the others reuse it from Docker's layer cache.
set -euo pipefail

usage() {
  echo "usage: scripts/build-and-import.sh <k3d-cluster-name>   (e.g. brokenprod)" >&2
  exit 2
}

die() {
  echo "scripts/build-and-import.sh: $*" >&2
  exit 1
}

[ "$#" -eq 1 ] || usage
case "$1" in -*|"") usage ;; esac
cluster=$1

root=$(cd "$(dirname "$0")/.." && pwd)

command -v docker >/dev/null 2>&1 || die "docker is not installed"
command -v k3d >/dev/null 2>&1 || die "k3d is not installed (https://k3d.io)"
docker info >/dev/null 2>&1 || die "cannot reach the Docker daemon (is Docker running?)"
k3d cluster get "$cluster" >/dev/null 2>&1 || die "k3d cluster '$cluster' does not exist; create it with: scripts/k3d-up.sh $cluster"

# The same seven images `make images` builds, from the same script.
"$root/scripts/images.sh"
mapfile -t images < <("$root/scripts/images.sh" --list)

refs=()
for image in "${images[@]}"; do
  refs+=("$image:latest")
done
echo "==> k3d image import -c $cluster ${refs[*]}"
k3d image import -c "$cluster" "${refs[@]}"

filters=()
for ref in "${refs[@]}"; do
  filters+=(--filter "reference=$ref")
done
echo
echo "built and imported into '$cluster':"
docker image ls --format 'table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.Size}}' "${filters[@]}"
