#!/bin/sh
# redis-server with protected mode off, as the official image builds it.
if [ "${1:-}" = redis-server ]; then
  shift
  exec redis-server --protected-mode no "$@"
fi
exec "$@"
