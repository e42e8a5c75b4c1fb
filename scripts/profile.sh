#!/usr/bin/env bash
# Where does one service spend its CPU under the bench's load? Builds the
# `profiling` cargo profile (release code with symbols, see Cargo.toml) with
# frame pointers, in a target directory of its own (target/profiling-fp), runs
# the six services as separate processes as scripts/bench.sh does (embedded
# stores, HTTP notifications), drives the closed loop of `make bench` (wrk
# -t2 -c16, POST /api/orders through the gateway), records `perf record -g`
# on one service for PROFILE_SECONDS, and prints `perf report --no-children`:
# the top symbols by their own samples, and the split by binary and library.
# The perf.data file stays under target/profile/ for `perf report -i`.
#
#   scripts/profile.sh                              api-service, 10 s
#   PROFILE_SERVICE=gateway scripts/profile.sh
#   PROFILE_CALLGRAPH=dwarf scripts/profile.sh      unwind with DWARF instead
#
# Frame pointers make `-g` cheap and exact through CloudMart's code and its
# dependencies; the Rust standard library and glibc are built without them,
# so a chain can stop at malloc or a std function. The self-time table
# (--no-children) does not depend on the chains. PROFILE_CALLGRAPH=dwarf
# copies 16 KiB of stack per sample and unwinds everything, at a much larger
# perf.data.
#
# Knobs: PROFILE_SERVICE (default api-service), PROFILE_SECONDS (default 10),
# PROFILE_FREQ (samples/s, default 999), PROFILE_CALLGRAPH (fp or dwarf),
# PROFILE_TOP (symbols shown, default 25), PROFILE_RATE (orders/s: an open
# loop with `cloudmart load` instead of wrk's closed loop),
# PROFILE_BASE_PORT (default 18280).
set -euo pipefail
cd "$(dirname "$0")/.."

service=${PROFILE_SERVICE:-api-service}
secs=${PROFILE_SECONDS:-10}
freq=${PROFILE_FREQ:-999}
callgraph=${PROFILE_CALLGRAPH:-fp}
top=${PROFILE_TOP:-25}
base=${PROFILE_BASE_PORT:-18280}
services=(gateway api-service auth-service order-service database-service notification-service)

die() {
  echo "scripts/profile.sh: $*" >&2
  exit 1
}
[[ " ${services[*]} " == *" $service "* ]] || die "PROFILE_SERVICE=$service is not one of: ${services[*]}"
for kv in "PROFILE_SECONDS=$secs" "PROFILE_FREQ=$freq" "PROFILE_TOP=$top" "PROFILE_BASE_PORT=$base" \
          ${PROFILE_RATE:+"PROFILE_RATE=$PROFILE_RATE"}; do
  [[ ${kv#*=} =~ ^[1-9][0-9]*$ ]] || die "$kv is not a whole number above 0"
done
case "$callgraph" in
  fp) record_graph=(-g) ;;
  dwarf) record_graph=(--call-graph "dwarf,16384") ;;
  *) die "PROFILE_CALLGRAPH=$callgraph is not fp or dwarf" ;;
esac

work=$(mktemp -d "${TMPDIR:-/tmp}/cloudmart-profile.XXXXXX")
pids=()
cleanup() {
  if [ -n "${load_pid:-}" ]; then kill "$load_pid" 2>/dev/null || true; fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=scripts/services.lib.sh
. scripts/services.lib.sh
# shellcheck source=scripts/bench.lib.sh
. scripts/bench.lib.sh

need_tools perf=linux-perf || die "perf is needed (Debian: apt-get install linux-perf)"
if [ -z "${PROFILE_RATE:-}" ]; then need_tools wrk=wrk || die "wrk is needed (Debian: apt-get install wrk)"; fi

# Can this machine record call graphs at all? Containers and locked-down
# kernels often refuse.
if ! perf record -q -o "$work/check.data" "${record_graph[@]}" true >"$work/check.out" 2>&1; then
  paranoid=$(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null || echo unknown)
  echo "scripts/profile.sh: perf cannot record on this machine:" >&2
  sed 's/^/  /' "$work/check.out" | head -n 8 >&2
  cat >&2 <<EOF
  kernel.perf_event_paranoid is $paranoid. Profiling another process needs
  either root (or CAP_PERFMON) or perf_event_paranoid at most 1:
    sudo sysctl kernel.perf_event_paranoid=1
  In a container, the runtime must allow perf_event_open (Docker's default
  seccomp profile blocks it: --cap-add PERFMON, or --privileged). In a VM
  without a virtual PMU, perf falls back to cpu-clock; that still works.
EOF
  exit 1
fi

target=target/profiling-fp
echo "building the profiling profile with frame pointers into $target (a release-sized build)..." >&2
CARGO_TARGET_DIR=$target RUSTFLAGS="${RUSTFLAGS:-} -C force-frame-pointers=yes" \
  cargo build --profile profiling --quiet --bins
bin=$target/profiling

service_env=(RUST_LOG="${PROFILE_RUST_LOG:-info}")
start() { start_service "$@"; }
db=$((base + 4)) notif=$((base + 5)) order=$((base + 3)) auth=$((base + 2)) api=$((base + 1)) gw=$base
start database-service "$db" database-service DB_NAME=profile DATA_DIR="$work/data"
start notification-service "$notif" notification-service
start order-service "$order" order-service DATABASE_URL="http://127.0.0.1:$db" NOTIFICATION_URL="http://127.0.0.1:$notif"
start auth-service "$auth" auth-service JWT_SECRET=profile-secret-profile-secret-profile
start api-service "$api" api-service AUTH_SERVICE_URL="http://127.0.0.1:$auth" ORDER_SERVICE_URL="http://127.0.0.1:$order"
start gateway "$gw" gateway API_SERVICE_URL="http://127.0.0.1:$api" AUTH_SERVICE_URL="http://127.0.0.1:$auth"
sleep 1

# The load runs 2 s before the recording and 2 s after it.
load_secs=$((secs + 4))
if [ -n "${PROFILE_RATE:-}" ]; then
  load="cloudmart load --rate $PROFILE_RATE (open loop)"
  "$bin/cloudmart" load --url "http://127.0.0.1:$gw" --rate "$PROFILE_RATE" --duration-secs "$load_secs" \
    --profile orders --json --quiet >"$work/load.json" 2>"$work/load.err" &
else
  load="wrk -t2 -c16 POST /api/orders (closed loop)"
  write_orders_lua "$work/orders.lua"
  wrk -t2 -c16 -d"${load_secs}s" -s "$work/orders.lua" "http://127.0.0.1:$gw" >"$work/load.txt" 2>&1 &
fi
load_pid=$!
sleep 2

mkdir -p target/profile
data=target/profile/$service-$(date -u +%Y%m%dT%H%M%SZ).perf.data
pid=$(pid_of "$service")
cpu0=$(cpu_ms "$pid")
echo "recording $service (pid $pid) for ${secs}s at ${freq} Hz, call graphs: $callgraph..." >&2
perf record -q -F "$freq" "${record_graph[@]}" -p "$pid" -o "$data" -- sleep "$secs" >"$work/record.out" 2>&1 \
  || { cat "$work/record.out" >&2; die "perf record failed"; }
cpu=$(( $(cpu_ms "$pid") - cpu0 ))
wait "$load_pid" || true
load_pid=

echo
echo "profile of $service under $load, ${secs}s, $(nproc) cores, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "$service used $(awk -v c="$cpu" -v s="$secs" 'BEGIN { printf "%.2f s of CPU in %d s (%.0f%% of a core)", c / 1000, s, c / s / 10 }')"
if [ -s "$work/load.txt" ]; then
  awk '/^RESULT/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); r[kv[1]] = kv[2] }
                   printf "load: %.0f orders/s over the whole run, %d 4xx/5xx, p99 %.1f ms\n", r["requests"] / r["secs"], r["status_errors"], r["p99"] }' "$work/load.txt"
fi
event=$(perf evlist -i "$data" 2>/dev/null | head -n 1) || true
echo "perf event: ${event:-unknown}"
if [[ $event == cpu-clock* ]]; then
  echo "  (no hardware counters here, so a timer samples: the kernel's samples land where it re-enables"
  echo "  interrupts, e.g. finish_task_switch after a park; read them as scheduling, not as those functions)"
fi
echo
echo "by binary or library (self time):"
# awk, not head: head would close the pipe early and perf die of SIGPIPE.
report() { perf report -i "$data" --stdio --no-children -g none "$@" 2>/dev/null | awk -v n="$top" '!/^#/ && NF && c++ < n'; }
report --fields overhead,dso --percent-limit 1
echo
echo "top $top symbols by self time (perf report --no-children):"
report --fields overhead,dso,sym
echo
echo "perf.data: $data"
echo "  perf report -i $data --no-children        (interactive; -g caller for the chains)"
if command -v inferno-collapse-perf >/dev/null 2>&1 && command -v inferno-flamegraph >/dev/null 2>&1; then
  perf script -i "$data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph >"${data%.perf.data}.svg"
  echo "flame graph: ${data%.perf.data}.svg"
else
  echo "  a flame graph: perf script -i $data | inferno-collapse-perf | inferno-flamegraph > flame.svg"
  echo "  (cargo install inferno)"
fi
