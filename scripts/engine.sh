#!/usr/bin/env bash
# A Docker engine for machines that have none, and the base images for
# machines that cannot pull them.
#
#   eval "$(scripts/engine.sh up)"   # a daemon that answers, and the DOCKER_HOST to use
#   scripts/engine.sh env            # print that export again (nothing to do: no output)
#   scripts/engine.sh bases          # the Dockerfile's base images: pulled, or local stand-ins
#   scripts/engine.sh status         # which daemon answers, and whose it is
#   scripts/engine.sh down           # stop the daemon this script started, and only that one
#
# Where a daemon already answers (Docker Desktop, OrbStack, a system
# dockerd, or DOCKER_HOST), `up` does nothing and prints nothing to export.
# Otherwise, on Debian and as root, it installs docker.io and
# docker-compose from the machine's own apt sources and starts dockerd with
# a data root, exec root, socket and pid file of its own. The daemon never
# touches the host's firewall or routing: `--iptables=false`,
# `--ip-masq=false` and `--ip-forward=false`. Containers still reach each
# other by name on a compose network, and published ports reach the host
# through docker-proxy on 127.0.0.1; what they lose is a route out, so
# image builds that download (cargo, apt, pip) run with `--network host`
# (see scripts/images.sh). Containers also lose the host's DNS server, and a
# lookup with nowhere to go takes 20 s to fail; so a dnsmasq on the bridge
# address (--dns) answers them, forwarding to the host's resolvers. A name
# that is not a container then fails at once, as it does in a cluster.
#
# `bases` gives the root Dockerfile its two base images. It tries
# `docker pull` first; a laptop that can pull never sees a stand-in. When the
# pull fails it builds, under the exact name the Dockerfile uses and with the
# label org.cloudmart.standin:
#   debian:bookworm-slim      debootstrap --variant=minbase from the mirror apt uses
#   rust:<v>-slim-bookworm    that image, plus gcc and libc6-dev from Debian, the
#                             machine's own Rust toolchain and its CA bundle (a
#                             TLS-inspecting proxy needs it for cargo to fetch)
#
# Settings (environment):
#   CLOUDMART_ENGINE_DIR   state: data root, exec root, socket, pid file, log
#                          (default /var/lib/cloudmart-engine)
#   CLOUDMART_ENGINE_SOCK  the socket (default $CLOUDMART_ENGINE_DIR/run/docker.sock)
#   CLOUDMART_ENGINE_BIP   the default bridge's address (default 172.17.0.1/16);
#                          containers' DNS server listens on it
#   CLOUDMART_DOCKERD_FLAGS  more dockerd flags, as one string
set -euo pipefail

me=scripts/engine.sh
root=$(cd "$(dirname "$0")/.." && pwd)

state=${CLOUDMART_ENGINE_DIR:-/var/lib/cloudmart-engine}
run_dir=$state/run
sock=${CLOUDMART_ENGINE_SOCK:-$run_dir/docker.sock}
pidfile=$run_dir/dockerd.pid
log=$state/dockerd.log
our_host=unix://$sock
bip=${CLOUDMART_ENGINE_BIP:-172.17.0.1/16}
dns_ip=${bip%/*}
dns_pidfile=$run_dir/dnsmasq.pid

die() {
  echo "$me: $*" >&2
  exit 1
}

# Whether a Docker daemon answers at $1 (a DOCKER_HOST value, or empty for
# the client's default).
answers() {
  command -v docker >/dev/null 2>&1 || return 1
  if [ -n "$1" ]; then
    DOCKER_HOST=$1 timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1
  else
    (unset DOCKER_HOST; timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1)
  fi
}

our_pid() {
  local pid
  [ -f "$pidfile" ] || return 1
  pid=$(cat "$pidfile" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  # A recycled pid would belong to another program.
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ] || return 1
  echo "$pid"
}

# The DOCKER_HOST a caller should use, or nothing when the client's default
# (or the caller's own DOCKER_HOST) already reaches a daemon. Fails when no
# daemon answers.
current_host() {
  if [ -n "${DOCKER_HOST:-}" ] && [ "$DOCKER_HOST" != "$our_host" ] && answers "$DOCKER_HOST"; then
    echo "$DOCKER_HOST"
    return 0
  fi
  if our_pid >/dev/null && answers "$our_host"; then
    echo "$our_host"
    return 0
  fi
  if answers ""; then
    return 0
  fi
  return 1
}

print_env() {
  local host
  host=$(current_host) || return 1
  if [ -n "$host" ]; then
    echo "export DOCKER_HOST=$host"
  fi
  # Our daemon gives containers no route out (no NAT without iptables), so
  # builds that download must share the host's network.
  if [ "$host" = "$our_host" ]; then
    echo "export CLOUDMART_BUILD_NETWORK=host"
  fi
}

require_root_and_debian() {
  [ "$(id -u)" -eq 0 ] || die "no Docker daemon answers, and starting one needs root (run as root, or start Docker yourself)"
  if [ ! -f /etc/debian_version ] || ! command -v apt-get >/dev/null 2>&1; then
    die "no Docker daemon answers, and this script can only install one on Debian (install Docker, then run it again)"
  fi
}

missing_packages() {
  missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] || missing+=(dnsmasq-base)
}

install_packages() {
  local missing
  missing_packages
  [ "${#missing[@]}" -eq 0 ] && return 0
  # Two of us starting at once (parallel tests, two terminals) would both
  # run apt-get, and the second would fail on dpkg's lock: the second
  # waits here instead, and finds the packages there when it gets the lock.
  exec 9>/run/lock/cloudmart-engine-install.lock
  flock 9
  missing_packages
  if [ "${#missing[@]}" -eq 0 ]; then
    exec 9>&-
    return 0
  fi
  echo "$me: installing ${missing[*]} from Debian" >&2
  # Package scripts would start the distribution's own dockerd, with its
  # default firewall rules; a policy-rc.d that says no keeps them from
  # starting anything. Only a policy we wrote is removed again.
  local policy=/usr/sbin/policy-rc.d own_policy=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
  fi
  local ok=1
  # Another apt-get of the machine's own may hold dpkg's lock for a while.
  local wait=(-o DPkg::Lock::Timeout=600)
  DEBIAN_FRONTEND=noninteractive apt-get "${wait[@]}" update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get "${wait[@]}" install -y -qq --no-install-recommends \
    "${missing[@]}" >"$state/apt.log" 2>&1 || ok=
  [ -n "$own_policy" ] && rm -f "$policy"
  exec 9>&-
  if [ -z "$ok" ]; then
    tail -n 5 "$state/apt.log" >&2
    die "apt-get install ${missing[*]} failed (full log: $state/apt.log)"
  fi
}

# Something other than our daemon holds the socket path: a file that is not
# a socket, or a socket someone listens on.
check_socket_free() {
  [ -e "$sock" ] || return 0
  [ -S "$sock" ] || die "socket path $sock is taken by a file that is not a socket (set CLOUDMART_ENGINE_SOCK to another path)"
  if python3 - "$sock" <<'PY' 2>/dev/null; then
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(2)
s.connect(sys.argv[1])
PY
    die "socket path $sock is taken: another process listens on it (set CLOUDMART_ENGINE_SOCK to another path)"
  fi
  # A socket nobody listens on is what a killed daemon leaves behind.
  rm -f "$sock"
}

start_daemon() {
  mkdir -p "$state/data" "$run_dir" "$(dirname "$sock")"
  check_socket_free
  local extra=()
  read -r -a extra <<<"${CLOUDMART_DOCKERD_FLAGS:-}"
  # The daemon is put in its own session so that it outlives this shell
  # and a terminal's ctrl-c.
  setsid dockerd \
    --host "$our_host" \
    --data-root "$state/data" \
    --exec-root "$run_dir/exec" \
    --pidfile "$pidfile" \
    --iptables=false \
    --ip6tables=false \
    --ip-masq=false \
    --ip-forward=false \
    --userland-proxy=true \
    --bip "$bip" \
    --dns "$dns_ip" \
    --storage-driver overlay2 \
    --log-driver json-file \
    --log-opt max-size=10m \
    "${extra[@]}" \
    >"$log" 2>&1 </dev/null &
  local pid=$!
  for _ in $(seq 1 120); do
    if answers "$our_host"; then
      echo "$me: dockerd $(DOCKER_HOST=$our_host docker version --format '{{.Server.Version}}') started (pid $pid, data root $state/data, log $log)" >&2
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile" "$sock"
  echo "$me: dockerd did not start; the last lines of $log:" >&2
  tail -n 15 "$log" | sed 's/^/  /' >&2
  exit 1
}

# The containers' DNS server: dnsmasq on the bridge address, forwarding to
# the resolvers in the host's /etc/resolv.conf. Started once, kept with the
# daemon.
ensure_dns() {
  local pid
  pid=$(cat "$dns_pidfile" 2>/dev/null || true)
  if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dnsmasq ]; then
    return 0
  fi
  /usr/sbin/dnsmasq --conf-file=/dev/null --listen-address="$dns_ip" --bind-dynamic \
    --pid-file="$dns_pidfile" --no-hosts --cache-size=1000 \
    --log-facility="$state/dnsmasq.log" 2>>"$state/dnsmasq.log"
}

# Stops dockerd $1 (ours), and our dnsmasq with it.
stop_daemon() {
  local pid=$1 dns
  kill "$pid" 2>/dev/null || true
  dns=$(cat "$dns_pidfile" 2>/dev/null || true)
  if [ -n "$dns" ] && [ "$(cat "/proc/$dns/comm" 2>/dev/null)" = dnsmasq ]; then
    kill "$dns"
  fi
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.5
  done
  return 1
}

cmd_up() {
  local host
  if host=$(current_host); then
    if [ "$host" = "$our_host" ]; then
      ensure_dns || die "dnsmasq could not listen on $dns_ip:53 (log: $state/dnsmasq.log)"
    fi
    print_env
    return 0
  fi
  require_root_and_debian
  mkdir -p "$state" "$(dirname "$sock")"
  # A path that is not ours to use is refused before anything is installed.
  check_socket_free
  install_packages
  start_daemon
  if ! ensure_dns; then
    stop_daemon "$(our_pid)" || true
    die "dnsmasq could not listen on $dns_ip:53, so the daemon was stopped again (is another Docker daemon using that bridge address? set CLOUDMART_ENGINE_BIP; log: $state/dnsmasq.log)"
  fi
  print_env
}

cmd_down() {
  local pid
  if ! pid=$(our_pid); then
    echo "$me: no daemon of ours is running (state in $state); nothing stopped" >&2
    return 0
  fi
  # Containers of ours still running would only be killed by the daemon's
  # own shutdown timeout; stopping them first is quicker and cleaner.
  local ids=()
  mapfile -t ids < <(DOCKER_HOST=$our_host docker ps -q 2>/dev/null || true)
  if [ "${#ids[@]}" -gt 0 ]; then
    DOCKER_HOST=$our_host docker stop -t 5 "${ids[@]}" >/dev/null 2>&1 || true
  fi
  stop_daemon "$pid" || die "dockerd (pid $pid) did not stop within 30 s"
  echo "$me: dockerd (pid $pid) stopped" >&2
}

cmd_status() {
  local host
  if host=$(current_host); then
    if [ "$host" = "$our_host" ]; then
      echo "engine: ours (pid $(our_pid), DOCKER_HOST=$our_host, data root $state/data)"
    else
      [ -n "$host" ] || host="the docker client's default"
      echo "engine: the machine's own ($host)"
    fi
  else
    echo "engine: none answers (scripts/engine.sh up starts one)"
    return 1
  fi
}

# --- base images ------------------------------------------------------------

standin_label=org.cloudmart.standin

# The Debian mirror apt already uses (deb822 or one-line sources).
debian_mirror() {
  local uri
  uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

# `docker pull`, quietly; the reason for a failure goes to the caller's log.
try_pull() {
  timeout 120 docker pull -q "$1" >"$state/pull.log" 2>&1
}

have_image() {
  docker image inspect "$1" >/dev/null 2>&1
}

build_debian() {
  local ref=debian:bookworm-slim mirror rootfs
  mirror=$(debian_mirror)
  rootfs=$(mktemp -d "${TMPDIR:-/tmp}/cloudmart-rootfs.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$rootfs'" RETURN
  echo "$me: building a stand-in for $ref: debootstrap --variant=minbase bookworm from $mirror" >&2
  command -v debootstrap >/dev/null 2>&1 || die "debootstrap is not installed (apt-get install debootstrap)"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$state/debootstrap.log" 2>&1 \
    || { tail -n 5 "$state/debootstrap.log" >&2; die "debootstrap failed (log: $state/debootstrap.log)"; }
  # What the slim image leaves out: package lists, caches, docs.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/* \
    "$rootfs"/var/log/* "$rootfs"/debootstrap
  tar -C "$rootfs" -c . | docker import \
    --change "LABEL $standin_label=\"debootstrap --variant=minbase bookworm from $mirror\"" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' \
    - "$ref" >/dev/null
}

build_rust() {
  local ref=$1 sysroot ctx ca
  sysroot=$(rustc --print sysroot 2>/dev/null) || die "no Rust toolchain on this machine to make $ref from"
  ca=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
  [ -f "$ca" ] || die "no CA bundle at $ca for $ref"
  echo "$me: building a stand-in for $ref: debian:bookworm-slim + gcc + $(rustc --version | cut -d' ' -f1-2) from $sysroot" >&2
  ctx=$(mktemp -d "${TMPDIR:-/tmp}/cloudmart-rust.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$ctx'" RETURN
  mkdir -p "$ctx/rust/bin"
  cp "$sysroot/bin/cargo" "$sysroot/bin/rustc" "$sysroot/bin/rustdoc" "$ctx/rust/bin/"
  cp -a "$sysroot/lib" "$ctx/rust/"
  [ -d "$sysroot/libexec" ] && cp -a "$sysroot/libexec" "$ctx/rust/"
  cp "$ca" "$ctx/ca-certificates.crt"
  cp "$root/docker/standins/rust/Dockerfile" "$ctx/Dockerfile"
  docker build --network host -q \
    --label "$standin_label=debian:bookworm-slim + gcc + the machine's $(rustc --version | cut -d' ' -f1-2) and CA bundle" \
    -t "$ref" "$ctx" >"$state/rust-build.log" 2>&1 \
    || { tail -n 10 "$state/rust-build.log" >&2; die "building $ref failed (log: $state/rust-build.log)"; }
}

# Makes sure $1 exists: already there, pulled, or built by $2.
ensure_base() {
  local ref=$1 builder=$2
  if have_image "$ref"; then
    return 0
  fi
  if try_pull "$ref"; then
    echo "$me: pulled $ref" >&2
    return 0
  fi
  echo "$me: cannot pull $ref ($(tail -n 1 "$state/pull.log" | cut -c1-120)); making a local stand-in" >&2
  "$builder" "$ref"
  echo "$me: $ref is a local stand-in (label $standin_label)" >&2
}

cmd_bases() {
  eval "$(print_env)" 2>/dev/null || die "no Docker daemon answers (run: eval \"\$(scripts/engine.sh up)\")"
  mkdir -p "$state" 2>/dev/null || state=$(mktemp -d)
  local rust_version
  rust_version=$(sed -n 's/^ARG RUST_VERSION=//p' "$root/Dockerfile")
  [ -n "$rust_version" ] || die "cannot read ARG RUST_VERSION from the Dockerfile"
  ensure_base debian:bookworm-slim build_debian
  ensure_base "rust:$rust_version-slim-bookworm" build_rust
}

case "${1:-}" in
  up) cmd_up ;;
  env) print_env || die "no Docker daemon answers (run: eval \"\$(scripts/engine.sh up)\")" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  bases) cmd_bases ;;
  *)
    echo "usage: $me up|env|bases|status|down" >&2
    exit 2
    ;;
esac
