#!/usr/bin/env bash
# Starts the three servers CloudMart can use, for local work:
#
#   eval "$(scripts/infra.sh up)"   # then: make run, and the services use them
#   scripts/infra.sh down
#
# Redis and RabbitMQ come from the machine's packages and are started only
# if they are not already answering. MongoDB is the nx-27017 stand-in
# (MongoDB's wire protocol over SQLite), started on a free port; compose and
# Kubernetes run the real MongoDB.
set -euo pipefail
cd "$(dirname "$0")/.."

state=${CLOUDMART_INFRA_DIR:-${TMPDIR:-/tmp}/cloudmart-infra}
mkdir -p "$state"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 name=$2
  for _ in $(seq 1 150); do port_open "$port" && return 0; sleep 0.2; done
  echo "scripts/infra.sh: $name did not open port $port within 30 s" >&2
  return 1
}

ensure_redis() {
  port_open 6379 && return 0
  command -v redis-server >/dev/null || { echo "scripts/infra.sh: redis-server is not installed (apt-get install redis-server)" >&2; return 1; }
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  wait_port 6379 Redis
}

ensure_rabbitmq() {
  port_open 5672 && return 0
  command -v rabbitmq-server >/dev/null || { echo "scripts/infra.sh: rabbitmq-server is not installed (apt-get install rabbitmq-server)" >&2; return 1; }
  rabbitmq-server -detached >/dev/null 2>&1
  wait_port 5672 RabbitMQ
}

case "${1:-up}" in
  up)
    ensure_redis
    ensure_rabbitmq
    eval "$(scripts/mongo-test-server.sh "$state/mongo.pid")"
    echo "export MONGODB_URI=$MONGODB_URI"
    echo "export AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f"
    echo "export REDIS_URL=redis://127.0.0.1:6379"
    ;;
  ensure)
    # Only what CI needs running before the tests: RabbitMQ and Redis.
    ensure_redis
    ensure_rabbitmq
    ;;
  down)
    scripts/mongo-test-server.sh stop "$state/mongo.pid"
    echo "nx-27017 stopped; Redis and RabbitMQ are left running (they belong to the machine)" >&2
    ;;
  *)
    echo "usage: scripts/infra.sh up|ensure|down" >&2
    exit 2
    ;;
esac
