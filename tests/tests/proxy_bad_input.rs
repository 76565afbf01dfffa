//! Bad input on the proxy, found by black-box probing: each is the client's fault, answered
//! by Gatehouse with Kong's 400 page (and its connection closed), never forwarded as a
//! request and never charged to an upstream's health.

use gatehouse_tests::json;
use gatehouse_tests::proxy::{Standalone, Upstream};

#[tokio::test]
async fn broken_chunked_bodies_are_400_and_not_charged_to_the_upstream() {
    let gw = Standalone::start().await;
    let up = Upstream::echo("chunked-up").await;
    // One target whose passive checks would mark it down after a single failure.
    gw.post(
        "/upstreams",
        json!({"name": "fragile.test",
               "healthchecks": {"passive": {"unhealthy": {"tcp_failures": 1, "http_failures": 1, "timeouts": 1}}}}),
    )
    .await;
    gw.post("/upstreams/fragile.test/targets", json!({"target": format!("127.0.0.1:{}", up.port())})).await;
    let svc = gw.post("/services", json!({"host": "fragile.test", "port": 80})).await;
    gw.route(&svc, json!({"paths": ["/c"]})).await;
    gw.sync().await;

    let port = gw.proxy_port;
    for body in ["5\r\nhelloXX0\r\n\r\n", "zz\r\nhello\r\n0\r\n\r\n"] {
        let raw = format!("POST /c HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
        let r = gw.send_raw(raw.as_bytes()).await.unwrap_or_else(|e| panic!("{body:?}: {e}"));
        r.assert_status(400);
        r.assert_generated();
    }
    // A body the client abandons half way (the write side closed).
    let mut s = tokio::net::TcpStream::connect(gw.proxy_addr()).await.expect("connect");
    use tokio::io::AsyncWriteExt as _;
    let head =
        format!("POST /c HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nonly-half");
    s.write_all(head.as_bytes()).await.expect("write");
    s.shutdown().await.expect("half close");
    let r = gatehouse_tests::proxy::read_response(&mut s, "abandoned body").await.expect("an answer");
    r.assert_status(400);

    // The target was not charged: it still serves.
    gw.get("/c").await.echo();
}

#[tokio::test]
async fn absolute_form_targets_are_routed_by_their_own_host() {
    let gw = Standalone::start().await;
    let a = Upstream::echo("host-a").await;
    let b = Upstream::echo("host-b").await;
    gw.expose(&a, json!({}), json!({"hosts": ["a.test"]})).await;
    gw.expose(&b, json!({}), json!({"hosts": ["b.test"]})).await;
    gw.sync().await;
    let raw = "GET http://a.test/x?y=1 HTTP/1.1\r\nHost: b.test\r\n\r\n";
    let echo = gw.send_raw(raw.as_bytes()).await.expect("answer").echo();
    assert_eq!(echo.upstream(), "host-a", "the target's host wins over Host");
    assert_eq!(echo.path(), "/x?y=1", "sent upstream in origin form");
    // A query right after the authority is routed by it too, its path being `/`.
    let raw = "GET http://a.test?y=2 HTTP/1.1\r\nHost: b.test\r\n\r\n";
    let echo = gw.send_raw(raw.as_bytes()).await.expect("answer").echo();
    assert_eq!((echo.upstream(), echo.path()), ("host-a", "/?y=2"));
    // A `%` in the authority's host is no host (the `http` crate's rule): Kong's 400.
    let raw = "GET http://a%41.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n";
    gw.send_raw(raw.as_bytes()).await.expect("answer").assert_status(400);
}

#[tokio::test]
async fn bad_hosts_connect_and_climbing_paths_are_refused() {
    let gw = Standalone::start().await;
    let up = Upstream::echo("any").await;
    gw.expose(&up, json!({}), json!({"paths": ["/"]})).await;
    gw.sync().await;

    for raw in [
        "GET / HTTP/1.1\r\nHost:\r\n\r\n".to_owned(),
        "GET / HTTP/1.1\r\nHost: a b/c\r\n\r\n".to_owned(),
        format!("GET /a/../../etc/passwd HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n", gw.proxy_port),
        format!("GET /%2e%2e/x HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n", gw.proxy_port),
    ] {
        let r = gw.send_raw(raw.as_bytes()).await.unwrap_or_else(|e| panic!("{raw:?}: {e}"));
        r.assert_status(400);
        r.assert_generated();
    }
    // A path that goes up and down again stays under the root and is served.
    gw.get("/a/../b").await.echo();

    // CONNECT: refused, the connection closed, and the request written after it never read.
    let raw = format!(
        "CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\nGET /after HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        gw.proxy_port
    );
    let mut s = tokio::net::TcpStream::connect(gw.proxy_addr()).await.expect("connect");
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    s.write_all(raw.as_bytes()).await.expect("write");
    let mut all = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut all))
        .await
        .expect("the connection is closed")
        .ok();
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "nothing after CONNECT is answered: {text}");
    assert!(!up.paths().iter().any(|p| p == "/after"), "nothing after CONNECT reached the upstream");
}
