#!/usr/bin/env bash
# What open event streams cost the server: STREAMS buyers (default 15,000: this machine allows
# 20,000 file descriptors per process) join one slowly moving line, then each holds the queue's
# event stream open; the server's CPU is read from /proc quiet and then with every stream open.
# SERVER_DIR=dir runs the `flashsale` binary in dir instead of this checkout's (to compare a
# build of an earlier commit with the same harness). Extra arguments go to the harness.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/services.sh
source scripts/services.sh
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
prepare_server_and_harness
harness="$target/flashsale-loadtest"
target="${SERVER_DIR:-$target}"
ulimit -n "$(ulimit -Hn)"
start_bench_server 18186 flashsale_bench_streams "bench-s-$$" FLASHSALE_HTTP_MAX_CONNECTIONS=19500

machine_line "; server $target/flashsale"
"$harness" --url "http://127.0.0.1:18186" streams --buyers "${STREAMS:-15000}" --server-pid "$server" "$@"
echo "server: peak RSS $(awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' "/proc/$server/status")"
