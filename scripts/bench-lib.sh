#!/usr/bin/env bash
# Helpers shared by the bench-*.sh scripts. Sourced, not run.

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
