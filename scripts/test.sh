#!/usr/bin/env bash
# Runs the whole test suite against real Redis and PostgreSQL, bringing them up first if they are
# not answering. Each test gets its own database (#[sqlx::test] creates it from DATABASE_URL's
# server) and its own Redis key prefix. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/services.sh
source scripts/services.sh
ensure_services
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
exec cargo test --workspace --locked "$@"
