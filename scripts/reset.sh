#!/usr/bin/env bash
# Puts the `production` namespace back to a known state for the next group:
# deletes it (every pod, ConfigMap and MongoDB volume in it), waits until it
# is gone, then applies a manifest directory with kustomize.
#
#   scripts/reset.sh              # k8s-broken/: the incident, from the start
#   scripts/reset.sh k8s          # the healthy system
#   scripts/reset.sh <dir>        # any directory of manifests
#
# The observability namespace, if installed, is left alone. The images must
# already be in the cluster (scripts/build-and-import.sh).
set -euo pipefail

usage() {
  echo "usage: scripts/reset.sh [manifest-dir]   (default: k8s-broken; e.g. k8s for the healthy system)" >&2
  exit 2
}

[ "$#" -le 1 ] || usage
case "${1:-}" in -*) usage ;; esac

root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$root/k8s-broken}
[ -d "$dir" ] || dir=$root/$dir
ls "$dir"/*.yaml >/dev/null 2>&1 || { echo "scripts/reset.sh: no manifests (*.yaml) in '${1:-k8s-broken}'" >&2; usage; }

command -v kubectl >/dev/null 2>&1 || { echo "scripts/reset.sh: kubectl is not installed" >&2; exit 1; }
kubectl version --request-timeout=5s >/dev/null 2>&1 || { echo "scripts/reset.sh: cannot reach the cluster of kubectl context '$(kubectl config current-context 2>/dev/null || echo none)'" >&2; exit 1; }

echo "==> deleting namespace production"
kubectl delete namespace production --ignore-not-found --wait=true --timeout=180s

echo "==> applying $dir"
kubectl apply -f "$dir"

echo
echo "watch it come up with: kubectl get pods -n production --watch"
