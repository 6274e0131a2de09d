#!/usr/bin/env bash
# Throughput of the queue endpoints next to GET /healthz on the same server, in one run:
#   - GET  /sales/{id}/queue  status polls, with a million buyers queued, each poll as a
#                             different buyer carrying their signed ticket;
#   - POST /sales/{id}/queue  new buyers joining (each request a buyer never seen before).
# Rate limits are switched off (FLASHSALE_RATE_LIMIT_PER_USER=0, ..._PER_IP=0): the load comes
# from one address. The server, Redis, PostgreSQL and wrk share this machine.
#
#   ./scripts/bench-queue.sh [seconds per run, default 10] [connections, default 64]
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
queued=1000000
cargo build --release --locked -p flashsale-server
bin="${CARGO_TARGET_DIR:-target}/release/flashsale"
port=18182
db=flashsale_bench_queue
prefix="bench-q-$$"
work=$(mktemp -d)
base="http://127.0.0.1:$port"

psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
RUST_LOG=warn DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" FLASHSALE_ADDR="127.0.0.1:$port" \
  FLASHSALE_REDIS_PREFIX="$prefix" FLASHSALE_RATE_LIMIT_PER_USER=0 FLASHSALE_RATE_LIMIT_PER_IP=0 \
  "$bin" >"$work/server.log" 2>&1 &
server=$!
cleanup() {
  kill "$server" 2>/dev/null || true
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
  redis-cli --scan --pattern "$prefix:*" | xargs -r redis-cli del >/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
wait_for_listener "$port"

# A sale opening in 3 s, admitting one buyer a second (so nearly everyone stays waiting).
opens_at=$(date -u -d '+3 seconds' +%Y-%m-%dT%H:%M:%SZ)
curl -sf -X POST "$base/admin/sales" -H 'Authorization: Bearer dev-admin-token' -H 'Content-Type: application/json' \
  -d "{\"name\":\"bench\",\"sku\":\"BENCH\",\"price_cents\":100,\"currency\":\"CNY\",\"stock\":50000,\"per_user_limit\":1,
       \"opens_at\":\"$opens_at\",\"prequeue_secs\":600,\"admission_rate\":1,\"admission_ttl_secs\":60}" >/dev/null
sleep 4

# A million buyers already in line: tickets 1..1,000,000 (as a million joins would leave them).
# On a Redis Cluster (FLASHSALE_REDIS_CLUSTER set, as bench-cluster.sh does) the script goes to
# the sale's master (`redis-cli -c` follows the redirect).
keys="$prefix:{sale:1}:b:1"
cli=(redis-cli)
if [ -n "${FLASHSALE_REDIS_CLUSTER:-}" ]; then
  seed=${FLASHSALE_REDIS_CLUSTER%%,*}; seed=${seed#redis://}
  cli=(redis-cli -c -h "${seed%%:*}" -p "${seed##*:}")
fi
"${cli[@]}" EVAL "for i = 1, tonumber(ARGV[1]) do redis.call('HSET', KEYS[1], 'bench-' .. i, i) end
  redis.call('SET', KEYS[2], ARGV[1]); redis.call('SET', KEYS[3], 0); return redis.call('HLEN', KEYS[1])" \
  3 "$keys:q:members" "$keys:q:tail" "$keys:q:sealed" "$queued" >/dev/null

python3 loadtest/bench/mint.py 1 100000 "$work/pollers.txt"
python3 loadtest/bench/mint.py 1 600000 "$work/joiners.txt" --first 2000001 --no-ticket
sample=$(tail -n 1 "$work/pollers.txt")
check=$(curl -sf "$base/sales/1/queue" -H "Authorization: Bearer $(cut -d' ' -f2 <<<"$sample")" \
  -H "X-Queue-Ticket: $(cut -d' ' -f3 <<<"$sample")")
grep -q '"status":"waiting"' <<<"$check" || { echo "poll check failed: $check"; exit 1; }

row() { # label, wrk args...
  local label=$1; shift
  local cells; cells=$(wrk_cells "$connections" "$duration" "$@")
  echo "| $label | $cells |"
  cut -d'|' -f1 <<<"$cells" | tr -d ' ' >"$work/$label.rps"
}

# /healthz is driven through the same wrk script (same headers, same client work per request),
# so the ratios compare the server's cost only.
echo "redis mode: ${FLASHSALE_REDIS_CLUSTER:+cluster }${FLASHSALE_REDIS_CLUSTER:-${FLASHSALE_REDIS_MODE:-shared}}"
echo "| endpoint | req/s | p50 | p99 | non-2xx |"
echo "|---|---|---|---|---|"
BUYERS="$work/pollers.txt" METHOD=GET row healthz -s loadtest/bench/buyers.lua "$base/healthz"
BUYERS="$work/pollers.txt" METHOD=GET row poll -s loadtest/bench/buyers.lua "$base/sales/1/queue"
BUYERS="$work/joiners.txt" METHOD=POST row join -s loadtest/bench/buyers.lua "$base/sales/1/queue"
healthz=$(cat "$work/healthz.rps")
python3 -c "import sys; h=float(sys.argv[1]); print(f'ratios to /healthz: poll {float(sys.argv[2])/h:.2f}, join {float(sys.argv[3])/h:.2f}')" \
  "$healthz" "$(cat "$work/poll.rps")" "$(cat "$work/join.rps")"
echo "queue length after the run: $(redis-cli GET "$keys:q:tail")"
