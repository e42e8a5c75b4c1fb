#!/usr/bin/env bash
# Benchmarks CloudMart as it runs in production: six release binaries as
# separate processes. Prints idle RSS per service, then drives a fixed-rate
# load of POST /api/orders through the gateway with `cloudmart load` and
# prints throughput, p50/p99 latency and RSS under load; then the same run
# again with every span exported over OTLP/HTTP to the tests' collector
# (crates/testkit/examples/otlp-sink.rs), and the difference; then fault 7's
# retry storm against the healthy retry policy; then, where a Docker engine
# answers, how long the images take to build (scripts/bench-images.sh); last,
# the soak (scripts/soak.sh): 100 orders/s for 10 minutes against MongoDB,
# RabbitMQ and Redis, RSS per service each minute and whether it is flat.
#
#   scripts/bench.sh                 embedded stores, HTTP notifications
#   BENCH_INFRA=1 scripts/bench.sh   MongoDB (nx-27017), RabbitMQ and Redis
#
# Knobs: BENCH_RATE (orders/s, default 200), BENCH_SECONDS (default 20),
# BENCH_PROFILE (default orders), BENCH_BASE_PORT (default 18080),
# BENCH_SOAK=0 to skip the soak; SOAK_SECS and SOAK_RATE reach it as they are.
set -euo pipefail
cd "$(dirname "$0")/.."

rate=${BENCH_RATE:-200}
seconds=${BENCH_SECONDS:-20}
profile=${BENCH_PROFILE:-orders}
base=${BENCH_BASE_PORT:-18080}
work=$(mktemp -d "${TMPDIR:-/tmp}/cloudmart-bench.XXXXXX")
pids=()

cleanup() {
  if [ -n "${sink_pid:-}" ]; then kill "$sink_pid" 2>/dev/null || true; fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -f "$work/mongo.pid" ]; then scripts/mongo-test-server.sh stop "$work/mongo.pid" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "building release binaries..." >&2
cargo build --release --quiet --bins
bin=target/release

infra=()
if [ "${BENCH_INFRA:-0}" = 1 ]; then
  eval "$(scripts/mongo-test-server.sh "$work/mongo.pid")"
  infra=(MONGODB_URI="$MONGODB_URI"
         AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
         AMQP_EXCHANGE="bench.$$" AMQP_QUEUE="bench.$$"
         REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}" REDIS_KEY_PREFIX="bench:$$:")
fi

# shellcheck source=scripts/services.lib.sh
. scripts/services.lib.sh
service_env=(RUST_LOG="${BENCH_RUST_LOG:-info}" ${BENCH_WORKER_THREADS:+TOKIO_WORKER_THREADS=$BENCH_WORKER_THREADS} "${infra[@]}")
# name port binary env...
start() { start_service "$@"; }

db=$((base + 4)) notif=$((base + 5)) order=$((base + 3)) auth=$((base + 2)) api=$((base + 1)) gw=$base
services=(gateway api-service auth-service order-service database-service notification-service)
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}

# One run: the six services with `$@` added to every environment, idle RSS,
# the load, then peak RSS and the load report, all into $work/<label>.*.
run() {
  local label=$1; shift
  rm -rf "$work/data"
  start database-service "$db" database-service DB_NAME=bench DATA_DIR="$work/data" "$@"
  start notification-service "$notif" notification-service "$@"
  start order-service "$order" order-service DATABASE_URL="http://127.0.0.1:$db" NOTIFICATION_URL="http://127.0.0.1:$notif" "$@"
  start auth-service "$auth" auth-service JWT_SECRET=bench-secret-bench-secret-bench-secret "$@"
  start api-service "$api" api-service AUTH_SERVICE_URL="http://127.0.0.1:$auth" ORDER_SERVICE_URL="http://127.0.0.1:$order" "$@"
  start gateway "$gw" gateway API_SERVICE_URL="http://127.0.0.1:$api" AUTH_SERVICE_URL="http://127.0.0.1:$auth" "$@"
  sleep 2
  : >"$work/$label.rss"
  local idle=() cpu0=()
  for s in "${services[@]}"; do
    idle+=("$(rss_kib "$(pid_of "$s")")")
    cpu0+=("$(cpu_ms "$(pid_of "$s")")")
  done
  echo "load ($label): $rate req/s of profile '$profile' for ${seconds}s through the gateway..." >&2
  "$bin/cloudmart" load --url "http://127.0.0.1:$gw" --rate "$rate" --duration-secs "$seconds" \
    --profile "$profile" --json --quiet >"$work/$label.json"
  local i=0
  for s in "${services[@]}"; do
    local p
    p=$(pid_of "$s")
    echo "$s ${idle[$i]} $(hwm_kib "$p") $(( $(cpu_ms "$p") - ${cpu0[$i]} ))" >>"$work/$label.rss"
    i=$((i + 1))
  done
  stop_all
}

run off
# The same run exporting every span over OTLP/HTTP to the tests' collector.
cargo build --release --quiet -p cloudmart-testkit --example otlp-sink
target/release/examples/otlp-sink >"$work/sink.out" &
sink_pid=$!
for _ in $(seq 1 100); do [ -s "$work/sink.out" ] && break; sleep 0.05; done
run on OTEL_EXPORTER_OTLP_ENDPOINT="$(head -n1 "$work/sink.out")"
kill "$sink_pid"; wait "$sink_pid" 2>/dev/null || true

mode="embedded stores, HTTP notifications"
[ "${BENCH_INFRA:-0}" = 1 ] && mode="MongoDB (nx-27017) + RabbitMQ + Redis"
echo
echo "CloudMart benchmark ($mode; $(nproc) cores)"
echo
printf '%-22s %10s %14s %12s %14s %12s\n' service "idle RSS" "peak RSS" "CPU" "peak RSS" "CPU"
printf '%-22s %10s %27s %27s\n' "" "" "(export off)" "(export on)"
paste -d' ' "$work/off.rss" "$work/on.rss" | while read -r s i h c _ _ h2 c2; do
  awk -v s="$s" -v i="$i" -v h="$h" -v c="$c" -v h2="$h2" -v c2="$c2" \
    'BEGIN { printf "%-22s %6.1f MiB %10.1f MiB %9.2f s %10.1f MiB %9.2f s\n", s, i / 1024, h / 1024, c / 1000, h2 / 1024, c2 / 1000 }'
done
echo
python3 - "$work/off.json" "$work/on.json" <<'PY'
import json, sys
runs = [("export off", json.load(open(sys.argv[1]))), ("export on", json.load(open(sys.argv[2])))]
for name, r in runs:
    l = r["latency_ms"]
    ok = sum(v for k, v in r["statuses"].items() if k.startswith("2"))
    print(f"{name}")
    print(f"  achieved rate  {r['achieved_rate']:.1f} of {r['requested_rate']:.0f} req/s over {r['elapsed_secs']:.1f} s")
    print(f"  latency        p50 {l['p50']:.2f} ms   p90 {l['p90']:.2f} ms   p99 {l['p99']:.2f} ms   p99.9 {l['p99_9']:.2f} ms   max {l['max']:.2f} ms")
    print("  statuses       " + ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items())) + f"   ({ok}/{r['scheduled']} succeeded)")
off, on = runs[0][1], runs[1][1]
dr = (on["achieved_rate"] - off["achieved_rate"]) / off["achieved_rate"] * 100
dp = (on["latency_ms"]["p99"] - off["latency_ms"]["p99"]) / off["latency_ms"]["p99"] * 100
print(f"export overhead  throughput {dr:+.1f}%   p99 {dp:+.1f}%")
PY
tail -n1 "$work/sink.out"

# Fault 7 under a database-service whose capacity is pinned (2 slots of
# 20 ms: 100 requests/s) at 60 orders/s with half the writes failing: the
# broken retry policy against the healthy one, as real processes.
echo
echo "fault 7: 60 orders/s, database-service capped at 100 requests/s, CHAOS_FAILURE_RATE=0.5"
cargo test --release --quiet -p cloudmart-order --test api retry_storm -- --nocapture 2>&1 \
  | grep -E '^(storm|backoff):' || echo "the retry-storm run failed; run it alone: cargo test -p cloudmart-order --test api retry_storm" >&2

# The images: warm rebuild after a one-line change (BENCH_IMAGES=cold adds
# a cold build), and their sizes. Skipped where no engine answers.
echo
if scripts/engine.sh env >/dev/null 2>&1; then
  scripts/bench-images.sh
else
  echo "images: skipped (no Docker engine; eval \"\$(scripts/engine.sh up)\" starts one)"
fi

# The soak, last: it takes SOAK_SECS (10 minutes by default) and fails the
# bench if a service's RSS grows or an order is not answered 2xx.
echo
if [ "${BENCH_SOAK:-1}" = 1 ]; then
  scripts/soak.sh
else
  echo "soak: skipped (BENCH_SOAK=0; make soak runs it alone)"
fi
