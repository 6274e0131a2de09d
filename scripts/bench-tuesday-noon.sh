#!/usr/bin/env bash
# The sale the backend exists for, played whole on this machine: `flashsale-loadtest
# tuesday-noon` (1,000,000 buyers for 50,000 units by default) against a release server with a
# database and Redis prefix of its own, then the server's peak memory and CPU. Redis, PostgreSQL,
# the server and the harness share the machine. The per-IP rate limit is off (every buyer comes
# from 127.0.0.1); the poll budget is sized for this machine (POLL_BUDGET, default 5000 polls/s:
# about a third of what a 2-core box serving everything else too can answer).
#
#   ./scripts/bench-tuesday-noon.sh [extra tuesday-noon options, e.g. --buyers 200000 --stock 10000]
#
# Writes the JSON and HTML reports to ${OUT:-bench-results}/tuesday-noon.{json,html}.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/services.sh
source scripts/services.sh
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
prepare_server_and_harness
out="${OUT:-bench-results}"
mkdir -p "$out"
start_bench_server 18185 flashsale_bench_tuesday "bench-t-$$" FLASHSALE_QUEUE_POLL_BUDGET="${POLL_BUDGET:-5000}"

machine_line
cpu_before=$(awk '{print $14 + $15}' "/proc/$server/stat")
status=0
"$target/flashsale-loadtest" --url "http://127.0.0.1:18185" tuesday-noon \
  --database-url "postgres://postgres@127.0.0.1:5432/flashsale_bench_tuesday" \
  --report "$out/tuesday-noon.json" --html "$out/tuesday-noon.html" "$@" || status=$?
cpu_after=$(awk '{print $14 + $15}' "/proc/$server/stat")
echo "server: peak RSS $(awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' "/proc/$server/status"), \
CPU $(( (cpu_after - cpu_before) / 100 )) s during the run"
echo "redis: $(redis-cli info memory | awk -F: '/^used_memory_peak_human/ {print $2}' | tr -d '\r') peak (whole instance)"
exit "$status"
