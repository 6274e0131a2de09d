#!/usr/bin/env bash
# The debug `flashsale` binary started for one script (e2e.sh, schemathesis.sh, browser.sh), on
# a free port with a database and a Redis prefix of its own. Sourced, not run.
#
#   start_dev_server NAME [VAR=value ...]   builds nothing; starts "$target/flashsale serve" with
#                                           database flashsale_NAME_<pid>, prefix NAME-<pid> and
#                                           the settings given; sets $server (pid), $port, $log,
#                                           $db and $prefix; returns once it listens (or prints its
#                                           log and fails if it exited)
#   stop_dev_server                         stops it (SIGTERM, waits), drops its database, deletes
#                                           its Redis keys and its log
#   free_port                               prints a TCP port nothing listens on
#   await_server PID PORT LOG               returns once PORT listens; fails (printing LOG) if PID
#                                           exits first or nothing listens within 60 s
#
# Needs services.sh (port_open) sourced first.

server="" port="" db="" prefix="" log=""

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

await_server() {
  local pid=$1 listen=$2 output=$3
  for _ in $(seq 1 120); do
    if port_open "$listen"; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then cat "$output"; echo "flashsale exited during start-up"; return 1; fi
    sleep 0.5
  done
  echo "flashsale did not listen on 127.0.0.1:$listen within 60 s"; return 1
}

start_dev_server() {
  local name=$1; shift
  port=$(free_port)
  db="flashsale_${name}_$$"
  prefix="${name}-$$"
  log=$(mktemp)
  env DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" FLASHSALE_ADDR="127.0.0.1:$port" \
    FLASHSALE_REDIS_PREFIX="$prefix" "$@" "$target/flashsale" serve >"$log" 2>&1 &
  server=$!
  await_server "$server" "$port" "$log"
}

stop_dev_server() {
  [ -n "$server" ] || return 0
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
  redis-cli --scan --pattern "$prefix:*" | xargs -r redis-cli del >/dev/null 2>&1 || true
  rm -f "$log"
}
