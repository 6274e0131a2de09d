#!/usr/bin/env bash
# End to end on a Redis Cluster with two instances: starts a three-master Redis Cluster of its own
# (three `redis-server` processes with cluster-enabled on free ports, joined with
# `redis-cli --cluster create`), two `flashsale` binaries on it sharing one database, and plays
# `flashsale-loadtest smoke` against both (`--url` twice: each buyer's requests go to either, as a
# load balancer would send them) with every check. Stops what it started, by process id.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/services.sh
source scripts/services.sh
# shellcheck source=scripts/redis-cluster.sh
source scripts/redis-cluster.sh
# shellcheck source=scripts/dev-server.sh
source scripts/dev-server.sh
ensure_services

cargo build --locked -p flashsale-server -p flashsale-loadtest
target="${CARGO_TARGET_DIR:-target}/debug"

work=$(mktemp -d)
db="flashsale_e2e_cluster_$$"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  stop_redis_cluster
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

start_redis_cluster "$work"

urls=()
for i in 1 2; do
  port=$(free_port)
  DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" FLASHSALE_ADDR="127.0.0.1:$port" \
    FLASHSALE_REDIS_CLUSTER="$cluster_seeds" FLASHSALE_REDIS_PREFIX="e2e-cluster-$$" FLASHSALE_RATE_LIMIT_PER_IP=0 \
    "$target/flashsale" serve >"$work/flashsale-$i.log" 2>&1 &
  pids+=("$!")
  await_server "${pids[-1]}" "$port" "$work/flashsale-$i.log"
  urls+=(--url "http://127.0.0.1:$port")
  # The second instance starts once the first has created the database and run the migrations.
done

status=0
# With a proof of work on each join: a challenge one instance issued is checked by the other.
"$target/flashsale-loadtest" "${urls[@]}" smoke --join-pow-bits 10 --database-url "postgres://postgres@127.0.0.1:5432/$db" \
  --report "$work/smoke.json" || status=$?
if [ "$status" -ne 0 ]; then tail -n 30 "$work"/flashsale-*.log; exit "$status"; fi
echo "e2e-cluster: smoke passed against two instances on a three-master Redis Cluster"
