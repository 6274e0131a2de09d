#!/usr/bin/env bash
# Helpers shared by the bench-*.sh scripts. Sourced, not run.

# Makes sure Redis and PostgreSQL run, builds the release server and harness, sets $target to
# where they are.
prepare_server_and_harness() {
  ensure_services
  cargo build --release --locked -p flashsale-server -p flashsale-loadtest
  target="${CARGO_TARGET_DIR:-target}/release"
}

# The machine the numbers come from, and the date.
machine_line() {
  echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); $(date -u +%Y-%m-%d)$*"
}

# Runs wrk (2 threads) with the given connections and seconds plus any wrk arguments, and prints
# "req/s | p50 | p99 | non-2xx" as the cells of a Markdown table row.
wrk_cells() {
  local connections=$1 duration=$2; shift 2
  local out; out=$(wrk -t2 -c"$connections" -d"${duration}s" --latency "$@")
  local rps p50 p99 errors
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '/Latency Distribution/ {f=1} f && $1=="50%" {print $2; exit}' <<<"$out")
  p99=$(awk '/Latency Distribution/ {f=1} f && $1=="99%" {print $2; exit}' <<<"$out")
  errors=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  printf '%s | %s | %s | %s' "$rps" "$p50" "$p99" "${errors:-0}"
}

# Waits until something listens on 127.0.0.1:$1 (30 s at most).
wait_for_listener() {
  for _ in $(seq 1 60); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.5; done
  echo "nothing listens on 127.0.0.1:$1" >&2; return 1
}

# Starts the release server ($target/flashsale) on 127.0.0.1:$1 with a fresh database $2 and Redis
# prefix $3, the per-IP limit off (every simulated buyer comes from 127.0.0.1) and any further
# VAR=value settings given; sets $server to its pid, and at exit stops it and drops its database,
# the naive baseline's scratch database and its Redis keys. Returns once it listens.
start_bench_server() {
  bench_port=$1 bench_db=$2 bench_prefix=$3; shift 3
  bench_log=$(mktemp)
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $bench_db" >/dev/null 2>&1
  env RUST_LOG=warn DATABASE_URL="postgres://postgres@127.0.0.1:5432/$bench_db" \
    FLASHSALE_ADDR="127.0.0.1:$bench_port" FLASHSALE_REDIS_PREFIX="$bench_prefix" FLASHSALE_RATE_LIMIT_PER_IP=0 \
    "$@" "$target/flashsale" >"$bench_log" 2>&1 &
  server=$!
  trap stop_bench_server EXIT
  wait_for_listener "$bench_port"
}

stop_bench_server() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $bench_db" >/dev/null 2>&1 || true
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS flashsale_naive_baseline" >/dev/null 2>&1 || true
  redis-cli --scan --pattern "$bench_prefix:*" | xargs -r redis-cli del >/dev/null
  rm -f "$bench_log"
}
