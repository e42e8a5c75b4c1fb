#!/usr/bin/env bash
# Runs the whole test suite against real servers.
#
# MongoDB tests use nx-27017 (a MongoDB wire-protocol server over SQLite),
# installed into .venv/mongo and started on a free port for this run.
# RabbitMQ and Redis are expected on their usual local ports; AMQP_URL and
# REDIS_URL override them. A test whose server is unreachable fails when
# CI=true and prints one SKIPPED line otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d "${TMPDIR:-/tmp}/cloudmart-test.XXXXXX")
cleanup() {
  scripts/mongo-test-server.sh stop "$work/mongo.pid" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

if [ -z "${MONGODB_URI:-}" ]; then
  if out=$(scripts/mongo-test-server.sh "$work/mongo.pid"); then
    eval "$out"
    export MONGODB_URI
  else
    echo "scripts/test.sh: could not start nx-27017; MongoDB tests will fail under CI=true, skip otherwise" >&2
  fi
fi
export AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}

echo "test servers: MONGODB_URI=${MONGODB_URI:-unset} AMQP_URL=$AMQP_URL REDIS_URL=$REDIS_URL" >&2
cargo test --workspace --no-fail-fast
