#!/usr/bin/env bash
# Starts the three servers CloudMart can use, for local work, and stops them:
#
#   eval "$(scripts/infra.sh up)"   # then: make run, and the services use them
#   scripts/infra.sh down           # stops what `up` started, nothing else
#
# Redis and RabbitMQ come from the machine's packages and are started only
# if they are not already answering. MongoDB is the nx-27017 stand-in
# (MongoDB's wire protocol over SQLite), started on a free port; compose and
# Kubernetes run the real MongoDB.
#
# `down` stops nx-27017 (its data goes with it) and a Redis or RabbitMQ only
# if this script started it: each start leaves a pid file in the state
# directory, and `down` stops exactly that process. A Redis or RabbitMQ that
# was already running (the machine's own services) is never touched.
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

# The pid of the process listening on 127.0.0.1:$1, or nothing.
listener_pid() {
  ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n 1 | cut -d= -f2
}

# Whether the process in pid file $1 is alive and its command line contains
# $2, so a stale file whose pid has been reused is never acted on.
alive() {
  local pid cmdline
  [ -s "$1" ] || return 1
  pid=$(cat "$1")
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmdline == *"$2"* ]]
}

# Records the server now listening on port $1 as started by this script.
record() {
  local pid
  pid=$(listener_pid "$1")
  if [ -n "$pid" ]; then
    echo "$pid" >"$state/$2.pid"
  else
    echo "scripts/infra.sh: cannot tell which process serves port $1 (no ss?); 'down' will leave $2 running" >&2
  fi
}

ensure_redis() {
  port_open 6379 && return 0
  command -v redis-server >/dev/null || { echo "scripts/infra.sh: redis-server is not installed (apt-get install redis-server)" >&2; return 1; }
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  wait_port 6379 Redis
  record 6379 redis
}

ensure_rabbitmq() {
  port_open 5672 && return 0
  command -v rabbitmq-server >/dev/null || { echo "scripts/infra.sh: rabbitmq-server is not installed (apt-get install rabbitmq-server)" >&2; return 1; }
  rabbitmq-server -detached >/dev/null 2>&1
  wait_port 5672 RabbitMQ
  record 5672 rabbitmq
}

# Stops the server in $state/$1.pid if it is still the one this script
# started (its command line contains $2); SIGTERM is a clean shutdown for
# both Redis and RabbitMQ.
stop_ours() {
  local file="$state/$1.pid" name=$3
  if alive "$file" "$2"; then
    kill -TERM "$(cat "$file")" 2>/dev/null || true
    for _ in $(seq 1 150); do alive "$file" "$2" || break; sleep 0.2; done
    if alive "$file" "$2"; then
      echo "scripts/infra.sh: $name (pid $(cat "$file")) did not stop within 30 s" >&2
      return 1
    fi
    echo "$name stopped (this script had started it)" >&2
  else
    echo "$name left running (this script did not start it)" >&2
  fi
  rm -f "$file"
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
    if [ -f "$state/mongo.pid" ]; then
      scripts/mongo-test-server.sh stop "$state/mongo.pid"
      echo "nx-27017 stopped; its data is deleted" >&2
    fi
    stop_ours redis redis-server Redis
    stop_ours rabbitmq beam RabbitMQ
    rmdir "$state" 2>/dev/null || true
    ;;
  *)
    echo "usage: scripts/infra.sh up|ensure|down" >&2
    exit 2
    ;;
esac
