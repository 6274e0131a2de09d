#!/usr/bin/env bash
# The pages in a real browser: starts the `flashsale` binary in dev mode on a free port (a
# database and Redis prefix of its own), then drives the waiting room and the operations console
# with Playwright (npm `playwright-core`, pinned in browser/package-lock.json) in Debian's
# `chromium`, headless. Installs chromium, a Chinese font and Node.js with apt-get when they are
# missing.
# Screenshots of each page, desktop and phone width, go to ${SCREENSHOTS:-target/screenshots}.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/services.sh
source scripts/services.sh
ensure_services
command -v chromium >/dev/null 2>&1 || { say "installing chromium"; apt_install chromium; }
# A font with Chinese glyphs, so the zh-CN screenshots show text rather than empty boxes.
if ! fc-list :lang=zh 2>/dev/null | grep -q .; then say "installing a Chinese font"; apt_install fonts-wqy-zenhei; fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  say "installing Node.js"
  apt_install nodejs npm
fi
(cd browser && npm ci --no-audit --no-fund --loglevel=error)

cargo build --locked -p flashsale-server
target="${CARGO_TARGET_DIR:-target}/debug"
# shellcheck source=scripts/dev-server.sh
source scripts/dev-server.sh
trap stop_dev_server EXIT
start_dev_server browser

shots="${SCREENSHOTS:-${CARGO_TARGET_DIR:-target}/screenshots}"
status=0
FLASHSALE_URL="http://127.0.0.1:$port" CHROMIUM="$(command -v chromium)" SCREENSHOTS="$shots" \
  node --test --test-concurrency=1 browser/tests/ || status=$?
if [ "$status" -ne 0 ]; then echo "--- server log"; tail -n 50 "$log"; fi
echo "screenshots in $shots"
exit "$status"
