//! Protocols at the proxy: https-only routes (426), TLS certificates chosen by SNI
//! (kong-0.14-core-behavior.md §4.5, §7), HTTP/2 from clients over TLS, WebSocket upgrades.

use futures::{SinkExt, StreamExt};
use gatehouse_tests::proxy::{presented_certificate, Standalone, TestCert, Upstream};
use gatehouse_tests::{id_of, json};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn https_only_route_answers_426_over_plain_http() {
    let gw = Standalone::start().await;
    let up = Upstream::echo("secure").await;
    let service = gw.service_for(&up, json!({})).await;
    gw.route(&service, json!({"paths": ["/secure"], "protocols": ["https"], "strip_path": false})).await;
    gw.route(&service, json!({"paths": ["/plain"], "protocols": ["http"], "strip_path": false})).await;
    gw.route(&service, json!({"paths": ["/both"], "strip_path": false})).await;
    gw.sync().await;

    for headers in [vec![], vec![("X-Forwarded-Proto", "https")]] {
        let reply = gw.get_with("/secure", &headers).await;
        reply.assert_status(426);
        assert_eq!(reply.json(), json!({"message": "Please use HTTPS protocol"}), "{}", reply.what);
        reply.assert_generated();
        assert_eq!(reply.header("upgrade"), Some("TLS/1.2, HTTP/1.1"), "{:?}", reply.headers);
        let connection = reply.header("connection").unwrap_or_default();
        assert!(connection.eq_ignore_ascii_case("upgrade"), "Connection {connection:?} in {:?}", reply.headers);
    }
    assert_eq!(up.requests(), 0, "a 426 is not forwarded");

    for path in ["/secure", "/plain", "/both"] {
        let url = gw.proxy_tls_url(path);
        let echo = gw.send(&format!("GET {url}"), gw.client().get(&url)).await.echo();
        assert_eq!(echo.path(), path);
        assert_eq!(echo.header("x-forwarded-proto"), Some("https"));
    }
    for path in ["/plain", "/both"] {
        assert_eq!(gw.get(path).await.echo().path(), path);
    }
}

#[tokio::test]
async fn certificate_is_chosen_by_sni() {
    let gw = Standalone::start().await;
    let up = Upstream::echo("tls").await;
    gw.expose(&up, json!({}), json!({"paths": ["/"], "strip_path": false})).await;
    let alpha = TestCert::new("alpha.test");
    let beta = TestCert::new("beta.test");
    let alpha_entity =
        gw.post("/certificates", json!({"cert": alpha.cert_pem, "key": alpha.key_pem, "snis": ["alpha.test"]})).await;
    let beta_entity = gw
        .post(
            "/certificates",
            json!({"cert": beta.cert_pem, "key": beta.key_pem, "snis": ["beta.test", "www.beta.test"]}),
        )
        .await;
    gw.sync().await;
    let addr = gw.proxy_tls_addr();

    assert!(presented_certificate(addr, Some("alpha.test")).await == alpha.der, "SNI alpha.test: wrong certificate");
    assert!(presented_certificate(addr, Some("beta.test")).await == beta.der, "SNI beta.test: wrong certificate");
    assert!(
        presented_certificate(addr, Some("www.beta.test")).await == beta.der,
        "SNI www.beta.test: wrong certificate"
    );
    // No wildcard or suffix matching.
    let unknown = presented_certificate(addr, Some("unknown.test")).await;
    let sub = presented_certificate(addr, Some("x.alpha.test")).await;
    let none = presented_certificate(addr, None).await;
    for (what, der) in [("unknown.test", &unknown), ("x.alpha.test", &sub), ("no SNI", &none)] {
        assert!(
            *der != alpha.der && *der != beta.der,
            "{what}: got a configured certificate instead of the default one"
        );
    }
    assert!(unknown == none && sub == none, "an unknown SNI and no SNI must both get the one default certificate");

    // A request on a connection with SNI goes through.
    let client = reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .resolve("alpha.test", addr)
        .build()
        .expect("client");
    let url = format!("https://alpha.test:{}/over-sni", gw.proxy_tls_port);
    assert_eq!(gw.send(&url, client.get(&url)).await.echo().path(), "/over-sni");

    // Changes apply: a new certificate for alpha.test, and www.beta.test removed.
    let alpha2 = TestCert::new("alpha.test");
    gw.patch(
        &format!("/certificates/{}", id_of(&alpha_entity)),
        json!({"cert": alpha2.cert_pem, "key": alpha2.key_pem}),
    )
    .await;
    gw.patch(&format!("/certificates/{}", id_of(&beta_entity)), json!({"snis": ["beta.test"]})).await;
    gw.sync().await;
    assert!(presented_certificate(addr, Some("alpha.test")).await == alpha2.der, "alpha.test after PATCH");
    assert!(presented_certificate(addr, Some("beta.test")).await == beta.der, "beta.test after PATCH");
    assert!(
        presented_certificate(addr, Some("www.beta.test")).await == none,
        "www.beta.test after its SNI was removed"
    );
}

#[tokio::test]
async fn http2_clients_over_tls() {
    let gw = Standalone::start().await;
    let up = Upstream::echo("h2").await;
    gw.expose(&up, json!({}), json!({"paths": ["/h2"], "strip_path": false})).await;
    gw.sync().await;

    let url = gw.proxy_tls_url("/h2/x?y=1");
    let reply = gw.send(&format!("GET {url}"), gw.client().get(&url)).await;
    assert_eq!(reply.version, "HTTP/2.0", "ALPN h2 must be accepted; got {} ({:?})", reply.version, reply.headers);
    let echo = reply.echo();
    assert_eq!(echo.path(), "/h2/x?y=1");
    assert_eq!(echo.version(), "HTTP/1.1", "the upstream request is HTTP/1.1");
    assert_eq!(echo.header("host"), Some(format!("127.0.0.1:{}", up.port()).as_str()));
    assert!(reply.header("via").unwrap_or_default().contains("gatehouse"), "{:?}", reply.headers);

    // A body over HTTP/2, and several streams on one connection at once.
    let body = vec![7u8; 100_000];
    let reply = gw.send("POST h2", gw.client().post(gw.proxy_tls_url("/h2/post")).body(body)).await;
    assert_eq!(reply.version, "HTTP/2.0");
    assert_eq!(reply.echo().body_len(), 100_000);
    let replies = futures::future::join_all((0..8).map(|i| {
        let url = gw.proxy_tls_url(&format!("/h2/{i}"));
        gw.send("GET h2 concurrent", gw.client().get(url))
    }))
    .await;
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(r.version, "HTTP/2.0");
        assert_eq!(r.echo().path(), format!("/h2/{i}"));
    }
    let reply = gw.send("GET h2 no route", gw.client().get(gw.proxy_tls_url("/nowhere"))).await;
    reply.assert_status(404);
    assert_eq!(reply.json(), json!({"message": "no route and no API found with those values"}));
}

/// HTTP/2 requests go through the same engine as HTTP/1's: plugins in every phase,
/// `Kong-Debug`, a body streamed without a length, and the protocol's own rules on the way
/// (split cookies joined, no HTTP/1 connection fields in the answer, which an HTTP/2 client
/// would refuse).
#[tokio::test]
async fn http2_requests_take_the_same_pipeline_as_http1() {
    let gw = Standalone::start().await;
    let up = Upstream::echo("h2p").await;
    let (_, route) = gw.expose(&up, json!({}), json!({"paths": ["/h2p"], "strip_path": false})).await;
    let on_route =
        |name: &str, config: serde_json::Value| json!({"name": name, "route_id": id_of(&route), "config": config});
    gw.post("/plugins", on_route("correlation-id", json!({"echo_downstream": true}))).await;
    gw.post("/plugins", on_route("request-transformer", json!({"add": {"headers": ["x-req:yes"]}}))).await;
    gw.post("/plugins", on_route("response-transformer", json!({"add": {"headers": ["x-added:yes"]}}))).await;
    gw.sync().await;

    let mut cookies = reqwest::header::HeaderMap::new();
    cookies.append("cookie", reqwest::header::HeaderValue::from_static("a=1"));
    cookies.append("cookie", reqwest::header::HeaderValue::from_static("b=2"));
    let req = gw.client().get(gw.proxy_tls_url("/h2p/x")).headers(cookies).header("kong-debug", "1");
    let reply = gw.send("GET h2 with plugins", req).await;
    reply.assert_status(200);
    assert_eq!(reply.version, "HTTP/2.0");
    let echo = reply.echo();
    assert_eq!(echo.header("x-req"), Some("yes"), "request-transformer ran: {:?}", echo.0);
    assert_eq!(echo.header("cookie"), Some("a=1; b=2"), "cookies joined for HTTP/1.1: {:?}", echo.0);
    let id = echo.header("kong-request-id").expect("correlation-id set its field upstream");
    assert_eq!(reply.header("kong-request-id"), Some(id), "echo_downstream: {:?}", reply.headers);
    assert_eq!(reply.header("x-added"), Some("yes"), "response-transformer ran: {:?}", reply.headers);
    assert_eq!(reply.header("kong-route-id"), route["id"].as_str(), "Kong-Debug: {:?}", reply.headers);
    for name in ["connection", "keep-alive", "transfer-encoding"] {
        assert_eq!(reply.header(name), None, "{name} in an HTTP/2 answer: {:?}", reply.headers);
    }

    // Cookies each within the limit of a field, over it once joined, and a cookie over it
    // alone.
    let jar: Vec<String> = (0..3).map(|i| format!("c{i}={}", "v".repeat(4000))).collect();
    let mut cookies = reqwest::header::HeaderMap::new();
    for c in &jar {
        cookies.append("cookie", reqwest::header::HeaderValue::from_str(c).expect("a cookie"));
    }
    let reply =
        gw.send("GET h2 with 12 KiB of cookies", gw.client().get(gw.proxy_tls_url("/h2p/c")).headers(cookies)).await;
    reply.assert_status(200);
    assert_eq!(reply.echo().header("cookie"), Some(jar.join("; ").as_str()));

    // A GET with a body and no length: sent chunked, not dropped.
    let chunks = (0..3).map(|_| Ok::<_, std::io::Error>(b"abc".to_vec()));
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let reply = gw.send("GET h2 with a body", gw.client().get(gw.proxy_tls_url("/h2p/g")).body(body)).await;
    reply.assert_status(200);
    assert_eq!(reply.echo().body(), "abcabcabc");

    // A body with no length (HTTP/2 frames it) reaches the upstream whole.
    let chunks = (0..40).map(|_| Ok::<_, std::io::Error>(vec![b'z'; 10_000]));
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let reply = gw.send("POST h2 streamed", gw.client().post(gw.proxy_tls_url("/h2p/up")).body(body)).await;
    reply.assert_status(200);
    assert_eq!(reply.echo().body_len(), 400_000);
}

#[tokio::test]
async fn websocket_upgrade_passes_through() {
    let gw = Standalone::start().await;
    let up = Upstream::websocket_echo("ws").await;
    gw.expose(&up, json!({}), json!({"paths": ["/ws"], "strip_path": false})).await;
    gw.sync().await;

    let stream = tokio::net::TcpStream::connect(gw.proxy_addr()).await.expect("connect to the proxy");
    let url = format!("ws://127.0.0.1:{}/ws/chat?room=1", gw.proxy_port);
    let (mut ws, response) = tokio_tungstenite::client_async(url, stream)
        .await
        .unwrap_or_else(|e| panic!("WebSocket handshake through the proxy: {e}\nstderr:\n{}", gw.logs()));
    assert_eq!(response.status().as_u16(), 101);
    assert_eq!(up.paths(), vec!["/ws/chat?room=1".to_owned()], "the upstream saw the handshake");

    for i in 0..5 {
        let text = format!("hello {i}");
        ws.send(Message::text(text.clone())).await.expect("send text");
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
            .await
            .expect("an echo within 5 s")
            .expect("the stream is open")
            .expect("a message");
        assert_eq!(got, Message::text(text));
    }
    let blob: Vec<u8> = (0..200_000u32).map(|i| (i % 256) as u8).collect();
    ws.send(Message::binary(blob.clone())).await.expect("send binary");
    let got = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
        .await
        .expect("an echo within 5 s")
        .expect("the stream is open")
        .expect("a message");
    assert_eq!(got, Message::binary(blob), "a 200 kB binary message comes back intact");
    ws.close(None).await.expect("close");
}

/// `https` services: the upstream is reached over TLS without verifying its certificate;
/// the SNI sent is the upstream Host (none for an IP address).
#[tokio::test]
async fn https_services_are_reached_over_tls() {
    let gw = Standalone::start().await;
    let up = Upstream::echo_tls("tls-upstream").await;
    let service = gw.service_for(&up, json!({"protocol": "https"})).await;
    gw.route(&service, json!({"paths": ["/tls"], "strip_path": false})).await;
    gw.route(&service, json!({"paths": ["/kept"], "strip_path": false, "preserve_host": true})).await;
    gw.sync().await;

    let echo = gw.get("/tls/x").await.echo();
    assert_eq!(echo.upstream(), "tls-upstream");
    assert_eq!(echo.path(), "/tls/x");
    assert_eq!(echo.header("host"), Some(format!("127.0.0.1:{}", up.port()).as_str()));
    assert_eq!(echo.header("x-forwarded-proto"), Some("http"), "the client's scheme, not the upstream's");

    let echo = gw.get_with("/kept", &[("Host", "secure.test")]).await.echo();
    assert_eq!(echo.header("host"), Some("secure.test"));
    // Another client Host right after: a connection named for the first is not reused. Sent
    // as HTTP/1.0, answered in HTTP/1.1, as nginx answers.
    let reply = gw.send_raw(b"GET /kept HTTP/1.0\r\nHost: other.test:8000\r\n\r\n").await.expect("an answer");
    assert_eq!(reply.version, "HTTP/1.1", "answered as nginx answers an HTTP/1.0 client");
    assert_eq!(reply.echo().header("host"), Some("other.test:8000"));
    let snis = up.snis();
    assert!(snis.iter().any(|s| s.as_deref() == Some("secure.test")), "SNI with preserve_host: {snis:?}");
    assert!(snis.iter().any(|s| s.as_deref() == Some("other.test")), "each Host its own SNI: {snis:?}");
    assert!(!snis.iter().flatten().any(|s| s.starts_with("127.")), "no SNI may carry an IP address: {snis:?}");
}

/// An HTTP/2 client that resets its stream while the upstream's answer is quiet (a stream of
/// events) frees the upstream connection at once, not at the upstream's next byte (or its
/// read timeout).
#[tokio::test]
async fn a_reset_http2_stream_frees_its_upstream_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("loopback");
    let port = listener.local_addr().expect("loopback").port();
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.expect("the gateway connects");
        let mut buf = vec![0u8; 16 * 1024];
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tcp.read(&mut buf).await.expect("the request head");
            assert!(n > 0, "the request head ended early");
            head.extend_from_slice(&buf[..n]);
        }
        let start =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello\n\r\n";
        tcp.write_all(start).await.expect("the answer's start");
        // Then nothing, until the gateway closes the connection.
        while tcp.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        let _ = closed_tx.send(());
    });
    let gw = Standalone::start().await;
    let service = gw.service_at(port, json!({"read_timeout": 30_000})).await;
    gw.route(&service, json!({"paths": ["/events"]})).await;
    gw.sync().await;

    let mut reply = gw.client().get(gw.proxy_tls_url("/events")).send().await.expect("the answer's head");
    assert_eq!((reply.version(), reply.status().as_u16()), (reqwest::Version::HTTP_2, 200));
    let first = reply.chunk().await.expect("the first event").expect("some bytes");
    assert_eq!(&first[..], b"hello\n");
    drop(reply);
    tokio::time::timeout(std::time::Duration::from_secs(5), closed_rx)
        .await
        .expect("the upstream connection is closed once the stream is reset")
        .expect("the upstream saw its connection close");
}
