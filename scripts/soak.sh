#!/usr/bin/env bash
# Soak: does any service leak? Runs the six release binaries as separate
# processes against the real servers (MongoDB through the nx-27017 stand-in,
# RabbitMQ, Redis), drives 100 orders/s through the gateway for 10 minutes
# with `cloudmart load`, samples every service's VmRSS from /proc every 10 s,
# prints a row each minute, then fits a least-squares line per service over
# the samples after the warm-up minute and says whether it is flat.
#
#   scripts/soak.sh                   100 orders/s for 600 s
#   SOAK_SECS=120 scripts/soak.sh     a quick check (too short for a verdict)
#
# Knobs: SOAK_SECS (default 600), SOAK_RATE (orders/s, default 100),
# SOAK_WARMUP_SECS (default 60), SOAK_SAMPLE_SECS (default 10),
# SOAK_FLAT_KIB_PER_MIN (default 64), SOAK_PROFILE (default orders),
# SOAK_BASE_PORT (default 18180), SOAK_RUST_LOG (default info),
# SOAK_SAMPLES=FILE to keep every sample (seconds, then KiB per service),
# SOAK_ENV="VAR=value ..." added to every service's environment (e.g.
# LD_PRELOAD=/lib/x86_64-linux-gnu/libjemalloc.so.2 to tell a leak from
# glibc keeping freed pages).
#
# Exits 1 if a service died, if any order was not answered 2xx, or if a
# service's RSS is GROWING (below) over a window long enough to judge.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${SOAK_SECS:-600}
rate=${SOAK_RATE:-100}
warmup=${SOAK_WARMUP_SECS:-60}
every=${SOAK_SAMPLE_SECS:-10}
flat=${SOAK_FLAT_KIB_PER_MIN:-64}
profile=${SOAK_PROFILE:-orders}
base=${SOAK_BASE_PORT:-18180}

# What "flat" means, and why 64 KiB/min.
#
# A leak under this load is per order, so the yardstick is the smallest one:
# glibc's malloc (no other allocator is linked) never hands out less than a
# 32-byte chunk, and one such chunk kept per order at 100 orders/s is
# 32 B x 6000/min = 187.5 KiB/min. Without a leak RSS still moves, in steps:
# pages are touched as malloc carves chunks from an arena's top, which it
# grows with 128 KiB of padding and trims only past 128 KiB (M_TOP_PAD,
# M_TRIM_THRESHOLD). One 132 KiB step in the middle of a 9-minute window fits
# a line of 1.5 x 132 / 9 = 22 KiB/min. 64 KiB/min (3.75 MiB/h) sits between:
# two such steps pass, a leaked chunk per order is three times over. Below
# about 5 minutes after warm-up one step alone reads as about 40 KiB/min, so
# a shorter window is reported but not judged.
#
# A burst makes a bigger step. When the machine stalls, the open-loop load
# piles up and lands at once: more connections, tasks and buffers in every
# process on the path, and glibc keeps the pages after they are freed. The
# first 10-minute run on a 2-core machine shared with a CI build showed
# exactly that: +1.2 to +1.5 MiB in gateway, api, order and database-service
# within the same 10 s at 5:50, flat before and after, and a least-squares
# slope of 240 to 300 KiB/min from that one jump. A deliberate burst (1000
# orders/s for 3 s on top of the soak) raised gateway and api-service by
# 75 MiB in 10 s, and they stayed there. A leak is different: it
# rises every minute. So the verdict also takes the median of the rises over
# every 60 s in the window (overlapping, one per sample), which one or a few
# jumps cannot move:
#
#   flat      least-squares slope below 64 KiB/min
#   step      slope above, median 60-s rise below: one or a few jumps, flat
#             between them; a high-water mark, not a leak (passes, with the
#             biggest 10-s jump printed)
#   GROWING   both above: it rose in most minutes (fails)
#
# The first minute is left out: each tokio worker and blocking thread gets
# a glibc arena of its own while there are fewer than 8 per core, and those
# arenas, the HTTP, MongoDB and AMQP connection pools and their buffers all
# grow to their working size while the load ramps up. That growth is a
# one-off, not a leak.
min_judge_secs=300

for kv in "SOAK_SECS=$secs" "SOAK_RATE=$rate" "SOAK_WARMUP_SECS=$warmup" "SOAK_SAMPLE_SECS=$every" \
          "SOAK_FLAT_KIB_PER_MIN=$flat" "SOAK_BASE_PORT=$base"; do
  if ! [[ ${kv#*=} =~ ^[1-9][0-9]*$ ]]; then
    echo "scripts/soak.sh: $kv is not a whole number above 0" >&2
    exit 2
  fi
done
if [ $((60 % every)) -ne 0 ]; then
  echo "scripts/soak.sh: SOAK_SAMPLE_SECS=$every does not divide 60; the 60-s rises need a sample each minute before" >&2
  exit 2
fi
if [ "$secs" -lt $((warmup + 2 * every)) ]; then
  echo "scripts/soak.sh: SOAK_SECS=$secs leaves fewer than 2 samples after the ${warmup}s warm-up; use at least $((warmup + 2 * every))" >&2
  exit 2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/cloudmart-soak.XXXXXX")
pids=()
# One fixed name, so runs reuse their two durable exchanges instead of
# leaving two behind each (rabbitmqctl can delete a queue, not an exchange).
# The ports are fixed too: two soaks at once would not measure anything.
queue=cloudmart-soak

# The run's queues are durable: drop them before (a killed run may have left
# messages) and after, best effort.
drop_queues() {
  if command -v rabbitmqctl >/dev/null 2>&1; then
    for q in "$queue" "$queue.dead"; do timeout 30 rabbitmqctl -q delete_queue "$q" >/dev/null 2>&1 || true; done
  fi
}

cleanup() {
  if [ -n "${load_pid:-}" ]; then kill "$load_pid" 2>/dev/null || true; fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -f "$work/mongo.pid" ]; then scripts/mongo-test-server.sh stop "$work/mongo.pid" >/dev/null 2>&1 || true; fi
  drop_queues
  rm -rf "$work"
}
trap cleanup EXIT

echo "building release binaries..." >&2
cargo build --release --quiet --bins
bin=target/release

scripts/infra.sh ensure
drop_queues
eval "$(scripts/mongo-test-server.sh "$work/mongo.pid")"
infra=(MONGODB_URI="$MONGODB_URI"
       AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
       AMQP_EXCHANGE="$queue" AMQP_QUEUE="$queue"
       REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}" REDIS_KEY_PREFIX="soak:$$:")
read -ra extra <<<"${SOAK_ENV:-}"

# shellcheck source=scripts/services.lib.sh
. scripts/services.lib.sh
service_env=(RUST_LOG="${SOAK_RUST_LOG:-info}" "${infra[@]}" "${extra[@]}")
start() { start_service "$@"; }

db=$((base + 4)) notif=$((base + 5)) order=$((base + 3)) auth=$((base + 2)) api=$((base + 1)) gw=$base
services=(gateway api-service auth-service order-service database-service notification-service)
status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status" 2>/dev/null; }
clock() { printf '%d:%02d' $(($1 / 60)) $(($1 % 60)); }

start database-service "$db" database-service DB_NAME="soak$$"
start notification-service "$notif" notification-service
start order-service "$order" order-service DATABASE_URL="http://127.0.0.1:$db" NOTIFICATION_URL="http://127.0.0.1:$notif"
start auth-service "$auth" auth-service JWT_SECRET=soak-secret-soak-secret-soak-secret
start api-service "$api" api-service AUTH_SERVICE_URL="http://127.0.0.1:$auth" ORDER_SERVICE_URL="http://127.0.0.1:$order"
start gateway "$gw" gateway API_SERVICE_URL="http://127.0.0.1:$api" AUTH_SERVICE_URL="http://127.0.0.1:$auth"
sleep 2

# One line of $work/rss per sample: seconds, then VmRSS (KiB) per service.
sample() {
  local t=$1 line=$1 s p kib
  for s in "${services[@]}"; do
    p=$(pid_of "$s")
    kib=$(status_kib "$p" VmRSS)
    if [ -z "$kib" ]; then
      echo "soak: $s (pid $p) died at $(clock "$t"); the end of its log:" >&2
      tail -n 20 "$work/$s.log" >&2
      exit 1
    fi
    line+=" $kib"
  done
  echo "$line" >>"$work/rss"
  if [ $((t % 60)) -eq 0 ] || [ "$t" -eq "$secs" ]; then
    # shellcheck disable=SC2086 # word splitting is the point: one column each
    printf '%7s %12s %12s %12s %12s %12s %12s\n' "$(clock "$t")" ${line#* }
  fi
}

# Sleeps until $1 seconds after the load started, on the schedule, so the
# samples do not drift by the time each one takes.
sleep_until() {
  local ms=$(( (start_ns + $1 * 1000000000 - $(date +%s%N)) / 1000000 ))
  if [ "$ms" -gt 0 ]; then sleep "$((ms / 1000)).$(printf '%03d' $((ms % 1000)))"; fi
}

mode="MongoDB (nx-27017) + RabbitMQ + Redis"
echo
echo "soak: $rate req/s of profile '$profile' for ${secs}s through the gateway ($mode; $(nproc) cores)"
[ -n "${SOAK_ENV:-}" ] && echo "every service also has: $SOAK_ENV"
echo "VmRSS in KiB, sampled every ${every}s, printed each minute"
printf '%7s %12s %12s %12s %12s %12s %12s\n' time gateway api auth order database notification
cpu0=()
for s in "${services[@]}"; do cpu0+=("$(cpu_ms "$(pid_of "$s")")"); done
: >"$work/rss"
start_ns=$(date +%s%N)
"$bin/cloudmart" load --url "http://127.0.0.1:$gw" --rate "$rate" --duration-secs "$secs" \
  --profile "$profile" --json --quiet >"$work/load.json" 2>"$work/load.err" &
load_pid=$!
for ((t = 0; t < secs; t += every)); do
  sleep_until "$t"
  sample "$t"
done
sleep_until "$secs"
sample "$secs"
if [ -n "${SOAK_SAMPLES:-}" ]; then
  { echo "secs ${services[*]}"; cat "$work/rss"; } >"$SOAK_SAMPLES"
fi
load_rc=0
wait "$load_pid" || load_rc=$?
load_pid=
cpu=()
i=0
for s in "${services[@]}"; do
  p=$(pid_of "$s")
  cpu+=("$(( $(cpu_ms "$p") - ${cpu0[$i]} )) $(status_kib "$p" VmHWM)")
  i=$((i + 1))
done

# The fit: x in minutes, y in KiB, samples at or after the warm-up only.
window=$((secs - warmup))
judged=1
[ "$window" -lt "$min_judge_secs" ] && judged=0
echo
echo "flat: the least-squares slope of VmRSS over $(clock "$warmup")-$(clock "$secs") is below $flat KiB/min ($(awk -v f="$flat" 'BEGIN { printf "%.2f", f * 60 / 1024 }') MiB/h)."
echo "  The first minute is left out: allocator arenas and connection pools fill during it."
echo "  One leaked 32-byte malloc chunk per order would be $(awk -v r="$rate" 'BEGIN { printf "%.1f", 32 * r * 60 / 1024 }') KiB/min at $rate orders/s; one 132 KiB"
echo "  heap step mid-window reads as $(awk -v w="$window" 'BEGIN { printf "%.0f", 1.5 * 132 * 60 / w }') KiB/min. A slope over $flat with a median 60-s rise under $flat is"
echo "  a 'step' (a burst raised the high-water mark once, flat around it: passes); both over is"
echo "  GROWING (it rose in most minutes: fails)."
if [ "$judged" = 0 ]; then
  echo "  This window is $(clock "$window") long, under $(clock "$min_judge_secs"): slopes are shown, not judged."
fi
echo
printf '%-22s %10s %10s %10s %7s %9s %9s %9s  %s\n' service "RSS@$(clock "$warmup")" "RSS@end" "peak" "CPU s" "slope" "MiB/hour" "median" verdict
printf '%-22s %10s %10s %10s %7s %9s %9s %9s\n' "" KiB KiB KiB "" KiB/min "" "60-s rise"
growing=0
steps=()
i=0
for s in "${services[@]}"; do
  read -r c hwm <<<"${cpu[$i]}"
  col=$((i + 2))
  out=$(awk -v col="$col" -v w="$warmup" -v flat="$flat" -v judged="$judged" '
    $1 >= w { x = $1 / 60; n++; sx += x; sy += $col; sxx += x * x; sxy += x * $col
              if (n == 1) first = $col; last = $col
              if ($1 - 60 >= w && ($1 - 60) in y) rise[++k] = $col - y[$1 - 60]
              if (n > 1 && $col - prev > jump) { jump = $col - prev; at = $1 } }
    { y[$1] = $col; prev = $col; if ($col > max) max = $col }
    END {
      slope = (n * sxy - sx * sy) / (n * sxx - sx * sx)
      for (i = 2; i <= k; i++) for (j = i; j > 1 && rise[j - 1] > rise[j]; j--) { t = rise[j]; rise[j] = rise[j - 1]; rise[j - 1] = t }
      # No 60-s rise fits in a window under a minute: the slope alone speaks.
      median = k == 0 ? "-" : sprintf("%.0f", k % 2 ? rise[(k + 1) / 2] : (rise[k / 2] + rise[k / 2 + 1]) / 2)
      verdict = slope < flat ? "flat" : k > 0 && median + 0 < flat ? "step" : "GROWING"
      if (!judged) verdict = tolower(verdict) "? (too short to judge)"
      printf "%d %d %d %.1f %.2f %s %d %d %s\n", first, last, max, slope, slope * 60 / 1024, median, jump, at, verdict
    }' "$work/rss")
  read -r first last peak slope mibh median jump at verdict <<<"$out"
  # VmHWM is kept from approximate per-CPU counters and can trail a sample.
  [ "${hwm:-0}" -gt "$peak" ] && peak=$hwm
  [[ $verdict == GROWING ]] && growing=$((growing + 1))
  [[ $verdict == step* ]] && steps+=("$s: +$jump KiB in the ${every}s to $(clock "$at")")
  printf '%-22s %10d %10d %10d %7.2f %9s %9s %9s  %s\n' "$s" "$first" "$last" "$peak" \
    "$(awk -v c="$c" 'BEGIN { printf "%.2f", c / 1000 }')" "$slope" "$mibh" "$median" "$verdict"
  i=$((i + 1))
done
for line in "${steps[@]}"; do echo "  biggest jump, $line"; done

echo
if [ "$load_rc" -ne 0 ] || [ ! -s "$work/load.json" ]; then
  echo "load: cloudmart load failed (exit $load_rc):"
  cat "$work/load.err"
  exit 1
fi
python3 - "$work/load.json" "$work/failed" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
l = r["latency_ms"]
ok = sum(v for k, v in r["statuses"].items() if k.startswith("2"))
print(f"load: achieved {r['achieved_rate']:.1f} of {r['requested_rate']:.0f} req/s over {r['elapsed_secs']:.1f} s")
print(f"  latency   p50 {l['p50']:.2f} ms   p99 {l['p99']:.2f} ms   p99.9 {l['p99_9']:.2f} ms   max {l['max']:.2f} ms")
print("  statuses  " + ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items())))
print(f"  errors    {r['scheduled'] - ok} of {r['scheduled']} scheduled were not answered 2xx")
open(sys.argv[2], "w").write(f"{r['scheduled'] - ok}\n")
PY
failed=$(cat "$work/failed")
if [ "$failed" -ne 0 ] || [ "$growing" -ne 0 ]; then
  echo "soak: FAILED ($growing service(s) growing, $failed order(s) not 2xx)"
  exit 1
fi
echo "soak: passed"
