#!/usr/bin/env bash
# Large transfers through the proxy, side by side with nginx:
#
#   scripts/bench-transfer.sh BINARY [SIZE_MIB]
#
# Upstreams: nginx on 127.0.0.1:18090 serves a SIZE_MIB file (default 1024) for downloads, and
# a sink on 127.0.0.1:18093 reads every byte of an upload before it answers (nginx's own
# `return 200` would answer first and drop the body, which measures nothing). nginx as a
# reference proxy (one worker; `proxy_request_buffering off`, `proxy_buffering` as nginx's
# default, on, or NGINX_BUFFERING=off) and BINARY (a gatehouse-cp, `standalone`, one proxy
# worker) both forward to them. curl uploads and downloads
# the file through each, ROUNDS times (default 3), alternating. The proxies run on CPU 0, curl
# and the upstream on CPU 1, as in ../shared/bench/compare.sh. Prints each run's MiB/s, the
# medians and their ratio, and Gatehouse's RSS before and at its peak. GH_CURL_ARGS adds
# arguments to curl's requests to Gatehouse only (`-H 'X-Extra: 1'`).
set -uo pipefail
BIN=$1; SIZE=${2:-1024}; ROUNDS=${ROUNDS:-3}
W=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
chmod 755 "$W"
truncate -s "${SIZE}M" "$W/blob"
chmod 644 "$W/blob"
cat "$W/blob" > /dev/null

mkdir -p "$W/up" "$W/ref"
cat > "$W/up/nginx.conf" <<EOF
worker_processes 1; daemon off; pid $W/up/pid; error_log $W/up/err warn;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $W/up; client_max_body_size 0; sendfile on;
  server { listen 127.0.0.1:18090;
    location = /t/down { alias $W/blob; } } }
EOF
cat > "$W/ref/nginx.conf" <<EOF
worker_processes 1; daemon off; pid $W/ref/pid; error_log $W/ref/err warn;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $W/ref; proxy_temp_path $W/ref; client_max_body_size 0;
  upstream u { server 127.0.0.1:18090; keepalive 16; }
  upstream sink { server 127.0.0.1:18093; }
  server { listen 127.0.0.1:18091;
    location = /t/up { proxy_pass http://sink; proxy_http_version 1.1; proxy_request_buffering off; }
    location /t/ { proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_request_buffering off; proxy_buffering ${NGINX_BUFFERING:-on}; } } }
EOF
cat > "$W/sink.py" <<'PY'
import socket, threading
def serve(c):
    with c:
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = c.recv(65536)
            if not d:
                return
            buf += d
        head, _, body = buf.partition(b"\r\n\r\n")
        length = next((int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")), 0)
        left = length - len(body)
        if b"100-continue" in head.lower():
            c.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        view = memoryview(bytearray(1 << 20))
        while left > 0:
            n = c.recv_into(view)
            if n == 0:
                return
            left -= n
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 18093)); s.listen(64)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
taskset -c 1 python3 "$W/sink.py" & PIDS+=($!)
taskset -c 1 nginx -c "$W/up/nginx.conf" -p "$W/up" & PIDS+=($!)
taskset -c 0 nginx -c "$W/ref/nginx.conf" -p "$W/ref" & PIDS+=($!)

export GATEHOUSE_DATABASE_URL="sqlite://$W/gh.db" GATEHOUSE_PREFIX="$W/prefix" GATEHOUSE_PROXY_WORKERS=1 \
  GATEHOUSE_ADMIN_LISTEN=127.0.0.1:9001 GATEHOUSE_ADMIN_SSL_LISTEN=off GATEHOUSE_PROXY_LISTEN=127.0.0.1:9000 \
  GATEHOUSE_PROXY_SSL_LISTEN=off GATEHOUSE_STATUS_LISTEN=127.0.0.1:9100 GATEHOUSE_LOG_LEVEL=warn
"$BIN" standalone > "$W/gh.log" 2>&1 & GH=$!; PIDS+=($GH)
for _ in $(seq 1 100); do curl -sf localhost:9001/status >/dev/null && break; sleep 0.1; done
curl -sf -X POST localhost:9001/services -d name=t -d url=http://127.0.0.1:18090 > /dev/null
curl -sf -X POST localhost:9001/services/t/routes -d 'paths[]=/t/down' -d strip_path=false > /dev/null
curl -sf -X POST localhost:9001/services -d name=sink -d url=http://127.0.0.1:18093 > /dev/null
curl -sf -X POST localhost:9001/services/sink/routes -d 'paths[]=/t/up' -d strip_path=false > /dev/null
sleep 1
for t in $(ls /proc/$GH/task); do taskset -pc 0 "$t" > /dev/null; done

rss() { awk '/VmRSS/ {print $2}' "/proc/$GH/status"; }
peak=0
watch_rss() { while kill -0 "$GH" 2>/dev/null; do r=$(rss); echo "$r"; sleep 0.05; done > "$W/rss"; }
# Warm both paths (pools, lazily built state), then take the baseline.
for port in 9000 18091; do
  curl -sf -o /dev/null "http://127.0.0.1:$port/t/down" -r 0-1000 || true
  curl -sf -o /dev/null -T /dev/null "http://127.0.0.1:$port/t/up" || true
done
base=$(rss)
watch_rss & PIDS+=($!)

run() { # direction port -> MiB/s
  local extra=()
  [ "$2" = 9000 ] && [ -n "${GH_CURL_ARGS:-}" ] && eval "extra=($GH_CURL_ARGS)"
  if [ "$1" = up ]; then
    taskset -c 1 curl -sS -o /dev/null -X POST -T "$W/blob" "${extra[@]}" -w '%{speed_upload}' "http://127.0.0.1:$2/t/up"
  else
    taskset -c 1 curl -sS -o /dev/null "${extra[@]}" -w '%{speed_download}' "http://127.0.0.1:$2/t/down"
  fi | awk '{printf "%.0f", $1 / 1048576}'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for dir in up down; do
  : > "$W/$dir.nginx"; : > "$W/$dir.gh"
  for i in $(seq 1 "$ROUNDS"); do
    n=$(run "$dir" 18091); g=$(run "$dir" 9000)
    echo "$dir round $i: nginx $n MiB/s, gatehouse $g MiB/s"
    echo "$n" >> "$W/$dir.nginx"; echo "$g" >> "$W/$dir.gh"
  done
  n=$(median < "$W/$dir.nginx"); g=$(median < "$W/$dir.gh")
  echo "$dir ${SIZE} MiB median: nginx $n MiB/s, gatehouse $g MiB/s, ratio $(awk -v g="$g" -v n="$n" 'BEGIN {printf "%.2f", g / n}')x"
done
peak=$(sort -n "$W/rss" | tail -1)
echo "gatehouse RSS: $((base / 1024)) MiB before, $((peak / 1024)) MiB at peak (+$(((peak - base) / 1024)) MiB)"
