#!/usr/bin/env bash
# Runs the whole test suite against real Redis and PostgreSQL, bringing them up first if they are
# not answering. Each test gets its own database (#[sqlx::test] creates it from DATABASE_URL's
# server) and its own Redis key prefix. Then runs it again with every test's key space on a
# three-master Redis Cluster this script starts (FLASHSALE_TEST_REDIS_CLUSTER), and stops it.
# Extra arguments go to `cargo test` (both passes).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/services.sh
source scripts/services.sh
ensure_services
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
cargo test --workspace --locked "$@"

echo "== the same suite with every test's key space on a Redis Cluster of three masters"
# shellcheck source=scripts/redis-cluster.sh
source scripts/redis-cluster.sh
cluster_dir=$(mktemp -d)
trap 'stop_redis_cluster; rm -rf "$cluster_dir"' EXIT
start_redis_cluster "$cluster_dir"
FLASHSALE_TEST_REDIS_CLUSTER="$cluster_urls" cargo test --workspace --locked "$@"
