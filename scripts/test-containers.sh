#!/usr/bin/env bash
# `make test-containers`: CloudMart as its users run it, in containers.
#
#   1. an engine (scripts/engine.sh up: the machine's own, or one started here)
#   2. the seven images from the root Dockerfile (scripts/images.sh)
#   3. the third-party stand-ins of docker-compose.offline.yml
#      (scripts/standins.sh): MongoDB (nx-27017), RabbitMQ, Redis and
#      Prometheus from Debian packages, and CloudMart's OTLP sink as the
#      collector
#   4. the tests in crates/cli/tests/containers/ (ignored by a plain cargo
#      test): the compose stack end to end, then the incident's faults
#
# The stand-ins are used even where a registry answers, so that the result
# never depends on one. Without an engine this prints one SKIPPED line and
# exits 0, except under CI=true, where it fails. Whatever happens, the
# compose project and the fault containers are removed with their volumes;
# images are kept for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."

me=scripts/test-containers.sh
project=cloudmart-ci
compose=(docker-compose -p "$project" -f docker-compose.yml -f docker-compose.offline.yml)
report_dir=target/containers
mkdir -p "$report_dir"

phases=()
phase_start=0
begin() {
  phase_start=$(date +%s)
  echo "==> $1" >&2
}
end() {
  phases+=("$(printf '%-34s %4d s' "$1" $(($(date +%s) - phase_start)))")
}

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  set +e
  if docker version >/dev/null 2>&1; then
    "${compose[@]}" --profile load down -v --remove-orphans -t 5 >/dev/null 2>&1
    local ids=()
    mapfile -t ids < <(docker ps -aq --filter name='^cm-f' 2>/dev/null)
    [ "${#ids[@]}" -eq 0 ] || docker rm -f -v "${ids[@]}" >/dev/null 2>&1
    docker network rm cloudmart-faults >/dev/null 2>&1
  fi
  if [ "${#phases[@]}" -gt 0 ]; then
    echo
    echo "test-containers phases:"
    printf '  %s\n' "${phases[@]}"
  fi
}
trap cleanup EXIT

begin "engine"
if ! env_lines=$(scripts/engine.sh up); then
  if [ "${CI:-}" = true ]; then
    echo "$me: no Docker engine, and CI=true: the container tests must run" >&2
    exit 1
  fi
  echo "SKIPPED: test-containers: no Docker engine could be found or started (see above)" >&2
  exit 0
fi
eval "$env_lines"
export DOCKER_HOST CLOUDMART_BUILD_NETWORK
end "engine"

begin "images (scripts/images.sh)"
scripts/images.sh | tee "$report_dir/images.txt"
# On an engine of our own (the only one that builds with the host's
# network), drop the layers of builds that nothing refers to any more: a
# CI machine would otherwise keep every old build of the workspace.
if [ "${CLOUDMART_BUILD_NETWORK:-}" = host ]; then
  docker image prune -f >/dev/null
fi
end "images (scripts/images.sh)"

begin "third-party stand-ins"
scripts/standins.sh
end "third-party stand-ins"

begin "container tests"
# The report is the test output; a copy stays in target/containers/.
status=0
cargo test --quiet -p cloudmart-cli --test containers -- --ignored --nocapture --test-threads=1 \
  2>&1 | tee "$report_dir/report.txt" || status=$?
end "container tests"
exit "$status"
