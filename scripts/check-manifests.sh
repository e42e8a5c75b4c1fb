#!/usr/bin/env bash
# Static checks of the deployment files; needs no cluster and no Docker
# engine. One line per check, then a non-zero exit if any failed:
#
#   render    kubectl kustomize renders k8s/, k8s-broken/ (each file as a resource) and k8s/observability/
#   schema    every rendered object is valid for Kubernetes $K8S_VERSION
#             (kubernetes-validate --strict: unknown fields are errors)
#   copies    k8s/observability/config/ matches the compose files in
#             observability/ it was copied from
#   compose   docker-compose.yml parses with a real compose implementation
#             (Debian's docker-compose; also `docker compose` v2 when present)
#   shell     shellcheck scripts/*.sh
#
#   scripts/check-manifests.sh
#
# kubernetes-validate is installed into .venv/tools on first use; as root,
# docker-compose, shellcheck and python3-venv are installed with apt-get
# when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$#" -eq 0 ] || { echo "usage: scripts/check-manifests.sh" >&2; exit 2; }

# k3d's default k3s is 1.31; kubernetes-validate ships schemas per version.
KUBERNETES_VALIDATE_VERSION=1.37.0
K8S_VERSION=1.31.0
TOOLS=.venv/tools

work=$(mktemp -d "${TMPDIR:-/tmp}/check-manifests.XXXXXX")
trap 'rm -rf "$work"' EXIT

failures=0
ok() { printf 'ok    %-8s %s\n' "$1" "$2"; }
skip() { printf 'skip  %-8s %s\n' "$1" "$2"; }
fail() {
  printf 'FAIL  %-8s %s\n' "$1" "$2"
  if [ -s "$work/out" ]; then sed 's/^/        /' "$work/out"; fi
  failures=$((failures + 1))
}
is_root() { [ "$(id -u)" = 0 ]; }
apt_install() {
  is_root || return 1
  command -v apt-get >/dev/null 2>&1 || return 1
  apt-get install -y -qq "$@" >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "$@" >/dev/null 2>&1; }
}

# --- render ---------------------------------------------------------------
trees=(k8s k8s-broken k8s/observability)
rendered=()
if ! command -v kubectl >/dev/null 2>&1; then
  : > "$work/out"
  fail render "kubectl is not installed"
else
  for tree in "${trees[@]}"; do
    file="$work/$(echo "$tree" | tr '/' '_').yaml"
    src=$tree
    if [ ! -f "$tree/kustomization.yaml" ]; then
      # k8s/ and k8s-broken/ are applied with `kubectl apply -f`, as in the
      # workshop, so they carry no kustomization; render a copy with one.
      src="$work/tree-$(echo "$tree" | tr '/' '_')"
      mkdir -p "$src"
      cp "$tree"/*.yaml "$src"/
      list=$(for f in "$src"/*.yaml; do echo "  - $(basename "$f")"; done)
      printf 'resources:\n%s\n' "$list" > "$src/kustomization.yaml"
    fi
    if kubectl kustomize "$src" > "$file" 2> "$work/out"; then
      objects=$(grep -c '^kind:' "$file" || true)
      ok render "$tree: $objects objects"
      rendered+=("$tree=$file")
    else
      fail render "$tree: kubectl kustomize failed"
    fi
  done
fi

# --- schema ---------------------------------------------------------------
validator="$TOOLS/bin/kubernetes-validate"
install_validator() {
  if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    apt_install python3-venv || return 1
  fi
  [ -x "$TOOLS/bin/pip" ] || python3 -m venv "$TOOLS" || return 1
  "$TOOLS/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
}
installed_version() {
  "$TOOLS/bin/pip" show kubernetes-validate 2>/dev/null | sed -n 's/^Version: //p'
}
if [ ! -x "$validator" ] || [ "$(installed_version)" != "$KUBERNETES_VALIDATE_VERSION" ]; then
  install_validator > "$work/out" 2>&1 || true
fi
if [ ! -x "$validator" ]; then
  fail schema "could not install kubernetes-validate==$KUBERNETES_VALIDATE_VERSION into $TOOLS"
else
  for entry in "${rendered[@]}"; do
    tree=${entry%%=*}
    file=${entry#*=}
    if "$validator" --strict --quiet -k "$K8S_VERSION" "$file" > "$work/out" 2>&1; then
      ok schema "$tree: valid for Kubernetes $K8S_VERSION (strict)"
    else
      fail schema "$tree: kubernetes-validate found errors"
    fi
  done
fi

# --- copies ---------------------------------------------------------------
: > "$work/out"
copies=(
  "observability/otel-collector.yaml k8s/observability/config/otel-collector.yaml"
  "observability/grafana/provisioning/datasources/datasources.yaml k8s/observability/config/grafana-datasources.yaml"
  "observability/grafana/provisioning/dashboards/dashboards.yaml k8s/observability/config/grafana-dashboards.yaml"
  "observability/grafana/dashboards/cloudmart.json k8s/observability/config/cloudmart.json"
)
stale=0
for pair in "${copies[@]}"; do
  read -r source copy <<< "$pair"
  if ! cmp -s "$source" "$copy"; then
    echo "$copy differs from $source; refresh it with: cp $source $copy" >> "$work/out"
    stale=$((stale + 1))
  fi
done
if [ "$stale" -eq 0 ]; then
  ok copies "k8s/observability/config/ matches observability/ (${#copies[@]} files)"
else
  fail copies "$stale of ${#copies[@]} files in k8s/observability/config/ are stale"
fi

# --- compose --------------------------------------------------------------
: > "$work/out"
if ! command -v docker-compose >/dev/null 2>&1; then
  apt_install docker-compose > "$work/out" 2>&1 || true
fi
if command -v docker-compose >/dev/null 2>&1; then
  version=$(docker-compose version --short 2>/dev/null || echo unknown)
  if docker-compose -f docker-compose.yml config -q > "$work/out" 2>&1 \
    && docker-compose -f docker-compose.yml --profile load config -q >> "$work/out" 2>&1 \
    && docker-compose -f docker-compose.yml -f docker-compose.offline.yml config -q >> "$work/out" 2>&1; then
    ok compose "docker-compose.yml parses with docker-compose $version (with and without --profile load, and with docker-compose.offline.yml)"
  else
    fail compose "docker-compose $version rejects docker-compose.yml"
  fi
else
  echo "install it with: apt-get install docker-compose" > "$work/out"
  fail compose "docker-compose is not installed and could not be installed"
fi
: > "$work/out"
if docker compose version >/dev/null 2>&1; then
  version=$(docker compose version --short 2>/dev/null || echo unknown)
  if docker compose -f docker-compose.yml --profile load config -q > "$work/out" 2>&1; then
    ok compose "docker-compose.yml parses with docker compose $version"
  else
    fail compose "docker compose $version rejects docker-compose.yml"
  fi
else
  skip compose "docker compose (v2) not available here"
fi

# --- shell ----------------------------------------------------------------
: > "$work/out"
if ! command -v shellcheck >/dev/null 2>&1; then
  apt_install shellcheck > "$work/out" 2>&1 || true
fi
if command -v shellcheck >/dev/null 2>&1; then
  if shellcheck -x scripts/*.sh > "$work/out" 2>&1; then
    ok shell "shellcheck scripts/*.sh ($(find scripts -maxdepth 1 -name '*.sh' | wc -l) files)"
  else
    fail shell "shellcheck found problems in scripts/*.sh"
  fi
else
  skip shell "shellcheck is not installed"
fi

echo
if [ "$failures" -gt 0 ]; then
  echo "check-manifests: $failures check(s) failed"
  exit 1
fi
echo "check-manifests: all checks passed"
