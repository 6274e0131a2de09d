#!/usr/bin/env bash
# Reservations per second through the inventory crate's API at saturation, next to the raw rate of
# the same Lua script (reserve.lua) driven by redis-benchmark, in one run. Both reserve one unit
# per call as distinct buyers with distinct admission tickets, from a batch too big to sell out.
#
#   ./scripts/bench-reserve.sh [seconds, default 10] [concurrency, default 64]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/services.sh
source scripts/services.sh
ensure_services

seconds="${1:-10}"
concurrency="${2:-64}"
cargo build --release --locked -p flashsale-inventory --example reserve_bench
bench="${CARGO_TARGET_DIR:-target}/release/examples/reserve_bench"

echo "| client | reservations/s |"
echo "|---|---|"
for mode in shared pool; do
  rate=$("$bench" "$concurrency" "$seconds" "$mode" | sed -n 's/.*per_second=\([0-9]*\).*/\1/p')
  echo "| crate API, $mode connection | $rate |"
done

# The same script, raw: redis-benchmark replaces __rand_int__ with a random number per call, so
# every call is a new buyer with a new ticket.
prefix="bench-raw-$$"
k="$prefix:{sale:1}:b:1"
redis-cli HSET "$k:ledger" total 100000000 available 100000000 reserved 0 sold 0 per_user_limit 5 \
  paused 0 closed 0 opens_at_ms 0 closes_at_ms 0 >/dev/null
# Scripts run after the shared prelude (flashsale_redis::script), as the server loads them.
sha=$(redis-cli SCRIPT LOAD "$(cat crates/flashsale-redis/lua/prelude.lua crates/flashsale-inventory/lua/reserve.lua)")
requests=$((seconds * 60000))
raw_rate() { # extra redis-benchmark options...
  redis-benchmark -q -c "$concurrency" -n "$requests" -r 100000000 "$@" EVALSHA "$sha" 9 \
    "$k:ledger" "$k:inv:holdings" "$k:inv:res" "$k:inv:res:deadlines" "$k:inv:used-tickets" \
    "$k:q:steps:info" "$k:q:ticker" "$k:inv:unconfirmed" "$k:inv:unconfirmed:info" "u__rand_int__" 1 __rand_int__ 0 600000 |
    tr '\r' '\n' | grep -o '[0-9.]* requests per second' | tail -1 | cut -d' ' -f1
}
echo "| redis-benchmark EVALSHA reserve.lua, one call in flight per client | $(raw_rate -P 1) |"
echo "| redis-benchmark EVALSHA reserve.lua, 16 pipelined per client | $(raw_rate -P 16) |"
reserved=$(redis-cli HGET "$k:ledger" reserved)
echo "raw runs: $((2 * requests)) calls, $reserved units reserved (the rest drew a ticket or buyer already used)"
redis-cli --scan --pattern "$prefix:*" | xargs -r redis-cli del >/dev/null
