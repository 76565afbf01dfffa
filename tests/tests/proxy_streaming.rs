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
