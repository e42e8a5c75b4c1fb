#!/usr/bin/env bash
# Starts a throwaway MongoDB-compatible server for the MongoStore tests.
#
# MongoDB itself is not in the package registries this project can reach, so
# the tests talk to nx-27017 (PyPI): a MongoDB wire-protocol server backed by
# SQLite. This script installs it into .venv/mongo under the repo root (never
# globally), starts it on a free port of 127.0.0.1 with its data in a fresh
# temp dir, waits until the port accepts connections, and prints one line:
#
#   MONGODB_URI=mongodb://127.0.0.1:PORT
#
# Usage:
#   eval "$(scripts/mongo-test-server.sh /tmp/mongo.pid)"; export MONGODB_URI
#   scripts/mongo-test-server.sh stop /tmp/mongo.pid
#
# Both are idempotent: starting again while the server in the PID file runs
# prints that server's URI; stopping a server that is gone succeeds. Any
# failure prints one line on stderr and exits 1.
set -euo pipefail

readonly NX_VERSION="0.8.1"
readonly DEADLINE_S="${MONGO_TEST_SERVER_DEADLINE_S:-30}"
readonly START_ATTEMPTS=3

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
readonly VENV="$ROOT/.venv/mongo"
readonly INSTALL_LOG="$ROOT/.venv/mongo-install.log"

die() {
    echo "mongo-test-server: $*" >&2
    exit 1
}

usage() {
    die "usage: $0 PIDFILE | $0 stop PIDFILE"
}

# Whether the venv holds the pinned nx-27017 and it imports.
venv_ok() {
    [[ -x "$VENV/bin/python" && -x "$VENV/bin/nx-27017" ]] &&
        "$VENV/bin/python" -c "
import importlib.metadata, sys, nx_27017
sys.exit(importlib.metadata.version('nx-27017') != '$NX_VERSION')
" >/dev/null 2>&1
}

ensure_installed() {
    venv_ok && return 0
    command -v python3 >/dev/null 2>&1 ||
        die "python3 (3.10 or newer) is needed to install nx-27017 and was not found"
    mkdir -p "$ROOT/.venv"
    # Two runs at once must not build the same venv over each other.
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$ROOT/.venv/mongo.lock"
        flock -w 600 9 || die "timed out waiting for another install of nx-27017 (lock $ROOT/.venv/mongo.lock)"
        venv_ok && return 0
    fi
    {
        python3 -m venv --clear "$VENV" &&
            "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input \
                "nx-27017==$NX_VERSION"
    } >"$INSTALL_LOG" 2>&1 ||
        die "installing nx-27017==$NX_VERSION into .venv/mongo failed (see $INSTALL_LOG)"
    venv_ok || die "nx-27017==$NX_VERSION was installed into .venv/mongo but does not import (see $INSTALL_LOG)"
}

# The value after FLAG in the command line of PID, or nothing.
nx_arg() {
    local pid="$1" flag="$2" prev="" arg
    if [[ -r "/proc/$pid/cmdline" ]]; then
        while IFS= read -r -d '' arg; do
            [[ "$prev" == "$flag" ]] && { printf '%s\n' "$arg"; return 0; }
            prev="$arg"
        done <"/proc/$pid/cmdline"
    else
        # No /proc (macOS): split ps output on spaces, fine for mktemp paths.
        for arg in $(ps -o args= -p "$pid" 2>/dev/null); do
            [[ "$prev" == "$flag" ]] && { printf '%s\n' "$arg"; return 0; }
            prev="$arg"
        done
    fi
    return 1
}

# Whether PID is a live nx-27017 started by this script (not a recycled PID).
is_ours() {
    local pid="$1"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    local data
    data="$(nx_arg "$pid" --data-dir)" || return 1
    [[ "$data" == */cloudmart-mongo.*/data ]]
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port() {
    "$VENV/bin/python" -c '
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
'
}

# Polls until PORT accepts connections; fails if PID exits or time runs out.
wait_for_port() {
    local pid="$1" port="$2"
    # SECONDS ticks in whole seconds: the +1 makes the wait at least DEADLINE_S.
    local deadline=$((SECONDS + DEADLINE_S + 1))
    while ((SECONDS < deadline)); do
        # Alive after the port opened, so the listener is ours.
        port_open "$port" && kill -0 "$pid" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || return 2
        sleep 0.1
    done
    return 1
}

start() {
    local pidfile="$1"
    if [[ -f "$pidfile" ]]; then
        local old port
        old="$(<"$pidfile")"
        if is_ours "$old" && port="$(nx_arg "$old" --port)" && port_open "$port"; then
            echo "MONGODB_URI=mongodb://127.0.0.1:$port"
            return 0
        fi
        rm -f "$pidfile"
    fi

    ensure_installed

    local attempt state port pid rc
    for ((attempt = 1; attempt <= START_ATTEMPTS; attempt++)); do
        state="$(mktemp -d "${TMPDIR:-/tmp}/cloudmart-mongo.XXXXXX")" ||
            die "cannot create a temp dir for the server's data"
        mkdir "$state/data"
        port="$(free_port)" || die "cannot find a free port on 127.0.0.1"
        # Detached from our stdout, so `$(...)` around this script returns.
        nohup "$VENV/bin/nx-27017" --host 127.0.0.1 --port "$port" \
            --data-dir "$state/data" --pid-file "$state/nx.pid" \
            --log-file "$state/server.log" \
            </dev/null >"$state/console.log" 2>&1 &
        pid=$!
        rc=0
        wait_for_port "$pid" "$port" || rc=$?
        if ((rc == 0)); then
            if ! { printf '%s\n' "$pid" >"$pidfile.tmp" && mv "$pidfile.tmp" "$pidfile"; }; then
                kill "$pid" 2>/dev/null || true
                die "cannot write the PID file $pidfile"
            fi
            echo "MONGODB_URI=mongodb://127.0.0.1:$port"
            return 0
        fi
        if ((rc == 1)); then
            kill -KILL "$pid" 2>/dev/null || true
            die "nx-27017 did not accept connections on 127.0.0.1:$port within ${DEADLINE_S}s (see $state/console.log)"
        fi
        # It exited. Another process may have taken the port in between: retry.
        if ((attempt == START_ATTEMPTS)) ||
            ! grep -qi "address already in use" "$state/console.log" 2>/dev/null; then
            break
        fi
        rm -rf -- "$state"
    done
    die "nx-27017 exited at start: $(tail -n 1 "$state/console.log" 2>/dev/null) (see $state/console.log)"
}

stop() {
    local pidfile="$1"
    [[ -f "$pidfile" ]] || return 0
    local pid data
    pid="$(<"$pidfile")"
    if is_ours "$pid"; then
        data="$(nx_arg "$pid" --data-dir)"
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 11))
        while is_ours "$pid" && ((SECONDS < deadline)); do
            sleep 0.1
        done
        if is_ours "$pid"; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
        # Only ever remove a directory this script made.
        local state="${data%/data}"
        [[ "$state" == */cloudmart-mongo.* && -d "$state" ]] && rm -rf -- "$state"
    fi
    rm -f "$pidfile"
}

case "${1:-}" in
    "") usage ;;
    stop)
        [[ $# -eq 2 && -n "$2" ]] || usage
        stop "$2"
        ;;
    -*) usage ;;
    *)
        [[ $# -eq 1 ]] || usage
        start "$1"
        ;;
esac
