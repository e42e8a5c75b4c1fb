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
# After the export pair come the goals of issue 12, each measured and
# printed in one table with PASS or FAIL (figures, not tests: a FAIL does
# not fail the bench):
#   CPU per order     utime+stime of the six processes over the export-off
#                     run, from /proc/PID/stat, over its 2xx answers
#   closed loop       wrk -t2 -c16 -d10s, POST /api/orders through the
#                     gateway (scripts/bench.lib.sh writes the Lua body)
#   RSS               each service's VmRSS once that wrk load has gone on
#                     for BENCH_SATURATE_SECS (default 60) in all
#   open loop         `cloudmart load` at BENCH_RATE against real RabbitMQ and
#                     Redis (scripts/infra.sh ensure), orders embedded
#   gateway vs nginx  a static upstream (nginx, one worker) on core 1, the
#                     gateway and then nginx as a keep-alive reverse proxy on
#                     core 0, wrk on core 1: GET /api/orders/{id}, req/s of each
#   cold builds       the last line of docs/bench/builds.txt for `make run`
#                     and `make test`; BENCH_COLD=1 measures `make run` again
#                     first (scripts/bench-cold.sh)
#   spans exported    otel_spans_dropped from every /metrics after the
#                     export-on run, and what export costs against export off
# wrk and nginx are installed from Debian when missing (root only); nginx
# runs in the foreground from a config in the run's temp dir, as nobody
# when started as root, on ports of the bench's own.
#
# Knobs: BENCH_RATE (orders/s, default 1000, the rate of the goals),
# BENCH_SECONDS (default 20), BENCH_PROFILE (default orders),
# BENCH_BASE_PORT (default 18080; the bench uses it to +12),
# BENCH_SATURATE_SECS (default 60), BENCH_PROXY_SECS (default 10),
# BENCH_COLD=1 to measure a cold `make run` (minutes), BENCH_TABLE=FILE to
# keep a copy of the goals table, BENCH_SOAK=0 to skip the soak; SOAK_SECS
# and SOAK_RATE reach it as they are.
set -euo pipefail
cd "$(dirname "$0")/.."

rate=${BENCH_RATE:-1000}
seconds=${BENCH_SECONDS:-20}
profile=${BENCH_PROFILE:-orders}
base=${BENCH_BASE_PORT:-18080}
work=$(mktemp -d "${TMPDIR:-/tmp}/cloudmart-bench.XXXXXX")
pids=()

cleanup() {
  if [ -n "${sink_pid:-}" ]; then kill "$sink_pid" 2>/dev/null || true; fi
  if [ -n "${drop_queues_at_exit:-}" ]; then drop_queues; fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -f "$work/mongo.pid" ]; then scripts/mongo-test-server.sh stop "$work/mongo.pid" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo '+changes'), $(nproc) cores, load average $(cut -d' ' -f1 /proc/loadavg) before the build" >"$work/header"
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
# shellcheck source=scripts/bench.lib.sh
. scripts/bench.lib.sh
base_env=(RUST_LOG="${BENCH_RUST_LOG:-info}" ${BENCH_WORKER_THREADS:+TOKIO_WORKER_THREADS=$BENCH_WORKER_THREADS})
service_env=("${base_env[@]}" "${infra[@]}")
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

# The six services with `$@` added to every environment, embedded orders
# in a fresh directory.
start_six() {
  rm -rf "$work/data"
  start database-service "$db" database-service DB_NAME=bench DATA_DIR="$work/data" "$@"
  start notification-service "$notif" notification-service "$@"
  start order-service "$order" order-service DATABASE_URL="http://127.0.0.1:$db" NOTIFICATION_URL="http://127.0.0.1:$notif" "$@"
  start auth-service "$auth" auth-service JWT_SECRET=bench-secret-bench-secret-bench-secret "$@"
  start api-service "$api" api-service AUTH_SERVICE_URL="http://127.0.0.1:$auth" ORDER_SERVICE_URL="http://127.0.0.1:$order" "$@"
  start gateway "$gw" gateway API_SERVICE_URL="http://127.0.0.1:$api" AUTH_SERVICE_URL="http://127.0.0.1:$auth" "$@"
  sleep 2
}

# One run: the six services with `$@` added to every environment, idle RSS,
# the load, then peak RSS, CPU, spans dropped and the load report, all into
# $work/<label>.*.
run() {
  local label=$1; shift
  start_six "$@"
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
  metric_sum otel_spans_dropped "$gw" "$api" "$auth" "$order" "$db" "$notif" >"$work/$label.dropped"
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

# --- The goals of issue 12 ---------------------------------------------------
# Each section leaves its raw figures in $work; scripts/bench-goals.py
# judges them and prints the table.
echo
echo "$mode" >"$work/mode"
# The goals' own runs choose their servers: embedded orders throughout.
service_env=("${base_env[@]}")
tools=1
need_tools wrk=wrk nginx=nginx-light || tools=0
saturate=${BENCH_SATURATE_SECS:-60}
proxy_secs=${BENCH_PROXY_SECS:-10}
for kv in "BENCH_SATURATE_SECS=$saturate" "BENCH_PROXY_SECS=$proxy_secs"; do
  if ! [[ ${kv#*=} =~ ^[1-9][0-9]*$ ]] || { [ "${kv%%=*}" = BENCH_SATURATE_SECS ] && [ "${kv#*=}" -lt 10 ]; }; then
    echo "scripts/bench.sh: $kv is not a whole number of seconds (the saturation needs at least 10)" >&2
    exit 2
  fi
done
write_orders_lua "$work/orders.lua"
write_summary_lua "$work/summary.lua"

# Closed loop, then RSS: wrk's 10 s are the throughput row (and the CPU of
# each service over them); the same load goes on to $saturate s in all, and
# then each service's VmRSS is read.
if [ "$tools" = 1 ]; then
  start_six
  echo "closed loop: wrk -t2 -c16 -d10s POST /api/orders, then to ${saturate}s of saturation..." >&2
  cpu0=()
  for s in "${services[@]}"; do cpu0+=("$(cpu_ms "$(pid_of "$s")")"); done
  bad0=$(non2xx "$gw" POST)
  wrk -t2 -c16 -d10s --latency -s "$work/orders.lua" "http://127.0.0.1:$gw" >"$work/wrk.txt" 2>&1 || true
  echo "non2xx_server $(( $(non2xx "$gw" POST) - bad0 ))" >>"$work/wrk.txt"
  : >"$work/sat.cpu"
  i=0
  for s in "${services[@]}"; do
    echo "$s $(( $(cpu_ms "$(pid_of "$s")") - ${cpu0[$i]} ))" >>"$work/sat.cpu"
    i=$((i + 1))
  done
  wrk -t2 -c16 -d"$((saturate - 10))s" -s "$work/orders.lua" "http://127.0.0.1:$gw" >"$work/wrk-rest.txt" 2>&1 || true
  : >"$work/sat.rss"
  for s in "${services[@]}"; do
    p=$(pid_of "$s")
    echo "$s $(rss_kib "$p") $(hwm_kib "$p")" >>"$work/sat.rss"
  done
  echo "$saturate" >"$work/sat.secs"
  stop_all
fi

# Open loop at the goals' rate against real RabbitMQ and Redis (the
# machine's, or started by scripts/infra.sh), orders in the embedded store.
queue=cloudmart-bench
drop_queues() {
  if command -v rabbitmqctl >/dev/null 2>&1; then
    for q in "$queue" "$queue.dead"; do timeout 30 rabbitmqctl -q delete_queue "$q" >/dev/null 2>&1 || true; done
  fi
}
if scripts/infra.sh ensure >"$work/infra.out" 2>&1; then
  drop_queues_at_exit=1
  drop_queues
  start_six AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}" \
    AMQP_EXCHANGE="$queue" AMQP_QUEUE="$queue" \
    REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}" REDIS_KEY_PREFIX="bench:$$:"
  echo "open loop: $rate req/s for ${seconds}s, RabbitMQ + Redis, embedded orders..." >&2
  "$bin/cloudmart" load --url "http://127.0.0.1:$gw" --rate "$rate" --duration-secs "$seconds" \
    --profile orders --json --quiet >"$work/infra.json" || true
  stop_all
  drop_queues
else
  { echo "RabbitMQ or Redis unavailable:"; cat "$work/infra.out"; } >"$work/infra.skip"
fi

# Gateway against nginx: the same static upstream (an nginx with one worker
# answering every path with one order) on core 1, the proxy under test alone
# on core 0, wrk (one thread) on core 1 with the upstream. Both proxies keep
# connections to the upstream alive and write one log line per request (the
# gateway at RUST_LOG=info, nginx its access log). The proxy's own CPU time
# over the run says whether it was the one saturated.
if [ "$tools" = 1 ] && [ "$(nproc)" -ge 2 ]; then
  up=$((base + 10)) ngx=$((base + 11))
  ngx_dir=$(mktemp -d "${TMPDIR:-/tmp}/cloudmart-bench-nginx.XXXXXX")
  ngx_as=()
  if [ "$(id -u)" -eq 0 ]; then ngx_as=(setpriv --reuid=nobody --regid=nogroup --clear-groups); fi
  order_id=0190e3f4-6a1b-7c2d-8e3f-405162738495
  nginx_conf() { # NAME PORT SERVER-BODY
    cat >"$ngx_dir/$1.conf" <<NGINX
worker_processes 1;
daemon off;
pid $ngx_dir/$1.pid;
error_log $ngx_dir/$1.error.log warn;
events { worker_connections 4096; }
http {
  access_log ${ACCESS_LOG:-off};
  client_body_temp_path $ngx_dir/$1.body;
  proxy_temp_path $ngx_dir/$1.proxy;
  fastcgi_temp_path $ngx_dir/$1.fastcgi;
  uwsgi_temp_path $ngx_dir/$1.uwsgi;
  scgi_temp_path $ngx_dir/$1.scgi;
  keepalive_requests 1000000;
  $3
}
NGINX
  }
  nginx_start() { # NAME PORT CPU
    if [ -n "${ngx_as[*]}" ]; then chown -R nobody:nogroup "$ngx_dir"; fi
    "${ngx_as[@]}" taskset -c "$3" "$(nginx_bin)" -e "$ngx_dir/$1.error.log" -p "$ngx_dir/" -c "$ngx_dir/$1.conf" \
      >"$work/nginx-$1.log" 2>&1 &
    pids+=("$!")
    eval "pid_nginx_$1=$!"
    for _ in $(seq 1 100); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then return 0; fi
      sleep 0.05
    done
    echo "nginx ($1) did not open port $2:" >&2
    cat "$work/nginx-$1.log" "$ngx_dir/$1.error.log" >&2 2>/dev/null || true
    exit 1
  }
  # CPU of a process and its children (nginx's master and worker), in ms.
  tree_cpu_ms() {
    local total c
    total=$(cpu_ms "$1")
    while read -r c; do
      [ -n "$c" ] && total=$((total + $(cpu_ms "$c")))
    done < <(awk '{ for (i = 1; i <= NF; i++) print $i }' "/proc/$1/task/"*/children 2>/dev/null)
    echo "$total"
  }
  # proxy_wrk NAME PORT PID: 2 s of warm-up, then the measured run.
  proxy_wrk() {
    local t0 c0
    taskset -c 1 wrk -t1 -c16 -d2s "http://127.0.0.1:$2/api/orders/$order_id" >/dev/null 2>&1 || true
    c0=$(tree_cpu_ms "$3")
    t0=$(date +%s%N)
    taskset -c 1 wrk -t1 -c16 -d"${proxy_secs}s" --latency -s "$work/summary.lua" \
      "http://127.0.0.1:$2/api/orders/$order_id" >"$work/proxy-$1.txt" 2>&1 || true
    echo "cpu_ms $(( $(tree_cpu_ms "$3") - c0 )) wall_ms $(( ($(date +%s%N) - t0) / 1000000 ))" >>"$work/proxy-$1.txt"
  }
  ACCESS_LOG=off nginx_conf upstream "$up" "server {
    listen 127.0.0.1:$up;
    default_type application/json;
    location / { return 200 '{\"id\":\"$order_id\",\"customer\":\"guest\",\"item\":\"item-1\",\"quantity\":1,\"notification\":\"notified\"}'; }
  }"
  ACCESS_LOG="$ngx_dir/proxy.access.log" nginx_conf proxy "$ngx" "upstream cloudmart_api {
    server 127.0.0.1:$up;
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$ngx;
    location / {
      proxy_pass http://cloudmart_api;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header X-Request-Id \$request_id;
    }
  }"
  echo "gateway vs nginx: GET /api/orders/{id}, ${proxy_secs}s each, proxy on core 0..." >&2
  nginx_start upstream "$up" 1
  service_prefix=(taskset -c 0)
  start gateway "$gw" gateway API_SERVICE_URL="http://127.0.0.1:$up" AUTH_SERVICE_URL="http://127.0.0.1:$up"
  service_prefix=()
  proxy_wrk gateway "$gw" "$(pid_of gateway)"
  kill "$(pid_of gateway)"; wait "$(pid_of gateway)" 2>/dev/null || true
  nginx_start proxy "$ngx" 0
  proxy_wrk nginx "$ngx" "$(pid_of nginx-proxy)"
  stop_all
  rm -rf "$ngx_dir"
elif [ "$tools" = 1 ]; then
  echo "one core" >"$work/proxy.skip"
fi

# Cold builds: measured only when asked, for they take many minutes.
if [ "${BENCH_COLD:-0}" = 1 ]; then
  scripts/bench-cold.sh run && touch "$work/make-run.measured"
fi

echo
[ "$tools" = 1 ] || echo "wrk or nginx missing: rows that need them are not measured" >"$work/tools.skip"
python3 scripts/bench-goals.py "$work" "$rate" "$seconds" docs/bench/builds.txt | tee "$work/goals.txt"
if [ -n "${BENCH_TABLE:-}" ]; then cp "$work/goals.txt" "$BENCH_TABLE"; fi

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
