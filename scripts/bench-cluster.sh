#!/usr/bin/env bash
# Orders per second (HTTP, admission token, the Redis reservation, the durable PostgreSQL write)
# through one release server on one Redis and on a three-master Redis Cluster of this script's
# own, in one run: one hot sale (`flashsale-loadtest order-bench`), then three sales at once (three
# order-bench processes, whose sales the cluster places on different masters). Then joins and
# polls on each (`bench-queue.sh`: a million buyers in line), and the Redis memory one queued
# buyer costs (`queue-smoke`'s buyers, every key's MEMORY USAGE summed).
#
#   ./scripts/bench-cluster.sh [orders per sale, default 20000] [concurrency per sale, default 128]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/services.sh
source scripts/services.sh
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
# shellcheck source=scripts/redis-cluster.sh
source scripts/redis-cluster.sh
prepare_server_and_harness
orders="${1:-20000}"
concurrency="${2:-128}"
work=$(mktemp -d)
trap 'stop_redis_cluster; rm -rf "$work"' EXIT
start_redis_cluster "$work"
finish() { stop_bench_server; stop_redis_cluster; rm -rf "$work"; }

machine_line "; $orders orders per sale, $concurrency in flight per sale"
echo "| Redis | sales at once | orders/s, total | per sale |"
echo "|---|---|---|---|"
for mode in single cluster; do
  settings=()
  if [ "$mode" = cluster ]; then settings=(FLASHSALE_REDIS_CLUSTER="$cluster_seeds"); fi
  start_bench_server 18186 flashsale_bench_cluster "bench-c-$$" "${settings[@]}"
  trap finish EXIT
  for sales in 1 3; do
    pids=()
    for i in $(seq 1 "$sales"); do
      "$target/flashsale-loadtest" --url http://127.0.0.1:18186 order-bench --orders "$orders" \
        --concurrency "$concurrency" --skip-naive >"$work/bench-$mode-$sales-$i.txt" 2>&1 &
      pids+=("$!")
    done
    for pid in "${pids[@]}"; do wait "$pid"; done
    rates=$(cat "$work"/bench-"$mode"-"$sales"-*.txt | awk '/api orders\/s/ {print $NF}')
    total=$(awk '{s += $1} END {printf "%.0f", s}' <<<"$rates")
    echo "| $mode | $sales | $total | $(tr '\n' ' ' <<<"$rates") |"
  done
  stop_bench_server
  trap 'stop_redis_cluster; rm -rf "$work"' EXIT
done

# Joins and polls with a million buyers in line (bench-queue.sh), on one Redis, then the cluster.
for mode in single cluster; do
  settings=()
  if [ "$mode" = cluster ]; then settings=(FLASHSALE_REDIS_CLUSTER="$cluster_seeds"); fi
  env "${settings[@]}" ./scripts/bench-queue.sh 10 64 | grep -E '^redis mode|^\| (healthz|poll|join) |^ratios'
done

# Redis memory per queued buyer: queue-smoke's buyers (half in the pre-queue, half after the
# opening, a few admitted) on a fresh prefix, every key's MEMORY USAGE summed.
buyers=4000
start_bench_server 18187 flashsale_bench_memory "bench-m-$$"
trap finish EXIT
"$target/flashsale-loadtest" --url http://127.0.0.1:18187 queue-smoke --buyers "$buyers" --stock 20 >"$work/memory.txt"
bytes=$(redis-cli --scan --pattern "bench-m-$$:*" | while read -r key; do redis-cli memory usage "$key"; done \
  | awk '{s += $1} END {print s}')
echo "Redis memory: $bytes bytes for $buyers buyers in line = $((bytes / buyers)) bytes per queued buyer"
