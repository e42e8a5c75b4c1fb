#!/usr/bin/env bash
# How long a trainee waits on a fresh clone: a cold `make run` until the
# gateway first answers, or a cold `make test` to its end. Each is measured
# with a fresh, empty CARGO_TARGET_DIR (crates already downloaded: what a
# second clone on the same machine sees) and appended to docs/bench/builds.txt,
# whose last line per kind `make bench` prints in its goals table.
#
#   scripts/bench-cold.sh run    cold `make run` to the first 2xx of GET /api/health
#   scripts/bench-cold.sh test   cold `make test` (all of it, containers included)
#
# `run` needs the ports of `cloudmart up` free (8080, 3001-3005), stores its
# orders in a temp dir, and stops the stack once it has answered. The line
# records the date, the commit and the conditions: cores, the load average
# at the start, and BENCH_COLD_NOTE if set (say what else was running).
# Knobs: BENCH_COLD_TIMEOUT_SECS (default 3600), BENCH_BUILDS_FILE.
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:-run}
file=${BENCH_BUILDS_FILE:-docs/bench/builds.txt}
limit=${BENCH_COLD_TIMEOUT_SECS:-3600}
case "$what" in
  run | test) ;;
  *) echo "usage: scripts/bench-cold.sh run|test" >&2; exit 2 ;;
esac

work=$(mktemp -d "${TMPDIR:-/tmp}/cloudmart-cold.XXXXXX")
make_pid=
cleanup() {
  # `make` runs in a process group of its own (setsid): stop that group,
  # cargo and the stack with it, and nothing else.
  if [ -n "$make_pid" ] && kill -0 "$make_pid" 2>/dev/null; then
    kill -TERM -- "-$make_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$make_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$make_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

if [ "$what" = run ]; then
  for port in 8080 3001 3002 3003 3004 3005; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "scripts/bench-cold.sh: port $port is in use; \`make run\` needs it (stop what listens there)" >&2
      exit 1
    fi
  done
fi

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit+="+changes"
conditions="$(nproc) cores, load average $(cut -d' ' -f1 /proc/loadavg) at the start, fresh CARGO_TARGET_DIR, crates downloaded"
[ -n "${BENCH_COLD_NOTE:-}" ] && conditions+=", $BENCH_COLD_NOTE"

echo "cold make $what: building from an empty target dir (many minutes)..." >&2
start=$(date +%s%N)
CARGO_TARGET_DIR="$work/target" DATA_DIR="$work/data" setsid make "$what" >"$work/make.log" 2>&1 &
make_pid=$!
rc=0
if [ "$what" = run ]; then
  until curl -fsS -o /dev/null "http://127.0.0.1:8080/api/health" 2>/dev/null; do
    if ! kill -0 "$make_pid" 2>/dev/null; then
      echo "scripts/bench-cold.sh: make run exited before answering; the end of its output:" >&2
      tail -n 20 "$work/make.log" >&2
      exit 1
    fi
    if [ $(( ($(date +%s%N) - start) / 1000000000 )) -ge "$limit" ]; then
      echo "scripts/bench-cold.sh: no answer within ${limit}s" >&2
      exit 1
    fi
    sleep 0.5
  done
else
  wait "$make_pid" || rc=$?
  make_pid=
fi
secs=$(( ($(date +%s%N) - start) / 1000000000 ))
if [ "$rc" -ne 0 ]; then
  echo "scripts/bench-cold.sh: make test failed (exit $rc) after ${secs}s; not recorded. The end of its output:" >&2
  tail -n 20 "$work/make.log" >&2
  exit 1
fi

mkdir -p "$(dirname "$file")"
printf 'make-%s\t%d\t%s\t%s\t%s\n' "$what" "$secs" "$(date -u +%Y-%m-%d)" "$commit" "$conditions" >>"$file"
echo "cold make $what: ${secs}s ($(printf '%d:%02d' $((secs / 60)) $((secs % 60)))), recorded in $file"
