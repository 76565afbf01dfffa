#!/usr/bin/env bash
# The logging plugins' cost: the bench route with each logger, against the same route without
# one, each through scripts/bench-proxy.sh (so each against nginx in its own run).
#
#   scripts/bench-loggers.sh BINARY TAG [plain|http-log|http-log-down|file-log|statsd ...]
#
# http-log posts to compare.sh's own upstream (nginx, on the load CPU); http-log-down to a
# port nothing listens on; file-log appends to a file under /tmp; statsd sends to a UDP sink
# this script starts on the load CPU. Labels are TAG-plain, TAG-http, TAG-down, TAG-file and
# TAG-statsd (TAG of 1–4 characters).
# Results go to /tmp/bench-loggers-TAG/; each run ends with the data plane's count of
# records it dropped (bench-proxy.sh prints it), which should be 0 but for http-log-down.
set -euo pipefail
BIN=$1; TAG=$2; shift 2
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=/tmp/bench-loggers-$TAG
mkdir -p "$OUT"
taskset -c "$(($(nproc) - 1))" python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 18125))
while True:
    s.recv(65536)
' &
SINK=$!
trap 'kill $SINK 2>/dev/null; rm -f /tmp/bench-file-log.json' EXIT
[ $# -eq 0 ] && set -- plain http-log file-log statsd
for logger in "$@"; do
  rm -f /tmp/bench-file-log.json
  case $logger in
    plain) L=plain; P=() ;;
    http-log) L=http; P=('{"name":"http-log","route_id":"ROUTE","config":{"http_endpoint":"http://127.0.0.1:18080/log"}}') ;;
    http-log-down) L=down; P=('{"name":"http-log","route_id":"ROUTE","config":{"http_endpoint":"http://127.0.0.1:18099/log"}}') ;;
    file-log) L=file; P=('{"name":"file-log","route_id":"ROUTE","config":{"path":"/tmp/bench-file-log.json"}}') ;;
    statsd) L=statsd; P=('{"name":"statsd","route_id":"ROUTE","config":{"host":"127.0.0.1","port":18125}}') ;;
    *) echo "unknown logger: $logger" >&2; exit 2 ;;
  esac
  "$HERE/bench-proxy.sh" "$BIN" "$TAG-$L" "${P[@]}" > "$OUT/$logger.txt" 2>&1
  echo "== $logger"
  grep -E "^ratio $TAG|log records dropped" "$OUT/$logger.txt" || echo "(no result: see $OUT/$logger.txt)"
done
