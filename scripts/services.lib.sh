# shellcheck shell=bash
# shellcheck disable=SC2154  # bin, work, pids and service_env are the caller's
# Sourced by scripts/bench.sh and scripts/soak.sh, not run: starting the six
# release binaries as separate processes, as Kubernetes runs them.
#
# The caller sets: bin (the binaries' directory), work (a temp dir for the
# logs), pids (an array the started pids are added to) and service_env (an
# array of VAR=value given to every service, e.g. the real servers' URLs).
# It may set service_prefix, a command the binary is run under (e.g.
# `taskset -c 0`).

# start_service NAME PORT BINARY [VAR=value...]: starts BINARY with only the
# given environment, sets pid_<name>, and waits up to 10 s for /health.
start_service() {
  local name=$1 port=$2 binary=$3; shift 3
  env -i PATH="$PATH" HOST=127.0.0.1 PORT="$port" "${service_env[@]}" "$@" \
    ${service_prefix[@]+"${service_prefix[@]}"} "$bin/$binary" >"$work/$name.log" 2>&1 &
  pids+=("$!")
  eval "pid_${name//-/_}=$!"
  for _ in $(seq 1 200); do
    if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$!" 2>/dev/null; then echo "$name exited; its log:" >&2; cat "$work/$name.log" >&2; exit 1; fi
    sleep 0.05
  done
  echo "$name did not become healthy on port $port" >&2; exit 1
}

# The pid start_service recorded for NAME.
pid_of() { local v="pid_${1//-/_}"; echo "${!v}"; }

# CPU time (user + system) of PID in milliseconds, from /proc/PID/stat.
cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print int(($12 + $13) * 1000 / hz) }' "/proc/$1/stat"; }
