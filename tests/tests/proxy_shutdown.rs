//! Stopping the gateway (SIGTERM, as Kubernetes does) lets requests in flight finish, closes
//! idle keep-alive connections at once, and exits — with `Kong-Debug` requests as with others.

use std::time::Duration;

use gatehouse_tests::json;
use gatehouse_tests::proxy::{read_response, Standalone, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Well inside the data plane's drain cap (15 s): an idle connection must not wait for it.
const PROMPT: Duration = Duration::from_secs(5);

/// The request without and with `Kong-Debug`, both on the direct path (it answers `Kong-Debug`
/// itself): shutdown treats them alike, as `Kong-Debug` changes nothing but the fields it adds.
const BOTH_PATHS: [&[(&str, &str)]; 2] = [&[], &[("Kong-Debug", "1")]];

fn get(port: u16, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut head = format!("GET /s HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Whether the server closes `stream` within `limit` (a read that returns end of stream or a
/// reset, not data).
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(tokio::time::timeout(limit, stream.read(&mut byte)).await, Ok(Ok(0) | Err(_)))
}

/// A gateway with the route `/s` to `up`.
async fn serving(up: &Upstream) -> Standalone {
    let gw = Standalone::start().await;
    gw.expose(up, json!({}), json!({"paths": ["/s"]})).await;
    gw.sync().await;
    gw
}

/// The gateway exits, successfully, soon after SIGTERM.
async fn exits_cleanly(gw: &mut Standalone) {
    let status = gw.exited_within(Duration::from_secs(20)).await.expect("the gateway exits after SIGTERM");
    assert!(status.success(), "exit status {status}\n{}", gw.logs());
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_at_once_and_the_gateway_exits() {
    let up = Upstream::echo("idle").await;
    let mut gw = serving(&up).await;

    let mut idle = Vec::new();
    for extra in BOTH_PATHS {
        let mut stream = TcpStream::connect(gw.proxy_addr()).await.expect("connect");
        stream.write_all(&get(gw.proxy_port, extra)).await.expect("write");
        let reply = read_response(&mut stream, "GET /s").await.expect("a response");
        reply.assert_status(200);
        assert_eq!(reply.echo().upstream(), "idle");
        idle.push(stream);
    }

    gw.terminate();
    for (stream, extra) in idle.iter_mut().zip(BOTH_PATHS) {
        assert!(closed_within(stream, PROMPT).await, "idle connection {extra:?} still open {PROMPT:?} after SIGTERM");
    }
    exits_cleanly(&mut gw).await;
}

#[tokio::test]
async fn a_request_in_flight_at_shutdown_is_answered_before_the_gateway_exits() {
    let up = Upstream::slow("slow", Duration::from_secs(2)).await;
    let mut gw = serving(&up).await;

    let mut in_flight = Vec::new();
    for extra in BOTH_PATHS {
        let mut stream = TcpStream::connect(gw.proxy_addr()).await.expect("connect");
        stream.write_all(&get(gw.proxy_port, extra)).await.expect("write");
        in_flight.push(tokio::spawn(async move {
            let reply = read_response(&mut stream, "GET /s").await;
            // After its answer, the connection is not kept for another request.
            let closed = closed_within(&mut stream, PROMPT).await;
            (reply, closed)
        }));
    }
    // Both requests are at the upstream, which answers after 2 s.
    tokio::time::sleep(Duration::from_millis(500)).await;
    gw.terminate();

    for (task, extra) in in_flight.into_iter().zip(BOTH_PATHS) {
        let (reply, closed) = task.await.expect("client task");
        let reply = reply.unwrap_or_else(|e| panic!("request {extra:?} in flight at SIGTERM: {e}\n{}", gw.logs()));
        reply.assert_status(200);
        assert_eq!(reply.echo().upstream(), "slow");
        assert!(closed, "connection {extra:?} still open {PROMPT:?} after its answer, during shutdown");
    }
    exits_cleanly(&mut gw).await;
}

/// An HTTP/2 request whose body is still arriving when SIGTERM comes is answered: the HTTP/2
/// connection drains its streams, and the engine behind each stream does not drop its request
/// for the shutdown.
#[tokio::test]
async fn an_http2_request_still_arriving_at_shutdown_is_answered() {
    let up = Upstream::echo("h2").await;
    let mut gw = serving(&up).await;

    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let req = gw.client().post(gw.proxy_tls_url("/s")).header("content-length", "6");
    let sent = tokio::spawn(req.body(reqwest::Body::wrap_stream(rx)).send());
    use futures::SinkExt;
    tx.send(Ok(b"abc".to_vec())).await.expect("the body's first half");
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.send(Ok(b"def".to_vec())).await.expect("the body's second half");
    drop(tx);

    let reply = sent.await.expect("client task").unwrap_or_else(|e| panic!("POST over HTTP/2: {e}\n{}", gw.logs()));
    assert_eq!(reply.version(), reqwest::Version::HTTP_2);
    assert_eq!(reply.status(), 200, "{}", gw.logs());
    let echo: serde_json::Value = reply.json().await.expect("the echo");
    assert_eq!(echo["body_len"], 6, "{echo}");
    exits_cleanly(&mut gw).await;
}
