#!/usr/bin/env bash
# Benchmarks one Gatehouse build against nginx and HAProxy with ../shared/bench/compare.sh.
#
#   scripts/bench-proxy.sh BINARY LABEL [PLUGIN-JSON ...]
#
# Starts BINARY (a gatehouse-cp) as `standalone` on a throwaway SQLite store with one proxy
# worker, creates a Service for compare.sh's upstream (127.0.0.1:18080) and a Route
# `/bench`, adds each PLUGIN-JSON to that route (the word ROUTE in it becomes the route's id),
# a consumer `bench` with the key-auth key `benchkey`, and runs compare.sh against
# `/bench?apikey=benchkey`. ROUNDS (default 5) sets the rounds; COMPARE names the harness;
# COMPARE_ARGS adds options of its own (`--duration 5`). Settings in the environment
# (`GATEHOUSE_PROXY_METRICS=off`, `GATEHOUSE_TRACING_*`) reach the gateway.
set -euo pipefail
BIN=$1; LABEL=$2; shift 2
COMPARE=${COMPARE:-$(cd "$(dirname "$0")/../.." && pwd)/shared/bench/compare.sh}
W=$(mktemp -d)
export GATEHOUSE_DATABASE_URL="sqlite://$W/gh.db" GATEHOUSE_PREFIX="$W/prefix" GATEHOUSE_PROXY_WORKERS=1 \
  GATEHOUSE_ADMIN_LISTEN=127.0.0.1:9001 GATEHOUSE_ADMIN_SSL_LISTEN=off GATEHOUSE_PROXY_LISTEN=127.0.0.1:9000 \
  GATEHOUSE_PROXY_SSL_LISTEN=off GATEHOUSE_STATUS_LISTEN=127.0.0.1:9100 GATEHOUSE_LOG_LEVEL=warn
"$BIN" standalone > "$W/log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$W"' EXIT
for _ in $(seq 1 100); do curl -sf localhost:9001/status >/dev/null && break; sleep 0.1; done
id() { python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])'; }
SVC=$(curl -s -X POST localhost:9001/services -d name=bench -d url=http://127.0.0.1:18080 | id)
RID=$(curl -s -X POST localhost:9001/routes -H 'content-type: application/json' \
  -d "{\"service\":{\"id\":\"$SVC\"},\"paths\":[\"/bench\"]}" | id)
for p in "$@"; do
  curl -sf -X POST localhost:9001/plugins -H 'content-type: application/json' -d "${p//ROUTE/$RID}" > /dev/null
done
curl -s -X POST localhost:9001/consumers -d username=bench > /dev/null
curl -s -X POST localhost:9001/consumers/bench/key-auth -d key=benchkey > /dev/null
sleep 1
"$COMPARE" --candidate "http://127.0.0.1:9000/bench?apikey=benchkey" --candidate-pid $PID \
  --candidate-name "$LABEL" --rounds "${ROUNDS:-5}" ${COMPARE_ARGS:-} --no-verify --out "/tmp/bench-out-$LABEL-$$"
# What the loggers could not deliver (0 unless a receiver was slow or down).
curl -s localhost:9100/status | python3 -c 'import json,sys; print("log records dropped:", json.load(sys.stdin).get("log_records_dropped"))' || true
