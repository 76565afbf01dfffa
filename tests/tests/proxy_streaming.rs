//! Bodies stream through the proxy in both directions without being buffered whole, and
//! configuration changes do not disturb requests in flight.

use std::time::{Duration, Instant};

use futures::StreamExt;
use gatehouse_tests::json;
use gatehouse_tests::proxy::{eventually, pattern_chunk, pattern_sum, rss_bytes, RssWatch, Standalone, Upstream};

const MB: u64 = 1024 * 1024;
/// How much the gateway's resident memory may grow while 200 MB pass through it.
const RSS_GROWTH_LIMIT: u64 = 120 * MB;

/// A body of `total` bytes of pattern chunks, produced lazily.
fn streamed_body(total: u64) -> reqwest::Body {
    let chunk = pattern_chunk();
    let n = total / chunk.len() as u64;
    assert_eq!(n * chunk.len() as u64, total, "a whole number of chunks");
    reqwest::Body::wrap_stream(futures::stream::iter((0..n).map(move |_| Ok::<_, std::io::Error>(chunk.clone()))))
}

#[tokio::test]
async fn large_request_bodies_stream_to_the_upstream() {
    let gw = Standalone::start().await;
    let sink = Upstream::sink("sink").await;
    gw.expose(&sink, json!({}), json!({"paths": ["/upload"]})).await;
    gw.sync().await;
    let url = gw.proxy_url("/upload");
    // Warm up (connection pools, lazily built state) before taking the baseline.
    gw.send("POST warm-up", gw.client().post(&url).body("warm-up")).await.assert_status(200);

    let pid = gw.pid();
    let before = rss_bytes(pid);
    let watch = RssWatch::start(pid);
    const TOTAL: u64 = 200 * MB;
    let started = Instant::now();
    let reply = gw
        .send(
            "POST /upload (200 MB, Content-Length)",
            gw.client().post(&url).header("content-length", TOTAL.to_string()).body(streamed_body(TOTAL)),
        )
        .await;
    let peak = watch.peak();
    reply.assert_status(200);
    assert_eq!(reply.json(), json!({"bytes": TOTAL, "sum": pattern_sum(TOTAL)}), "the sink's count and checksum");
    assert_eq!(sink.body_bytes(), TOTAL + "warm-up".len() as u64);
    assert!(
        peak.saturating_sub(before) < RSS_GROWTH_LIMIT,
        "gateway RSS grew from {} MB to {} MB while streaming 200 MB (took {:?})",
        before / MB,
        peak / MB,
        started.elapsed()
    );

    // Chunked (no Content-Length) arrives intact too.
    const CHUNKED: u64 = 32 * MB;
    let reply = gw.send("POST /upload (chunked)", gw.client().post(&url).body(streamed_body(CHUNKED))).await;
    reply.assert_status(200);
    assert_eq!(reply.json(), json!({"bytes": CHUNKED, "sum": pattern_sum(CHUNKED)}));
}

#[tokio::test]
async fn large_response_bodies_stream_to_the_client() {
    const TOTAL: u64 = 200 * MB;
    let gw = Standalone::start().await;
    let source = Upstream::source("source", TOTAL).await;
    let small = Upstream::source("small", 1000).await;
    gw.expose(&source, json!({}), json!({"paths": ["/download"]})).await;
    gw.expose(&small, json!({}), json!({"paths": ["/warm-up"]})).await;
    gw.sync().await;
    gw.send("GET warm-up", gw.client().get(gw.proxy_url("/warm-up"))).await.assert_status(200);

    let pid = gw.pid();
    let before = rss_bytes(pid);
    let watch = RssWatch::start(pid);
    let resp = gw.client().get(gw.proxy_url("/download")).send().await.expect("GET /download");
    assert_eq!(resp.status().as_u16(), 200);
    let (mut len, mut sum) = (0u64, 0u64);
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap_or_else(|e| panic!("body cut after {len} bytes: {e}"));
        len += chunk.len() as u64;
        sum = chunk.iter().fold(sum, |acc, b| acc.wrapping_add(u64::from(*b)));
    }
    let peak = watch.peak();
    assert_eq!(len, TOTAL, "bytes received");
    assert_eq!(sum, pattern_sum(TOTAL), "checksum of the bytes received");
    assert!(
        peak.saturating_sub(before) < RSS_GROWTH_LIMIT,
        "gateway RSS grew from {} MB to {} MB while streaming a 200 MB response",
        before / MB,
        peak / MB
    );
}

#[tokio::test]
async fn response_bytes_are_forwarded_as_they_arrive() {
    let gw = Standalone::start().await;
    let drip = Upstream::drip("drip", "first part;", Duration::from_millis(1500), "second part").await;
    gw.expose(&drip, json!({}), json!({"paths": ["/drip"]})).await;
    gw.sync().await;

    let started = Instant::now();
    let mut resp = gw.client().get(gw.proxy_url("/drip")).send().await.expect("GET /drip");
    assert_eq!(resp.status().as_u16(), 200);
    let first = resp.chunk().await.expect("first chunk").expect("a first chunk");
    let first_at = started.elapsed();
    assert!(
        first_at < Duration::from_millis(1000),
        "the first part was sent at once but reached the client after {first_at:?}: the response is buffered"
    );
    let mut all = first.to_vec();
    while let Some(c) = resp.chunk().await.expect("next chunk") {
        all.extend_from_slice(&c);
    }
    assert_eq!(String::from_utf8_lossy(&all), "first part;second part");
    assert!(started.elapsed() >= Duration::from_millis(1400), "the body ends only after the upstream's pause");
}

#[tokio::test]
async fn config_changes_do_not_break_requests_in_flight() {
    let gw = Standalone::start().await;
    let slow = Upstream::slow("slow", Duration::from_secs(2)).await;
    let echo = Upstream::echo("echo").await;
    let service = gw.service_for(&slow, json!({})).await;
    gw.route(&service, json!({"paths": ["/slow-a"], "strip_path": false})).await;
    let doomed = gw.route(&service, json!({"paths": ["/slow-b"], "strip_path": false})).await;
    gw.sync().await;

    let started = Instant::now();
    let in_flight = async { tokio::join!(gw.get("/slow-a"), gw.get("/slow-b")) };
    let change = async {
        assert!(
            eventually(Duration::from_secs(5), || slow.requests() >= 2).await,
            "the slow requests did not reach the upstream"
        );
        // Add a route and remove the one a request in flight came through.
        gw.expose(&echo, json!({}), json!({"paths": ["/new"]})).await;
        gw.delete(&format!("/routes/{}", gatehouse_tests::id_of(&doomed))).await;
        gw.sync().await;
        assert_eq!(gw.get("/new/x").await.echo().upstream(), "echo", "the added route serves at once");
        started.elapsed()
    };
    let ((a, b), changed_at) = tokio::join!(in_flight, change);
    assert!(changed_at < Duration::from_secs(2), "the change was applied while the requests were in flight");
    let a = a.echo();
    assert_eq!((a.upstream(), a.path()), ("slow", "/slow-a"));
    let b = b.echo();
    assert_eq!((b.upstream(), b.path()), ("slow", "/slow-b"), "a request whose route was deleted meanwhile");
    gw.get("/slow-b").await.assert_status(404);
}

/// An upstream that answers before reading the request body (a 413, say), then reads the rest
/// slowly: the answer reaches the client, and the client's connection does not hang on the
/// unread rest of its body. The next request on it is answered, or the connection ends.
#[tokio::test]
async fn an_early_answer_to_a_long_body_does_not_stall_the_client_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("loopback I/O");
    let port = listener.local_addr().expect("loopback I/O").port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if !matches!(tcp.read(&mut byte).await, Ok(1)) {
                        return;
                    }
                    head.push(byte[0]);
                }
                if head.starts_with(b"GET") {
                    let _ = tcp.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext").await;
                } else {
                    let _ = tcp.write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 5\r\n\r\nearly").await;
                }
                // The rest of the body, much later and slowly.
                tokio::time::sleep(Duration::from_secs(2)).await;
                let mut sink = vec![0u8; 4096];
                while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
        }
    });
    let gw = Standalone::start().await;
    let service = gw.service_at(port, json!({})).await;
    gw.route(&service, json!({"paths": ["/early"]})).await;
    gw.sync().await;

    let tcp = tokio::net::TcpStream::connect(gw.proxy_addr()).await.expect("loopback I/O");
    let (mut read, mut write) = tcp.into_split();
    let len = 8 * MB;
    tokio::spawn(async move {
        let head = format!("POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n");
        let chunk = vec![b'x'; 64 * 1024];
        let mut ok = write.write_all(head.as_bytes()).await.is_ok();
        for _ in 0..len / chunk.len() as u64 {
            ok = ok && write.write_all(&chunk).await.is_ok();
        }
        if ok {
            let _ = write.write_all(b"GET /early HTTP/1.1\r\nHost: x\r\n\r\n").await;
        }
    });
    let mut got = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if got.ends_with(b"next") {
                return;
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 413 "), "{text}");
    assert!(ended.is_ok(), "the connection neither answered the next request nor ended: {text}");
}
