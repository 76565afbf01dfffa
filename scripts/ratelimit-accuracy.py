#!/usr/bin/env python3
"""How exactly a shared rate limit holds across data planes.

    scripts/ratelimit-accuracy.py BIN_DIR POLICY [--dps 3] [--rate 300] [--limit 1000] [--windows 2]

Starts a control plane (`BIN_DIR/gatehouse-cp run`, SQLite, plaintext cluster link) and
`--dps` data planes, a route with rate-limiting (`minute = --limit`, `policy = POLICY`:
cluster, redis or local) in front of a local upstream, and sends `--rate` requests a second
to each data plane until `--windows` whole minutes have passed. For each whole minute it
prints the requests admitted (the goal: at most limit + 2 %) and, when a request was refused
while fewer than `limit` had been admitted in that minute, how far into the minute that
happened (the goal: never).
"""

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

ADMIN = 9301
CLUSTER = 9305
UPSTREAM = 9380


def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{ADMIN}{path}", data=data, method=method)
    req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"{}")


async def upstream_server():
    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", UPSTREAM)


async def load(port, rate, until, results, connections=4):
    """`rate` requests a second to `port`, spread over kept-alive connections."""
    interval = connections / rate

    async def one_connection(offset):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        next_at = time.time() + offset
        while next_at < until:
            delay = next_at - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = time.time()
            writer.write(b"GET /rl HTTP/1.1\r\nHost: rl.test\r\n\r\n")
            await writer.drain()
            line = await reader.readline()
            status = int(line.split()[1])
            length = 0
            while True:
                h = await reader.readline()
                if h in (b"\r\n", b""):
                    break
                name, _, value = h.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value.strip())
            await reader.readexactly(length)
            results.append((sent, status))
            next_at += interval
        writer.close()

    await asyncio.gather(*(one_connection(i * interval / connections) for i in range(connections)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin_dir")
    ap.add_argument("policy", choices=["cluster", "redis", "local"])
    ap.add_argument("--dps", type=int, default=3)
    ap.add_argument("--rate", type=int, default=300)
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--windows", type=int, default=2)
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="gh-rl-")
    procs = []
    base = dict(os.environ, GATEHOUSE_LOG_LEVEL="warn", GATEHOUSE_CLUSTER_MTLS="off")
    try:
        cp_env = dict(base, GATEHOUSE_DATABASE_URL=f"sqlite://{work}/gh.db", GATEHOUSE_PREFIX=f"{work}/prefix",
                      GATEHOUSE_ADMIN_LISTEN=f"127.0.0.1:{ADMIN}", GATEHOUSE_ADMIN_SSL_LISTEN="off",
                      GATEHOUSE_CLUSTER_LISTEN=f"127.0.0.1:{CLUSTER}")
        procs.append(subprocess.Popen([f"{args.bin_dir}/gatehouse-cp", "run"], env=cp_env,
                                      stdout=open(f"{work}/cp.log", "w"), stderr=subprocess.STDOUT))
        ports = []
        for i in range(args.dps):
            port = 9310 + i
            ports.append(port)
            dp_env = dict(base, GATEHOUSE_PROXY_LISTEN=f"127.0.0.1:{port}", GATEHOUSE_PROXY_SSL_LISTEN="off",
                          GATEHOUSE_STATUS_LISTEN=f"127.0.0.1:{9330 + i}", GATEHOUSE_CACHE_DIR=f"{work}/dp{i}",
                          GATEHOUSE_CLUSTER_CONTROL_PLANE=f"127.0.0.1:{CLUSTER}", GATEHOUSE_PROXY_WORKERS="1")
            procs.append(subprocess.Popen([f"{args.bin_dir}/gatehouse-dp", "run"], env=dp_env,
                                          stdout=open(f"{work}/dp{i}.log", "w"), stderr=subprocess.STDOUT))
        for _ in range(100):
            try:
                call("GET", "/status")
                break
            except OSError:
                time.sleep(0.1)
        svc = call("POST", "/services", {"name": "rl", "url": f"http://127.0.0.1:{UPSTREAM}"})
        route = call("POST", "/routes", {"service": {"id": svc["id"]}, "hosts": ["rl.test"]})
        config = {"minute": args.limit, "policy": args.policy}
        if args.policy == "redis":
            config["redis_host"] = "127.0.0.1"
        call("POST", "/plugins", {"name": "rate-limiting", "route_id": route["id"], "config": config})
        asyncio.run(run(args, ports))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


async def run(args, ports):
    server = await upstream_server()
    # Wait until every data plane serves the route.
    for port in ports:
        for _ in range(200):
            try:
                r, w = await asyncio.open_connection("127.0.0.1", port)
                w.write(b"GET /rl HTTP/1.1\r\nHost: rl.test\r\nConnection: close\r\n\r\n")
                line = await r.readline()
                w.close()
                if b" 200 " in line or b" 429 " in line:
                    break
            except OSError:
                pass
            await asyncio.sleep(0.1)
    # Start a little before a minute begins; stop once the last whole minute has ended.
    now = time.time()
    first = (int(now) // 60 + 1) * 60
    await asyncio.sleep(max(0.0, first - 2 - time.time()))
    until = first + 60 * args.windows + 0.5
    results = []
    await asyncio.gather(*(load(p, args.rate, until, results) for p in ports))
    server.close()
    print(f"policy={args.policy} data_planes={len(ports)} rate={args.rate}/s each limit={args.limit}/minute")
    for w in range(args.windows):
        start = first + 60 * w
        window = sorted((t, s) for t, s in results if start <= t < start + 60)
        admitted = 0
        wrongly = None
        first_refusal = None
        for t, s in window:
            if s == 200:
                admitted += 1
            elif s == 429:
                if first_refusal is None:
                    first_refusal = t - start
                if admitted < args.limit and wrongly is None:
                    wrongly = t - start
        over = admitted - args.limit
        refusal = "none refused" if first_refusal is None else f"first refusal {first_refusal:.3f} s into the minute"
        print(f"  minute {w + 1}: sent {len(window)}, admitted {admitted} ({over:+d}, "
              f"{100.0 * admitted / args.limit:.1f} % of the limit), {refusal}")
        print(f"            refused before the limit was reached: {'never' if wrongly is None else f'at {wrongly:.3f} s'}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
