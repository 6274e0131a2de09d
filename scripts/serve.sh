#!/usr/bin/env bash
# Runs the flashsale backend on this machine: brings up Redis and PostgreSQL if they are not
# answering (installing them with apt-get when absent), then builds and starts the server.
# The server creates its database and runs migrations itself. Extra arguments go to `flashsale`.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/services.sh
source scripts/services.sh
ensure_services
exec cargo run --release --locked -p flashsale-server --bin flashsale -- "$@"
