//! Errors produced while proxying (kong-0.14-core-behavior.md §4.8, §4.9): timeouts,
//! refused and dropped connections, retries, content negotiation of the error bodies, and
//! isolation between services.

use std::time::{Duration, Instant};

use gatehouse_tests::json;
use gatehouse_tests::proxy::{dead_port, eventually, Reply, Standalone, Upstream};

const TIMEOUT_MSG: &str = "The upstream server is timing out";
const BAD_GATEWAY_MSG: &str = "An invalid response was received from the upstream server";

/// Asserts an error body in the format `Accept` asked for (§4.8).
#[track_caller]
fn assert_error_body(reply: &Reply, status: u16, format: &str, msg: &str) {
    reply.assert_status(status);
    reply.assert_generated();
    let (content_type, body) = match format {
        "json" => ("application/json", format!("{{\"message\":\"{msg}\"}}")),
        "html" => (
            "text/html",
            format!("<html><head><title>Kong Error</title></head><body><h1>Kong Error</h1><p>{msg}.</p></body></html>"),
        ),
        "xml" => (
            "application/xml",
            format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<error><message>{msg}</message></error>"),
        ),
        "plain" => ("text/plain", msg.to_owned()),
        other => panic!("unknown format {other}"),
    };
    let ct = reply.header("content-type").unwrap_or_default();
    assert!(ct.starts_with(content_type), "{}: Content-Type {ct:?}, expected {content_type}", reply.what);
    let text = reply.text();
    if format == "json" {
        assert_eq!(reply.json(), json!({"message": msg}), "{}: body {text:?}", reply.what);
    } else {
        assert_eq!(text.trim_end(), body, "{}: {format} body", reply.what);
    }
    assert!(text.ends_with('\n'), "{}: the error body ends with a newline: {text:?}", reply.what);
    // Kong counts a request as proxied once its access phase ended: the page for an upstream
    // failure carries Via and both latencies, as a proxied answer does.
    let via = reply.header_all("via");
    assert!(via.len() == 1 && via[0].starts_with("gatehouse/"), "{}: Via {via:?}", reply.what);
    for name in ["x-kong-proxy-latency", "x-kong-upstream-latency"] {
        let v = reply.header_all(name);
        assert!(v.len() == 1 && v[0].parse::<u64>().is_ok(), "{}: {name} {v:?}", reply.what);
    }
    reply.assert_generated();
}

#[tokio::test]
async fn read_timeout_is_a_504_negotiated_by_accept() {
    let gw = Standalone::start().await;
    let slow = Upstream::slow("slow", Duration::from_secs(3)).await;
    gw.expose(&slow, json!({"read_timeout": 500, "retries": 0}), json!({"paths": ["/slow"]})).await;
    gw.sync().await;

    let started = Instant::now();
    let (as_json, as_html) = tokio::join!(
        gw.get_with("/slow", &[("Accept", "application/json")]),
        gw.get_with("/slow", &[("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")]),
    );
    let elapsed = started.elapsed();
    assert_error_body(&as_json, 504, "json", TIMEOUT_MSG);
    assert_error_body(&as_html, 504, "html", TIMEOUT_MSG);
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_millis(2500),
        "read_timeout=500 ms, but the 504s took {elapsed:?}"
    );
}

/// nginx's `proxy_next_upstream` never resends a POST (or PATCH) that reached the upstream:
/// a timed-out GET is tried 1 + retries times, a timed-out POST once.
#[tokio::test]
async fn a_sent_post_is_not_retried_but_a_get_is() {
    let gw = Standalone::start().await;
    let slow = Upstream::slow("slow", Duration::from_secs(2)).await;
    gw.expose(&slow, json!({"read_timeout": 200, "retries": 2}), json!({"paths": ["/slow"]})).await;
    gw.sync().await;

    let r = gw.request("POST", "/slow", &[]).await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(eventually(Duration::from_secs(2), || slow.requests() >= 1).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(slow.requests(), 1, "the POST reached the upstream once");

    let r = gw.request("GET", "/slow", &[]).await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(eventually(Duration::from_secs(2), || slow.requests() >= 4).await, "GET tried 3 times");
    assert_eq!(slow.requests(), 4);
}

#[tokio::test]
async fn refused_connection_is_a_502_negotiated_by_accept() {
    let gw = Standalone::start().await;
    expose_dead(&gw, json!({"retries": 2}), "/dead").await;
    gw.sync().await;

    let started = Instant::now();
    let cases: &[(Option<&str>, &str)] = &[
        (Some("application/json"), "json"),
        (Some("text/html"), "html"),
        (Some("application/xml"), "xml"),
        (Some("text/plain"), "plain"),
        (None, "plain"),
        (Some("*/*"), "plain"),
        // Substring checks in the order html, json, xml.
        (Some("application/json, text/html"), "html"),
        (Some("application/xml, application/json;q=0.5"), "json"),
    ];
    for (accept, format) in cases {
        let headers: Vec<(&str, &str)> = accept.iter().map(|a| ("Accept", *a)).collect();
        let reply = gw.get_with("/dead", &headers).await;
        assert_error_body(&reply, 502, format, BAD_GATEWAY_MSG);
    }
    assert!(started.elapsed() < Duration::from_secs(10), "refused connections must fail fast");
}

/// A Service on a port where nothing listens, routed at `path`.
async fn expose_dead(gw: &Standalone, service_extra: serde_json::Value, path: &str) {
    let svc = gw.service_at(dead_port(), service_extra).await;
    gw.route(&svc, json!({"paths": [path]})).await;
}

#[tokio::test]
async fn failed_connections_are_retried_service_retries_times() {
    let gw = Standalone::start().await;
    let three = Upstream::closer("three").await;
    let none = Upstream::closer("none").await;
    gw.expose(&three, json!({"retries": 3}), json!({"paths": ["/three"]})).await;
    gw.expose(&none, json!({"retries": 0}), json!({"paths": ["/none"]})).await;
    gw.sync().await;

    let reply = gw.get_with("/three", &[("Accept", "application/json")]).await;
    assert_error_body(&reply, 502, "json", BAD_GATEWAY_MSG);
    eventually(Duration::from_secs(2), || three.connections() >= 4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(three.connections(), 4, "retries=3: one try and three retries, each a new connection");

    let reply = gw.get_with("/none", &[("Accept", "application/json")]).await;
    assert_error_body(&reply, 502, "json", BAD_GATEWAY_MSG);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(none.connections(), 1, "retries=0: a single try");
}

/// Connection attempts that time out are retried too: with `connect_timeout=300` and
/// `retries=3`, four attempts take about 1.2 s before the 504.
#[tokio::test]
async fn connect_timeouts_are_retried_service_retries_times() {
    let gw = Standalone::start().await;
    let hole = Upstream::blackhole("hole").await;
    gw.expose(&hole, json!({"connect_timeout": 300, "retries": 3}), json!({"paths": ["/three"]})).await;
    gw.expose(&hole, json!({"connect_timeout": 300, "retries": 0}), json!({"paths": ["/none"]})).await;
    gw.sync().await;

    let started = Instant::now();
    let reply = gw.get_with("/three", &[("Accept", "application/json")]).await;
    let elapsed = started.elapsed();
    assert_error_body(&reply, 504, "json", TIMEOUT_MSG);
    assert!(
        elapsed >= Duration::from_millis(1150) && elapsed < Duration::from_millis(3000),
        "retries=3, connect_timeout=300 ms: expected four attempts (~1.2 s), took {elapsed:?}"
    );

    let started = Instant::now();
    let reply = gw.get_with("/none", &[("Accept", "application/json")]).await;
    let elapsed = started.elapsed();
    assert_error_body(&reply, 504, "json", TIMEOUT_MSG);
    assert!(
        elapsed >= Duration::from_millis(280) && elapsed < Duration::from_millis(1000),
        "retries=0, connect_timeout=300 ms: expected one attempt (~0.3 s), took {elapsed:?}"
    );
}

#[tokio::test]
async fn slow_or_dead_upstreams_do_not_block_other_services() {
    let gw = Standalone::start().await;
    let slow = Upstream::slow("slow", Duration::from_secs(3)).await;
    let fast = Upstream::echo("fast").await;
    gw.expose(&slow, json!({}), json!({"paths": ["/slow"]})).await;
    gw.expose(&fast, json!({}), json!({"paths": ["/fast"]})).await;
    expose_dead(&gw, json!({"retries": 1}), "/dead").await;
    gw.sync().await;

    const IN_FLIGHT: usize = 16;
    let started = Instant::now();
    let slow_batch = futures::future::join_all((0..IN_FLIGHT).map(|_| gw.get("/slow")));
    let others = async {
        assert!(
            eventually(Duration::from_secs(5), || slow.requests() >= IN_FLIGHT).await,
            "only {} of {IN_FLIGHT} slow requests reached the upstream",
            slow.requests()
        );
        for i in 0..10 {
            let t = Instant::now();
            let reply = gw.get(&format!("/fast/{i}")).await;
            assert_eq!(reply.echo().upstream(), "fast");
            assert!(t.elapsed() < Duration::from_secs(1), "a fast request took {:?} behind slow ones", t.elapsed());
            let t = Instant::now();
            gw.get("/dead").await.assert_status(502);
            assert!(t.elapsed() < Duration::from_secs(1), "a refused request took {:?}", t.elapsed());
        }
        started.elapsed()
    };
    let (slow_replies, others_done) = tokio::join!(slow_batch, others);
    assert!(others_done < Duration::from_millis(2900), "the other requests had to wait for the slow ones");
    for r in &slow_replies {
        assert_eq!(r.echo().upstream(), "slow");
    }
}

/// Malformed requests and request-smuggling shapes are refused with Kong's 400 page (nginx's
/// checks, then Kong's error handler), the connection is closed, and none reaches the
/// upstream. A transfer coding nginx does not know is its 501.
#[tokio::test]
async fn malformed_and_smuggling_requests_are_refused() {
    let gw = Standalone::start().await;
    let up = Upstream::echo("victim").await;
    gw.expose(&up, json!({}), json!({"paths": ["/"]})).await;
    gw.sync().await;

    let cases: &[(&str, &str)] = &[
        (
            "Content-Length and Transfer-Encoding",
            "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
             0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n",
        ),
        (
            "Transfer-Encoding and Content-Length",
            "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 30\r\n\r\n\
             0\r\n\r\nGET /smuggled HTTP/1.1\r\nX: y\r\n\r\n",
        ),
        (
            "two different Content-Length headers",
            "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        // nginx refuses a repeated length even when the values agree.
        (
            "two equal Content-Length headers",
            "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        ),
        ("a Content-Length list", "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5, 6\r\n\r\nhello!"),
        ("a non-numeric Content-Length", "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: abc\r\n\r\nabc"),
        ("a negative Content-Length", "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: -1\r\n\r\n"),
        ("an empty Content-Length", "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length:\r\n\r\n"),
        (
            "a Content-Length past any offset",
            "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 99999999999999999999999\r\n\r\nx",
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            "POST / HTTP/1.0\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "two Transfer-Encoding headers",
            "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n\
             0\r\n\r\n",
        ),
        ("a request line that is not HTTP", "THIS IS NOT HTTP\r\n\r\n"),
        ("whitespace before the colon", "GET / HTTP/1.1\r\nHost : a.test\r\n\r\n"),
        ("a space in a header name", "GET / HTTP/1.1\r\nHost: a.test\r\nX Bad: 1\r\n\r\n"),
        ("an obsolete folded header", "GET / HTTP/1.1\r\nHost: a.test\r\nX-Folded: a\r\n b\r\n\r\n"),
    ];
    assert_refused(&gw, &up, cases).await;

    // nginx's 501 for a coding it does not decode, on the page Kong's handler would shape.
    let unknown: &[(&str, &str)] = &[
        ("gzip", "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: gzip\r\n\r\nxx"),
        ("gzip, chunked", "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
    ];
    assert_answered_and_closed(&gw, &up, unknown, 501, "Not implemented\n").await;

    // The page follows Accept, as Kong's handler does.
    let raw = "POST / HTTP/1.1\r\nHost: a.test\r\nAccept: application/json\r\nContent-Length: x\r\n\r\n";
    let reply = gw.send_raw(raw.as_bytes()).await.expect("an answer");
    assert_eq!((reply.status, reply.text()), (400, "{\"message\":\"Bad request\"}\n".to_owned()));
    // A HEAD gets the page's head alone.
    let raw = "HEAD / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx";
    let reply = gw.send_raw(raw.as_bytes()).await.expect("an answer");
    assert_eq!((reply.status, reply.text()), (400, String::new()));
}

/// After a plugin route's request whose `Connection` names its length (a shape once handed to
/// hyper, whose heads a guard then checked apart), framing nginx refuses is refused with Kong's
/// page too, and not forwarded; the request before it is answered.
#[tokio::test]
async fn ambiguous_framing_after_a_plugin_request_is_refused() {
    let gw = Standalone::start().await;
    let up = Upstream::echo("victim").await;
    expose_with_a_plugin_route(&gw, &up).await;

    let cases = [
        ("two equal Content-Length headers", "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400, "Bad request"),
        (
            "two Transfer-Encoding headers",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
            "Bad request",
        ),
        (
            "Content-Length and Transfer-Encoding",
            "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
            "Bad request",
        ),
        // As on the direct path: nginx's 501.
        ("a coding before chunked", "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501, "Not implemented"),
    ];
    for (what, framing, status, message) in cases {
        // Sent together: the request before the refused one is still answered.
        let out = after_a_plugin_request(&gw, &format!("POST /refused HTTP/1.1\r\nHost: a.test\r\n{framing}")).await;
        let (first, second) = split_answers(&out, status, what).await;
        assert_eq!(first.echo().path(), PLUGGED, "{what}");
        assert_eq!(second.text(), format!("{message}\n"), "{what}");
        assert_eq!(second.header("connection"), Some("close"), "{what}");
    }

    // A length padded with spaces is read as a length: its body is not taken for a head, and
    // the ambiguous request after it is the one refused.
    let padded = format!(
        "POST /padded HTTP/1.1\r\nHost: a.test\r\nContent-Length:{}5\r\n\r\nG\r\n\r\n\
         POST /refused HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        " ".repeat(300)
    );
    let out = after_a_plugin_request(&gw, &padded).await;
    let (_, refused) = split_answers(&out, 400, "padded").await;
    assert_eq!(refused.text(), "Bad request\n");
    let text = String::from_utf8_lossy(&out);
    assert_eq!(text.matches("HTTP/1.1 200 ").count(), 2, "the padded request is served: {text}");

    // An upgrade that does not happen ends the connection: the heads after it would go
    // unchecked.
    let declined = "GET /declined HTTP/1.1\r\nHost: a.test\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\n\
                    POST /refused HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx";
    let out = after_a_plugin_request(&gw, declined).await;
    let text = String::from_utf8_lossy(&out);
    assert_eq!(text.matches("HTTP/1.1 200 ").count(), 2, "{text}");

    // A refused request with a large body still gets its page, not a reset.
    let body = "x".repeat(600_000);
    let raw = format!(
        "GET /plugged HTTP/1.1\r\nHost: a.test\r\nConnection: content-length\r\n\r\n\
         POST /refused HTTP/1.1\r\nHost: a.test\r\nContent-Length: 600000\r\nContent-Length: 600000\r\n\r\n{body}"
    );
    let tcp = tokio::net::TcpStream::connect(gw.proxy_addr()).await.expect("connect");
    let (mut rd, mut wr) = tcp.into_split();
    let writer = tokio::spawn(async move {
        let _ = tokio::io::AsyncWriteExt::write_all(&mut wr, raw.as_bytes()).await;
        wr
    });
    // Like most clients, it sends its whole request before it reads.
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    let mut out = Vec::new();
    let read = tokio::io::AsyncReadExt::read_to_end(&mut rd, &mut out);
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("closed").expect("the page, not a reset");
    let (_, refused) = split_answers(&out, 400, "a large body").await;
    assert_eq!(refused.text(), "Bad request\n");

    tokio::time::sleep(Duration::from_millis(300)).await;
    let expected = [PLUGGED, "/padded", "/declined"];
    assert!(up.paths().iter().all(|p| expected.contains(&p.as_str())), "forwarded: {:?}", up.paths());
}

/// The answers read from a connection: the one before the first with `status`, and that one.
async fn split_answers(out: &[u8], status: u16, what: &str) -> (Reply, Reply) {
    let line = format!("HTTP/1.1 {status} ");
    let at = out.windows(line.len()).position(|w| w == line.as_bytes()).unwrap_or_else(|| {
        panic!("{what}: no {status} in {:?}", String::from_utf8_lossy(out));
    });
    let first = gatehouse_tests::proxy::read_response(&mut &out[..at], what).await.expect("the first answer");
    let second = gatehouse_tests::proxy::read_response(&mut &out[at..], what).await.expect("the second answer");
    second.assert_generated();
    (first, second)
}

/// A route through a plugin.
const PLUGGED: &str = "/plugged";

/// Routes `/` to `up`, and [`PLUGGED`] to it through a plugin (request-transformer).
async fn expose_with_a_plugin_route(gw: &Standalone, up: &Upstream) {
    let (service, _) = gw.expose(up, json!({}), json!({"paths": ["/"]})).await;
    let route = gw.route(&service, json!({"paths": [PLUGGED], "strip_path": false})).await;
    let plugin = json!({"name": "request-transformer", "route_id": route["id"], "config": {"add": {"headers": ["X-Via-Plugin:1"]}}});
    gw.post("/plugins", plugin).await;
    gw.sync().await;
}

/// Sends a request to [`PLUGGED`] whose `Connection` names its length, and `then`, together,
/// and reads until the gateway closes the connection.
async fn after_a_plugin_request(gw: &Standalone, then: &str) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let raw = format!("GET {PLUGGED} HTTP/1.1\r\nHost: a.test\r\nConnection: content-length\r\n\r\n{then}");
    let mut tcp = tokio::net::TcpStream::connect(gw.proxy_addr()).await.expect("connect");
    tcp.write_all(raw.as_bytes()).await.expect("loopback I/O");
    let mut out = Vec::new();
    let read = tcp.read_to_end(&mut out);
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("closed").expect("loopback I/O");
    out
}

/// RFC 7230 §5.4 (and nginx, hence Kong): an HTTP/1.1 request without a Host header, or
/// with two, is a 400.
#[tokio::test]
async fn requests_without_exactly_one_host_are_refused() {
    let gw = Standalone::start().await;
    let up = Upstream::echo("victim").await;
    gw.expose(&up, json!({}), json!({"paths": ["/"]})).await;
    gw.sync().await;

    let cases: &[(&str, &str)] = &[
        ("two Host headers", "GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n"),
        ("HTTP/1.1 without Host", "GET / HTTP/1.1\r\nX-Nothing: here\r\n\r\n"),
    ];
    assert_refused(&gw, &up, cases).await;
}

/// Sends each `(description, raw request)`; every one must get Kong's 400 page and none may
/// reach `up`.
async fn assert_refused(gw: &Standalone, up: &Upstream, cases: &[(&str, &str)]) {
    assert_answered_and_closed(gw, up, cases, 400, "Bad request\n").await;
}

/// Sends each `(description, raw request)` on its own connection; every one must get `status`
/// with Kong's plain-text page `body`, the connection closed after it, and none may reach `up`.
async fn assert_answered_and_closed(gw: &Standalone, up: &Upstream, cases: &[(&str, &str)], status: u16, body: &str) {
    let mut failures = Vec::new();
    for (what, raw) in cases {
        match gw.send_raw(raw.as_bytes()).await {
            Ok(reply)
                if reply.status == status && reply.text() == body && reply.header("connection") == Some("close") =>
            {
                reply.assert_generated();
            }
            Ok(reply) => failures.push(format!("{what}: got {} {:?} {:?}", reply.status, reply.text(), reply.headers)),
            Err(e) => failures.push(format!("{what}: no response ({e})")),
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Only the well-formed requests below may have reached it (from an earlier call).
    let forwarded: Vec<String> = up.paths().into_iter().filter(|p| p != "/fine").collect();
    assert!(
        failures.is_empty() && forwarded.is_empty(),
        "not refused:\n{}\nforwarded upstream: {forwarded:?}",
        failures.join("\n")
    );

    // A well-formed request still goes through.
    assert_eq!(gw.get("/fine").await.echo().path(), "/fine");
}

/// Kong's limits on a request head (nginx's `large_client_header_buffers 4 8k`): a request
/// line over 8 KiB is a 414, a header line over 8 KiB or a head over 32 KiB a 400, each with
/// Kong's page, and the connection closed; nothing reaches the upstream. A malformed head gets
/// Kong's 400 page too. Heads within the limits go through. Later heads on a kept-alive
/// connection are held to the same limits.
#[tokio::test]
async fn oversized_and_malformed_heads_get_kongs_pages_and_are_not_forwarded() {
    let gw = Standalone::start().await;
    let up = Upstream::echo("victim").await;
    expose_with_a_plugin_route(&gw, &up).await;

    let a = |n: usize| "a".repeat(n);
    let fields = |count: usize, len: usize| (0..count).map(|i| format!("X-F{i}: {}\r\n", a(len))).collect::<String>();
    let cases = [
        ("a 9 KiB request line", format!("GET /{} HTTP/1.1\r\nHost: a.test\r\n\r\n", a(9 * 1024)), 414, "URI too long"),
        (
            "a 9 KiB header line",
            format!("GET / HTTP/1.1\r\nHost: a.test\r\n{}\r\n", fields(1, 9 * 1024)),
            400,
            "Bad request",
        ),
        (
            "a 70 KB header line",
            format!("GET / HTTP/1.1\r\nHost: a.test\r\n{}\r\n", fields(1, 70_000)),
            400,
            "Bad request",
        ),
        (
            "40 KiB of 5 KiB lines",
            format!("GET / HTTP/1.1\r\nHost: a.test\r\n{}\r\n", fields(8, 5 * 1024)),
            400,
            "Bad request",
        ),
        (
            "a 9 KiB line still unfinished",
            format!("GET / HTTP/1.1\r\nHost: a.test\r\nX-Long: {}", a(9 * 1024)),
            400,
            "Bad request",
        ),
        // Many fields, over the limits all the same.
        (
            "70 fields, one of 20 KB",
            format!("GET / HTTP/1.1\r\nHost: a.test\r\n{}{}\r\n", fields(70, 1), fields(1, 20_000)),
            400,
            "Bad request",
        ),
        (
            "a 9 KiB request line and 70 fields",
            format!("GET /{} HTTP/1.1\r\nHost: a.test\r\n{}\r\n", a(9 * 1024), fields(70, 1)),
            414,
            "URI too long",
        ),
        (
            "90 fields of 700 bytes",
            format!("GET / HTTP/1.1\r\nHost: a.test\r\n{}\r\n", fields(90, 700)),
            400,
            "Bad request",
        ),
        (
            "a space in a header name",
            "GET / HTTP/1.1\r\nHost: a.test\r\nX Bad: 1\r\n\r\n".to_owned(),
            400,
            "Bad request",
        ),
        ("a request line that is not HTTP", "THIS IS NOT HTTP\r\n\r\n".to_owned(), 400, "Bad request"),
    ];
    for (what, raw, status, message) in &cases {
        let reply = gw.send_raw(raw.as_bytes()).await.unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
        assert_eq!(reply.status, *status, "{what}: {:?}", reply.text().chars().take(200).collect::<String>());
        assert_eq!(reply.text(), format!("{message}\n"), "{what}");
        assert_eq!(reply.header("connection"), Some("close"), "{what}: {:?}", reply.headers);
        reply.assert_generated();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(up.paths(), Vec::<String>::new(), "refused heads reached the upstream");

    // A later head on a kept-alive connection (after a plugin route's request) is held to the
    // same limits, and the request before it is answered.
    let later = [
        "a 9 KiB request line",
        "a 9 KiB header line",
        "40 KiB of 5 KiB lines",
        "70 fields, one of 20 KB",
        "a 9 KiB request line and 70 fields",
    ];
    for (what, head, status, message) in cases.iter().filter(|c| later.contains(&c.0)) {
        let out = after_a_plugin_request(&gw, head).await;
        let (first, second) = split_answers(&out, *status, what).await;
        assert_eq!(first.echo().path(), PLUGGED, "{what}");
        assert_eq!(second.text(), format!("{message}\n"), "{what}: later");
        assert_eq!(second.header("connection"), Some("close"), "{what}: later");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(up.paths().iter().all(|p| p == PLUGGED), "refused later heads reached the upstream: {:?}", up.paths());

    // Within the limits: a 7 KiB line, 24 KiB of 6 KiB lines, and 80 fields (heads are held
    // to their bytes, not to a count of fields).
    for (what, extra) in [
        ("a 7 KiB line", fields(1, 7 * 1024)),
        ("24 KiB of 6 KiB lines", fields(4, 6 * 1024)),
        ("80 fields of 300 bytes", fields(80, 300)),
    ] {
        let raw = format!("GET /fine HTTP/1.1\r\nHost: a.test\r\n{extra}\r\n");
        let reply = gw.send_raw(raw.as_bytes()).await.unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
        reply.assert_status(200);
        assert_eq!(reply.echo().header("x-f0").map(str::len), Some(extra.find('\r').unwrap_or(0) - 6), "{what}");
    }
    let head = format!("GET /fine HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n{}\r\n", fields(4, 6 * 1024));
    let out = String::from_utf8_lossy(&after_a_plugin_request(&gw, &head).await).into_owned();
    assert_eq!(
        out.matches("HTTP/1.1 200 ").count(),
        2,
        "a later head within the limits: {}",
        &out[..out.len().min(600)]
    );
}
