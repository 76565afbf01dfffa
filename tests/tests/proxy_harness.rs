//! The proxy harness's own upstream servers and raw client, checked directly (no gateway),
//! so that a proxy test failure is never the harness's fault.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use gatehouse_tests::proxy::{eventually, exchange, pattern_sum, Upstream};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn echo_reports_the_raw_request() {
    let up = Upstream::echo("e").await;
    let raw = "POST /a/%2E%2E/b?x=%20&y HTTP/1.1\r\nHost: h.test:1\r\nX-Twice: 1\r\nX-Twice: 2\r\n\
               Content-Length: 5\r\nConnection: close\r\n\r\nhello";
    let reply = exchange(up.addr(), raw.as_bytes()).await.expect("a reply");
    let echo = reply.echo();
    assert_eq!(echo.upstream(), "e");
    assert_eq!(echo.method(), "POST");
    assert_eq!(echo.path(), "/a/%2E%2E/b?x=%20&y");
    assert_eq!(echo.version(), "HTTP/1.1");
    assert_eq!(echo.header("host"), Some("h.test:1"));
    assert_eq!(echo.header("x-twice"), Some("1, 2"));
    assert_eq!(echo.header("connection"), Some("close"));
    assert_eq!(echo.body_len(), 5);
    assert_eq!(reply.header("server"), Some("upstream-echo"));

    let reply = exchange(up.addr(), b"GET /q? HTTP/1.1\r\nHost: h\r\n\r\n").await.expect("a reply");
    assert_eq!(reply.echo().path(), "/q?", "a bare `?` is reported");
    assert_eq!(up.requests(), 2);
    assert_eq!(up.paths(), vec!["/a/%2E%2E/b?x=%20&y".to_owned(), "/q?".to_owned()]);
}

#[tokio::test]
async fn slow_waits_before_headers() {
    let up = Upstream::slow("s", Duration::from_millis(300)).await;
    let started = Instant::now();
    let reply = exchange(up.addr(), b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n").await.expect("a reply");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(reply.echo().upstream(), "s");
}

#[tokio::test]
async fn closer_counts_connections() {
    let up = Upstream::closer("c").await;
    for _ in 0..3 {
        assert!(exchange(up.addr(), b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").await.is_err());
    }
    assert!(eventually(Duration::from_secs(2), || up.connections() == 3).await);
}

#[tokio::test]
async fn blackhole_never_completes_a_connection() {
    let up = Upstream::blackhole("b").await;
    for _ in 0..2 {
        let attempt = tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(up.addr())).await;
        assert!(attempt.is_err(), "a connection to the blackhole completed: {attempt:?}");
    }
}

#[tokio::test]
async fn sink_source_and_drip() {
    let sink = Upstream::sink("sink").await;
    let raw = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
    let reply = exchange(sink.addr(), raw.as_bytes()).await.expect("a reply");
    let sum: u64 = b"abcde".iter().map(|b| u64::from(*b)).sum();
    assert_eq!(reply.json(), serde_json::json!({"bytes": 5, "sum": sum}));
    assert_eq!(sink.body_bytes(), 5);

    let source = Upstream::source("src", 200_000).await;
    let reply = exchange(source.addr(), b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").await.expect("a reply");
    assert_eq!(reply.body.len(), 200_000);
    assert_eq!(reply.body.iter().map(|b| u64::from(*b)).sum::<u64>(), pattern_sum(200_000));

    let drip = Upstream::drip("d", "one;", Duration::from_millis(200), "two").await;
    let reply = exchange(drip.addr(), b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").await.expect("a reply");
    assert_eq!(reply.text(), "one;two");
}

#[tokio::test]
async fn websocket_echo() {
    let up = Upstream::websocket_echo("ws").await;
    let stream = tokio::net::TcpStream::connect(up.addr()).await.expect("connect");
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("ws://{}/p?q=1", up.addr()), stream).await.expect("handshake");
    ws.send(Message::text("hi")).await.expect("send");
    assert_eq!(ws.next().await.expect("open").expect("message"), Message::text("hi"));
    assert_eq!(up.paths(), vec!["/p?q=1".to_owned()]);
}
