#!/usr/bin/env bash
# The API contract against the real server: starts the `flashsale` binary on a free port with a
# database and Redis prefix of its own, checks that its OpenAPI document is valid OpenAPI
# (openapi-spec-validator), then runs Schemathesis with every check, every phase and a fixed seed
# against it (scripts/schemathesis.toml says which refusals a schema cannot express). Zero failures
# or the script fails. Both tools come from PyPI into a virtualenv outside the clone.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/services.sh
source scripts/services.sh
ensure_services

venv="${FLASHSALE_TOOLS_VENV:-$HOME/.cache/flashsale/venv}"
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q '4.32.5'; then
  python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$venv"; }
  "$venv/bin/pip" install -q 'schemathesis==4.32.5' 'openapi-spec-validator==0.9.0'
fi

cargo build --locked -p flashsale-server
target="${CARGO_TARGET_DIR:-target}/debug"
# shellcheck source=scripts/dev-server.sh
source scripts/dev-server.sh
cleanup() {
  [ -z "$log" ] || rm -f "$log.json"
  stop_dev_server
}
trap cleanup EXIT
start_dev_server contract FLASHSALE_RATE_LIMIT_PER_IP=0 FLASHSALE_RATE_LIMIT_PER_USER=0 \
  FLASHSALE_RATE_LIMIT_ORDERS_PER_USER=0

curl -sf "http://127.0.0.1:$port/openapi.json" >"$log.json"
"$venv/bin/openapi-spec-validator" "$log.json"

# A buyer JWT signed with the dev secret (the server runs in dev mode), valid for an hour.
FLASHSALE_TEST_JWT=$(python3 - <<'PY'
import base64, hashlib, hmac, json, time
def b64(raw): return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = b64(json.dumps({"sub": "contract-buyer", "exp": int(time.time()) + 3600}).encode())
key = b"dev-jwt-secret-do-not-use-in-production"
print(f"{head}.{body}.{b64(hmac.new(key, f'{head}.{body}'.encode(), hashlib.sha256).digest())}")
PY
)
export FLASHSALE_TEST_JWT FLASHSALE_ADMIN_TOKEN=dev-admin-token
"$venv/bin/schemathesis" --config-file scripts/schemathesis.toml run "http://127.0.0.1:$port/openapi.json" \
  --seed "${SCHEMATHESIS_SEED:-20261202}" --max-examples "${SCHEMATHESIS_EXAMPLES:-30}" --no-color
echo "contract: the OpenAPI document is valid and Schemathesis found no failure"
