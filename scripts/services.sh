#!/usr/bin/env bash
# Brings up what flashsale needs on this machine: Redis on 127.0.0.1:6379 and PostgreSQL on
# 127.0.0.1:5432 (user postgres, no password from localhost). Sourced by serve.sh and test.sh.
#
# - A service that already answers is used as it is (never reconfigured).
# - A missing one is installed with apt-get (Debian/Ubuntu; as root or through sudo) and started:
#   Redis with append-only persistence and maxmemory-policy noeviction, data under .data/redis;
#   PostgreSQL as the distribution's default cluster, allowing the postgres user from localhost
#   without a password (a development machine's setting; production uses its own database).
# - FLASHSALE_SKIP_SERVICES=1 skips all of this (services elsewhere, URLs set by environment).
set -euo pipefail

FLASHSALE_ROOT="${FLASHSALE_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"

say() { printf '\033[1mflashsale:\033[0m %s\n' "$*" >&2; }

# Runs a command as root: directly, or through sudo.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else say "need root to run: $*"; return 1
  fi
}

# Whether something listens on 127.0.0.1:$1 (bash's /dev/tcp: no client tools needed).
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for_port() {
  local port=$1 what=$2
  for _ in $(seq 1 60); do port_open "$port" && return 0; sleep 0.5; done
  say "$what did not come up on 127.0.0.1:$port"; return 1
}

APT_UPDATED=""
apt_install() {
  command -v apt-get >/dev/null 2>&1 || { say "apt-get not found: install $* yourself"; return 1; }
  if [ -z "$APT_UPDATED" ]; then as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq; APT_UPDATED=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_redis() {
  if port_open 6379; then return 0; fi
  if ! command -v redis-server >/dev/null 2>&1; then
    say "installing redis-server"
    apt_install redis-server
    # The package may start its own service; use it if it answers.
    sleep 1
    if port_open 6379; then return 0; fi
  fi
  local dir="$FLASHSALE_ROOT/.data/redis"
  mkdir -p "$dir"
  say "starting redis-server (data in $dir)"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --dir "$dir" --logfile "$dir/redis.log" \
    --appendonly yes --appendfsync everysec --save "" --maxmemory-policy noeviction
  wait_for_port 6379 Redis
}

pg_version() { ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1; }

ensure_postgres() {
  if port_open 5432; then return 0; fi
  local fresh=""
  if [ -z "$(pg_version)" ]; then
    say "installing postgresql"
    apt_install postgresql
    fresh=1
  fi
  local version; version=$(pg_version)
  [ -n "$version" ] || { say "no PostgreSQL cluster found under /etc/postgresql"; return 1; }
  if [ ! -d "/etc/postgresql/$version/main" ]; then as_root pg_createcluster "$version" main; fresh=1; fi
  if [ -n "$fresh" ]; then
    # Development setting: the postgres user may connect from localhost without a password.
    local hba="/etc/postgresql/$version/main/pg_hba.conf"
    if ! as_root grep -q 'flashsale-dev' "$hba"; then
      as_root sed -i '1i host all postgres 127.0.0.1/32 trust # flashsale-dev\nhost all postgres ::1/128 trust # flashsale-dev' "$hba"
      # The package may have started the cluster already: make it read the new rule.
      if port_open 5432; then as_root pg_ctlcluster "$version" main reload || true; fi
    fi
  fi
  if ! port_open 5432; then
    say "starting PostgreSQL $version"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
      || as_root pg_ctlcluster "$version" main start
  fi
  wait_for_port 5432 PostgreSQL
}

ensure_services() {
  if [ "${FLASHSALE_SKIP_SERVICES:-0}" = "1" ]; then return 0; fi
  ensure_redis
  ensure_postgres
}
