//! `sync_bench`: how fast a large configuration reaches data planes, and how fast single
//! writes propagate once they are connected. A measurement program, not a test: it prints
//! figures and asserts nothing about timings.
//!
//! Needs Postgres (as the end-to-end tests do: `GATEHOUSE_TEST_POSTGRES`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and the `gatehouse-cp` / `gatehouse-dp`
//! binaries next to this executable, so build everything in one profile first:
//!
//! ```text
//! cargo build --release --bins && target/release/sync_bench [options]
//! ```
//!
//! Options: `--pairs N` (Services + Routes to load, default 10000), `--writes N` (sequential
//! writes per fleet size, default 200), `--dps 1,10` (fleet sizes), `--concurrency N` (Admin
//! requests in flight while loading, default 16), `--clients N` (in-process sync clients for
//! phase 4; 0, the default, skips it), `--json-out FILE`.
//!
//! Phases:
//! 1. a control plane on a fresh, migrated Postgres database; N Services + N Routes written
//!    through the Admin API;
//! 2. one data plane started cold: time until its status endpoint answers and until it reports
//!    the head revision, the size of its `config.json` cache file, its RSS (and peak RSS), and
//!    its RSS once idle for 3 s (settled: freed memory handed back);
//! 3. for each fleet size: the missing data planes are started together (time until all hold
//!    the head), then W sequential writes (alternately a Route PATCH and a Service POST), each
//!    timed from the Admin API's response until every data plane's status reports the
//!    write's revision (status endpoints polled every 1 ms); then the first data plane's RSS,
//!    at once and settled;
//! 4. with `--clients N`: N in-process sync clients (each a stream to the control plane that
//!    acknowledges everything) are connected and brought to the head; then W writes, each timed
//!    from the Admin API's response until the last client has the write's revision (and has
//!    acknowledged it); then the control plane is restarted and the time until every client is
//!    connected and at the head again is measured.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::future::join_all;
use futures::stream::{self, StreamExt};
use gatehouse_tests::cluster::{ClusterCert, ControlPlane, DataPlane, Following, SyncClient};
use gatehouse_tests::{migrate, Backend, Database};
use serde_json::{json, Value};

const UPSTREAM: &str = "http://127.0.0.1:18080";
/// How long one write may take to reach every data plane before it counts as lost.
const WRITE_DEADLINE: Duration = Duration::from_secs(60);
/// How long a data plane may take to pull the whole configuration.
const SNAPSHOT_DEADLINE: Duration = Duration::from_secs(300);

struct Args {
    pairs: usize,
    writes: usize,
    dps: Vec<usize>,
    concurrency: usize,
    clients: usize,
    json_out: Option<String>,
}

fn usage(problem: &str) -> ! {
    eprintln!("{problem}\nusage: sync_bench [--pairs N] [--writes N] [--dps 1,10] [--concurrency N] [--clients N] [--json-out FILE]");
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args { pairs: 10_000, writes: 200, dps: vec![1, 10], concurrency: 16, clients: 0, json_out: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            usage("sync_bench: configuration sync benchmark (see the module documentation)");
        }
        let value = it.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let number = |v: &str| v.parse::<usize>().unwrap_or_else(|_| usage(&format!("{flag}: not a number: {v}")));
        match flag.as_str() {
            "--pairs" => args.pairs = number(&value),
            "--writes" => args.writes = number(&value),
            "--concurrency" => args.concurrency = number(&value).max(1),
            "--dps" => {
                args.dps = value.split(',').map(|v| number(v.trim())).filter(|n| *n > 0).collect();
                args.dps.sort_unstable();
                args.dps.dedup();
            }
            "--clients" => args.clients = number(&value),
            "--json-out" => args.json_out = Some(value),
            _ => usage(&format!("unknown option {flag}")),
        }
    }
    if args.pairs == 0 {
        usage("--pairs must be at least 1: the writes change the Routes it creates");
    }
    args
}

/// Nearest-rank percentile of `values` (sorted in place), in milliseconds.
fn pct(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(values: &[f64]) -> Value {
    let mut v = values.to_vec();
    json!({
        "n": v.len(),
        "p50_ms": pct(&mut v, 50.0),
        "p90_ms": pct(&mut v, 90.0),
        "p99_ms": pct(&mut v, 99.0),
        "max_ms": v.last().copied().unwrap_or(f64::NAN),
    })
}

fn fmt_summary(s: &Value) -> String {
    let f = |k: &str| s[k].as_f64().unwrap_or(f64::NAN);
    format!(
        "p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms  (n={})",
        f("p50_ms"),
        f("p90_ms"),
        f("p99_ms"),
        f("max_ms"),
        s["n"]
    )
}

/// (VmRSS, VmHWM) in KiB of the processes whose environment contains `needle`
/// (e.g. `GATEHOUSE_CACHE_DIR=/tmp/...`): the harness does not expose pids.
fn rss_by_environ(needle: &str) -> Vec<(u32, u64, u64)> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if !environ.split(|b| *b == 0).any(|var| var == needle.as_bytes()) {
            continue;
        }
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        found.push((pid, field("VmRSS:"), field("VmHWM:")));
    }
    found
}

fn dp_memory(dp: &DataPlane) -> (u64, u64) {
    let needle = format!("GATEHOUSE_CACHE_DIR={}", dp.cache_dir.display());
    rss_by_environ(&needle).iter().fold((0, 0), |(r, h), (_, rss, hwm)| (r + rss, h + hwm))
}

/// How long a data plane is left idle before its settled RSS is read: its heaps hand back
/// what they freed on a one-second tick (`gatehouse_data_plane::memory`), so a reading taken
/// just after a snapshot or a burst of writes still holds the garbage of the last ones.
const SETTLE: Duration = Duration::from_secs(3);

/// The data plane's RSS (KiB) once it has been idle for [`SETTLE`].
async fn settled(dp: &DataPlane) -> u64 {
    tokio::time::sleep(SETTLE).await;
    dp_memory(dp).0
}

fn cp_memory(cp: &ControlPlane) -> (u64, u64) {
    let needle = format!("GATEHOUSE_ADMIN_LISTEN=127.0.0.1:{}", cp.admin_port);
    rss_by_environ(&needle).iter().fold((0, 0), |(r, h), (_, rss, hwm)| (r + rss, h + hwm))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The data plane's revision, or -1 when its status endpoint does not answer.
async fn dp_revision(http: &reqwest::Client, dp: &DataPlane) -> i64 {
    match http.get(&dp.status_url).send().await {
        Ok(r) => r.json::<Value>().await.ok().and_then(|v| v["config_revision"].as_i64()).unwrap_or(-1),
        Err(_) => -1,
    }
}

/// Polls every data plane in `dps` (1 ms between rounds) until each reports `revision`;
/// returns, per data plane, the time since `since` at which it was first seen there
/// (`None` if it did not get there within `deadline`).
async fn wait_all(
    http: &reqwest::Client,
    dps: &[&DataPlane],
    revision: i64,
    since: Instant,
    deadline: Duration,
) -> Vec<Option<Duration>> {
    let mut reached: Vec<Option<Duration>> = vec![None; dps.len()];
    loop {
        let pending: Vec<usize> = (0..dps.len()).filter(|i| reached[*i].is_none()).collect();
        if pending.is_empty() || since.elapsed() > deadline {
            return reached;
        }
        let revisions = join_all(pending.iter().map(|i| dp_revision(http, dps[*i]))).await;
        let now = since.elapsed();
        for (i, rev) in pending.iter().zip(revisions) {
            if rev >= revision {
                reached[*i] = Some(now);
            }
        }
        if reached.iter().any(Option::is_none) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Sums the serialized size of every document listed under `path` (paged by 1000).
async fn listed_bytes(http: &reqwest::Client, admin: &str, path: &str) -> (usize, usize) {
    let (mut count, mut bytes) = (0, 0);
    let mut offset: Option<String> = None;
    loop {
        let mut req = http.get(format!("{admin}{path}")).query(&[("size", "1000")]);
        if let Some(o) = &offset {
            req = req.query(&[("offset", o.as_str())]);
        }
        let page: Value = match req.send().await {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        for doc in page["data"].as_array().into_iter().flatten() {
            count += 1;
            bytes += serde_json::to_vec(doc).map_or(0, |v| v.len());
        }
        match page["offset"].as_str() {
            Some(o) if !o.is_empty() => offset = Some(o.to_string()),
            _ => return (count, bytes),
        }
    }
}

async fn head(http: &reqwest::Client, admin: &str) -> i64 {
    let v: Value = http
        .get(format!("{admin}/status"))
        .send()
        .await
        .expect("GET /status on the control plane")
        .json()
        .await
        .expect("control plane /status JSON");
    v["config_revision"].as_i64().expect("config_revision")
}

/// Sends one Admin API request; returns (status, body, latency).
async fn admin_send(req: reqwest::RequestBuilder) -> (u16, Value, Duration) {
    let t = Instant::now();
    match req.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let body = r.json::<Value>().await.unwrap_or(Value::Null);
            (status, body, t.elapsed())
        }
        Err(e) => (0, json!({ "error": e.to_string() }), t.elapsed()),
    }
}

/// `line` without ANSI colour sequences (`ESC [ … m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The "snapshot sent" lines of the control plane's log (chunks per snapshot).
fn snapshot_log_lines(cp: &ControlPlane) -> Vec<String> {
    cp.logs().lines().filter(|l| l.contains("snapshot sent")).map(strip_ansi).collect()
}

/// The data planes here only sync: without this, each would bind the proxy on 0.0.0.0:8000.
const DP_ENV: [(&str, &str); 2] = [("GATEHOUSE_PROXY_LISTEN", "off"), ("GATEHOUSE_PROXY_SSL_LISTEN", "off")];

#[tokio::main]
async fn main() {
    let args = parse_args();
    let mut report = json!({ "pairs": args.pairs, "writes": args.writes, "fleet_sizes": args.dps });
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(120))
        .build()
        .expect("HTTP client");

    // --- control plane on a fresh Postgres database ---
    let cert = std::sync::Arc::new(ClusterCert::generate());
    let db = Database::create(Backend::Postgres).await;
    migrate(&db).await;
    let mut cp = ControlPlane::start(&db, &cert, &[]).await;
    let admin = cp.admin.clone();
    let cluster = cp.cluster_addr();
    println!("control plane: admin {admin}, cluster {cluster}");

    // --- load N services + N routes ---
    let started = Instant::now();
    let results: Vec<(Option<String>, Vec<f64>, Vec<String>)> = stream::iter(0..args.pairs)
        .map(|i| {
            let http = http.clone();
            let admin = admin.clone();
            async move {
                let mut lat = Vec::new();
                let mut errors = Vec::new();
                let (st, body, dt) = admin_send(
                    http.post(format!("{admin}/services"))
                        .json(&json!({"name": format!("bench-svc-{i}"), "url": UPSTREAM})),
                )
                .await;
                lat.push(ms(dt));
                let Some(sid) = body["id"].as_str().filter(|_| st == 201).map(str::to_string) else {
                    errors.push(format!("POST /services {i}: {st} {body}"));
                    return (None, lat, errors);
                };
                let (st, body, dt) = admin_send(
                    http.post(format!("{admin}/routes"))
                        .json(&json!({"paths": [format!("/bench/{i}")], "service": {"id": sid}})),
                )
                .await;
                lat.push(ms(dt));
                let rid = body["id"].as_str().filter(|_| st == 201).map(str::to_string);
                if rid.is_none() {
                    errors.push(format!("POST /routes {i}: {st} {body}"));
                }
                (rid, lat, errors)
            }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    let load_time = started.elapsed();
    let mut route_ids = Vec::new();
    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    for (rid, lat, errs) in results {
        route_ids.extend(rid);
        latencies.extend(lat);
        errors.extend(errs);
    }
    let entities = latencies.len() - errors.len();
    let load_latency = summary(&latencies);
    let head_rev = head(&http, &admin).await;
    println!(
        "load: {entities} entities in {:.2} s = {:.0} entities/s with {} in flight; errors {}; head revision {head_rev}",
        load_time.as_secs_f64(),
        entities as f64 / load_time.as_secs_f64(),
        args.concurrency,
        errors.len()
    );
    println!("  admin latency: {}", fmt_summary(&load_latency));
    for e in errors.iter().take(5) {
        println!("  error: {e}");
    }
    let (cp_rss, _) = cp_memory(&cp);
    report["load"] = json!({
        "seconds": load_time.as_secs_f64(),
        "entities": entities,
        "entities_per_second": entities as f64 / load_time.as_secs_f64(),
        "concurrency": args.concurrency,
        "errors": errors.len(),
        "latency": load_latency,
        "head_revision": head_rev,
        "cp_rss_kib_after_load": cp_rss,
    });
    if route_ids.is_empty() {
        eprintln!("no routes were created; giving up");
        std::process::exit(1);
    }

    let listed = Instant::now();
    let (svc_n, svc_bytes) = listed_bytes(&http, &admin, "/services").await;
    let (route_n, route_bytes) = listed_bytes(&http, &admin, "/routes").await;
    let list_time = listed.elapsed();
    println!(
        "admin listing: {svc_n} services ({svc_bytes} B of JSON) + {route_n} routes ({route_bytes} B) paged in {:.2} s",
        list_time.as_secs_f64()
    );
    report["listing"] = json!({
        "services": svc_n, "service_bytes": svc_bytes, "routes": route_n, "route_bytes": route_bytes,
        "seconds": list_time.as_secs_f64(),
    });

    // --- (a) one cold data plane ---
    let snapshots_before = snapshot_log_lines(&cp).len();
    let t0 = Instant::now();
    let first = DataPlane::start(&cluster, &cert, &DP_ENV).await;
    let status_up = t0.elapsed();
    let reached = wait_all(&http, &[&first], head_rev, t0, SNAPSHOT_DEADLINE).await;
    let applied = reached[0];
    let cache_file = first.cache_dir.join("config.json");
    let persisted = loop {
        if cache_file.exists() {
            break Some(t0.elapsed());
        }
        if t0.elapsed() > SNAPSHOT_DEADLINE {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let cache_bytes = std::fs::metadata(&cache_file).map(|m| m.len()).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (dp_rss, dp_hwm) = dp_memory(&first);
    let (cp_rss, cp_hwm) = cp_memory(&cp);
    let dp_settled = settled(&first).await;
    let status = first.status().await;
    let log_lines: Vec<String> = snapshot_log_lines(&cp).into_iter().skip(snapshots_before).collect();
    println!("cold data plane (1):");
    println!("  status endpoint up after {:.1} ms", ms(status_up));
    match applied {
        Some(d) => println!("  applied the snapshot (revision {head_rev}) after {:.1} ms", ms(d)),
        None => println!("  did NOT reach revision {head_rev} within {SNAPSHOT_DEADLINE:?}; status {status}"),
    }
    println!(
        "  cache file {} written after {}: {cache_bytes} B ({:.2} MiB); entities {}",
        cache_file.display(),
        persisted.map_or("never".to_string(), |d| format!("{:.1} ms", ms(d))),
        cache_bytes as f64 / 1048576.0,
        status["entities"]
    );
    println!(
        "  data plane RSS {:.1} MiB (peak {:.1} MiB); settled, {SETTLE:?} later: {:.1} MiB",
        mib(dp_rss),
        mib(dp_hwm),
        mib(dp_settled)
    );
    println!("  control plane RSS {:.1} MiB (peak {:.1} MiB)", mib(cp_rss), mib(cp_hwm));
    for l in &log_lines {
        println!("  cp log: {}", l.trim());
    }
    report["cold_start"] = json!({
        "status_up_ms": ms(status_up),
        "applied_ms": applied.map(ms),
        "cache_written_ms": persisted.map(ms),
        "cache_bytes": cache_bytes,
        "entities": status["entities"],
        "dp_rss_kib": dp_rss,
        "dp_peak_rss_kib": dp_hwm,
        "dp_settled_rss_kib": dp_settled,
        "cp_rss_kib": cp_rss,
        "cp_peak_rss_kib": cp_hwm,
        "cp_snapshot_log": log_lines,
    });

    // --- (b) sequential writes with 1, 10, … data planes ---
    let mut fleet = vec![first];
    let mut runs = Vec::new();
    let mut next_route = 0usize;
    let mut extra_service = 0usize;
    let mut rev = head(&http, &admin).await;
    for &size in &args.dps {
        if fleet.len() < size {
            let missing = size - fleet.len();
            let t = Instant::now();
            let started = join_all((0..missing).map(|_| DataPlane::start(&cluster, &cert, &DP_ENV))).await;
            let refs: Vec<&DataPlane> = started.iter().collect();
            let reached = wait_all(&http, &refs, rev, t, SNAPSHOT_DEADLINE).await;
            let mut times: Vec<f64> = reached.iter().flatten().map(|d| ms(*d)).collect();
            let all = reached.iter().all(Option::is_some);
            println!(
                "started {missing} more data planes together: all at revision {rev} after {} (first {:.1} ms)",
                if all { format!("{:.1} ms", pct(&mut times, 100.0)) } else { "never (some timed out)".into() },
                pct(&mut times, 0.0)
            );
            fleet.extend(started);
            let (mut rss_total, mut hwm_total) = (0, 0);
            for dp in &fleet {
                let (r, h) = dp_memory(dp);
                rss_total += r;
                hwm_total += h;
            }
            let (cp_rss, cp_hwm) = cp_memory(&cp);
            println!(
                "  fleet of {}: data planes RSS total {:.1} MiB (sum of peaks {:.1} MiB); control plane RSS {:.1} MiB (peak {:.1} MiB)",
                fleet.len(),
                mib(rss_total),
                mib(hwm_total),
                mib(cp_rss),
                mib(cp_hwm)
            );
            report[format!("fleet_{size}_start")] = json!({
                "started": missing,
                "all_applied_ms": if all { Some(pct(&mut times, 100.0)) } else { None },
                "per_dp_applied_ms": times,
                "dp_rss_total_kib": rss_total,
                "dp_peak_rss_total_kib": hwm_total,
                "cp_rss_kib": cp_rss,
                "cp_peak_rss_kib": cp_hwm,
            });
        }
        let refs: Vec<&DataPlane> = fleet.iter().take(size).collect();
        let mut all_times = Vec::new();
        let mut each_times = Vec::new();
        let mut admin_lat = Vec::new();
        let mut lost = 0;
        let mut mismatched = 0;
        let mut failed = 0;
        for w in 0..args.writes {
            let req = if w % 2 == 0 {
                let id = &route_ids[next_route % route_ids.len()];
                next_route += 1;
                http.patch(format!("{admin}/routes/{id}")).json(&json!({"preserve_host": true}))
            } else {
                extra_service += 1;
                http.post(format!("{admin}/services"))
                    .json(&json!({"name": format!("bench-extra-{extra_service}"), "host": "example.com"}))
            };
            let (st, body, dt) = admin_send(req).await;
            let acknowledged = Instant::now();
            admin_lat.push(ms(dt));
            if !(200..300).contains(&st) {
                failed += 1;
                eprintln!("write {w} failed: {st} {body}");
                continue;
            }
            // Writes are sequential and nobody else writes: each one is the next revision.
            let target = rev + 1;
            let reached = wait_all(&http, &refs, target, acknowledged, WRITE_DEADLINE).await;
            if reached.iter().any(Option::is_none) {
                lost += 1;
            } else {
                let times: Vec<f64> = reached.iter().flatten().map(|d| ms(*d)).collect();
                all_times.push(times.iter().copied().fold(0.0, f64::max));
                each_times.extend(times);
            }
            rev = head(&http, &admin).await;
            if rev != target {
                mismatched += 1;
            }
        }
        let all_s = summary(&all_times);
        let each_s = summary(&each_times);
        let admin_s = summary(&admin_lat);
        println!("{} sequential writes with {size} data plane(s):", args.writes);
        println!("  admin write latency:           {}", fmt_summary(&admin_s));
        println!("  response -> all DPs at rev:    {}", fmt_summary(&all_s));
        println!("  response -> each DP at rev:    {}", fmt_summary(&each_s));
        if lost + mismatched + failed > 0 {
            println!("  failed writes {failed}, not propagated within {WRITE_DEADLINE:?}: {lost}, revision not head+1: {mismatched}");
        }
        // Whether memory stays flat as writes accumulate: the first data plane's RSS now.
        let (rss_after, hwm_after) = fleet.first().map(dp_memory).unwrap_or_default();
        let settled_after = match fleet.first() {
            Some(dp) => settled(dp).await,
            None => 0,
        };
        println!(
            "  first data plane's RSS after the writes: {:.1} MiB (peak {:.1} MiB); settled, {SETTLE:?} later: {:.1} MiB",
            mib(rss_after),
            mib(hwm_after),
            mib(settled_after)
        );
        runs.push(json!({
            "dp_rss_kib_after": rss_after,
            "dp_settled_rss_kib_after": settled_after,
            "data_planes": size,
            "writes": args.writes,
            "admin_latency": admin_s,
            "to_all": all_s,
            "to_each": each_s,
            "failed_writes": failed,
            "not_propagated": lost,
            "revision_mismatches": mismatched,
            "all_ms": all_times,
        }));
    }
    report["writes"] = Value::Array(runs);
    if args.clients > 0 {
        report["clients"] = clients_phase(&args, &http, &mut cp, &cert, &route_ids).await;
    }

    let (cp_rss, cp_hwm) = cp_memory(&cp);
    report["cp_rss_kib_end"] = json!(cp_rss);
    report["cp_peak_rss_kib_end"] = json!(cp_hwm);
    if let Some(path) = &args.json_out {
        let text = serde_json::to_string_pretty(&report).expect("serialize report");
        match std::fs::write(Path::new(path), text) {
            Ok(()) => println!("results written to {path}"),
            Err(e) => eprintln!("cannot write {path}: {e}"),
        }
    }
    // Data planes and the control plane are killed on drop, then the database is dropped.
    drop(fleet);
    drop(cp);
    drop(db);
}

/// Phase 4: `args.clients` in-process sync clients follow the control plane; writes are timed
/// to the last of them, then the control plane restarts under them.
async fn clients_phase(
    args: &Args,
    http: &reqwest::Client,
    cp: &mut ControlPlane,
    cert: &std::sync::Arc<ClusterCert>,
    route_ids: &[String],
) -> Value {
    let admin = cp.admin.clone();
    let head_now = head(http, &admin).await;
    let started = Instant::now();
    let mut at = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let (tx, rx) = tokio::sync::watch::channel(Following::default());
        tasks.push(tokio::spawn(SyncClient::new().follow(cp.cluster_addr(), cert.clone(), tx)));
        at.push(rx);
    }
    let in_sync = all_at(&mut at, head_now, 1).await.iter().filter(|ok| **ok).count();
    let connect_ms = ms(started.elapsed());
    println!(
        "{} in-process sync clients: {in_sync} at the head (revision {head_now}) after {connect_ms:.1} ms",
        args.clients
    );

    let mut times = Vec::new();
    let mut lost = 0;
    let mut rev = head_now;
    for w in 0..args.writes {
        let id = &route_ids[w % route_ids.len()];
        let req = http.patch(format!("{admin}/routes/{id}")).json(&json!({"strip_path": w % 2 == 0}));
        let (st, body, _) = admin_send(req).await;
        let acknowledged = Instant::now();
        if !(200..300).contains(&st) {
            eprintln!("client-phase write {w} failed: {st} {body}");
            continue;
        }
        let target = rev + 1;
        let reached = all_at(&mut at, target, 1).await;
        if reached.iter().all(|ok| *ok) {
            times.push(ms(acknowledged.elapsed()));
        } else {
            lost += 1;
        }
        rev = head(http, &admin).await;
    }
    let writes = summary(&times);
    println!("  {} writes, response -> last of {} clients has it: {}", args.writes, args.clients, fmt_summary(&writes));
    if lost > 0 {
        println!("  not at every client within {WRITE_DEADLINE:?}: {lost}");
    }

    // The control plane restarts under its connected clients.
    let restarting = Instant::now();
    cp.restart().await;
    let up_ms = ms(restarting.elapsed());
    let back = all_at(&mut at, rev, 2).await.iter().filter(|ok| **ok).count();
    let back_ms = ms(restarting.elapsed());
    println!(
        "  control plane restarted (answering after {up_ms:.1} ms): {back} of {} clients connected and at the head after {back_ms:.1} ms",
        args.clients
    );
    for t in tasks {
        t.abort();
    }
    json!({
        "clients": args.clients,
        "connected_at_head": in_sync,
        "connect_ms": connect_ms,
        "write_to_last_client": writes,
        "not_propagated": lost,
        "restart_answering_ms": up_ms,
        "restart_back_in_sync": back,
        "restart_back_in_sync_ms": back_ms,
    })
}

/// Waits (up to [`WRITE_DEADLINE`] each) until every client holds `revision`, having been
/// brought up to date on at least `streams` streams; whether each did.
async fn all_at(at: &mut [tokio::sync::watch::Receiver<Following>], revision: i64, streams: u32) -> Vec<bool> {
    let waits = at.iter_mut().map(|rx| async move {
        let reached = rx.wait_for(|f| f.revision >= revision && f.streams_in_sync >= streams);
        tokio::time::timeout(WRITE_DEADLINE, reached).await.is_ok_and(|r| r.is_ok())
    });
    join_all(waits).await
}
