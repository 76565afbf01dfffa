#![allow(clippy::unwrap_used)]
//! `GET /metrics`: Prometheus text on the control plane's Admin API and on the data plane's
//! status listener, parsed and checked against a known sequence of requests and writes.

use std::collections::BTreeMap;
use std::time::Duration;

use gatehouse_tests::cluster::{ClusterCert, ControlPlane, DataPlane};
use gatehouse_tests::*;

/// One sample: its name and labels, and its value.
type Samples = Vec<(String, BTreeMap<String, String>, f64)>;

fn parse(text: &str) -> Samples {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("a sample line: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let inner = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                let labels = inner
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (n.to_owned(), labels)
            }
            None => (series.to_owned(), BTreeMap::new()),
        };
        out.push((name, labels, value));
    }
    out
}

fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .map(|(_, _, v)| *v)
}

async fn scrape(client: &reqwest::Client, url: &str) -> Samples {
    let r = client.get(url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    parse(&r.text().await.unwrap())
}

/// Buckets of every series of `name` are cumulative and end at `_count`.
fn buckets_consistent(samples: &Samples, name: &str) {
    let bucket = format!("{name}_bucket");
    let count = format!("{name}_count");
    for (_, labels, total) in samples.iter().filter(|(n, _, _)| *n == count) {
        let mut series: Vec<(f64, f64)> = samples
            .iter()
            .filter(|(n, l, _)| {
                *n == bucket && l.iter().filter(|(k, _)| *k != "le").all(|(k, v)| labels.get(k) == Some(v))
            })
            .map(|(_, l, v)| (l["le"].parse::<f64>().unwrap_or(f64::INFINITY), *v))
            .collect();
        series.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(series.windows(2).all(|w| w[0].1 <= w[1].1), "{name}{labels:?}: buckets not cumulative: {series:?}");
        assert_eq!(series.last().map(|b| b.1), Some(*total), "{name}{labels:?}: +Inf bucket is not the count");
    }
}

#[tokio::test]
async fn control_plane_counts_admin_requests_by_route_and_status() {
    let gw = Gateway::start(Backend::Sqlite).await;
    gw.create_service("a").await;
    gw.create_service("b").await;
    for _ in 0..3 {
        gw.get("/services").await.expect(200);
    }
    gw.get("/services/nope").await.assert_status(404);
    gw.get("/no/such/path").await.assert_status(404);
    gw.post_json("/services", &json!({"host": 5})).await.assert_status(400);

    let m = scrape(gw.client(), &gw.url("/metrics")).await;
    let count = |method: &str, route: &str, code: &str| {
        value(
            &m,
            "gatehouse_admin_request_duration_seconds_count",
            &[("method", method), ("route", route), ("code", code)],
        )
    };
    assert_eq!(count("GET", "/services", "200"), Some(3.0));
    assert_eq!(count("POST", "/services", "201"), Some(2.0));
    assert_eq!(count("POST", "/services", "400"), Some(1.0));
    assert_eq!(count("GET", "/services/{svc}", "404"), Some(1.0));
    assert_eq!(count("GET", "unmatched", "404"), Some(1.0));
    buckets_consistent(&m, "gatehouse_admin_request_duration_seconds");

    let revision = gw.get("/status").await.expect(200)["config_revision"].as_f64();
    assert_eq!(value(&m, "gatehouse_changelog_head", &[]), revision);
    assert_eq!(value(&m, "gatehouse_database_reachable", &[]), Some(1.0));
    assert_eq!(value(&m, "gatehouse_data_planes_connected", &[]), Some(0.0));
    assert!(value(&m, "gatehouse_admin_connections_accepted_total", &[]).is_some_and(|v| v >= 1.0));
}

#[tokio::test]
async fn data_plane_reports_its_configuration_sync_and_target_health() {
    let db = Database::create(Backend::Postgres).await;
    migrate(&db).await;
    let cert = ClusterCert::generate();
    let cp = ControlPlane::start(&db, &cert, &[]).await;
    cp.post("/upstreams", &json!({"name": "up"})).await;
    cp.post("/upstreams/up/targets", &json!({"target": "127.0.0.1:9"})).await;
    let head = cp.revision().await;
    let dp = DataPlane::start(&cp.cluster_addr(), &cert, &[]).await;
    dp.wait_revision(head, Duration::from_secs(15)).await;
    let metrics_url = dp.status_url.replace("/status", "/metrics");
    let client = reqwest::Client::new();

    let m = scrape(&client, &metrics_url).await;
    assert_eq!(value(&m, "gatehouse_config_revision", &[]), Some(head as f64));
    assert_eq!(value(&m, "gatehouse_control_plane_connected", &[]), Some(1.0));
    assert_eq!(value(&m, "gatehouse_sync_snapshots_applied_total", &[]), Some(1.0));
    assert_eq!(value(&m, "gatehouse_sync_nacks_total", &[]), Some(0.0));
    let health = |state: &str| {
        value(&m, "kong_upstream_target_health", &[("upstream", "up"), ("target", "127.0.0.1:9"), ("state", state)])
    };
    assert_eq!(health("healthchecks_off"), Some(1.0));
    assert_eq!(health("healthy"), Some(0.0));
    assert_eq!(health("unhealthy"), Some(0.0));

    // A write travels as a delta, and the CP counts the data plane as connected.
    cp.post("/services", &json!({"name": "later", "host": "example.org"})).await;
    let head = cp.revision().await;
    dp.wait_revision(head, Duration::from_secs(15)).await;
    let m = scrape(&client, &metrics_url).await;
    assert_eq!(value(&m, "gatehouse_config_revision", &[]), Some(head as f64));
    assert!(value(&m, "gatehouse_sync_deltas_applied_total", &[]).is_some_and(|v| v >= 1.0));
    let cp_metrics = scrape(&client, &format!("{}/metrics", cp.admin)).await;
    assert_eq!(value(&cp_metrics, "gatehouse_data_planes_connected", &[]), Some(1.0));
    assert_eq!(value(&cp_metrics, "gatehouse_changelog_head", &[]), Some(head as f64));
    // The data plane has applied the head: once the control plane has recorded that (its
    // acknowledgement or next status report), its lag is 0.
    let lag = |m: &Samples| value(m, "gatehouse_data_plane_config_lag", &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut m = cp_metrics;
    while lag(&m) != Some(0.0) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        m = scrape(&client, &format!("{}/metrics", cp.admin)).await;
    }
    assert_eq!(lag(&m), Some(0.0), "the data plane is not behind");
}

/// The proxy's request families after a known mix of requests: answered upstream with and
/// without plugins (the plugin route's requests in a shape once handed to another engine:
/// `Connection` names their length), refused by a plugin, and matching no route.
#[tokio::test]
async fn proxy_counts_requests_by_service_route_and_status() {
    use gatehouse_tests::proxy::{Standalone, Upstream};
    let gw = Standalone::start().await;
    let up = Upstream::echo("counted").await;
    let (_, counted) = gw.expose(&up, json!({"name": "counted"}), json!({"paths": ["/counted"]})).await;
    let (_, guarded) = gw.expose(&up, json!({"name": "guarded"}), json!({"paths": ["/guarded"]})).await;
    gw.post(&format!("/routes/{}/plugins", id_of(&guarded)), json!({"name": "key-auth"})).await;
    gw.post("/consumers", json!({"username": "alice"})).await;
    gw.post("/consumers/alice/key-auth", json!({"key": "alice-key"})).await;
    // A service without a name is labelled with its host, as Kong's plugin labels it.
    let (_, unnamed) = gw.expose(&up, json!({}), json!({"paths": ["/unnamed"]})).await;
    gw.sync().await;

    let mut body_bytes = 0;
    for _ in 0..5 {
        body_bytes += gw.get("/counted/direct").await.assert_status(200).text().len();
    }
    for _ in 0..2 {
        let raw = "GET /guarded HTTP/1.1\r\nHost: a.test\r\napikey: alice-key\r\nConnection: content-length\r\n\r\n";
        gw.send_raw(raw.as_bytes()).await.expect("an answer").assert_status(200);
    }
    for _ in 0..3 {
        gw.get("/guarded").await.assert_status(401);
    }
    for _ in 0..4 {
        gw.get("/nowhere").await.assert_status(404);
    }
    gw.get("/unnamed").await.assert_status(200);

    // A worker records a request just after its last byte is written: the scrape may come
    // first, so it is repeated until every request is in (or 10 s have passed).
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{}/metrics", gw.status_port);
    let finished = |m: &Samples| {
        value(m, "kong_nginx_connections_total", &[("state", "writing")]) == Some(0.0)
            && value(m, "kong_nginx_connections_total", &[("state", "total")]) == Some(15.0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut m = scrape(&client, &url).await;
    while !finished(&m) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        m = scrape(&client, &url).await;
    }
    let (counted, guarded) = (id_of(&counted), id_of(&guarded));
    let requests = |service: &str, route: &str, code: &str| {
        value(&m, "kong_http_requests_total", &[("service", service), ("route", route), ("code", code)])
    };
    assert_eq!(requests("counted", &counted, "200"), Some(5.0));
    assert_eq!(requests("guarded", &guarded, "200"), Some(2.0));
    assert_eq!(requests("guarded", &guarded, "401"), Some(3.0));
    assert_eq!(requests("", "", "404"), Some(4.0));
    assert_eq!(requests("127.0.0.1", &id_of(&unnamed), "200"), Some(1.0));
    for family in ["kong_request_latency_ms", "kong_upstream_latency_ms", "kong_kong_latency_ms"] {
        buckets_consistent(&m, family);
    }
    let count = |family: &str, service: &str, route: &str| {
        value(&m, &format!("{family}_count"), &[("service", service), ("route", route)])
    };
    assert_eq!(count("kong_request_latency_ms", "counted", &counted), Some(5.0));
    assert_eq!(count("kong_upstream_latency_ms", "counted", &counted), Some(5.0));
    assert_eq!(count("kong_kong_latency_ms", "counted", &counted), Some(5.0));
    assert_eq!(count("kong_request_latency_ms", "guarded", &guarded), Some(5.0));
    assert_eq!(count("kong_upstream_latency_ms", "guarded", &guarded), Some(2.0), "a refusal never went upstream");
    let bandwidth = |direction: &str| {
        value(&m, "kong_bandwidth_bytes", &[("service", "counted"), ("route", &counted), ("direction", direction)])
    };
    assert!(bandwidth("egress").is_some_and(|b| b > body_bytes as f64), "egress: {:?}", bandwidth("egress"));
    assert!(bandwidth("ingress").is_some_and(|b| b > 5.0 * "GET /counted/direct HTTP/1.1".len() as f64));
    let connections = |state: &str| value(&m, "kong_nginx_connections_total", &[("state", state)]);
    assert!(connections("accepted").is_some_and(|n| n >= 1.0));
    assert_eq!(connections("total"), Some(15.0), "every request counted once");
    assert_eq!(connections("writing"), Some(0.0));
}

/// `proxy_metrics = off` records nothing.
#[tokio::test]
async fn proxy_metrics_can_be_turned_off() {
    use gatehouse_tests::proxy::{Standalone, Upstream};
    let gw = Standalone::start_with_env(&[("GATEHOUSE_PROXY_METRICS", "off")]).await;
    let up = Upstream::echo("uncounted").await;
    gw.expose(&up, json!({"name": "uncounted"}), json!({"paths": ["/u"]})).await;
    gw.sync().await;
    gw.get("/u").await.assert_status(200);
    gw.get("/nowhere").await.assert_status(404);
    let client = reqwest::Client::new();
    let m = scrape(&client, &format!("http://127.0.0.1:{}/metrics", gw.status_port)).await;
    assert!(!m.iter().any(|(n, _, _)| n == "kong_http_requests_total"), "{m:?}");
    assert_eq!(value(&m, "kong_nginx_connections_total", &[("state", "accepted")]), Some(0.0));
}

/// A client that leaves before its answer (the direct path watches it while the upstream works) is
/// counted as nginx's 499, and its request is no longer `writing`.
#[tokio::test]
async fn a_request_whose_client_leaves_before_the_answer_is_counted_as_499() {
    use gatehouse_tests::proxy::{Standalone, Upstream};
    use tokio::io::AsyncWriteExt;
    let gw = Standalone::start().await;
    let up = Upstream::slow("slow", Duration::from_secs(3)).await;
    let (_, route) = gw.expose(&up, json!({"name": "slow"}), json!({"paths": ["/slow"]})).await;
    gw.sync().await;
    let mut client = tokio::net::TcpStream::connect(gw.proxy_addr()).await.unwrap();
    client.write_all(b"GET /slow HTTP/1.1\r\nHost: gatehouse.test\r\n\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(client);

    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{}/metrics", gw.status_port);
    let route = id_of(&route);
    let left =
        |m: &Samples| value(m, "kong_http_requests_total", &[("service", "slow"), ("route", &route), ("code", "499")]);
    // The count and the connection's state change a moment apart: both are waited for.
    let writing = |m: &Samples| value(m, "kong_nginx_connections_total", &[("state", "writing")]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut m = scrape(&client, &url).await;
    while (left(&m).is_none() || writing(&m) != Some(0.0)) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        m = scrape(&client, &url).await;
    }
    assert_eq!(left(&m), Some(1.0), "{m:?}");
    assert_eq!(value(&m, "kong_nginx_connections_total", &[("state", "writing")]), Some(0.0));
    assert_eq!(value(&m, "kong_upstream_latency_ms_count", &[("service", "slow"), ("route", &route)]), None);
}
