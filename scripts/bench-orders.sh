#!/usr/bin/env bash
# Orders per second end to end (HTTP, JWT, admission token, Redis reservation, durable PostgreSQL
# write with group commit) at saturation, next to a naive PostgreSQL-only purchase (row-lock
# decrement + insert, one transaction each) measured right after by the same harness process:
# `flashsale-loadtest order-bench`. Rate limits are off: the load comes from one address. The
# server, Redis, PostgreSQL and the harness share this machine.
#
#   ./scripts/bench-orders.sh [orders, default 50000] [concurrency, default 256]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/services.sh
source scripts/services.sh
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
prepare_server_and_harness

orders="${1:-50000}"
concurrency="${2:-256}"
start_bench_server 18184 flashsale_bench_orders "bench-o-$$" FLASHSALE_RATE_LIMIT_PER_USER=0

machine_line
"$target/flashsale-loadtest" --url "http://127.0.0.1:18184" order-bench --orders "$orders" --concurrency "$concurrency"
