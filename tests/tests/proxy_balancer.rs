//! Load balancing and health checks (kong-0.14-core-behavior.md §2.7, §2.8, §5, §6): a
//! Service whose `host` names an Upstream is balanced over the Upstream's targets (weighted
//! round robin, or hashing on a header, a cookie, …); health checks (active probes, passive
//! counting of proxied responses, the manual `healthy`/`unhealthy` endpoints) take targets
//! out of rotation and back; `GET /upstreams/{u}/health` reports what the data planes see.
//!
//! Every target is a test server that names itself (`X-Upstream` header, `"upstream"` in the
//! echo body), so each reply says which target the proxy picked. Waits poll with generous
//! deadlines; nothing here measures speed.
//!
//! The last two tests run a real cluster (one control plane, several `gatehouse-dp`
//! processes) on Postgres, like `sync.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use gatehouse_tests::cluster::{ClusterCert, ControlPlane, DataPlane};
use gatehouse_tests::proxy::{dead_port, exchange, Reply, Standalone, Upstream};
use gatehouse_tests::{free_port, id_of, is_uuid, json, migrate, Backend, Database};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// Deadline for anything that is expected to happen "shortly" (health reports, propagation).
const WITHIN: Duration = Duration::from_secs(15);
/// The body of the 503 when the balancer has no usable target.
const NO_PEER: &str = "failure to get a peer from the ring-balancer";

// === helpers: configuration ===

/// Creates the Upstream `name` (plus the fields of `fields`), a Service whose host is the
/// Upstream's name, and a Route with `path` to it.
async fn balanced(gw: &Standalone, name: &str, fields: Value, path: &str) -> Value {
    let mut body = if fields.is_null() { json!({}) } else { fields };
    body["name"] = json!(name);
    let upstream = gw.post("/upstreams", body).await;
    let service = gw.post("/services", json!({"name": format!("svc-{name}"), "host": name, "port": 80})).await;
    gw.route(&service, json!({"paths": [path]})).await;
    upstream
}

/// `POST /upstreams/{upstream}/targets` (asserts 201) and returns the target row.
async fn add_target(gw: &Standalone, upstream: &str, target: &str, weight: u32) -> Value {
    gw.post(&format!("/upstreams/{upstream}/targets"), json!({"target": target, "weight": weight})).await
}

/// The target string of a test server: `127.0.0.1:<port>`.
fn local(addr: SocketAddr) -> String {
    format!("127.0.0.1:{}", addr.port())
}

// === helpers: proxy traffic ===

/// `GET path` with `headers` over a fresh connection to the proxy at `addr`.
async fn get_at(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n", addr.port());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    exchange(addr, head.as_bytes()).await.unwrap_or_else(|e| panic!("GET {path} {headers:?} via {addr}: {e}"))
}

/// `n` identical requests, 8 at a time.
async fn burst(addr: SocketAddr, path: &str, headers: &[(&str, &str)], n: usize) -> Vec<Reply> {
    futures::stream::iter(0..n).map(|_| get_at(addr, path, headers)).buffer_unordered(8).collect().await
}

/// Which test server answered (its `X-Upstream`), or `status <n>` for a reply without one.
fn who(r: &Reply) -> String {
    r.header("x-upstream").map_or_else(|| format!("status {}: {}", r.status, r.text()), str::to_owned)
}

/// Asserts every reply is a 200 from an echo server; counts them per echo server.
#[track_caller]
fn tally(replies: &[Reply]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in replies {
        *counts.entry(r.echo().upstream().to_owned()).or_insert(0) += 1;
    }
    counts
}

/// The `proxy` address of a data plane started by [`data_plane`].
fn proxy_at(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Sends bursts to `addr` until none of the replies comes from `target` (all 200 from echo
/// servers), then checks that 30 more requests avoid it too.
async fn wait_avoided(addr: SocketAddr, path: &str, target: &str, logs: impl Fn() -> String) {
    let started = Instant::now();
    loop {
        let counts = tally(&burst(addr, path, &[], 20).await);
        if !counts.contains_key(target) {
            break;
        }
        assert!(
            started.elapsed() < WITHIN,
            "the proxy at {addr} still sends traffic to {target}: {counts:?}; logs:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let counts = tally(&burst(addr, path, &[], 30).await);
    assert!(!counts.contains_key(target), "the proxy at {addr} went back to {target}: {counts:?}");
}

/// Sends bursts to `addr` until one of the replies comes from `target` (all must be 200s).
async fn wait_served_by(addr: SocketAddr, path: &str, target: &str, logs: impl Fn() -> String) {
    let started = Instant::now();
    loop {
        let counts = tally(&burst(addr, path, &[], 20).await);
        if counts.contains_key(target) {
            return;
        }
        assert!(
            started.elapsed() < WITHIN,
            "the proxy at {addr} sends no traffic to {target}: {counts:?}; logs:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// === helpers: Admin API (Standalone and ControlPlane alike, by base URL) ===

fn admin_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().expect("admin client")
}

/// One Admin API request without a body: (status, raw body).
async fn admin_call(base: &str, method: reqwest::Method, path: &str) -> (u16, String) {
    let r = admin_client()
        .request(method.clone(), format!("{base}{path}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("Admin {method} {path}: {e}"));
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// `POST /upstreams/{upstream}/targets/{target}/{healthy|unhealthy}`: asserts 204 and an empty body.
async fn set_health(base: &str, upstream: &str, target: &str, state: &str) {
    let path = format!("/upstreams/{upstream}/targets/{target}/{state}");
    let (status, body) = admin_call(base, reqwest::Method::POST, &path).await;
    assert_eq!(status, 204, "POST {path}: {body}");
    assert!(body.is_empty(), "POST {path}: a 204 has no body, got {body:?}");
}

/// `GET /upstreams/{upstream}/health` (asserts 200 and JSON).
async fn health(base: &str, upstream: &str) -> Value {
    let path = format!("/upstreams/{upstream}/health");
    let (status, body) = admin_call(base, reqwest::Method::GET, &path).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
}

/// Polls `GET /upstreams/{upstream}/health` until `ok` holds; returns that body.
async fn wait_health(base: &str, upstream: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let h = health(base, upstream).await;
        if ok(&h) {
            return h;
        }
        assert!(started.elapsed() < WITHIN, "/upstreams/{upstream}/health never showed {what}; last: {h}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The row of `target` in a `/health` (or `/targets`) body.
fn row<'a>(body: &'a Value, target: &str) -> Option<&'a Value> {
    body["data"].as_array()?.iter().find(|r| r["target"] == target)
}

/// The aggregated `health` of `target` (`""` if it has no row).
fn state<'a>(body: &'a Value, target: &str) -> &'a str {
    row(body, target).and_then(|r| r["health"].as_str()).unwrap_or_default()
}

/// What the data plane `dp` reports for `target` (`""` if it is not listed).
fn dp_state<'a>(body: &'a Value, target: &str, dp: &str) -> &'a str {
    row(body, target)
        .and_then(|r| r["data_planes"].as_array())
        .and_then(|dps| dps.iter().find(|d| d["id"] == dp))
        .and_then(|d| d["health"].as_str())
        .unwrap_or_default()
}

/// The data plane ids listed for `target`.
fn dp_ids(body: &Value, target: &str) -> BTreeSet<String> {
    row(body, target)
        .and_then(|r| r["data_planes"].as_array())
        .map(|dps| dps.iter().filter_map(|d| d["id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

// === a test server answering a fixed status ===

/// An HTTP/1.1 server on `127.0.0.1:<ephemeral>` answering every request with `status`,
/// `X-Upstream: <name>` and a short text body; counts the requests it gets.
struct Fixed {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Fixed {
    async fn start(name: &'static str, status: u16) -> Fixed {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fixed-status server");
        let addr = listener.local_addr().expect("local_addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let counter = Arc::clone(&counter);
                conns.spawn(async move {
                    let svc = service_fn(move |_req: hyper::Request<Incoming>| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        async move {
                            let resp = hyper::Response::builder()
                                .status(status)
                                .header("x-upstream", name)
                                .header("content-type", "text/plain")
                                .body(Full::new(Bytes::from_static(b"fixed status\n")))
                                .expect("valid response");
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Fixed { addr, requests, task }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Fixed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// === helpers: cluster ===

async fn postgres() -> Database {
    let db = Database::create(Backend::Postgres).await;
    migrate(&db).await;
    db
}

/// A data plane following `cp` whose proxy listens on a port we know; (process, proxy port).
async fn data_plane(cp: &ControlPlane, cert: &ClusterCert) -> (DataPlane, u16) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    // Later entries override the harness's own GATEHOUSE_PROXY_LISTEN.
    let dp = DataPlane::start(&cp.cluster_addr(), cert, &[("GATEHOUSE_PROXY_LISTEN", listen.as_str())]).await;
    (dp, port)
}

async fn node_id(dp: &DataPlane) -> String {
    dp.status().await["node_id"].as_str().expect("data plane status has a node_id").to_owned()
}

// === weights ===

#[tokio::test]
async fn weighted_distribution() {
    let gw = Standalone::start().await;
    let ups = [Upstream::echo("w100").await, Upstream::echo("w200").await, Upstream::echo("w300").await];
    // 60 slots: 10/20/30 per target, so any run of consecutive wheel positions (whatever
    // position each proxy worker starts at) is within a few requests of the exact shares.
    balanced(&gw, "weighted.test", json!({"slots": 60}), "/w").await;
    for (up, weight) in ups.iter().zip([100, 200, 300]) {
        add_target(&gw, "weighted.test", &local(up.addr()), weight).await;
    }
    gw.sync().await;

    let counts = tally(&burst(gw.proxy_addr(), "/w", &[], 3000).await);
    for (name, weight) in [("w100", 100.0), ("w200", 200.0), ("w300", 300.0)] {
        let expected = 3000.0 * weight / 600.0;
        let got = counts.get(name).copied().unwrap_or(0) as f64;
        assert!(
            (got - expected).abs() <= expected * 0.05,
            "{name} (weight {weight}) got {got} of 3000 requests, expected {expected} ± 5%: {counts:?}"
        );
    }
    assert_eq!(counts.values().sum::<usize>(), 3000, "only the three targets answer: {counts:?}");
}

#[tokio::test]
async fn weight_zero_target_gets_no_traffic() {
    let gw = Standalone::start().await;
    let (kept, reweighted, never, deleted) = (
        Upstream::echo("kept").await,
        Upstream::echo("reweighted").await,
        Upstream::echo("never").await,
        Upstream::echo("deleted").await,
    );
    balanced(&gw, "zero.test", Value::Null, "/z").await;
    add_target(&gw, "zero.test", &local(kept.addr()), 100).await;
    add_target(&gw, "zero.test", &local(reweighted.addr()), 100).await;
    add_target(&gw, "zero.test", &local(never.addr()), 0).await;
    add_target(&gw, "zero.test", &local(deleted.addr()), 100).await;
    gw.sync().await;

    let counts = tally(&burst(gw.proxy_addr(), "/z", &[], 60).await);
    for name in ["kept", "reweighted", "deleted"] {
        assert!(counts.contains_key(name), "{name} gets traffic before it is removed: {counts:?}");
    }
    assert!(!counts.contains_key("never"), "a target created with weight 0 gets no traffic: {counts:?}");
    assert_eq!(never.requests(), 0);

    // Re-POSTed with weight 0, and DELETEd: both leave the rotation.
    add_target(&gw, "zero.test", &local(reweighted.addr()), 0).await;
    gw.delete(&format!("/upstreams/zero.test/targets/{}", local(deleted.addr()))).await;
    gw.sync().await;
    let listed = gw.admin_get("/upstreams/zero.test/targets").await;
    let listed: Vec<&str> =
        listed["data"].as_array().expect("targets data").iter().filter_map(|t| t["target"].as_str()).collect();
    assert_eq!(listed, vec![local(kept.addr())], "only the weighted target is listed");

    let before = (reweighted.requests(), deleted.requests(), never.requests());
    let counts = tally(&burst(gw.proxy_addr(), "/z", &[], 40).await);
    assert_eq!(counts, BTreeMap::from([("kept".to_owned(), 40)]), "only the remaining target answers");
    assert_eq!((reweighted.requests(), deleted.requests(), never.requests()), before, "removed targets got requests");
}

#[tokio::test]
async fn no_targets_gives_503() {
    let gw = Standalone::start().await;
    balanced(&gw, "empty.test", Value::Null, "/empty").await;
    // An upstream whose only target is marked unhealthy has no usable target either.
    let lone = Upstream::echo("lone").await;
    balanced(&gw, "down.test", json!({"healthchecks": {"passive": {"unhealthy": {"http_failures": 100}}}}), "/down")
        .await;
    add_target(&gw, "down.test", &local(lone.addr()), 100).await;
    gw.sync().await;

    let assert_no_peer = |r: &Reply| {
        r.assert_status(503);
        r.assert_generated();
        let ct = r.header("content-type").unwrap_or_default();
        assert!(ct.starts_with("application/json"), "{}: Content-Type {ct:?}", r.what);
        assert_eq!(r.json(), json!({"message": NO_PEER}), "{}: {}", r.what, r.text());
    };
    assert_no_peer(&gw.get("/empty").await);
    assert_no_peer(&gw.get_with("/empty", &[("Accept", "text/html")]).await);

    assert_eq!(gw.get("/down").await.echo().upstream(), "lone", "the target serves before it is marked down");
    set_health(&gw.admin, "down.test", &local(lone.addr()), "unhealthy").await;
    let started = Instant::now();
    loop {
        let r = gw.get("/down").await;
        if r.status == 503 {
            assert_no_peer(&r);
            break;
        }
        assert_eq!(r.echo().upstream(), "lone");
        assert!(started.elapsed() < WITHIN, "the unhealthy target still serves; stderr:\n{}", gw.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = lone.requests();
    for _ in 0..5 {
        assert_no_peer(&gw.get("/down").await);
    }
    assert_eq!(lone.requests(), before, "no request reaches the unhealthy target");
}

// === hashing ===

#[tokio::test]
async fn hash_on_header_is_sticky() {
    let gw = Standalone::start().await;
    let ups = [Upstream::echo("h1").await, Upstream::echo("h2").await, Upstream::echo("h3").await];
    balanced(&gw, "hashed.test", json!({"hash_on": "header", "hash_on_header": "X-User"}), "/h").await;
    for up in &ups {
        add_target(&gw, "hashed.test", &local(up.addr()), 100).await;
    }
    gw.sync().await;

    let counts = tally(&burst(gw.proxy_addr(), "/h", &[("X-User", "alice")], 50).await);
    assert_eq!(counts.len(), 1, "one header value, one target: {counts:?}");

    let mut used = BTreeSet::new();
    for i in 0..30 {
        let value = format!("user-{i}");
        let first = gw.get_with("/h", &[("X-User", &value)]).await.echo().upstream().to_owned();
        let again = gw.get_with("/h", &[("X-User", &value)]).await.echo().upstream().to_owned();
        assert_eq!(first, again, "X-User: {value} moved from {first} to {again}");
        used.insert(first);
    }
    assert!(used.len() > 1, "30 different header values all went to {used:?}");
}

/// The hash picks the same target whichever way a request is proxied: a plain HTTP/1.1 request
/// takes the direct path, the same one over HTTP/2 (TLS port) through the HTTP/2
/// adapter; repeated fields hash as one concatenated value on both.
#[tokio::test]
async fn hash_is_the_same_over_http1_and_http2() {
    let gw = Standalone::start().await;
    let ups = [Upstream::echo("b1").await, Upstream::echo("b2").await, Upstream::echo("b3").await];
    balanced(&gw, "both.test", json!({"hash_on": "header", "hash_on_header": "X-User"}), "/both").await;
    balanced(&gw, "byip.test", json!({"hash_on": "ip"}), "/byip").await;
    for up in &ups {
        add_target(&gw, "both.test", &local(up.addr()), 100).await;
        add_target(&gw, "byip.test", &local(up.addr()), 100).await;
    }
    gw.sync().await;
    // HTTP/2 on the TLS port; its answer's version says which protocol answered.
    let h2 = |path: &str| gw.client().get(gw.proxy_tls_url(path));

    let mut used = BTreeSet::new();
    for i in 0..20 {
        let user = format!("user-{i}");
        let direct = gw.get_with("/both", &[("X-User", &user)]).await;
        let over_h2 = gw.send("GET /both over HTTP/2", h2("/both").header("X-User", &user)).await;
        assert_eq!(over_h2.version, "HTTP/2.0", "an HTTP/2 answer");
        assert_eq!(direct.echo().upstream(), over_h2.echo().upstream(), "X-User: {user} differs between the paths");
        used.insert(direct.echo().upstream().to_owned());
    }
    assert!(used.len() > 1, "20 users all went to {used:?}");

    // Two X-User fields hash as their values concatenated, as one field with that value does.
    let joined = gw.get_with("/both", &[("X-User", "user-7")]).await.echo().upstream().to_owned();
    let raw = "GET /both HTTP/1.1\r\nHost: x\r\nX-User: user-\r\nX-User: 7\r\nConnection: close\r\n\r\n";
    let direct = exchange(gw.proxy_addr(), raw.as_bytes()).await.expect("a response");
    assert_eq!(direct.echo().upstream(), joined, "the direct path: two X-User fields hash as one");
    let twice = h2("/both").header("X-User", "user-").header("X-User", "7");
    let over_h2 = gw.send("GET /both with two X-User over HTTP/2", twice).await;
    assert_eq!(over_h2.version, "HTTP/2.0", "HTTP/2");
    assert_eq!(over_h2.echo().upstream(), joined, "HTTP/2: two X-User fields hash as one");

    // Hashing on the client address: every request from here lands on one target, over either protocol.
    let mut targets = BTreeSet::new();
    for i in 0..10 {
        let reply = if i % 2 == 0 {
            gw.get("/byip").await
        } else {
            let over_h2 = gw.send("GET /byip over HTTP/2", h2("/byip")).await;
            assert_eq!(over_h2.version, "HTTP/2.0", "HTTP/2");
            over_h2
        };
        targets.insert(reply.echo().upstream().to_owned());
    }
    assert_eq!(targets.len(), 1, "one client address, one target: {targets:?}");
}

/// Behind an authentication plugin, a hash on the consumer picks the same target on the
/// direct path (HTTP/1.0 on the plain port) as over HTTP/2 (on the TLS port),
/// request after request.
#[tokio::test]
async fn hash_on_consumer_behind_key_auth_is_the_same_over_http1_and_http2() {
    let gw = Standalone::start().await;
    let ups = [Upstream::echo("c1").await, Upstream::echo("c2").await, Upstream::echo("c3").await];
    balanced(&gw, "consumers.test", json!({"hash_on": "consumer"}), "/who").await;
    for up in &ups {
        add_target(&gw, "consumers.test", &local(up.addr()), 100).await;
    }
    gw.post("/plugins", json!({"name": "key-auth"})).await;
    for i in 0..12 {
        gw.post("/consumers", json!({"username": format!("user-{i}")})).await;
        gw.post(&format!("/consumers/user-{i}/key-auth"), json!({"key": format!("key-{i}")})).await;
    }
    gw.sync().await;
    let mut used = BTreeSet::new();
    for i in 0..12 {
        let key = format!("key-{i}");
        let mut seen = BTreeSet::new();
        for over_h2 in [false, true, false, true] {
            let reply = if over_h2 {
                let req = gw.client().get(gw.proxy_tls_url("/who")).header("apikey", &key);
                gw.send("GET /who over HTTP/2", req).await
            } else {
                // HTTP/1.0: the direct path answers in HTTP/1.1, as nginx does.
                let head = format!("GET /who HTTP/1.0\r\nHost: 127.0.0.1:{}\r\napikey: {key}\r\n\r\n", gw.proxy_port);
                exchange(gw.proxy_addr(), head.as_bytes()).await.expect("an answer")
            };
            let version = if over_h2 { "HTTP/2.0" } else { "HTTP/1.1" };
            assert_eq!(reply.version, version, "user-{i}, over_h2 {over_h2}: which path answered");
            seen.insert(reply.echo().upstream().to_owned());
        }
        assert_eq!(seen.len(), 1, "user-{i} went to {seen:?}");
        used.extend(seen);
    }
    assert!(used.len() > 1, "12 consumers all went to {used:?}");
}

/// Behind a plugin, a hash on a field the gateway writes itself (here the Host it sends
/// upstream, the same for every request) follows that field as forwarded: one target.
#[tokio::test]
async fn hash_behind_a_plugin_on_a_field_the_gateway_writes_uses_the_forwarded_value() {
    let gw = Standalone::start().await;
    let ups = [Upstream::echo("f1").await, Upstream::echo("f2").await, Upstream::echo("f3").await];
    balanced(&gw, "forwarded.test", json!({"hash_on": "header", "hash_on_header": "Host"}), "/fw").await;
    for up in &ups {
        add_target(&gw, "forwarded.test", &local(up.addr()), 100).await;
    }
    gw.post("/plugins", json!({"name": "correlation-id"})).await;
    gw.sync().await;
    let counts = tally(&burst(gw.proxy_addr(), "/fw", &[], 30).await);
    assert_eq!(counts.len(), 1, "one Host sent upstream, one target: {counts:?}");
}

/// Behind plugins — one acting in `access` only, one acting on answers — a hash on a cookie
/// mints one for a client without it, and the answer sets it (once), on the direct path; the
/// cookie, once sent, keeps the client on its target.
#[tokio::test]
async fn hash_on_cookie_behind_plugins_sets_the_cookie_it_minted() {
    let gw = Standalone::start().await;
    let ups = [Upstream::echo("p1").await, Upstream::echo("p2").await, Upstream::echo("p3").await];
    let fields = json!({"hash_on": "cookie", "hash_on_cookie": "gh_sticky"});
    balanced(&gw, "plugged.test", fields, "/plugged").await;
    for up in &ups {
        add_target(&gw, "plugged.test", &local(up.addr()), 100).await;
    }
    let service = gw.admin_get("/services/svc-plugged.test").await;
    let phased = gw.route(&service, json!({"paths": ["/phased"]})).await;
    let access_only =
        json!({"name": "request-transformer", "service_id": service["id"], "config": {"add": {"headers": ["X-A:1"]}}});
    gw.post("/plugins", access_only).await;
    let answers =
        json!({"name": "response-transformer", "route_id": phased["id"], "config": {"add": {"headers": ["X-B:1"]}}});
    gw.post("/plugins", answers).await;
    gw.sync().await;
    for path in ["/plugged", "/phased"] {
        let first = gw.get(path).await;
        let set = first.header_all("set-cookie");
        assert_eq!(set.len(), 1, "{path}: one Set-Cookie: {:?}", first.headers);
        let cookie = set[0].split(';').next().expect("a pair").to_owned();
        assert!(cookie.starts_with("gh_sticky=") && set[0].ends_with("; Path=/"), "{path}: {set:?}");
        let target = first.echo().upstream().to_owned();
        for _ in 0..5 {
            let again = gw.get_with(path, &[("Cookie", &cookie)]).await;
            assert_eq!(again.echo().upstream(), target, "{path}: the cookie keeps the client on its target");
            assert!(again.header("set-cookie").is_none(), "{path}: {:?}", again.headers);
        }
        if path == "/phased" {
            assert_eq!(first.header("x-b"), Some("1"), "the answer's plugin ran: {:?}", first.headers);
        }
    }
}

#[tokio::test]
async fn hash_on_cookie_sets_cookie_and_sticks() {
    let gw = Standalone::start().await;
    let ups = [Upstream::echo("c1").await, Upstream::echo("c2").await, Upstream::echo("c3").await];
    let fields = json!({"hash_on": "cookie", "hash_on_cookie": "gh_sticky", "hash_on_cookie_path": "/custom"});
    balanced(&gw, "cookie.test", fields, "/custom").await;
    for up in &ups {
        add_target(&gw, "cookie.test", &local(up.addr()), 100).await;
    }
    gw.sync().await;

    // `Set-Cookie: gh_sticky=<uuid v4>; Path=/custom`, nothing else.
    let cookie_of = |r: &Reply| -> String {
        let set = r.header_all("set-cookie");
        assert_eq!(set.len(), 1, "{}: exactly one Set-Cookie expected, got {set:?}", r.what);
        let value = set[0]
            .strip_prefix("gh_sticky=")
            .and_then(|v| v.strip_suffix("; Path=/custom"))
            .unwrap_or_else(|| panic!("Set-Cookie {:?} is not `gh_sticky=<uuid>; Path=/custom`", set[0]));
        assert_eq!(value.len(), 36, "cookie value {value:?}");
        assert!(is_uuid(&json!(value)), "cookie value {value:?} is not a lower-case UUID");
        let uuid = uuid::Uuid::parse_str(value).expect("a UUID");
        assert_eq!(uuid.get_version_num(), 4, "cookie value {value:?} is not a UUID v4");
        value.to_owned()
    };

    let first = gw.get("/custom").await;
    let target = first.echo().upstream().to_owned();
    let cookie = cookie_of(&first);
    let header = format!("gh_sticky={cookie}");
    for _ in 0..30 {
        let r = gw.get_with("/custom", &[("Cookie", &header)]).await;
        assert_eq!(r.echo().upstream(), target, "the request with the generated cookie went elsewhere");
        assert!(r.header("set-cookie").is_none(), "a request carrying the cookie gets no Set-Cookie: {:?}", r.headers);
    }

    // Clients without the cookie each get a new one, and are spread over the targets.
    let mut cookies = BTreeSet::new();
    let mut used = BTreeSet::new();
    for _ in 0..30 {
        let r = gw.get("/custom").await;
        used.insert(r.echo().upstream().to_owned());
        cookies.insert(cookie_of(&r));
    }
    assert_eq!(cookies.len(), 30, "every new client gets a fresh cookie");
    assert!(used.len() > 1, "30 different cookies all went to {used:?}");
}

#[tokio::test]
async fn hash_fallback_header() {
    let gw = Standalone::start().await;
    let ups = [Upstream::echo("f1").await, Upstream::echo("f2").await, Upstream::echo("f3").await];
    let fields = json!({"hash_on": "header", "hash_on_header": "X-Primary",
                        "hash_fallback": "header", "hash_fallback_header": "X-Secondary"});
    balanced(&gw, "fallback.test", fields, "/f").await;
    for up in &ups {
        add_target(&gw, "fallback.test", &local(up.addr()), 100).await;
    }
    gw.sync().await;
    let addr = gw.proxy_addr();

    let counts = tally(&burst(addr, "/f", &[("X-Secondary", "s-1")], 50).await);
    assert_eq!(counts.len(), 1, "only the fallback header: sticky on it: {counts:?}");

    let mut used = BTreeSet::new();
    for i in 0..30 {
        used.insert(gw.get_with("/f", &[("X-Secondary", &format!("s-{i}"))]).await.echo().upstream().to_owned());
    }
    assert!(used.len() > 1, "30 different fallback values all went to {used:?}");

    // The primary header wins over the fallback.
    let mut used = BTreeSet::new();
    for i in 0..20 {
        let secondary = format!("s-{i}");
        let r = gw.get_with("/f", &[("X-Primary", "p-1"), ("X-Secondary", &secondary)]).await;
        used.insert(r.echo().upstream().to_owned());
    }
    assert_eq!(used.len(), 1, "one primary value, one target, whatever the fallback: {used:?}");

    // Neither header: round robin over every target.
    let counts = tally(&burst(addr, "/f", &[], 90).await);
    assert_eq!(counts.len(), 3, "no hash input: round robin over all targets: {counts:?}");
}

// === health checks ===

#[tokio::test]
async fn active_checks_mark_killed_target_unhealthy_and_recover() {
    let gw = Standalone::start().await;
    let steady = Upstream::echo("steady").await;
    let doomed = Upstream::echo("doomed").await;
    let doomed_addr = doomed.addr();
    let (steady_t, doomed_t) = (local(steady.addr()), local(doomed_addr));
    let checks = json!({"active": {"healthy": {"interval": 0.2, "successes": 2},
                                   "unhealthy": {"interval": 0.2, "tcp_failures": 2}}});
    balanced(&gw, "active.test", json!({ "healthchecks": checks }), "/a").await;
    add_target(&gw, "active.test", &steady_t, 100).await;
    add_target(&gw, "active.test", &doomed_t, 100).await;
    gw.sync().await;

    wait_health(&gw.admin, "active.test", "both targets HEALTHY", |h| {
        state(h, &steady_t) == "HEALTHY" && state(h, &doomed_t) == "HEALTHY"
    })
    .await;
    let counts = tally(&burst(gw.proxy_addr(), "/a", &[], 40).await);
    assert_eq!(counts.len(), 2, "both targets serve while healthy: {counts:?}");

    drop(doomed);
    wait_health(&gw.admin, "active.test", "the killed target UNHEALTHY", |h| {
        state(h, &doomed_t) == "UNHEALTHY" && state(h, &steady_t) == "HEALTHY"
    })
    .await;
    let counts = tally(&burst(gw.proxy_addr(), "/a", &[], 40).await);
    assert_eq!(counts, BTreeMap::from([("steady".to_owned(), 40)]), "only the live target answers");

    // A server on the same address again: probes bring the target back.
    let started = Instant::now();
    let revived = loop {
        match Upstream::echo_on("revived", doomed_addr).await {
            Ok(up) => break up,
            Err(e) => assert!(started.elapsed() < WITHIN, "cannot bind {doomed_addr} again: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    wait_health(&gw.admin, "active.test", "the revived target HEALTHY", |h| {
        state(h, &doomed_t) == "HEALTHY" && state(h, &steady_t) == "HEALTHY"
    })
    .await;
    wait_served_by(gw.proxy_addr(), "/a", "revived", || gw.logs()).await;
    assert!(revived.requests() > 0);
}

#[tokio::test]
async fn passive_checks_trip_after_n_failures() {
    let gw = Standalone::start().await;
    let failing = Fixed::start("failing", 500).await;
    let good = Upstream::echo("good").await;
    let (failing_t, good_t) = (local(failing.addr), local(good.addr()));
    let checks = json!({"passive": {"unhealthy": {"http_failures": 3}}});
    balanced(&gw, "passive.test", json!({ "healthchecks": checks }), "/p").await;
    add_target(&gw, "passive.test", &failing_t, 100).await;
    add_target(&gw, "passive.test", &good_t, 100).await;
    gw.sync().await;

    let started = Instant::now();
    let mut statuses = BTreeMap::new();
    loop {
        for _ in 0..4 {
            let r = gw.get("/p").await;
            assert!(matches!(r.status, 200 | 500), "{}: {} {}", r.what, r.status, r.text());
            *statuses.entry(who(&r)).or_insert(0usize) += 1;
        }
        let h = health(&gw.admin, "passive.test").await;
        if state(&h, &failing_t) == "UNHEALTHY" {
            assert_eq!(state(&h, &good_t), "HEALTHY", "{h}");
            break;
        }
        assert!(
            started.elapsed() < WITHIN,
            "the 500 target never became UNHEALTHY after {statuses:?}; health {h}; stderr:\n{}",
            gw.logs()
        );
    }
    assert!(failing.requests() >= 3, "the failing target was tripped by fewer than 3 failures");

    let before = failing.requests();
    let counts = tally(&burst(gw.proxy_addr(), "/p", &[], 30).await);
    assert_eq!(counts, BTreeMap::from([("good".to_owned(), 30)]), "only the healthy target answers");
    assert_eq!(failing.requests(), before, "the unhealthy target got requests");
    assert_eq!(state(&health(&gw.admin, "passive.test").await, &failing_t), "UNHEALTHY", "it stays down");
}

/// A refused connection is retried on the next wheel position (kong-0.14-core-behavior §4.9,
/// §5.4): every request still succeeds from the live target; passive `tcp_failures` then take
/// the dead one out, and with `retries = 0` nothing is retried.
#[tokio::test]
async fn retries_move_to_another_target() {
    let gw = Standalone::start().await;
    let live = Upstream::echo("live").await;
    let dead = format!("127.0.0.1:{}", dead_port());
    let checks = json!({"passive": {"unhealthy": {"tcp_failures": 2}}});
    balanced(&gw, "retry.test", json!({ "healthchecks": checks }), "/retry").await;
    add_target(&gw, "retry.test", &dead, 100).await;
    add_target(&gw, "retry.test", &local(live.addr()), 100).await;
    gw.sync().await;

    let counts = tally(&burst(gw.proxy_addr(), "/retry", &[], 40).await);
    assert_eq!(counts, BTreeMap::from([("live".to_owned(), 40)]), "every request is retried onto the live target");
    let h =
        wait_health(&gw.admin, "retry.test", "the refused target UNHEALTHY", |h| state(h, &dead) == "UNHEALTHY").await;
    assert_eq!(state(&h, &local(live.addr())), "HEALTHY", "{h}");

    // Without retries a request that lands on the dead target fails with Kong's 502.
    balanced(&gw, "noretry.test", Value::Null, "/noretry").await;
    add_target(&gw, "noretry.test", &dead, 100).await;
    gw.patch("/services/svc-noretry.test", json!({"retries": 0})).await;
    gw.sync().await;
    let r = gw.get("/noretry").await;
    assert_eq!(r.status, 502, "{}", r.text());
}

#[tokio::test]
async fn dns_named_target() {
    let gw = Standalone::start().await;
    let named = Upstream::echo("by-name").await;
    let by_name = format!("localhost:{}", named.port());
    balanced(&gw, "named.test", Value::Null, "/named").await;
    add_target(&gw, "named.test", &by_name, 100).await;
    balanced(&gw, "nowhere.test", Value::Null, "/nowhere").await;
    add_target(&gw, "nowhere.test", "nowhere.invalid:80", 100).await;
    gw.sync().await;

    let counts = tally(&burst(gw.proxy_addr(), "/named", &[], 10).await);
    assert_eq!(counts, BTreeMap::from([("by-name".to_owned(), 10)]), "localhost resolves through /etc/hosts");

    let r = gw.get("/nowhere").await;
    r.assert_status(503);
    r.assert_generated();

    wait_health(&gw.admin, "nowhere.test", "DNS_ERROR", |h| state(h, "nowhere.invalid:80") == "DNS_ERROR").await;
    wait_health(&gw.admin, "named.test", "the resolved target with checks off", |h| {
        state(h, &by_name) == "HEALTHCHECKS_OFF"
    })
    .await;
    gw.get("/nowhere").await.assert_status(503);
}

#[tokio::test]
async fn health_endpoint_reports_off_when_checks_disabled() {
    let gw = Standalone::start().await;
    let (one, two, gone) = (Upstream::echo("one").await, Upstream::echo("two").await, Upstream::echo("gone").await);
    let (one_t, two_t) = (local(one.addr()), local(two.addr()));
    let upstream = balanced(&gw, "off.test", Value::Null, "/off").await;
    add_target(&gw, "off.test", &one_t, 10).await;
    add_target(&gw, "off.test", &two_t, 20).await;
    add_target(&gw, "off.test", &local(gone.addr()), 0).await;
    gw.sync().await;
    let dp_status: Value = admin_client()
        .get(format!("http://127.0.0.1:{}/status", gw.status_port))
        .send()
        .await
        .expect("data plane status")
        .json()
        .await
        .expect("data plane status JSON");
    let dp = dp_status["node_id"].as_str().expect("data plane node_id").to_owned();
    // Traffic, so that the data plane certainly built its balancer.
    tally(&burst(gw.proxy_addr(), "/off", &[], 4).await);

    let h = wait_health(&gw.admin, "off.test", "the data plane's report", |h| {
        [&one_t, &two_t].iter().all(|t| dp_state(h, t, &dp) == "HEALTHCHECKS_OFF")
    })
    .await;
    assert_eq!(h["node_id"], gw.admin_get("/").await["node_id"], "node_id is the control plane's: {h}");
    let targets = gw.admin_get("/upstreams/off.test/targets").await;
    assert_eq!(h["total"], targets["total"], "{h}");
    assert_eq!(h["total"], 2, "weight-0 targets are not listed: {h}");
    let rows = h["data"].as_array().expect("health data");
    let target_rows = targets["data"].as_array().expect("targets data");
    assert_eq!(rows.len(), target_rows.len(), "{h}");
    for (got, listed) in rows.iter().zip(target_rows) {
        assert_eq!(got["health"], "HEALTHCHECKS_OFF", "{got}");
        assert_eq!(got["upstream_id"], upstream["id"], "{got}");
        let dps = got["data_planes"].as_array().unwrap_or_else(|| panic!("data_planes is not an array: {got}"));
        assert_eq!(dps.len(), 1, "one data plane in a standalone gateway: {got}");
        assert_eq!(dps[0]["id"], dp.as_str(), "{got}");
        assert_eq!(dps[0]["health"], "HEALTHCHECKS_OFF", "{got}");
        let mut plain = got.clone();
        let obj = plain.as_object_mut().expect("a health row is an object");
        obj.remove("health");
        obj.remove("data_planes");
        assert_eq!(&plain, listed, "a /health row is the /targets row plus health and data_planes");
    }

    // Any passive threshold turns the checks on: targets are then HEALTHY.
    gw.patch("/upstreams/off.test", json!({"healthchecks": {"passive": {"unhealthy": {"http_failures": 5}}}})).await;
    gw.sync().await;
    wait_health(&gw.admin, "off.test", "HEALTHY once checks are on", |h| {
        [&one_t, &two_t].iter().all(|t| state(h, t) == "HEALTHY" && dp_state(h, t, &dp) == "HEALTHY")
    })
    .await;
}

// === cluster ===

#[tokio::test]
async fn manual_unhealthy_reaches_two_data_planes() {
    let db = postgres().await;
    let cert = ClusterCert::generate();
    let cp = ControlPlane::start(&db, &cert, &[]).await;
    let (dp1, port1) = data_plane(&cp, &cert).await;
    let (dp2, port2) = data_plane(&cp, &cert).await;
    let (keep, drain) = (Upstream::echo("keep").await, Upstream::echo("drain").await);
    let (keep_t, drain_t) = (local(keep.addr()), local(drain.addr()));
    // Checks "on" (so /health reports states) through a passive threshold that is never reached.
    let checks = json!({"passive": {"unhealthy": {"http_failures": 100}}});
    cp.post("/upstreams", &json!({"name": "manual.test", "healthchecks": checks})).await;
    cp.post("/upstreams/manual.test/targets", &json!({"target": keep_t, "weight": 100})).await;
    let drain_row = cp.post("/upstreams/manual.test/targets", &json!({"target": drain_t, "weight": 100})).await;
    let svc = cp.post("/services", &json!({"name": "manual", "host": "manual.test", "port": 80})).await;
    cp.post("/routes", &json!({"service": {"id": id_of(&svc)}, "paths": ["/m"]})).await;
    let head = cp.revision().await;
    dp1.wait_revision(head, WITHIN).await;
    dp2.wait_revision(head, WITHIN).await;
    let (id1, id2) = (node_id(&dp1).await, node_id(&dp2).await);

    for (port, dp) in [(port1, &dp1), (port2, &dp2)] {
        wait_served_by(proxy_at(port), "/m", "drain", || dp.logs()).await;
    }

    set_health(&cp.admin, "manual.test", &drain_t, "unhealthy").await;
    for (port, dp) in [(port1, &dp1), (port2, &dp2)] {
        wait_avoided(proxy_at(port), "/m", "drain", || dp.logs()).await;
    }
    let h = wait_health(&cp.admin, "manual.test", "drain UNHEALTHY on both data planes", |h| {
        state(h, &drain_t) == "UNHEALTHY"
            && [&id1, &id2].iter().all(|id| dp_state(h, &drain_t, id) == "UNHEALTHY")
            && state(h, &keep_t) == "HEALTHY"
    })
    .await;
    assert_eq!(dp_ids(&h, &drain_t), BTreeSet::from([id1.clone(), id2.clone()]), "{h}");

    // A data plane that connects after the command applies it too.
    let (dp3, port3) = data_plane(&cp, &cert).await;
    dp3.wait_revision(head, WITHIN).await;
    let id3 = node_id(&dp3).await;
    wait_avoided(proxy_at(port3), "/m", "drain", || dp3.logs()).await;
    wait_health(&cp.admin, "manual.test", "drain UNHEALTHY on the late data plane", |h| {
        dp_state(h, &drain_t, &id3) == "UNHEALTHY" && state(h, &drain_t) == "UNHEALTHY"
    })
    .await;

    // Back to healthy (addressed by target id this time): traffic returns everywhere.
    set_health(&cp.admin, "manual.test", &id_of(&drain_row), "healthy").await;
    for (port, dp) in [(port1, &dp1), (port2, &dp2), (port3, &dp3)] {
        wait_served_by(proxy_at(port), "/m", "drain", || dp.logs()).await;
    }
    wait_health(&cp.admin, "manual.test", "drain HEALTHY on every data plane", |h| {
        state(h, &drain_t) == "HEALTHY" && [&id1, &id2, &id3].iter().all(|id| dp_state(h, &drain_t, id) == "HEALTHY")
    })
    .await;

    // Unknown target or upstream: 404.
    for path in [
        format!("/upstreams/manual.test/targets/127.0.0.1:{}/unhealthy", dead_port()),
        format!("/upstreams/missing.test/targets/{drain_t}/unhealthy"),
        format!("/upstreams/missing.test/targets/{drain_t}/healthy"),
    ] {
        let (status, body) = admin_call(&cp.admin, reqwest::Method::POST, &path).await;
        assert_eq!(status, 404, "POST {path}: {body}");
    }
}

#[tokio::test]
async fn health_endpoint_aggregates_disagreeing_data_planes() {
    let db = postgres().await;
    let cert = ClusterCert::generate();
    let cp = ControlPlane::start(&db, &cert, &[]).await;
    let (dp1, port1) = data_plane(&cp, &cert).await;
    let (dp2, _port2) = data_plane(&cp, &cert).await;
    let failing = Fixed::start("failing", 500).await;
    let good = Upstream::echo("good").await;
    let (failing_t, good_t) = (local(failing.addr), local(good.addr()));
    let checks = json!({"passive": {"unhealthy": {"http_failures": 2}}});
    cp.post("/upstreams", &json!({"name": "split.test", "healthchecks": checks})).await;
    cp.post("/upstreams/split.test/targets", &json!({"target": failing_t, "weight": 100})).await;
    cp.post("/upstreams/split.test/targets", &json!({"target": good_t, "weight": 100})).await;
    let svc = cp.post("/services", &json!({"name": "split", "host": "split.test", "port": 80})).await;
    cp.post("/routes", &json!({"service": {"id": id_of(&svc)}, "paths": ["/s"]})).await;
    let head = cp.revision().await;
    dp1.wait_revision(head, WITHIN).await;
    dp2.wait_revision(head, WITHIN).await;
    let (id1, id2) = (node_id(&dp1).await, node_id(&dp2).await);

    wait_health(&cp.admin, "split.test", "both data planes reporting HEALTHY", |h| {
        [&failing_t, &good_t]
            .iter()
            .all(|t| state(h, t) == "HEALTHY" && dp_state(h, t, &id1) == "HEALTHY" && dp_state(h, t, &id2) == "HEALTHY")
    })
    .await;

    // Failing traffic through data plane 1 only.
    let started = Instant::now();
    loop {
        for _ in 0..4 {
            let r = get_at(proxy_at(port1), "/s", &[]).await;
            assert!(matches!(r.status, 200 | 500), "{}: {} {}", r.what, r.status, r.text());
        }
        let h = health(&cp.admin, "split.test").await;
        if dp_state(&h, &failing_t, &id1) == "UNHEALTHY" {
            break;
        }
        assert!(started.elapsed() < WITHIN, "data plane 1 never reported the 500 target UNHEALTHY: {h}");
    }
    let h = wait_health(&cp.admin, "split.test", "UNHEALTHY on data plane 1 only", |h| {
        state(h, &failing_t) == "UNHEALTHY"
            && dp_state(h, &failing_t, &id1) == "UNHEALTHY"
            && dp_state(h, &failing_t, &id2) == "HEALTHY"
    })
    .await;
    assert_eq!(state(&h, &good_t), "HEALTHY", "{h}");
    assert_eq!(dp_state(&h, &good_t, &id1), "HEALTHY", "{h}");
    assert_eq!(dp_state(&h, &good_t, &id2), "HEALTHY", "{h}");
    assert_eq!(dp_ids(&h, &failing_t), BTreeSet::from([id1.clone(), id2.clone()]), "{h}");

    // Data plane 1 now avoids the target.
    let before = failing.requests();
    let counts = tally(&burst(proxy_at(port1), "/s", &[], 20).await);
    assert_eq!(counts, BTreeMap::from([("good".to_owned(), 20)]), "data plane 1 only uses the healthy target");
    assert_eq!(failing.requests(), before);
}

/// A request already under way when a target is set unhealthy must not undo the command when
/// it succeeds (with `passive.healthy.successes = 1`, one success would make it healthy
/// again): the next request is Kong's 503 at once.
#[tokio::test]
async fn a_success_already_under_way_does_not_undo_a_manual_unhealthy() {
    let gw = Standalone::start().await;
    let up = Upstream::slow("slow-target", Duration::from_millis(800)).await;
    let checks = json!({"passive": {"healthy": {"successes": 1}, "unhealthy": {"http_failures": 1}}});
    balanced(&gw, "race.test", json!({"healthchecks": checks}), "/race").await;
    let target = format!("127.0.0.1:{}", up.port());
    add_target(&gw, "race.test", &target, 100).await;
    gw.sync().await;

    let addr = gw.proxy_addr();
    let in_flight = tokio::spawn(async move {
        exchange(addr, format!("GET /race HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n", addr.port()).as_bytes()).await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) =
        gw.admin_send(reqwest::Method::POST, &format!("/upstreams/race.test/targets/{target}/unhealthy"), None).await;
    assert_eq!(status, 204, "{body}");
    gw.sync().await;
    let r = in_flight.await.expect("task").expect("the request under way is answered");
    r.assert_status(200);
    let after = gw.get("/race").await;
    after.assert_status(503);
    assert_eq!(after.json(), json!({"message": "failure to get a peer from the ring-balancer"}));
}

/// Without plugins too, a hash on a field the gateway writes (X-Forwarded-For: the client's
/// value with the peer appended) reads it as forwarded, on the direct path: one value, one
/// target; many values, many targets.
#[tokio::test]
async fn hash_on_a_forwarding_field_reads_it_as_forwarded() {
    let gw = Standalone::start().await;
    let ups = [Upstream::echo("x1").await, Upstream::echo("x2").await, Upstream::echo("x3").await];
    balanced(&gw, "xff.test", json!({"hash_on": "header", "hash_on_header": "X-Forwarded-For"}), "/xff").await;
    for up in &ups {
        add_target(&gw, "xff.test", &local(up.addr()), 100).await;
    }
    gw.sync().await;
    let mut used = BTreeSet::new();
    for i in 0..20 {
        let xff = format!("10.0.0.{i}");
        let first = gw.get_with("/xff", &[("X-Forwarded-For", &xff)]).await;
        let echo = first.echo();
        assert_eq!(echo.header("x-forwarded-for"), Some(format!("{xff}, 127.0.0.1").as_str()));
        let again = gw.get_with("/xff", &[("X-Forwarded-For", &xff)]).await;
        assert_eq!(again.echo().upstream(), echo.upstream(), "X-Forwarded-For: {xff} moved");
        used.insert(echo.upstream().to_owned());
    }
    assert!(used.len() > 1, "20 forwarded values all went to {used:?}");
}
