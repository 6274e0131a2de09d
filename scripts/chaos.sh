#!/usr/bin/env bash
# The chaos matrix: `flashsale-loadtest chaos` starts a redis-server and one or two flashsale
# servers of its own for each scenario (a database of its own on the local PostgreSQL, or a
# PostgreSQL cluster of its own, initdb on a free port, for `postgres-stopped`), plays a sale while
# a fault strikes, and checks every invariant; it stops what it started by process id. `--ci` plays the
# short subset CI runs; other arguments go to `flashsale-loadtest chaos` (e.g. --scenario NAME).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/services.sh
source scripts/services.sh
ensure_services
command -v redis-server >/dev/null 2>&1 || apt_install redis-server
# `clock-skew` runs the server under faketime (libfaketime): only the full matrix needs it.
if [[ " $* " != *" --ci "* ]]; then command -v faketime >/dev/null 2>&1 || apt_install faketime; fi

cargo build --locked -p flashsale-server -p flashsale-loadtest
target="${CARGO_TARGET_DIR:-target}/debug"
export DATABASE_URL="${CHAOS_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
exec "$target/flashsale-loadtest" chaos --server-bin "$target/flashsale" "$@"
