#!/usr/bin/env bash
# Throughput of the public sale endpoints next to GET /healthz on the same server, with the
# public-view cache on (default 500 ms) and off (0), all in one run so the ratios compare like
# with like on a noisy machine. Needs wrk (apt-get install wrk). Results go to stdout; copy them
# into BENCHMARKS.md with the date.
#
#   ./scripts/bench-public.sh [seconds per run, default 10] [connections, default 64]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/services.sh
source scripts/services.sh
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
ensure_services
command -v wrk >/dev/null || apt_install wrk

duration="${1:-10}"
connections="${2:-64}"
cargo build --release --locked -p flashsale-server
bin="${CARGO_TARGET_DIR:-target}/release/flashsale"
port=18181
db=flashsale_bench_public

run_with_cache() {
  local cache_ms=$1
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
  RUST_LOG=warn DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" FLASHSALE_ADDR="127.0.0.1:$port" \
    FLASHSALE_REDIS_PREFIX="bench-$$" FLASHSALE_PUBLIC_CACHE_MS="$cache_ms" "$bin" >/dev/null 2>&1 &
  local server=$!
  wait_for_listener "$port"
  curl -sf -X POST "http://127.0.0.1:$port/admin/sales" -H 'Authorization: Bearer dev-admin-token' \
    -H 'Content-Type: application/json' \
    -d '{"name":"Phone X","sku":"PHONE-X","price_cents":499900,"currency":"CNY","stock":50000,"per_user_limit":2,"weekly":{"weekday":"tue","time":"12:00","timezone":"Asia/Shanghai"}}' >/dev/null
  for path in /healthz /sales/1 /sales; do
    echo "| $cache_ms | $path | $(wrk_cells "$connections" "$duration" "http://127.0.0.1:$port$path") |"
  done
  kill "$server"; wait "$server" || true
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
  redis-cli --scan --pattern "bench-$$:*" | xargs -r redis-cli del >/dev/null
}

echo "| cache ms | path | req/s | p50 | p99 | non-2xx |"
echo "|---|---|---|---|---|---|"
run_with_cache 500
run_with_cache 0
