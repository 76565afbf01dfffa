//! Headers the upstream sees and headers the client gets back
//! (kong-0.14-core-behavior.md §4.6, §4.7).

use std::time::Duration;

use gatehouse_tests::proxy::{Reply, Standalone, Upstream};
use gatehouse_tests::{id_of, json};

#[tokio::test]
async fn forwarded_headers_over_plain_http() {
    let gw = Standalone::start().await;
    let up = Upstream::echo("fwd").await;
    gw.expose(&up, json!({}), json!({"paths": ["/h"]})).await;
    gw.sync().await;
    let proxy_port = gw.proxy_port.to_string();

    // The client is not trusted: its X-Forwarded-Proto/Host/Port and X-Real-IP are replaced,
    // its X-Forwarded-For is appended to.
    let reply = gw
        .get_with(
            "/h",
            &[
                ("Host", "Example.COM:8123"),
                ("X-Forwarded-For", "10.0.0.1, 10.0.0.2"),
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Host", "evil.test"),
                ("X-Forwarded-Port", "1"),
                ("X-Real-IP", "1.2.3.4"),
                ("X-Custom", "kept as is"),
            ],
        )
        .await;
    let echo = reply.echo();
    assert_eq!(echo.header("x-forwarded-for"), Some("10.0.0.1, 10.0.0.2, 127.0.0.1"), "{:?}", echo.0);
    assert_eq!(echo.header("x-forwarded-proto"), Some("http"), "{:?}", echo.0);
    assert_eq!(echo.header("x-forwarded-host"), Some("example.com"), "host without port, lower-case: {:?}", echo.0);
    assert_eq!(echo.header("x-forwarded-port"), Some(proxy_port.as_str()), "{:?}", echo.0);
    assert_eq!(echo.header("x-real-ip"), Some("127.0.0.1"), "{:?}", echo.0);
    assert_eq!(echo.header("x-custom"), Some("kept as is"), "{:?}", echo.0);

    // Without a client X-Forwarded-For, it is the client address alone.
    let echo = gw.get("/h").await.echo();
    assert_eq!(echo.header("x-forwarded-for"), Some("127.0.0.1"), "{:?}", echo.0);
    assert_eq!(echo.header("x-forwarded-host"), Some("127.0.0.1"), "{:?}", echo.0);
    assert_eq!(echo.header("x-real-ip"), Some("127.0.0.1"), "{:?}", echo.0);
}

#[tokio::test]
async fn forwarded_headers_over_tls() {
    let gw = Standalone::start().await;
    let up = Upstream::echo("fwd-tls").await;
    gw.expose(&up, json!({}), json!({"paths": ["/h"]})).await;
    gw.sync().await;

    let url = gw.proxy_tls_url("/h");
    let reply = gw.send(&format!("GET {url}"), gw.client().get(&url).header("X-Forwarded-Proto", "http")).await;
    let echo = reply.echo();
    assert_eq!(echo.header("x-forwarded-proto"), Some("https"), "{:?}", echo.0);
    assert_eq!(echo.header("x-forwarded-port"), Some(gw.proxy_tls_port.to_string().as_str()), "{:?}", echo.0);
    assert_eq!(echo.header("x-forwarded-host"), Some("127.0.0.1"), "{:?}", echo.0);
    assert_eq!(echo.header("x-forwarded-for"), Some("127.0.0.1"), "{:?}", echo.0);
}

#[tokio::test]
async fn host_header_with_and_without_preserve_host() {
    let gw = Standalone::start().await;
    let up = Upstream::echo("host").await;
    let service = gw.service_for(&up, json!({})).await;
    gw.route(&service, json!({"paths": ["/plain"], "preserve_host": false})).await;
    gw.route(&service, json!({"paths": ["/keep"], "preserve_host": true})).await;
    gw.sync().await;

    let want = format!("127.0.0.1:{}", up.port());
    let echo = gw.get_with("/plain", &[("Host", "client.test:8123")]).await.echo();
    assert_eq!(echo.header("host"), Some(want.as_str()), "service host and port: {:?}", echo.0);

    let echo = gw.get_with("/keep", &[("Host", "Client.Test:8123")]).await.echo();
    assert_eq!(echo.header("host"), Some("Client.Test:8123"), "the client's raw Host: {:?}", echo.0);
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded() {
    let gw = Standalone::start().await;
    let up = Upstream::echo("hop").await;
    gw.expose(&up, json!({}), json!({"paths": ["/hop"]})).await;
    gw.sync().await;

    let reply = gw
        .get_with(
            "/hop",
            &[
                ("Connection", "close"),
                ("Keep-Alive", "timeout=5, max=100"),
                ("TE", "trailers"),
                ("Proxy-Connection", "keep-alive"),
                ("X-End-To-End", "yes"),
            ],
        )
        .await;
    let echo = reply.echo();
    for name in ["keep-alive", "te", "proxy-connection"] {
        assert_eq!(echo.header(name), None, "hop-by-hop header {name} reached the upstream: {:?}", echo.0);
    }
    let connection = echo.header("connection").unwrap_or("keep-alive");
    assert!(
        connection.eq_ignore_ascii_case("keep-alive"),
        "the client's `Connection: close` reached the upstream as {connection:?}: {:?}",
        echo.0
    );
    assert_eq!(echo.header("x-end-to-end"), Some("yes"), "{:?}", echo.0);
}

#[tokio::test]
async fn proxied_responses_carry_via_latencies_and_upstream_headers() {
    let gw = Standalone::start().await;
    let fast = Upstream::echo("fast").await;
    let slow = Upstream::slow("slow", Duration::from_millis(300)).await;
    gw.expose(&fast, json!({}), json!({"paths": ["/fast"]})).await;
    gw.expose(&slow, json!({}), json!({"paths": ["/slow"]})).await;
    gw.sync().await;

    let reply = gw.get("/fast").await;
    reply.echo();
    let via = reply.header("via").unwrap_or_default();
    assert!(via.contains("gatehouse"), "Via {via:?} in {:?}", reply.headers);
    latency(&reply, "x-kong-upstream-latency");
    latency(&reply, "x-kong-proxy-latency");
    assert_eq!(reply.header("server"), Some("upstream-echo"), "upstream Server passes through: {:?}", reply.headers);
    assert_eq!(reply.header("date"), Some("Thu, 01 Jan 2026 00:00:00 GMT"), "upstream Date: {:?}", reply.headers);
    assert_eq!(reply.header("x-upstream"), Some("fast"));
    assert_eq!(reply.header_all("server").len(), 1, "one Server header: {:?}", reply.headers);

    let reply = gw.get("/slow").await;
    reply.echo();
    let upstream_ms = latency(&reply, "x-kong-upstream-latency");
    assert!(
        (290..10_000).contains(&upstream_ms),
        "the upstream took 300 ms before its headers; X-Kong-Upstream-Latency is {upstream_ms}"
    );
    let proxy_ms = latency(&reply, "x-kong-proxy-latency");
    assert!(proxy_ms < 290, "X-Kong-Proxy-Latency {proxy_ms} must not include the upstream's time");
}

#[track_caller]
fn latency(reply: &Reply, name: &str) -> u64 {
    let v = reply.header(name).unwrap_or_else(|| panic!("{}: no {name} header in {:?}", reply.what, reply.headers));
    v.parse().unwrap_or_else(|_| panic!("{}: {name} is not an integer: {v:?}", reply.what))
}

#[tokio::test]
async fn kong_debug_reveals_route_and_service() {
    let gw = Standalone::start().await;
    let up = Upstream::echo("debug").await;
    let (named, named_route) = gw.expose(&up, json!({"name": "debug-svc"}), json!({"paths": ["/named"]})).await;
    let (anon, anon_route) = gw.expose(&up, json!({}), json!({"paths": ["/anon"]})).await;
    gw.sync().await;

    let reply = gw.get_with("/named", &[("Kong-Debug", "1")]).await;
    reply.echo();
    assert_eq!(reply.header("kong-route-id"), Some(id_of(&named_route).as_str()), "{:?}", reply.headers);
    assert_eq!(reply.header("kong-service-id"), Some(id_of(&named).as_str()), "{:?}", reply.headers);
    assert_eq!(reply.header("kong-service-name"), Some("debug-svc"), "{:?}", reply.headers);

    let reply = gw.get_with("/anon", &[("Kong-Debug", "1")]).await;
    reply.echo();
    assert_eq!(reply.header("kong-route-id"), Some(id_of(&anon_route).as_str()), "{:?}", reply.headers);
    assert_eq!(reply.header("kong-service-id"), Some(id_of(&anon).as_str()), "{:?}", reply.headers);
    assert_eq!(reply.header("kong-service-name"), None, "unnamed service: {:?}", reply.headers);

    let reply = gw.get("/named").await;
    reply.echo();
    for name in ["kong-route-id", "kong-service-id", "kong-service-name"] {
        assert_eq!(reply.header(name), None, "{name} without Kong-Debug: {:?}", reply.headers);
    }
}

/// The upstream Host omits the port when it is the scheme's default (80 for http).
#[tokio::test]
async fn host_header_omits_the_default_port() {
    let addr: std::net::SocketAddr = "127.0.0.2:80".parse().expect("address");
    let _up = match Upstream::echo_on("port80", addr).await {
        Ok(up) => up,
        Err(e) => {
            eprintln!("skipped: cannot bind {addr} ({e}); this check needs port 80 on 127.0.0.2");
            return;
        }
    };
    let gw = Standalone::start().await;
    let service = gw.post("/services", json!({"host": "127.0.0.2", "port": 80})).await;
    gw.route(&service, json!({"paths": ["/p80"]})).await;
    gw.sync().await;
    let echo = gw.get("/p80").await.echo();
    assert_eq!(echo.header("host"), Some("127.0.0.2"), "{:?}", echo.0);
}
