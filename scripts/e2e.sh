#!/usr/bin/env bash
# End to end: starts the real `flashsale` binary on a free port with a database of its own,
# waits until it is ready, plays `flashsale-loadtest admin-race`, `queue-smoke`, a small
# `order-bench` (orders through the real binary, without the naive baseline), `smoke` (a whole
# sale: queue, orders, payments, cancels, lapses, then the invariants; the naive purchase beside
# it) and `run` with every option against it, and `baseline-naive` on its own,
# then stops it with SIGTERM and checks it shut down cleanly. The per-IP rate limit is off for
# this server: every simulated buyer comes from 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/services.sh
source scripts/services.sh
ensure_services

cargo build --locked -p flashsale-server -p flashsale-loadtest
target="${CARGO_TARGET_DIR:-target}/debug"
# shellcheck source=scripts/dev-server.sh
source scripts/dev-server.sh
cleanup() {
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS flashsale_naive_baseline" >/dev/null 2>&1 || true
  [ -z "$log" ] || rm -f "$log.smoke.json" "$log.smoke.html"
  stop_dev_server
}
trap cleanup EXIT
start_dev_server e2e FLASHSALE_RATE_LIMIT_PER_IP=0

"$target/flashsale-loadtest" --url "http://127.0.0.1:$port" admin-race --operators 50
"$target/flashsale-loadtest" --url "http://127.0.0.1:$port" queue-smoke --buyers 300 --stock 20
"$target/flashsale-loadtest" --url "http://127.0.0.1:$port" \
  order-bench --orders 2000 --concurrency 32 --skip-naive
"$target/flashsale-loadtest" --url "http://127.0.0.1:$port" smoke --naive \
  --database-url "postgres://postgres@127.0.0.1:5432/$db" --report "$log.smoke.json" --html "$log.smoke.html"
# Every option through `run`: a ramp, two units a buyer, buyers giving up, a third following the
# event stream, no lapses (quick), a proof of work on each join.
"$target/flashsale-loadtest" --url "http://127.0.0.1:$port" run --buyers 1500 --stock 150 --arrival ramp \
  --per-user-limit 2 --max-quantity 2 --give-up 0.1 --patience 10 --events 0.3 --pay 0.9 --cancel 0.1 --retry 0.1 \
  --admission-rate 300 --admission-ttl 15 --payment-window 30 --opens-in 4 --early-window 3 --late-window 3 \
  --connections 64 --duration 120 --seed 11 --join-pow-bits 8 --database-url "postgres://postgres@127.0.0.1:5432/$db"
"$target/flashsale-loadtest" baseline-naive --buyers 2000 --stock 200 --connections 32 \
  --database-url "postgres://postgres@127.0.0.1:5432/postgres"

kill -TERM "$server"
if ! wait "$server"; then cat "$log"; echo "flashsale did not shut down cleanly"; exit 1; fi
grep -q "flashsale stopped" "$log" || { cat "$log"; echo "no clean-shutdown line in the log"; exit 1; }
echo "e2e: flashsale started, served admin-race, queue-smoke, order-bench, smoke and run (baseline-naive beside them), and stopped cleanly"
