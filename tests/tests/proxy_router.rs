//! Route matching (kong-0.14-core-behavior.md §4.1–4.3): hosts (exact, wildcards, port
//! ignored), prefix and regex paths, `regex_priority`, methods, categories, the 404.
//!
//! Each route points at its own echo upstream; the upstream's name in the reply says
//! which route matched.

use std::time::Duration;

use gatehouse_tests::proxy::{Reply, Standalone, Upstream};
use gatehouse_tests::{json, now_secs};
use serde_json::Value;

/// One echo upstream per name, each behind its own Service.
struct Fleet {
    /// Kept alive for the test's duration.
    _ups: Vec<Upstream>,
    services: Vec<(String, Value)>,
}

impl Fleet {
    async fn new(gw: &Standalone, names: &[&str]) -> Fleet {
        let mut ups = Vec::new();
        let mut services = Vec::new();
        for name in names {
            let up = Upstream::echo(name).await;
            let svc = gw.service_for(&up, json!({"name": format!("svc-{name}")})).await;
            services.push(((*name).to_owned(), svc));
            ups.push(up);
        }
        Fleet { _ups: ups, services }
    }

    fn service(&self, name: &str) -> &Value {
        &self.services.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no service {name}")).1
    }
}

/// Which upstream answered `reply` (`"404"` for the no-route answer).
#[track_caller]
fn who(reply: &Reply) -> String {
    match reply.status {
        200 => reply.echo().upstream().to_owned(),
        404 => "404".to_owned(),
        other => panic!("{}: unexpected status {other}: {}", reply.what, reply.text()),
    }
}

/// Runs `(method, target, host, expected upstream)` cases; reports every mismatch at once.
async fn check(gw: &Standalone, cases: &[(&str, &str, Option<&str>, &str)]) {
    let mut failures = Vec::new();
    for (method, target, host, want) in cases {
        let headers: Vec<(&str, &str)> = host.iter().map(|h| ("Host", *h)).collect();
        let reply = gw.request(method, target, &headers).await;
        let got = who(&reply);
        if got != *want {
            failures.push(format!("{method} {target} Host {host:?}: matched {got:?}, expected {want:?}"));
        }
    }
    assert!(failures.is_empty(), "routing mismatches:\n{}", failures.join("\n"));
}

/// Sleeps until the clock's second moves past `created_at`, so that the next entity is
/// strictly younger (route order breaks ties by `created_at`, in seconds).
async fn next_second(created_at: &Value) {
    let t = created_at.as_i64().expect("created_at is an integer");
    while now_secs() <= t {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn hosts_exact_wildcards_and_ports() {
    let gw = Standalone::start().await;
    let f = Fleet::new(&gw, &["leading", "trailing", "exact"]).await;
    gw.route(f.service("leading"), json!({"hosts": ["*.example.com"]})).await;
    gw.route(f.service("trailing"), json!({"hosts": ["example.*"]})).await;
    gw.route(f.service("exact"), json!({"hosts": ["api.example.com"]})).await;
    gw.sync().await;

    check(
        &gw,
        &[
            ("GET", "/", Some("foo.example.com"), "leading"),
            ("GET", "/x", Some("a.b.example.com"), "leading"),
            ("GET", "/", Some("foo.example.com:8000"), "leading"),
            ("GET", "/", Some("example.org"), "trailing"),
            ("GET", "/", Some("example.co.uk:1234"), "trailing"),
            ("GET", "/", Some("example.com"), "trailing"),
            ("GET", "/", Some("api.example.com"), "exact"),
            ("GET", "/", Some("api.example.com:443"), "exact"),
            ("GET", "/", Some("notexample.com"), "404"),
            ("GET", "/", Some("example"), "404"),
            // Host comparison is case-sensitive in 0.14.
            ("GET", "/", Some("EXAMPLE.org"), "404"),
        ],
    )
    .await;
}

#[tokio::test]
async fn longest_prefix_wins_without_segment_boundaries() {
    let gw = Standalone::start().await;
    let f = Fleet::new(&gw, &["short", "long", "zz-long", "zz-short"]).await;
    // Shorter first in one pair, longer first in the other: creation order must not matter.
    gw.route(f.service("short"), json!({"paths": ["/api"]})).await;
    gw.route(f.service("long"), json!({"paths": ["/api/v1"]})).await;
    gw.route(f.service("zz-long"), json!({"paths": ["/zz/long"]})).await;
    gw.route(f.service("zz-short"), json!({"paths": ["/zz"]})).await;
    gw.sync().await;

    check(
        &gw,
        &[
            ("GET", "/api/v1/users", None, "long"),
            ("GET", "/api/v1", None, "long"),
            ("GET", "/api/v10", None, "long"),
            ("GET", "/api/v2", None, "short"),
            ("GET", "/apiary", None, "short"),
            ("GET", "/api", None, "short"),
            ("GET", "/api?x=/api/v1", None, "short"),
            ("GET", "/zz/long/x", None, "zz-long"),
            ("GET", "/zz/longer", None, "zz-long"),
            ("GET", "/zz/lon", None, "zz-short"),
            ("GET", "/zz", None, "zz-short"),
            ("GET", "/ap", None, "404"),
            ("GET", "/", None, "404"),
            // Paths are compared case-sensitively and raw (no decoding).
            ("GET", "/API/v1", None, "404"),
            ("GET", "/%61pi", None, "404"),
        ],
    )
    .await;
}

#[tokio::test]
async fn regex_priority_then_age() {
    let gw = Standalone::start().await;
    let f = Fleet::new(&gw, &["old-low", "new-high", "older", "newer", "regex", "plain"]).await;

    // Higher regex_priority wins even though created later.
    gw.route(f.service("old-low"), json!({"paths": [r"/users/\d+"]})).await;
    // Equal priority: the older route wins.
    let older = gw.route(f.service("older"), json!({"paths": [r"/items/\d+"]})).await;
    // A regex path is tried before a longer matching prefix; an exact plain path skips regexes.
    gw.route(f.service("regex"), json!({"paths": [r"/r/\d+"]})).await;
    gw.route(f.service("plain"), json!({"paths": ["/r/1"]})).await;
    next_second(&older["created_at"]).await;
    gw.route(f.service("new-high"), json!({"paths": [r"/users/\d+/profile"], "regex_priority": 10})).await;
    gw.route(f.service("newer"), json!({"paths": ["/items/[0-9]+"]})).await;
    gw.sync().await;

    check(
        &gw,
        &[
            ("GET", "/users/12/profile", None, "new-high"),
            ("GET", "/users/12/profile/x", None, "new-high"),
            ("GET", "/users/12", None, "old-low"),
            ("GET", "/users/12/friends", None, "old-low"),
            ("GET", "/users/abc", None, "404"),
            // Anchored at the start only.
            ("GET", "/x/users/12", None, "404"),
            ("GET", "/items/5", None, "older"),
            ("GET", "/r/12", None, "regex"),
            ("GET", "/r/1", None, "plain"),
        ],
    )
    .await;
}

#[tokio::test]
async fn methods() {
    let gw = Standalone::start().await;
    let f = Fleet::new(&gw, &["get", "post", "patch-any-path"]).await;
    gw.route(f.service("get"), json!({"paths": ["/m"], "methods": ["GET", "HEAD"]})).await;
    gw.route(f.service("post"), json!({"paths": ["/m"], "methods": ["POST"]})).await;
    gw.route(f.service("patch-any-path"), json!({"methods": ["PATCH"]})).await;
    gw.sync().await;

    check(
        &gw,
        &[
            ("GET", "/m", None, "get"),
            ("GET", "/m/x", None, "get"),
            ("POST", "/m", None, "post"),
            ("PATCH", "/anything", None, "patch-any-path"),
            ("PATCH", "/m", None, "patch-any-path"),
            ("DELETE", "/m", None, "404"),
            ("POST", "/other", None, "404"),
        ],
    )
    .await;
}

#[tokio::test]
async fn more_criteria_beat_fewer() {
    let gw = Standalone::start().await;
    let f = Fleet::new(&gw, &["host", "host-path", "path", "host-path-method", "method", "path2"]).await;
    // Created from the most to the least specific, then the other way: order must not matter.
    gw.route(f.service("method"), json!({"methods": ["PUT"]})).await;
    gw.route(f.service("path"), json!({"paths": ["/p"]})).await;
    gw.route(f.service("path2"), json!({"paths": ["/q"]})).await;
    gw.route(f.service("host"), json!({"hosts": ["h.test"]})).await;
    gw.route(f.service("host-path"), json!({"hosts": ["h.test"], "paths": ["/p"]})).await;
    gw.route(f.service("host-path-method"), json!({"hosts": ["h.test"], "paths": ["/p"], "methods": ["PUT"]})).await;
    gw.sync().await;

    check(
        &gw,
        &[
            ("PUT", "/p", Some("h.test"), "host-path-method"),
            ("GET", "/p", Some("h.test"), "host-path"),
            ("GET", "/p/deeper", Some("h.test:8000"), "host-path"),
            ("GET", "/p", Some("other.test"), "path"),
            ("PUT", "/p", Some("other.test"), "path"),
            // A host-only route beats a path-only one.
            ("GET", "/q", Some("h.test"), "host"),
            ("GET", "/q", Some("other.test"), "path2"),
            ("GET", "/zzz", Some("h.test"), "host"),
            ("PUT", "/zzz", Some("other.test"), "method"),
            ("GET", "/zzz", Some("other.test"), "404"),
        ],
    )
    .await;
}

#[tokio::test]
async fn no_route_is_a_json_404() {
    let gw = Standalone::start().await;
    // Nothing configured at all.
    let reply = gw.get("/nothing").await;
    assert_no_route(&reply);

    let up = Upstream::echo("only").await;
    gw.expose(&up, json!({}), json!({"paths": ["/only"], "hosts": ["only.test"]})).await;
    gw.sync().await;
    assert_no_route(&gw.get("/only").await); // host missing
    assert_no_route(&gw.get_with("/elsewhere", &[("Host", "only.test")]).await);
    assert_no_route(&gw.get_with("/nothing", &[("Accept", "text/html")]).await); // not negotiated
    assert_eq!(up.requests(), 0, "no request may reach the upstream");
    assert_eq!(gw.get_with("/only/x", &[("Host", "only.test")]).await.echo().upstream(), "only");
}

#[track_caller]
fn assert_no_route(reply: &Reply) {
    reply.assert_status(404);
    assert_eq!(reply.json(), json!({"message": "no route and no API found with those values"}), "{}", reply.what);
    let ct = reply.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("application/json"), "{}: Content-Type {ct:?}", reply.what);
    reply.assert_generated();
    assert!(reply.header("via").is_none(), "{}: a gateway-generated 404 has no Via header", reply.what);
}
