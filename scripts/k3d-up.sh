#!/usr/bin/env bash
# Creates the workshop's k3d cluster: one k3s node, with host port 8080 sent
# to the cluster's load balancer port 80, where k3s's Traefik serves the
# Ingress in k8s/12-ingress.yaml. An existing cluster of that name is left
# as it is.
#
#   scripts/k3d-up.sh [name]        # name defaults to brokenprod
#
# Then: scripts/build-and-import.sh <name>, and kubectl apply -f k8s-broken/
# (or k8s/ for the healthy system).
set -euo pipefail

usage() {
  echo "usage: scripts/k3d-up.sh [cluster-name]   (default: brokenprod)" >&2
  exit 2
}

[ "$#" -le 1 ] || usage
case "${1:-}" in -*) usage ;; esac
cluster=${1:-brokenprod}

command -v k3d >/dev/null 2>&1 || { echo "scripts/k3d-up.sh: k3d is not installed (https://k3d.io)" >&2; exit 1; }
command -v docker >/dev/null 2>&1 || { echo "scripts/k3d-up.sh: docker is not installed; k3d runs its nodes as Docker containers" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "scripts/k3d-up.sh: cannot reach the Docker daemon (is Docker running?)" >&2; exit 1; }

if k3d cluster get "$cluster" >/dev/null 2>&1; then
  echo "k3d cluster '$cluster' already exists; delete it first with: k3d cluster delete $cluster"
  exit 0
fi

k3d cluster create "$cluster" -p "8080:80@loadbalancer"

echo
echo "cluster '$cluster' is up (kubectl context k3d-$cluster). Next:"
echo "  scripts/build-and-import.sh $cluster"
echo "  kubectl apply -f k8s-broken/      # or k8s/ for the healthy system"
