#!/usr/bin/env python3
"""Chaos test: kill -9 the control plane, a data plane and Postgres itself under steady load.

    scripts/chaos.py BIN_DIR [--rate 50] [--write-rate 20] [--steady 5] [--down 3] [--pg-down 3] [--keep]

BIN_DIR holds `gatehouse-cp` and `gatehouse-dp` (e.g. target/debug); they are copied into a
work directory first (as chaos-cp, chaos-dp), so a rebuild during the run cannot swap them
between restarts and a neighbour's `pkill gatehouse-cp` cannot stop them. Needs the
local Postgres (127.0.0.1:5432, user postgres, trust auth) and root (or the postgres user) to
kill and restart it: the script creates a throwaway database and drops it at the end, and
whatever happens it leaves Postgres running (`pg_ctlcluster ... start` until `pg_isready`).
Killing Postgres breaks every other client of it for a few seconds: do not run this while
other Postgres tests run.

Starts a local upstream, a control plane on Postgres (`gatehouse-cp run`, plaintext cluster
link) and two data planes, a service and a route to the upstream, and keeps a steady load for
the whole test:
  * an admin writer creating consumers c1, c2, ... one after another (`--write-rate` a
    second, 0 = as fast as answered), recording every one answered 201 (acknowledged);
  * `--rate` proxied GETs a second on each data plane over 5 kept-alive connections. A
    refused connect or a dropped connection on a data plane the script has killed counts as
    "DP down"; anything but a 200 from a data plane that is up is a proxy error.
Scenarios, each with `--steady` seconds of load before and after:
  1. kill -9 the control plane, restart it after `--down` s. Reported: admin downtime (kill to
     the first 201 after the restart), proxy errors on both data planes (goal 0).
  2. kill -9 one data plane, restart it after `--down` s. Reported: proxy errors on the other
     one (goal 0), the killed one's time from restart to its first 200 (it has a disk cache).
  3. kill -9 the Postgres postmaster, restart it after `--pg-down` s. Reported: the writes
     refused meanwhile, by status (goal: every answer 5xx with a JSON body, none unanswered),
     proxy errors (goal 0), time from Postgres accepting connections to the first 201. The
     killed postmaster's backends may serve on for a moment and the control plane waits up to
     10 s for a database connection, so a short outage delays writes rather than refusing
     them; `--pg-down 15` makes it refuse some. A write acknowledged meanwhile must survive.
At the end every acknowledged consumer must still be there (GET /consumers/<name> -> 200;
goal: none lost), and one more route must reach both data planes through the change log
(goal: within --propagation-goal s). Prints a table (scenario, outage s, proxy errors on
survivors, writes acknowledged, writes lost, recovery s) and exits 1 when a goal failed.
The work directory (logs of every process) is kept when a goal failed or with --keep.
"""

import argparse
import asyncio
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

# Ports of their own: ratelimit-accuracy.py uses 93xx, soak.py 95xx.
ADMIN = 9401
CLUSTER = 9405
UPSTREAM = 9480
PROXY = [9410, 9411]
STATUS = [9430, 9431]
PG_HOST = "127.0.0.1"
PG_PORT = 5432
ROUTE_PATH = "/chaos"
LATE_PATH = "/chaos-late"

T0 = time.time()


def log(msg):
    print(f"[{time.time() - T0:7.2f}s] {msg}", flush=True)


# ---------------------------------------------------------------- Postgres (blocking helpers)

def psql(sql, db="postgres"):
    out = subprocess.run(["psql", "-h", PG_HOST, "-p", str(PG_PORT), "-U", "postgres", "-d", db, "-Atc", sql],
                         capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"psql {sql!r}: {out.stderr.strip()}")
    return out.stdout.strip()


def pg_ready():
    return subprocess.run(["pg_isready", "-h", PG_HOST, "-p", str(PG_PORT), "-q"], timeout=10).returncode == 0


def pg_version():
    versions = sorted(os.listdir("/etc/postgresql"))
    if not versions:
        raise RuntimeError("no cluster under /etc/postgresql")
    return versions[-1]


def pg_start(limit=120.0):
    """Starts the cluster (retrying: a killed postmaster's children may still hold its shared
    memory for a moment) until pg_isready; returns when it answers. Raises after `limit` s."""
    deadline = time.time() + limit
    last = ""
    while time.time() < deadline:
        if pg_ready():
            return
        out = subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", pg_version(), "main", "start"],
                             capture_output=True, text=True, timeout=60)
        last = (out.stdout + out.stderr).strip()
        for _ in range(20):
            if pg_ready():
                return
            time.sleep(0.1)
    raise RuntimeError(f"Postgres did not come back within {limit:.0f} s: {last}")


def ensure_postgres():
    """Whatever happened: leave Postgres running."""
    try:
        if not pg_ready():
            print("chaos: Postgres is down, starting it again", file=sys.stderr)
            pg_start()
    except Exception as e:  # noqa: BLE001 - reported, the caller is already cleaning up
        print(f"chaos: COULD NOT RESTART POSTGRES: {e}", file=sys.stderr)


# ---------------------------------------------------------------- processes

class Procs:
    def __init__(self, work, bin_dir):
        self.work = work
        self.bin = bin_dir
        self.running = {}
        base = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
        base.update(GATEHOUSE_LOG_LEVEL="info", GATEHOUSE_CLUSTER_MTLS="off")
        self.base = base

    def env(self, name):
        if name == "cp":
            return dict(self.base, GATEHOUSE_DATABASE_URL=self.db_url, GATEHOUSE_PREFIX=f"{self.work}/prefix",
                        GATEHOUSE_ADMIN_LISTEN=f"127.0.0.1:{ADMIN}", GATEHOUSE_ADMIN_SSL_LISTEN="off",
                        GATEHOUSE_CLUSTER_LISTEN=f"127.0.0.1:{CLUSTER}")
        i = int(name[2:])
        return dict(self.base, GATEHOUSE_PROXY_LISTEN=f"127.0.0.1:{PROXY[i]}", GATEHOUSE_PROXY_SSL_LISTEN="off",
                    GATEHOUSE_STATUS_LISTEN=f"127.0.0.1:{STATUS[i]}", GATEHOUSE_CACHE_DIR=f"{self.work}/{name}",
                    GATEHOUSE_CLUSTER_CONTROL_PLANE=f"127.0.0.1:{CLUSTER}", GATEHOUSE_PROXY_WORKERS="1",
                    GATEHOUSE_STATUS_INTERVAL_MS="500", GATEHOUSE_BACKOFF_MIN_MS="100",
                    GATEHOUSE_BACKOFF_MAX_MS="500")

    def start(self, name):
        binary = f"{self.bin}/chaos-{'cp' if name == 'cp' else 'dp'}"
        logf = open(f"{self.work}/{name}.log", "a")
        logf.write(f"\n===== start at {time.time() - T0:.2f}s =====\n")
        logf.flush()
        p = subprocess.Popen([binary, "run"], env=self.env(name), stdin=subprocess.DEVNULL, stdout=logf,
                             stderr=subprocess.STDOUT)
        logf.close()
        self.running[name] = p
        return p

    def kill9(self, name):
        p = self.running.pop(name)
        p.send_signal(signal.SIGKILL)
        p.wait()
        return p.pid

    def check_alive(self):
        """Descriptions of processes that exited on their own."""
        dead = []
        for n, p in self.running.items():
            if p.poll() is not None:
                with open(f"{self.work}/{n}.log", errors="replace") as f:
                    tail = "".join(f.readlines()[-15:])
                dead.append(f"{n} (pid {p.pid}, exit status {p.returncode}); last lines of its log:\n{tail}")
        return dead

    def stop_all(self):
        for p in self.running.values():
            if p.poll() is None:
                p.terminate()
        deadline = time.time() + 5
        for p in self.running.values():
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.running.clear()


# ---------------------------------------------------------------- HTTP over asyncio streams

async def read_response(reader):
    line = await reader.readline()
    if not line:
        raise ConnectionResetError("connection closed before a status line")
    status = int(line.split(None, 2)[1])
    headers = {}
    while True:
        h = await reader.readline()
        if not h:
            raise ConnectionResetError("connection closed in the head")
        if h in (b"\r\n", b"\n"):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif status in (204, 304) or 100 <= status < 200:
        body = b""
    else:
        body = await reader.read()
    return status, headers, body


def close(conn):
    if conn is not None:
        try:
            conn[1].close()
        except Exception:  # noqa: BLE001
            pass


class Admin:
    """One kept-alive Admin API connection, reopened after any failure."""

    def __init__(self, port=ADMIN):
        self.port = port
        self.conn = None

    async def request(self, method, path, body=None, timeout=15.0):
        data = json.dumps(body).encode() if body is not None else b""
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode()
        try:
            if self.conn is None:
                self.conn = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), timeout)
            reader, writer = self.conn
            writer.write(head + data)
            await writer.drain()
            status, headers, rbody = await asyncio.wait_for(read_response(reader), timeout)
        except BaseException:
            close(self.conn)
            self.conn = None
            raise
        if headers.get("connection", "").lower() == "close":
            close(self.conn)
            self.conn = None
        return status, headers, rbody

    async def json(self, method, path, body=None, expect=(200, 201)):
        status, _, rbody = await self.request(method, path, body)
        if status not in expect:
            raise RuntimeError(f"{method} {path}: {status} {rbody[:300]!r}")
        return json.loads(rbody or b"{}")

    def close(self):
        close(self.conn)
        self.conn = None


def classify(exc):
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    return "reset"


async def get_once(port, path, timeout=2.0):
    """Status of one GET on a fresh connection, or None."""
    conn = None
    try:
        conn = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
        conn[1].write(f"GET {path} HTTP/1.1\r\nHost: chaos.test\r\nConnection: close\r\n\r\n".encode())
        status, _, body = await asyncio.wait_for(read_response(conn[0]), timeout)
        return status, body
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError):
        return None, b""
    finally:
        close(conn)


# ---------------------------------------------------------------- load

Write = collections.namedtuple("Write", "name start end outcome json_body")


class Load:
    def __init__(self, args):
        self.args = args
        self.stop = False
        self.writes = []
        self.proxied = [[] for _ in PROXY]  # per data plane: (time sent, outcome)
        self.admin = Admin()

    async def writer(self):
        n = 0
        interval = 1.0 / self.args.write_rate if self.args.write_rate > 0 else 0.0
        next_at = time.time()
        while not self.stop:
            n += 1
            name = f"c{n}"
            start = time.time()
            json_body = None
            try:
                status, _, body = await self.admin.request("POST", "/consumers", {"username": name})
                outcome = status
                try:
                    json_body = isinstance(json.loads(body), dict)
                except ValueError:
                    json_body = False
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
                outcome = classify(e)
            self.writes.append(Write(name, start, time.time(), outcome, json_body))
            if outcome != 201 and not interval:
                await asyncio.sleep(0.02)  # no busy loop against a dead admin port
            next_at = max(next_at + interval, time.time() - 1.0)
            delay = next_at - time.time()
            if delay > 0:
                await asyncio.sleep(delay)

    async def proxy_connection(self, dp, offset, interval):
        port = PROXY[dp]
        request = f"GET {ROUTE_PATH} HTTP/1.1\r\nHost: chaos.test\r\n\r\n".encode()
        records = self.proxied[dp]
        conn = None
        next_at = time.time() + offset
        while not self.stop:
            delay = next_at - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -1.0:  # fell behind (a timeout): do not burst
                next_at = time.time()
            sent = time.time()
            try:
                if conn is None:
                    conn = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2.0)
                conn[1].write(request)
                await conn[1].drain()
                status, headers, _ = await asyncio.wait_for(read_response(conn[0]), 2.0)
                outcome = "ok" if status == 200 else f"http {status}"
                if headers.get("connection", "").lower() == "close":
                    close(conn)
                    conn = None
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
                outcome = classify(e)
                close(conn)
                conn = None
            records.append((sent, outcome))
            next_at += interval
        close(conn)

    def tasks(self):
        conns = 5
        interval = conns / self.args.rate
        out = [asyncio.create_task(self.writer())]
        for dp in range(len(PROXY)):
            for i in range(conns):
                out.append(asyncio.create_task(self.proxy_connection(dp, i * interval / conns, interval)))
        return out

    # -- queries over what was recorded

    def first_write(self, after, status=201):
        for w in self.writes:
            if w.end > after and w.outcome == status:
                return w
        return None

    def first_ok(self, dp, after):
        for t, o in self.proxied[dp]:
            if t >= after and o == "ok":
                return t
        return None


async def wait_until(pred, timeout, step=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        await asyncio.sleep(step)
    return None


# ---------------------------------------------------------------- the run

async def upstream_server():
    async def handle(reader, writer):
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, asyncio.CancelledError):
            pass
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", UPSTREAM)


class Scenario:
    def __init__(self, name):
        self.name = name
        self.start = time.time()  # beginning of its "before" steady period
        self.end = None
        self.fault = None  # kill
        self.repair = None  # restart issued (Postgres: accepting connections again)
        self.back = None  # service back (first 201 / first 200)
        self.killed_dp = None
        self.notes = []
        self.goals = []  # (description, ok)

    @property
    def outage(self):
        return None if self.back is None else self.back - self.fault

    @property
    def recovery(self):
        return None if self.back is None else self.back - self.repair


def proxy_errors(load, sc):
    """Non-200 answers (by kind) in the scenario's window on data planes that were up."""
    errors = collections.Counter()
    down = collections.Counter()
    for dp, records in enumerate(load.proxied):
        for t, o in records:
            if not (sc.start <= t < sc.end) or o == "ok":
                continue
            if dp == sc.killed_dp and sc.fault <= t < (sc.back or sc.end):
                down[o] += 1
            else:
                errors[f"dp{dp} {o}"] += 1
    return errors, down


async def steady(seconds, procs):
    await asyncio.sleep(seconds)
    dead = procs.check_alive()
    if dead:
        raise RuntimeError("process(es) exited on their own: " + "\n".join(dead))


async def run(args, procs, scenarios, final):
    upstream = await upstream_server()
    admin = Admin()
    # Control plane, data planes, then a route both proxy.
    procs.start("cp")
    for _ in range(300):
        try:
            status, _, _ = await admin.request("GET", "/status", timeout=2)
            if status == 200:
                break
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
            await asyncio.sleep(0.1)
    else:
        raise RuntimeError("the control plane did not answer /status within 30 s")
    procs.start("dp0")
    procs.start("dp1")
    svc = await admin.json("POST", "/services", {"name": "chaos", "url": f"http://127.0.0.1:{UPSTREAM}"})
    await admin.json("POST", "/routes", {"service": {"id": svc["id"]}, "paths": [ROUTE_PATH]})
    for dp, port in enumerate(PROXY):
        ok = False
        deadline = time.time() + 30
        while time.time() < deadline and not ok:
            ok = (await get_once(port, ROUTE_PATH))[0] == 200
            if not ok:
                await asyncio.sleep(0.1)
        if not ok:
            raise RuntimeError(f"data plane {dp} does not proxy {ROUTE_PATH} after 30 s")
    log(f"control plane and 2 data planes up, both proxy {ROUTE_PATH}")

    load = Load(args)
    final["load"] = load  # an aborted run still reports the scenarios it finished
    tasks = load.tasks()
    try:
        await run_scenarios(args, procs, load, scenarios)
    finally:
        load.stop = True
        await asyncio.gather(*tasks, return_exceptions=True)
        load.admin.close()

    # Every acknowledged consumer must be in the store; count the refused ones that are too.
    acked = [w for w in load.writes if w.outcome == 201]
    lost = []
    committed_unacked = 0
    for w in load.writes:
        for attempt in range(5):
            try:
                status, _, _ = await admin.request("GET", f"/consumers/{w.name}")
                break
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
                await asyncio.sleep(0.2)
        else:
            raise RuntimeError(f"GET /consumers/{w.name} failed 5 times")
        if w.outcome == 201 and status != 200:
            lost.append((w, status))
        elif w.outcome != 201 and status == 200:
            committed_unacked += 1
    final.update(acked=acked, lost=lost, committed_unacked=committed_unacked)
    log(f"checked {len(load.writes)} consumers: {len(acked)} acknowledged, {len(lost)} of them missing, "
        f"{committed_unacked} stored though not acknowledged")

    # The change log still reaches both data planes.
    await admin.json("POST", "/routes", {"service": {"id": svc["id"]}, "paths": [LATE_PATH]})
    created = time.time()
    seen = {}
    while time.time() - created < max(10.0, 2 * args.propagation_goal) and len(seen) < len(PROXY):
        for dp, port in enumerate(PROXY):
            if dp not in seen and (await get_once(port, LATE_PATH))[0] == 200:
                seen[dp] = time.time() - created
        await asyncio.sleep(0.02)
    final["propagation"] = seen
    cp_rev = (await admin.json("GET", "/status")).get("config_revision")
    revs = []
    for port in STATUS:
        st, body = await get_once(port, "/status")
        revs.append(json.loads(body).get("config_revision") if st == 200 else None)
    final["revisions"] = (cp_rev, revs)
    admin.close()
    upstream.close()


async def run_scenarios(args, procs, load, scenarios):
    down = args.down
    await steady(args.steady, procs)

    # 1. The control plane.
    sc = Scenario("kill -9 control plane")
    scenarios.append(sc)
    await steady(args.steady, procs)
    sc.fault = time.time()
    pid = procs.kill9("cp")
    log(f"killed the control plane (pid {pid})")
    await asyncio.sleep(down)
    sc.repair = time.time()
    procs.start("cp")
    log("restarted the control plane")
    w = await wait_until(lambda: load.first_write(sc.repair), 60)
    if w:
        sc.back = w.end
        log(f"first 201 after the restart: {sc.back - sc.fault:.2f} s after the kill")
    else:
        sc.notes.append("no write acknowledged within 60 s of the restart")
    await steady(args.steady, procs)
    sc.end = time.time()

    # 2. A data plane.
    sc = Scenario("kill -9 data plane 1")
    scenarios.append(sc)
    sc.killed_dp = 1
    await steady(args.steady, procs)
    sc.fault = time.time()
    pid = procs.kill9("dp1")
    log(f"killed data plane 1 (pid {pid})")
    await asyncio.sleep(down)
    sc.repair = time.time()
    procs.start("dp1")
    log("restarted data plane 1")
    t = await wait_until(lambda: load.first_ok(1, sc.repair), 60)
    if t:
        sc.back = t
        log(f"data plane 1 serves 200 again {t - sc.repair:.3f} s after its restart")
        wrong = collections.Counter(o for tt, o in load.proxied[1] if sc.repair <= tt < t and o != "ok")
        if wrong:
            sc.notes.append("data plane 1 between restart and first 200: "
                            + ", ".join(f"{k} x{v}" for k, v in sorted(wrong.items())))
    else:
        sc.notes.append("data plane 1 did not serve a 200 within 60 s of its restart")
    await steady(args.steady, procs)
    sc.end = time.time()

    # 3. Postgres.
    sc = Scenario("kill -9 Postgres")
    scenarios.append(sc)
    data_dir = await asyncio.to_thread(psql, "show data_directory")
    await steady(args.steady, procs)
    others = await asyncio.to_thread(
        psql, "select count(*) from pg_stat_activity where backend_type = 'client backend' "
              f"and datname is distinct from '{procs.db_name}' and pid <> pg_backend_pid()")
    if others != "0":
        sc.notes.append(f"{others} other Postgres client session(s) were cut off by the kill")
    with open(f"{data_dir}/postmaster.pid") as f:
        pg_pid = int(f.readline())
    sc.fault = time.time()
    os.kill(pg_pid, signal.SIGKILL)
    log(f"killed the Postgres postmaster (pid {pg_pid})")
    await asyncio.sleep(args.pg_down)
    restart = time.time()
    try:
        await asyncio.to_thread(pg_start)
    except Exception:
        sc.repair = time.time()
        raise
    sc.repair = time.time()
    sc.notes.append(f"Postgres down {sc.repair - sc.fault:.2f} s (restart took {sc.repair - restart:.2f} s)")
    log(f"Postgres accepts connections again ({sc.repair - sc.fault:.2f} s after the kill)")
    w = await wait_until(lambda: load.first_write(sc.repair), 60)
    if w:
        sc.back = w.end
        log(f"first 201 {sc.back - sc.repair:.2f} s after Postgres came back")
    else:
        sc.notes.append("no write acknowledged within 60 s of Postgres coming back")
    await steady(args.steady, procs)
    sc.end = time.time()
    # What the Admin API answered meanwhile: requests sent between the kill and the first 201.
    until = sc.back or sc.end
    during = [w for w in load.writes if sc.fault <= w.start < until]
    answers = collections.Counter()
    bad = 0
    for w in during:
        if isinstance(w.outcome, int):
            key = f"{w.outcome} {'JSON' if w.json_body else 'not JSON'}"
            if w.outcome != 201 and (w.outcome < 500 or not w.json_body):
                bad += 1
        else:
            key = w.outcome
            if w.outcome == "timeout":
                bad += 1  # no answer in 15 s: a hang, not a refusal
        answers[key] += 1
    refused = sum(v for k, v in answers.items() if not k.startswith("201"))
    sc.notes.append("Admin API answers to writes sent between the kill and the first 201 after the restart: "
                    + (", ".join(f"{k} x{v}" for k, v in sorted(answers.items())) or "none"))
    if during:
        slowest = max(during, key=lambda w: w.end - w.start)
        sc.notes.append(f"slowest of those writes: {slowest.name}, {slowest.end - slowest.start:.2f} s "
                        f"({slowest.outcome})")
    acked_down = [w for w in during if w.outcome == 201 and w.end < sc.repair]
    if acked_down:
        sc.notes.append(f"{len(acked_down)} write(s) acknowledged while Postgres was down (the killed postmaster's "
                        "backends serve on until they notice); each is checked at the end like every other")
    sc.goals.append((f"writes refused during the Postgres outage answered 5xx in JSON, none unanswered "
                     f"({refused} refused)", bad == 0))


def fmt(v, spec=".2f"):
    return "-" if v is None else format(v, spec)


def report(args, scenarios, final):
    load = final.get("load")
    if load is None:
        return False
    lost_names = {w.name for w, _ in final.get("lost", [])}
    ok = True
    rows = []
    goals = []
    for sc in scenarios:
        if sc.end is None:
            continue
        errors, down = proxy_errors(load, sc)
        in_window = [w for w in load.writes if sc.start <= w.start < sc.end]
        acked = sum(1 for w in in_window if w.outcome == 201)
        lost = sum(1 for w in in_window if w.name in lost_names)
        failed = collections.Counter(str(w.outcome) for w in in_window if w.outcome != 201)
        rows.append((sc.name, fmt(sc.outage), str(sum(errors.values())), str(acked), str(lost), fmt(sc.recovery)))
        goals.append((f"{sc.name}: no proxy errors on data planes that were up", not errors))
        goals.append((f"{sc.name}: service came back", sc.back is not None))
        goals.extend((f"{sc.name}: {d}", g) for d, g in sc.goals)
        sc.detail = [f"proxy errors: {dict(errors) or 'none'}"]
        if sc.killed_dp is not None:
            sc.detail.append(f"data plane {sc.killed_dp} down (refused/dropped while killed): {sum(down.values())} "
                             f"({', '.join(f'{k} x{v}' for k, v in sorted(down.items()))})")
        sc.detail.append("writes not acknowledged: "
                         + (", ".join(f"{k} x{v}" for k, v in sorted(failed.items())) or "none"))
        sc.detail.extend(sc.notes)
    total_acked = len(final.get("acked", []))
    total_lost = len(final.get("lost", []))
    prop = final.get("propagation", {})
    prop_s = max(prop.values()) if len(prop) == len(PROXY) else None
    rows.append(("end: new route reaches both DPs", "-", "-", str(total_acked), str(total_lost), fmt(prop_s)))
    goals.append(("no acknowledged write lost", total_lost == 0 and "acked" in final))
    goals.append((f"new route proxied by both data planes within {args.propagation_goal:g} s",
                  prop_s is not None and prop_s <= args.propagation_goal))
    cp_rev, dp_revs = final.get("revisions", (None, []))
    goals.append(("both data planes at the control plane's revision", bool(dp_revs) and all(r == cp_rev for r in dp_revs)))

    head = ("scenario", "outage s", "proxy errors on survivors", "writes acked", "writes lost", "recovery s")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    print()
    print(f"chaos: {args.rate} proxied req/s per data plane, writer {args.write_rate or 'unpaced'}/s, "
          f"{len(load.writes)} writes sent, {sum(len(r) for r in load.proxied)} proxied requests")
    line = "  ".join(h.ljust(w) for h, w in zip(head, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join([r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]))
    print("(outage: kill to the first 201 / first 200 again; recovery: restart - or Postgres accepting "
          "connections - to that moment; writes are counted in the scenario's window, steady periods included)")
    print()
    for sc in scenarios:
        if sc.end is None:
            continue
        print(f"{sc.name}:")
        for d in sc.detail:
            print(f"  {d}")
    print("end:")
    print(f"  {total_acked} writes acknowledged, {total_lost} lost"
          + (": " + ", ".join(f"{w.name} ({st})" for w, st in final["lost"][:20]) if total_lost else "")
          + f"; {final.get('committed_unacked', 0)} stored though not acknowledged (allowed)")
    print(f"  new route {LATE_PATH}: " + ", ".join(
        f"dp{dp} {fmt(prop.get(dp), '.3f')} s" for dp in range(len(PROXY))))
    print(f"  revisions: control plane {cp_rev}, data planes {dp_revs}")
    print()
    for d, g in goals:
        print(f"  [{'PASS' if g else 'FAIL'}] {d}")
        ok = ok and g
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bin_dir")
    ap.add_argument("--rate", type=float, default=50, help="proxied requests a second per data plane")
    ap.add_argument("--write-rate", type=float, default=20, help="consumer creations a second (0: unpaced)")
    ap.add_argument("--steady", type=float, default=5, help="seconds of steady load before and after a fault")
    ap.add_argument("--down", type=float, default=3, help="seconds a killed process stays down")
    ap.add_argument("--pg-down", type=float, default=3,
                    help="seconds Postgres stays down (past the CP's 10 s pool acquire timeout, writes are refused)")
    ap.add_argument("--propagation-goal", type=float, default=5)
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = ap.parse_args()

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)

    bin_dir = os.path.abspath(args.bin_dir)
    for b in ("gatehouse-cp", "gatehouse-dp"):
        if not os.access(f"{bin_dir}/{b}", os.X_OK):
            sys.exit(f"{bin_dir}/{b} is missing: build it first")
    work = tempfile.mkdtemp(prefix="gh-chaos-")
    os.makedirs(f"{work}/bin")
    for b in ("cp", "dp"):
        # Renamed copies: a neighbour's `pkill -f gatehouse-cp` must not stop them mid-test.
        shutil.copy2(f"{bin_dir}/gatehouse-{b}", f"{work}/bin/chaos-{b}")
    procs = Procs(work, f"{work}/bin")
    procs.db_name = f"gatehouse_chaos_{os.getpid()}"
    procs.db_url = f"postgres://postgres@{PG_HOST}:{PG_PORT}/{procs.db_name}"
    scenarios = []
    final = {}
    ok = False
    db_created = False
    try:
        if not pg_ready():
            log("Postgres is not running: starting it")
            pg_start()
        psql(f"CREATE DATABASE {procs.db_name}")
        db_created = True
        out = subprocess.run([f"{work}/bin/chaos-cp", "migrations", "up"], env=procs.env("cp"),
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"migrations up failed: {out.stdout}{out.stderr}")
        log(f"database {procs.db_name} migrated; work directory {work}")
        asyncio.run(run(args, procs, scenarios, final))
        ok = report(args, scenarios, final)
    except BaseException as e:
        print(f"\nchaos: aborted: {type(e).__name__}: {e}", file=sys.stderr)
        if final.get("load") or scenarios:
            try:
                report(args, scenarios, final)
            except Exception as e2:  # noqa: BLE001
                print(f"chaos: (no report: {e2})", file=sys.stderr)
        ok = False
        if not isinstance(e, Exception):
            raise
    finally:
        procs.stop_all()
        ensure_postgres()
        if db_created:
            try:
                psql(f"DROP DATABASE IF EXISTS {procs.db_name} WITH (FORCE)")
            except Exception as e:  # noqa: BLE001
                print(f"chaos: could not drop database {procs.db_name}: {e}", file=sys.stderr)
        if ok and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"chaos: logs kept in {work}", file=sys.stderr)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
