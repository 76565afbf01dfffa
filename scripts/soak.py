#!/usr/bin/env python3
"""Soak test: a data plane's memory under a constant request rate, then under idle connections.

    scripts/soak.py BIN_DIR [--minutes 30] [--rate R] [--idle 2000] [--connections 32] [--workers 1]

BIN_DIR holds `gatehouse-cp` and `gatehouse-dp` (e.g. target/debug); they are copied into a
work directory first (as soak-cp, soak-dp). Starts a control plane (`gatehouse-cp run`,
SQLite, plaintext cluster link), one data plane (`--workers` proxy workers), a local upstream
(this script in another process, `--serve-upstream PORT`) and a route to it. Then:
  * capacity probe: 5 s of closed-loop load on 16 kept-alive connections; the rate is half of
    the requests a second measured (`--rate` overrides it);
  * steady load: that rate, open-loop (requests are sent on schedule whatever the latency),
    over `--connections` kept-alive connections, for `--minutes`; the data plane's RSS
    (VmRSS in /proc/<pid>/status) is sampled every 30 s and printed as a curve with the rate
    achieved, non-200 answers, failed requests, latency and the data plane's open files. When
    this Python generator cannot send at the rate, the output says so (stock wrk is
    closed-loop only, so it is no substitute for a fixed rate);
  * idle connections: with the load stopped, opens `--idle` plain TCP connections to the
    proxy (every other one sends a partial request head), samples RSS 3 s later, closes them
    all, waits 10 s and samples again. Then, to tell memory the allocator holds from memory
    leaked, a second round the same, and 10 s of traffic at the steady rate, each sampled.
Reports RSS at the start of steady load, its maximum and its end; whether it stayed flat (end
within 10 % of the sample one minute in); RSS with the idle connections open (and per
connection); RSS after they closed against before they opened (goal: within 10 %); whether
the second round grew past the first (a leak) and RSS after traffic resumed. Exits 1 when a
goal failed (not flat, memory not returned, failed or non-200 requests).
The file-descriptor limit is raised (soft to hard) before the data plane starts, so it inherits
it; its own limit is printed from /proc/<pid>/limits.
"""

import argparse
import asyncio
import collections
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import json
import urllib.request

# Ports of their own: ratelimit-accuracy.py uses 93xx, chaos.py 94xx.
ADMIN = 9501
CLUSTER = 9505
UPSTREAM = 9580
PROXY = 9510
STATUS = 9530
PATH = "/soak"
REQUEST = f"GET {PATH} HTTP/1.1\r\nHost: soak.test\r\n\r\n".encode()
SAMPLE_EVERY = 30.0

CONTENT_LENGTH = re.compile(rb"\r\n[Cc][Oo][Nn][Tt][Ee][Nn][Tt]-[Ll][Ee][Nn][Gg][Tt][Hh]:[ \t]*(\d+)")
CHUNKED = re.compile(rb"(?i)\r\ntransfer-encoding:[^\r]*chunked")


# ---------------------------------------------------------------- upstream (own process)

def serve_upstream(port):
    class Upstream(asyncio.Protocol):
        def connection_made(self, transport):
            self.t = transport
            self.buf = b""

        def data_received(self, data):
            buf = self.buf + data
            n = buf.count(b"\r\n\r\n")
            if n:
                self.t.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" * n)
                buf = buf[buf.rfind(b"\r\n\r\n") + 4:]
            self.buf = buf

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Upstream, "127.0.0.1", port, backlog=1024)
        await server.serve_forever()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


# ---------------------------------------------------------------- load generator

class Client(asyncio.Protocol):
    __slots__ = ("gen", "t", "buf", "sent", "busy")

    def __init__(self, gen):
        self.gen = gen
        self.t = None
        self.buf = b""
        self.sent = 0.0
        self.busy = False

    def connection_made(self, transport):
        self.t = transport

    def data_received(self, data):
        buf = self.buf + data if self.buf else data
        while True:
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                break
            if CHUNKED.search(buf, 0, i + 2):
                self.gen.protocol_error(self)
                return
            m = CONTENT_LENGTH.search(buf, 0, i)
            end = i + 4 + (int(m.group(1)) if m else 0)
            if len(buf) < end:
                break
            status = int(buf[9:12])
            buf = buf[end:]
            self.gen.completed(self, status)
        self.buf = buf

    def connection_lost(self, exc):
        self.gen.lost(self)

    def send(self, now):
        self.sent = now
        self.busy = True
        self.t.write(REQUEST)


class Interval:
    def __init__(self):
        self.sent = 0
        self.done = 0
        self.non200 = collections.Counter()
        self.errors = 0
        self.latencies = []


class Generator:
    def __init__(self, port, closed_loop=False):
        self.port = port
        self.loop = asyncio.get_running_loop()
        self.closed_loop = closed_loop
        self.idle = collections.deque()
        self.all = set()
        self.iv = Interval()
        self.totals = Interval()
        self.behind_dropped = 0
        self.opening = 0
        self.stopping = False

    async def open_one(self):
        self.opening += 1
        try:
            _, c = await self.loop.create_connection(lambda: Client(self), "127.0.0.1", self.port)
        except OSError:
            self.iv.errors += 1
            self.totals.errors += 1
            await asyncio.sleep(0.1)
            return
        finally:
            self.opening -= 1
        self.all.add(c)
        if self.closed_loop and not self.stopping:
            self.send(c)
        else:
            self.idle.append(c)

    async def open(self, n):
        await asyncio.gather(*(self.open_one() for _ in range(n)))

    def send(self, c):
        c.send(self.loop.time())
        self.iv.sent += 1
        self.totals.sent += 1

    def completed(self, c, status):
        now = self.loop.time()
        c.busy = False
        for iv in (self.iv, self.totals):
            iv.done += 1
            if status != 200:
                iv.non200[status] += 1
        self.iv.latencies.append(now - c.sent)
        if self.closed_loop and not self.stopping:
            self.send(c)
        else:
            self.idle.append(c)

    def protocol_error(self, c):
        c.t.close()

    def lost(self, c):
        self.all.discard(c)
        try:
            self.idle.remove(c)
        except ValueError:
            pass
        if c.busy:
            self.iv.errors += 1
            self.totals.errors += 1
        if not self.stopping:
            # A connection the proxy closed (an idle timeout, an error): replace it.
            asyncio.ensure_future(self.open_one())

    async def run_fixed(self, rate, duration, max_conns):
        """`rate` requests a second for `duration` s, on schedule: a request due while every
        connection is busy waits for one (up to 1 s of backlog, then it is dropped and counted)."""
        start = self.loop.time()
        end = start + duration
        sent = 0
        while True:
            now = self.loop.time()
            if now >= end:
                break
            due = int((now - start) * rate) - sent
            if due > rate:
                drop = due - int(rate)
                self.behind_dropped += drop
                sent += drop
                due -= drop
            idle = self.idle
            while due > 0 and idle:
                self.send(idle.popleft())
                sent += 1
                due -= 1
            if due > 0 and len(self.all) + self.opening < max_conns:
                asyncio.ensure_future(self.open_one())
            await asyncio.sleep(0.001)

    def take_interval(self):
        iv, self.iv = self.iv, Interval()
        return iv

    async def close(self, grace=2.0):
        self.stopping = True
        deadline = self.loop.time() + grace
        while any(c.busy for c in self.all) and self.loop.time() < deadline:
            await asyncio.sleep(0.01)
        for c in list(self.all):
            c.t.close()
        await asyncio.sleep(0.1)


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100.0 * len(values)))]


# ---------------------------------------------------------------- process helpers

def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def open_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def fd_limit(pid):
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                parts = line.split()
                return int(parts[3]), parts[4]
    return None, None


def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{ADMIN}{path}", data=data, method=method)
    req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"{}")


def get_status(port, path, host="soak.test"):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def wait_for(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not within {timeout:.0f} s")


def mb(kb):
    return f"{kb / 1024:.1f} MB"


# ---------------------------------------------------------------- the run

async def probe(seconds=5.0, conns=16):
    gen = Generator(PROXY, closed_loop=True)
    await gen.open(conns)  # each connection sends its next request as soon as one is answered
    await asyncio.sleep(0.5)
    gen.take_interval()
    start = time.time()
    await asyncio.sleep(seconds)
    iv = gen.take_interval()
    elapsed = time.time() - start
    await gen.close()
    return iv.done / elapsed, iv


async def steady(args, rate, dp_pid, rows):
    gen = Generator(PROXY)
    await gen.open(args.connections)
    gen.take_interval()
    duration = args.minutes * 60.0
    start = time.time()
    rows.append((0.0, rss_kb(dp_pid), None, open_fds(dp_pid)))
    print(f"{'t s':>6} {'RSS MB':>8} {'req/s':>8} {'non-200':>8} {'failed':>7} {'p50 ms':>7} {'p99 ms':>7} {'DP fds':>7}")
    print(f"{0:>6.0f} {rows[0][1] / 1024:>8.1f} {'-':>8} {'-':>8} {'-':>7} {'-':>7} {'-':>7} {rows[0][3]:>7}", flush=True)
    last = start

    async def sampler():
        nonlocal last
        k = 1
        while True:
            target = start + k * SAMPLE_EVERY
            if target > start + duration + 0.5:
                return
            await asyncio.sleep(max(0.0, target - time.time()))
            now = time.time()
            iv = gen.take_interval()
            kb = rss_kb(dp_pid)
            fds = open_fds(dp_pid)
            rows.append((now - start, kb, iv, fds))
            p50 = percentile(iv.latencies, 50)
            p99 = percentile(iv.latencies, 99)
            print(f"{now - start:>6.0f} {kb / 1024:>8.1f} {iv.done / (now - last):>8.0f} {sum(iv.non200.values()):>8} "
                  f"{iv.errors:>7} {p50 * 1000 if p50 is not None else 0:>7.2f} "
                  f"{p99 * 1000 if p99 is not None else 0:>7.2f} {fds:>7}", flush=True)
            last = now
            k += 1

    sampling = asyncio.ensure_future(sampler())
    await gen.run_fixed(rate, duration, max_conns=max(args.connections * 4, 64))
    end = time.time()
    try:
        await asyncio.wait_for(sampling, 2.0)  # its last sample is due now when duration is a multiple of 30 s
    except asyncio.TimeoutError:
        pass
    await gen.close()
    if end - start - rows[-1][0] > 2.0:  # a last sample unless the sampler just took one
        iv = gen.take_interval()
        rows.append((end - start, rss_kb(dp_pid), iv, open_fds(dp_pid)))
    return gen.totals, gen.behind_dropped, end - start


async def idle_phase(args, dp_pid):
    loop = asyncio.get_running_loop()
    result = {"before": rss_kb(dp_pid), "fds_before": open_fds(dp_pid)}
    closed_by_peer = [0]

    class Idle(asyncio.Protocol):
        def connection_lost(self, exc):
            closed_by_peer[0] += 1

    transports = []
    failed = collections.Counter()
    sem = asyncio.Semaphore(200)

    async def one(i):
        async with sem:
            try:
                t, _ = await asyncio.wait_for(loop.create_connection(Idle, "127.0.0.1", PROXY), 10)
            except (OSError, asyncio.TimeoutError) as e:
                failed[type(e).__name__] += 1
                return
            if i % 2:
                t.write(b"GET /soak HTTP/1.1\r\nHost: soak")  # a head that never ends
            transports.append(t)

    t0 = time.time()
    await asyncio.gather(*(one(i) for i in range(args.idle)))
    result["open_s"] = time.time() - t0
    await asyncio.sleep(3.0)  # let the proxy accept them all
    result["opened"] = len(transports)
    result["failed"] = dict(failed)
    result["with_idle"] = rss_kb(dp_pid)
    result["fds_with_idle"] = open_fds(dp_pid)
    result["still_open"] = len(transports) - closed_by_peer[0]
    for t in transports:
        t.close()
    await asyncio.sleep(10.0)
    result["after"] = rss_kb(dp_pid)
    result["fds_after"] = open_fds(dp_pid)
    return result


async def run(args, dp_pid):
    print("capacity probe: 5 s closed-loop on 16 connections ...", flush=True)
    capacity, iv = await probe()
    bad = sum(iv.non200.values()) + iv.errors
    print(f"  {capacity:.0f} req/s" + (f" ({bad} non-200 or failed)" if bad else ""), flush=True)
    wrk = shutil.which("wrk")
    if wrk:  # the same probe from a faster client, to show whether Python limited it
        out = await asyncio.to_thread(subprocess.run, [wrk, "-t1", "-c16", "-d5s", "-H", "Host: soak.test",
                                                       f"http://127.0.0.1:{PROXY}{PATH}"],
                                      capture_output=True, text=True, timeout=30)
        m = re.search(r"Requests/sec:\s*([\d.]+)", out.stdout)
        if m:
            w = float(m.group(1))
            print(f"  wrk, same probe: {w:.0f} req/s"
                  + (" (the Python client limited the probe: the rate below is half of what Python reached)"
                     if w > 1.2 * capacity else ""), flush=True)
    rate = args.rate if args.rate else max(1.0, capacity / 2)
    print(f"steady load: {rate:.0f} req/s ({'--rate' if args.rate else 'half the probe'}) for {args.minutes:g} min "
          f"on {args.connections} connections; RSS every {SAMPLE_EVERY:.0f} s", flush=True)
    await asyncio.sleep(2.0)
    rows = []
    totals, dropped, elapsed = await steady(args, rate, dp_pid, rows)
    print(f"idle connections: opening {args.idle} ...", flush=True)
    await asyncio.sleep(1.0)
    idle = await idle_phase(args, dp_pid)
    # Retained or leaked? A second round reuses what the first one freed unless it leaked, and
    # traffic lets the allocator give freed pages back.
    print(f"idle connections: a second round of {args.idle}, then 10 s of traffic ...", flush=True)
    idle["second"] = await idle_phase(args, dp_pid)
    gen = Generator(PROXY)
    await gen.open(args.connections)
    await gen.run_fixed(rate, 10.0, max_conns=max(args.connections * 4, 64))
    await gen.close()
    await asyncio.sleep(2.0)
    idle["after_traffic"] = rss_kb(dp_pid)
    return capacity, rate, rows, totals, dropped, elapsed, idle


def report(args, capacity, rate, rows, totals, dropped, elapsed, idle):
    ok = True
    lines = []
    achieved = totals.sent / elapsed if elapsed else 0.0
    lines.append(f"rate: target {rate:.0f} req/s (probe {capacity:.0f} req/s closed-loop), sent {achieved:.0f} req/s, "
                 f"{totals.done} answered in {elapsed:.0f} s")
    if achieved < 0.95 * rate or dropped:
        lines.append(f"  NOTE: the Python load generator fell short of the rate ({achieved:.0f} of {rate:.0f} req/s, "
                     f"{dropped} requests dropped more than 1 s late): the figures hold for the rate reached. "
                     f"Give a lower --rate, or use wrk (closed-loop, no fixed rate) for a capacity run")
    non200 = sum(totals.non200.values())
    lines.append(f"answers: {totals.done - non200} x 200, non-200 {dict(totals.non200) or 0}, failed {totals.errors}")
    g_errors = non200 == 0 and totals.errors == 0
    rss = [r[1] for r in rows]
    start_kb, max_kb, end_kb = rss[0], max(rss), rss[-1]
    ref = next((r for r in rows if r[0] >= 59.5), None)
    lines.append(f"RSS: start of steady load {mb(start_kb)}, max {mb(max_kb)}, end {mb(end_kb)}")
    if ref is None or ref is rows[-1]:
        ref = rows[1] if len(rows) > 2 else rows[0]
        lines.append(f"  (shorter than 2 minutes: compared with the {ref[0]:.0f} s sample)")
    drift = (end_kb - ref[1]) / ref[1] * 100
    g_flat = abs(drift) <= 10.0
    lines.append(f"  end vs the {ref[0]:.0f} s sample ({mb(ref[1])}): {drift:+.1f} % -> "
                 f"{'flat' if g_flat else 'NOT flat'} (goal: within 10 %)")
    per_conn = (idle["with_idle"] - idle["before"]) / max(1, idle["opened"])
    back = (idle["after"] - idle["before"]) / idle["before"] * 100
    g_idle = abs(back) <= 10.0
    lines.append(f"idle: before {mb(idle['before'])} ({idle['fds_before']} fds); {idle['opened']} connections opened "
                 f"in {idle['open_s']:.1f} s" + (f" ({idle['failed']} failed)" if idle["failed"] else "")
                 + f", {idle['still_open']} still open 3 s later: {mb(idle['with_idle'])} "
                 f"({per_conn:+.1f} KB a connection, {idle['fds_with_idle']} fds)")
    lines.append(f"  10 s after closing them: {mb(idle['after'])} ({idle['fds_after']} fds), {back:+.1f} % vs before "
                 f"(goal: within 10 %)")
    second = idle["second"]
    g_opened = idle["opened"] == args.idle and second["opened"] == args.idle
    growth = idle["with_idle"] - idle["before"]
    g_reused = second["with_idle"] <= idle["with_idle"] + 0.10 * max(growth, 0) + 1024
    lines.append(f"  second round: {mb(second['with_idle'])} with them open, {mb(second['after'])} 10 s after closing "
                 f"({'reuses the first round' if g_reused else 'GREW past the first round'})")
    traffic_back = (idle["after_traffic"] - idle["before"]) / idle["before"] * 100
    g_traffic = abs(traffic_back) <= 10.0
    lines.append(f"  after 10 s of traffic again: {mb(idle['after_traffic'])}, {traffic_back:+.1f} % vs before")
    if not g_idle and g_reused and g_traffic:
        lines.append("  -> held by the allocator while the proxy is idle and reused, not leaked: freed pages go back "
                     "to the system once the worker allocates again")
    print()
    print("\n".join(lines))
    print()
    for desc, g in (("no failed or non-200 requests under steady load", g_errors),
                    ("RSS flat under steady load (within 10 %)", g_flat),
                    (f"all {args.idle} idle connections opened (both rounds)", g_opened),
                    ("RSS back within 10 % 10 s after the idle connections closed", g_idle),
                    ("a second round of idle connections reuses the memory (no growth)", g_reused),
                    ("RSS back within 10 % after 10 s of traffic", g_traffic)):
        print(f"  [{'PASS' if g else 'FAIL'}] {desc}")
        ok = ok and g
    return ok


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-upstream":
        serve_upstream(int(sys.argv[2]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bin_dir")
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--rate", type=float, default=0, help="requests a second (default: half the capacity probe)")
    ap.add_argument("--idle", type=int, default=2000, help="idle connections opened at the end")
    ap.add_argument("--connections", type=int, default=32, help="kept-alive connections for the steady load")
    ap.add_argument("--workers", type=int, default=1, help="the data plane's proxy workers")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = ap.parse_args()

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    # Enough descriptors for the idle connections, here and (inherited) in the data plane.
    need = args.idle + args.connections * 4 + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard == resource.RLIM_INFINITY or hard >= need:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else need, hard))
        else:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))  # root may raise the hard limit
            except (ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    bin_dir = os.path.abspath(args.bin_dir)
    for b in ("gatehouse-cp", "gatehouse-dp"):
        if not os.access(f"{bin_dir}/{b}", os.X_OK):
            sys.exit(f"{bin_dir}/{b} is missing: build it first")
    work = tempfile.mkdtemp(prefix="gh-soak-")
    os.makedirs(f"{work}/bin")
    for b in ("cp", "dp"):
        # Renamed copies: a rebuild or a neighbour's `pkill gatehouse-dp` cannot touch them.
        shutil.copy2(f"{bin_dir}/gatehouse-{b}", f"{work}/bin/soak-{b}")
    procs = []
    ok = False
    base = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
    base.update(GATEHOUSE_LOG_LEVEL="warn", GATEHOUSE_CLUSTER_MTLS="off")

    def spawn(argv, env, name):
        logf = open(f"{work}/{name}.log", "w")
        p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
        logf.close()
        procs.append(p)
        return p

    try:
        spawn([sys.executable, os.path.abspath(__file__), "--serve-upstream", str(UPSTREAM)], base, "upstream")
        spawn([f"{work}/bin/soak-cp", "run"],
              dict(base, GATEHOUSE_DATABASE_URL=f"sqlite://{work}/gh.db", GATEHOUSE_PREFIX=f"{work}/prefix",
                   GATEHOUSE_ADMIN_LISTEN=f"127.0.0.1:{ADMIN}", GATEHOUSE_ADMIN_SSL_LISTEN="off",
                   GATEHOUSE_CLUSTER_LISTEN=f"127.0.0.1:{CLUSTER}"), "cp")
        dp = spawn([f"{work}/bin/soak-dp", "run"],
                   dict(base, GATEHOUSE_PROXY_LISTEN=f"127.0.0.1:{PROXY}", GATEHOUSE_PROXY_SSL_LISTEN="off",
                        GATEHOUSE_STATUS_LISTEN=f"127.0.0.1:{STATUS}", GATEHOUSE_CACHE_DIR=f"{work}/dp",
                        GATEHOUSE_CLUSTER_CONTROL_PLANE=f"127.0.0.1:{CLUSTER}",
                        GATEHOUSE_PROXY_WORKERS=str(args.workers)), "dp")
        wait_for(lambda: get_status(ADMIN, "/status", host=f"127.0.0.1:{ADMIN}") == 200, 30, "the control plane")
        svc = call("POST", "/services", {"name": "soak", "url": f"http://127.0.0.1:{UPSTREAM}"})
        call("POST", "/routes", {"service": {"id": svc["id"]}, "paths": [PATH]})
        wait_for(lambda: get_status(PROXY, PATH) == 200, 30, f"the data plane proxying {PATH}")
        dp_soft, dp_hard = fd_limit(dp.pid)
        print(f"data plane pid {dp.pid}, {args.workers} worker(s), open files limit {dp_soft} (hard {dp_hard}); "
              f"this script's limit {soft}", flush=True)
        if dp_soft is not None and dp_soft < args.idle + 100:
            print(f"  NOTE: the data plane's limit is below {args.idle} idle connections + 100", flush=True)
        results = asyncio.run(run(args, dp.pid))
        dead = [p.args[0] for p in procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"exited during the test: {dead} (logs in {work})")
        ok = report(args, *results)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if ok and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"soak: logs kept in {work}", file=sys.stderr)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
