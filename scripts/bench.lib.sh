# shellcheck shell=bash
# shellcheck disable=SC2154  # work is the caller's
# Sourced by scripts/bench.sh and scripts/profile.sh, not run: the tools a
# benchmark drives the services with (wrk, nginx, perf), and wrk's closed
# loop of POST /api/orders.
#
# The caller sets work (a temp dir the runs write into) and has sourced
# scripts/services.lib.sh.

# need_tools COMMAND=PACKAGE...: installs from Debian each PACKAGE whose
# COMMAND is missing, as scripts/engine.sh installs docker: root only,
# waiting for dpkg's lock rather than failing on it, and with a
# policy-rc.d that keeps package scripts from starting anything (nginx's
# would start the system's nginx on port 80). Elsewhere it says what to
# install and fails.
need_tools() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%=*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${pair%%=*}" ] || missing+=("${pair#*=}")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "missing: ${missing[*]} (install them; only root on Debian is done automatically)" >&2
    return 1
  fi
  echo "installing ${missing[*]} from Debian..." >&2
  local policy=/usr/sbin/policy-rc.d own_policy='' ok=1 wait=(-o DPkg::Lock::Timeout=600)
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get "${wait[@]}" install -y -qq --no-install-recommends \
    "${missing[@]}" >"$work/apt.log" 2>&1 \
    || { DEBIAN_FRONTEND=noninteractive apt-get "${wait[@]}" update -qq >/dev/null 2>&1 \
         && DEBIAN_FRONTEND=noninteractive apt-get "${wait[@]}" install -y -qq --no-install-recommends \
              "${missing[@]}" >"$work/apt.log" 2>&1; } || ok=
  [ -n "$own_policy" ] && rm -f "$policy"
  if [ -z "$ok" ]; then
    tail -n 5 "$work/apt.log" >&2
    echo "apt-get install ${missing[*]} failed" >&2
    return 1
  fi
}

# The nginx binary (Debian puts it in /usr/sbin, which a user's PATH may lack).
nginx_bin() { command -v nginx 2>/dev/null || echo /usr/sbin/nginx; }

# wrk's summary: one RESULT line that result_field reads.
summary_lua() {
  cat <<'LUA'
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d secs=%.3f status_errors=%d connect=%d read=%d write=%d timeout=%d p50=%.3f p99=%.3f\n",
    summary.requests, summary.duration / 1e6, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
LUA
}

# A wrk script that only prints the summary, for GET runs.
write_summary_lua() { summary_lua >"$1"; }

# wrk's request: POST /api/orders with the body `cloudmart load` sends and
# a fresh Idempotency-Key each time (thread number, then a counter), so
# every request is a new order, as in the open-loop runs; then the summary.
write_orders_lua() {
  {
    cat <<'LUA'
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tag", threads)
end
counter = 0
function request()
  counter = counter + 1
  return wrk.format("POST", "/api/orders", {
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = string.format("wrk-%d-%d-%d", os.time(), tag or 0, counter),
  }, string.format('{"item":"item-%d","quantity":1}', counter % 100))
end
LUA
    summary_lua
  } >"$1"
}

# result_field FILE NAME: NAME's value on wrk's RESULT line in FILE.
result_field() { sed -n "s/^RESULT .*\\b$2=\\([0-9.]*\\).*/\\1/p" "$1"; }

# Answers the gateway on PORT counted with a status other than 2xx, of
# method METHOD, from its http_server_requests counter: non2xx PORT METHOD.
# wrk only counts 4xx and 5xx; this is every status, as the server saw it.
non2xx() {
  curl -fsS "http://127.0.0.1:$1/metrics" 2>/dev/null \
    | awk -v m="method=\"$2\"" 'index($1, "http_server_requests") == 1 && index($1, m) && $1 !~ /status="2[0-9][0-9]"/ { s += $2 } END { printf "%d", s }'
}

# The sum of a metric over the six services' /metrics, given their ports:
# metric_sum NAME PORT...
metric_sum() {
  local name=$1 port total=0 v; shift
  for port in "$@"; do
    v=$(curl -fsS "http://127.0.0.1:$port/metrics" 2>/dev/null \
      | awk -v n="$name" '$1 == n || $1 == n "_total" || index($1, n "{") == 1 || index($1, n "_total{") == 1 { s += $2 } END { printf "%d", s }')
    total=$((total + ${v:-0}))
  done
  echo "$total"
}
