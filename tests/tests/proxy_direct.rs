//! The direct HTTP/1 path, Gatehouse's one request engine (requests on routes with or without
//! plugins), against upstreams that answer in every framing; and HTTP/2 clients, whose requests
//! reach the same engine, getting the same answers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse_tests::json;
use gatehouse_tests::proxy::{dead_port, read_response, until_closed, Reply, Standalone, TestCert, Upstream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An upstream that answers every request head it reads with `response`, verbatim, and
/// closes the connection after each answer when `close` is set (over TLS, without a
/// close_notify, as many servers do). Counts connections.
struct Scripted {
    port: u16,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    /// The request line of every request, in order.
    lines: Arc<Mutex<Vec<String>>>,
    /// Every request head (without its blank line), in order.
    heads: Arc<Mutex<Vec<String>>>,
}

impl Scripted {
    async fn start(response: &'static [u8], close: bool) -> Scripted {
        Scripted::start_with(response, close, None).await
    }

    /// The same, speaking TLS with a self-signed certificate.
    async fn start_tls(response: &'static [u8], close: bool) -> Scripted {
        let cert = TestCert::new("scripted.test");
        let key = rustls::pki_types::PrivateKeyDer::try_from(
            rcgen::KeyPair::from_pem(&cert.key_pem).expect("key").serialize_der(),
        )
        .expect("private key DER");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.der.clone().into()], key)
            .expect("server certificate");
        Scripted::start_with(response, close, Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn start_with(response: &'static [u8], close: bool, tls: Option<tokio_rustls::TlsAcceptor>) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("loopback I/O");
        let port = listener.local_addr().expect("loopback I/O").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (c, r, l, h) = (connections.clone(), requests.clone(), lines.clone(), heads.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let (r, l, h, tls) = (r.clone(), l.clone(), h.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                answer(stream, response, close, &r, &l, &h).await;
                            }
                        }
                        None => answer(tcp, response, close, &r, &l, &h).await,
                    }
                });
            }
        });
        Scripted { port, connections, requests, lines, heads }
    }
}

/// Answers each request head read on `io` with `response` (see [`Scripted`]).
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    response: &[u8],
    close: bool,
    requests: &AtomicUsize,
    lines: &Mutex<Vec<String>>,
    heads: &Mutex<Vec<String>>,
) {
    let mut buf = Vec::new();
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            lines.lock().expect("not poisoned").push(head.lines().next().unwrap_or_default().to_owned());
            heads.lock().expect("not poisoned").push(head);
            buf.drain(..end + 4);
            requests.fetch_add(1, Ordering::SeqCst);
            if io.write_all(response).await.is_err() || io.flush().await.is_err() {
                return;
            }
            if close {
                return;
            }
        }
        let mut chunk = [0u8; 4096];
        match io.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A gateway routing `/p` (path kept) to an echo upstream, and the Host line for requests.
async fn echo_gateway() -> (Standalone, Upstream, String) {
    let gw = Standalone::start().await;
    let up = Upstream::echo("echo").await;
    gw.expose(&up, json!({}), json!({"paths": ["/p"], "strip_path": false})).await;
    gw.sync().await;
    let host = format!("Host: 127.0.0.1:{}\r\n", gw.proxy_addr().port());
    (gw, up, host)
}

/// One keep-alive `GET path` on an open connection (`host` is a whole `Host:` line).
async fn get_on(tcp: &mut TcpStream, path: &str, host: &str) -> Reply {
    tcp.write_all(format!("GET {path} HTTP/1.1\r\n{host}\r\n").as_bytes()).await.expect("loopback I/O");
    read_response(tcp, &format!("GET {path}")).await.expect("a complete response")
}

/// Writes `bytes` on a new connection to the proxy and reads until the proxy closes it.
async fn read_all(gw: &Standalone, bytes: &[u8]) -> String {
    let mut tcp = TcpStream::connect(gw.proxy_addr()).await.expect("loopback I/O");
    tcp.write_all(bytes).await.expect("loopback I/O");
    until_closed(&mut tcp).await
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let (gw, up, host) = echo_gateway().await;
    let two = format!("GET /p/first HTTP/1.1\r\n{host}\r\nGET /p/second HTTP/1.1\r\n{host}Connection: close\r\n\r\n");
    let out = read_all(&gw, two.as_bytes()).await;
    assert_eq!(out.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{out}");
    let (first, second) = (out.find("/p/first").expect("first"), out.find("/p/second").expect("second"));
    assert!(first < second, "answers in request order: {out}");
    assert!(out.to_ascii_lowercase().contains("connection: close"), "{out}");
    assert_eq!(up.connections(), 1, "both went over one upstream connection");
}

#[tokio::test]
async fn a_request_with_a_body_after_bodiless_ones_is_proxied_on_the_same_connection() {
    let (gw, _up, host) = echo_gateway().await;
    let mut tcp = TcpStream::connect(gw.proxy_addr()).await.expect("loopback I/O");
    let a = get_on(&mut tcp, "/p/a", &host).await;
    a.assert_status(200);
    assert_eq!(a.echo().path(), "/p/a");
    // A body and then a bodiless request again, on the same connection.
    tcp.write_all(format!("POST /p/b HTTP/1.1\r\n{host}Content-Length: 5\r\n\r\nhello").as_bytes())
        .await
        .expect("loopback I/O");
    let b = read_response(&mut tcp, "POST /p/b").await.expect("a complete response");
    b.assert_status(200);
    assert_eq!((b.echo().method(), b.echo().body_len()), ("POST", 5));
    let c = get_on(&mut tcp, "/p/c", &host).await;
    c.assert_status(200);
    assert_eq!(c.echo().path(), "/p/c");
}

#[tokio::test]
async fn chunked_upstream_answers_are_relayed_whole_and_the_connection_reused() {
    let gw = Standalone::start().await;
    let up = Scripted::start(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 999\r\nX-Up: 1\r\n\r\n\
          5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n",
        false,
    )
    .await;
    let service = gw.service_at(up.port, json!({})).await;
    gw.route(&service, json!({"paths": ["/c"]})).await;
    gw.sync().await;

    // One client connection: its worker thread's pool holds the upstream connection.
    let host = format!("Host: 127.0.0.1:{}\r\n", gw.proxy_addr().port());
    let mut tcp = TcpStream::connect(gw.proxy_addr()).await.expect("loopback I/O");
    for i in 0..3 {
        let r = get_on(&mut tcp, "/c", &host).await;
        r.assert_status(200);
        assert_eq!(r.text(), "hello, world", "request {i}");
        assert_eq!(r.header("x-up"), Some("1"));
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        assert_eq!(r.header("content-length"), None, "a chunked answer carries no length");
    }
    assert_eq!(up.requests.load(Ordering::SeqCst), 3);
    assert_eq!(up.connections.load(Ordering::SeqCst), 1, "the upstream connection was reused");
}

/// A body that ends when the upstream closes reaches the client chunked (as nginx sends it),
/// so the client's connection goes on: a second request on it is answered too.
#[tokio::test]
async fn an_answer_delimited_by_close_is_chunked_and_the_client_connection_kept() {
    let gw = Standalone::start().await;
    let up = Scripted::start(b"HTTP/1.1 200 OK\r\nX-Up: 1\r\n\r\nuntil the end", true).await;
    let service = gw.service_at(up.port, json!({})).await;
    gw.route(&service, json!({"paths": ["/c"]})).await;
    gw.sync().await;

    let host = format!("Host: 127.0.0.1:{}\r\n", gw.proxy_addr().port());
    let mut tcp = TcpStream::connect(gw.proxy_addr()).await.expect("loopback I/O");
    for _ in 0..2 {
        let r = get_on(&mut tcp, "/c", &host).await;
        assert_eq!((r.status, r.text().as_str()), (200, "until the end"));
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        assert_eq!(r.header("x-up"), Some("1"));
    }
    // The client asked to close: the answer is still chunked, and then the connection ends.
    let out = read_all(&gw, format!("GET /c HTTP/1.1\r\n{host}Connection: close\r\n\r\n").as_bytes()).await;
    assert!(out.ends_with("\r\n\r\nd\r\nuntil the end\r\n0\r\n\r\n"), "{out}");
    assert!(out.to_ascii_lowercase().contains("connection: close"), "{out}");
}

/// Keep-alive as far as its headers say, but the upstream closes after every answer (over TLS
/// without a close_notify): a pooled connection it closed is never used for a request, or
/// costs a free retry, never a 502.
#[tokio::test]
async fn an_upstream_closing_after_each_answer_costs_no_failed_request() {
    for tls in [false, true] {
        let gw = Standalone::start().await;
        let response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let (up, protocol) = if tls {
            (Scripted::start_tls(response, true).await, "https")
        } else {
            (Scripted::start(response, true).await, "http")
        };
        let service = gw.service_at(up.port, json!({"retries": 0, "protocol": protocol})).await;
        gw.route(&service, json!({"paths": ["/c"]})).await;
        gw.sync().await;

        for i in 0..20 {
            let r = gw.get("/c").await;
            assert_eq!((r.status, r.text().as_str()), (200, "ok"), "{protocol} request {i}");
        }
        assert_eq!(up.requests.load(Ordering::SeqCst), 20, "{protocol}");
    }
}

#[tokio::test]
async fn interim_answers_are_skipped_and_head_answers_have_no_body() {
    let gw = Standalone::start().await;
    let up = Scripted::start(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody",
        false,
    )
    .await;
    let service = gw.service_at(up.port, json!({})).await;
    gw.route(&service, json!({"paths": ["/c"]})).await;
    gw.sync().await;

    let r = gw.get("/c").await;
    r.assert_status(200);
    assert_eq!(r.text(), "body");

    // HEAD: the length is the GET's, and no body follows (the next answer parses cleanly).
    let host = format!("Host: 127.0.0.1:{}\r\n", gw.proxy_addr().port());
    let mut tcp = TcpStream::connect(gw.proxy_addr()).await.expect("loopback I/O");
    tcp.write_all(format!("HEAD /c HTTP/1.1\r\n{host}\r\n").as_bytes()).await.expect("loopback I/O");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut chunk))
            .await
            .expect("loopback I/O")
            .expect("loopback I/O");
        assert!(n > 0, "closed after {head:?}");
        head.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"), "{head:?}");
    assert!(head.to_ascii_lowercase().contains("content-length: 4"), "{head:?}");
    let again = get_on(&mut tcp, "/c", &host).await;
    again.assert_status(200);
    assert_eq!(again.text(), "body");
}

#[tokio::test]
async fn a_broken_upstream_head_is_a_502() {
    let gw = Standalone::start().await;
    let up = Scripted::start(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nok", false).await;
    let service = gw.service_at(up.port, json!({"retries": 0})).await;
    gw.route(&service, json!({"paths": ["/c"]})).await;
    gw.sync().await;

    let r = gw.get_with("/c", &[("accept", "application/json")]).await;
    r.assert_status(502);
    assert_eq!(r.json()["message"], "An invalid response was received from the upstream server");
}

#[tokio::test]
async fn an_answer_with_many_headers_is_relayed_whole() {
    let gw = Standalone::start().await;
    // 80 header fields: more than the direct path parses in a request on the stack.
    let mut head = String::from("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n");
    for i in 0..80 {
        head.push_str(&format!("X-H{i}: {i}\r\n"));
    }
    head.push_str("\r\nok");
    let up = Scripted::start(Box::leak(head.into_bytes().into_boxed_slice()), false).await;
    let service = gw.service_at(up.port, json!({})).await;
    gw.route(&service, json!({"paths": ["/c"]})).await;
    gw.sync().await;

    let r = gw.get("/c").await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    assert_eq!(r.header("x-h79"), Some("79"));
}

#[tokio::test]
async fn short_bodies_split_over_writes_and_long_bodies_reach_the_upstream_whole() {
    let (gw, _up, host) = echo_gateway().await;
    let mut tcp = TcpStream::connect(gw.proxy_addr()).await.expect("loopback I/O");
    // A short body whose second half comes later.
    tcp.write_all(format!("PUT /p/split HTTP/1.1\r\n{host}Content-Length: 10\r\n\r\nhello").as_bytes())
        .await
        .expect("loopback I/O");
    tokio::time::sleep(Duration::from_millis(100)).await;
    tcp.write_all(b"world").await.expect("loopback I/O");
    let split = read_response(&mut tcp, "PUT /p/split").await.expect("a complete response");
    split.assert_status(200);
    assert_eq!((split.echo().method(), split.echo().body_len()), ("PUT", 10));

    // Longer than the direct path sends with the head: streamed, same connection.
    let long = vec![b'x'; 100_000];
    tcp.write_all(format!("POST /p/long HTTP/1.1\r\n{host}Content-Length: {}\r\n\r\n", long.len()).as_bytes())
        .await
        .expect("loopback I/O");
    tcp.write_all(&long).await.expect("loopback I/O");
    let r = read_response(&mut tcp, "POST /p/long").await.expect("a complete response");
    r.assert_status(200);
    assert_eq!(r.echo().body_len(), 100_000);

    // Expect: 100-continue is answered before the body is sent.
    let mut tcp = TcpStream::connect(gw.proxy_addr()).await.expect("loopback I/O");
    tcp.write_all(
        format!("POST /p/expect HTTP/1.1\r\n{host}Content-Length: 3\r\nExpect: 100-continue\r\n\r\n").as_bytes(),
    )
    .await
    .expect("loopback I/O");
    let interim = read_response(&mut tcp, "POST /p/expect (head)").await.expect("an interim response");
    assert_eq!(interim.status, 100);
    tcp.write_all(b"abc").await.expect("loopback I/O");
    let r = read_response(&mut tcp, "POST /p/expect (body)").await.expect("a complete response");
    r.assert_status(200);
    assert_eq!(r.echo().body_len(), 3);
}

#[tokio::test]
async fn an_upstream_stalling_mid_body_is_cut_off_after_the_read_timeout() {
    let gw = Standalone::start().await;
    // Sends "first", then nothing for 10 s; the service allows 500 ms between reads.
    let up = Upstream::drip("drip", "first", Duration::from_secs(10), "rest").await;
    gw.expose(&up, json!({"read_timeout": 500}), json!({"paths": ["/d"]})).await;
    gw.sync().await;

    let host = format!("Host: 127.0.0.1:{}\r\n", gw.proxy_addr().port());
    let cut = gw.send_raw(format!("GET /d HTTP/1.1\r\n{host}\r\n").as_bytes()).await;
    // Without the timeout the whole body arrives after 10 s and this is Ok.
    let err = cut.expect_err("the response is cut off, not completed");
    assert!(err.contains("cut"), "{err}");
}

/// Review findings on the direct path: framing fields named by `Connection`, HEAD error
/// pages, lenient upstream lengths, resending bodies, reason phrases.
#[tokio::test]
async fn connection_cannot_remove_the_length_a_body_was_framed_by() {
    let (gw, up, host) = echo_gateway().await;
    // Were Content-Length dropped, the upstream would read the body as a second request.
    let hidden = "GET /admin HTTP/1.1\r\nHost: internal\r\n\r\n";
    let req = format!(
        "POST /p HTTP/1.1\r\n{host}Connection: Content-Length\r\nContent-Length: {}\r\n\r\n{hidden}",
        hidden.len()
    );
    let r = gw.send_raw(req.as_bytes()).await.expect("a response");
    r.assert_status(200);
    assert_eq!((r.echo().path(), r.echo().body_len()), ("/p", hidden.len() as u64));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(up.requests(), 1, "one request reached the upstream");
}

#[tokio::test]
async fn an_error_page_for_head_has_no_body() {
    let gw = Standalone::start().await;
    let refused = gatehouse_tests::free_port();
    let service = gw.service_at(refused, json!({"retries": 0})).await;
    gw.route(&service, json!({"paths": ["/down"]})).await;
    gw.sync().await;

    let host = format!("Host: 127.0.0.1:{}\r\n", gw.proxy_addr().port());
    let out = read_all(
        &gw,
        format!("HEAD /down HTTP/1.1\r\n{host}\r\nGET /down HTTP/1.1\r\n{host}Connection: close\r\n\r\n").as_bytes(),
    )
    .await;
    let (first, rest) = out.split_once("\r\n\r\n").expect("a head");
    assert!(first.starts_with("HTTP/1.1 502"), "{out}");
    assert!(rest.starts_with("HTTP/1.1 502"), "the HEAD answer carried a body: {out}");
}

#[tokio::test]
async fn upstream_framing_is_normalised_or_refused() {
    let gw = Standalone::start().await;
    let named =
        Scripted::start(b"HTTP/1.1 200 Fine\r\nConnection: content-length, date\r\nContent-Length: 2\r\n\r\nhi", false)
            .await;
    let plus = Scripted::start(b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nhi", false).await;
    for (up, path) in [(&named, "/named"), (&plus, "/plus")] {
        let service = gw.service_at(up.port, json!({"retries": 0})).await;
        gw.route(&service, json!({"paths": [path]})).await;
    }
    gw.sync().await;

    let host = format!("Host: 127.0.0.1:{}\r\n", gw.proxy_addr().port());
    let mut tcp = TcpStream::connect(gw.proxy_addr()).await.expect("loopback I/O");
    for _ in 0..2 {
        let r = get_on(&mut tcp, "/named", &host).await;
        assert_eq!((r.status, r.text().as_str()), (200, "hi"));
        assert_eq!(r.header("content-length"), Some("2"));
        assert!(r.header("date").is_some(), "Connection does not remove Date");
    }
    let raw = gw.send_raw(format!("GET /named HTTP/1.1\r\n{host}\r\n").as_bytes()).await.expect("a response");
    assert_eq!(raw.status, 200);
    let line = read_all(&gw, format!("GET /named HTTP/1.1\r\n{host}Connection: close\r\n\r\n").as_bytes()).await;
    assert!(line.starts_with("HTTP/1.1 200 Fine\r\n"), "the upstream's reason phrase: {line}");

    gw.get("/plus").await.assert_status(502);
}

/// A body held whole is sent again on a timeout, as nginx replays the body it buffered, but
/// only for a method Kong retries once sent: never POST, PATCH or LOCK.
#[tokio::test]
async fn a_sent_body_is_sent_again_only_by_methods_kong_retries() {
    let gw = Standalone::start().await;
    let up = Upstream::slow("slow", Duration::from_secs(2)).await;
    gw.expose(&up, json!({"read_timeout": 300, "retries": 3}), json!({"paths": ["/s"]})).await;
    gw.sync().await;

    let host = format!("Host: 127.0.0.1:{}\r\n", gw.proxy_addr().port());
    for (method, tries) in [("PUT", 4), ("POST", 1)] {
        let before = up.requests();
        let r = gw
            .send_raw(format!("{method} /s HTTP/1.1\r\n{host}Content-Length: 5\r\n\r\nhello").as_bytes())
            .await
            .expect("a response");
        r.assert_status(504);
        assert_eq!(up.requests() - before, tries, "{method} went to the upstream {tries} times");
    }
}

#[tokio::test]
async fn http1_over_tls_keeps_alive_across_bodiless_and_short_body_requests() {
    let (gw, up, _) = echo_gateway().await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .danger_accept_invalid_certs(true)
        .build()
        .expect("an HTTP/1.1 client");
    for i in 0..3 {
        let url = gw.proxy_tls_url(&format!("/p/{i}"));
        let r = gw.send(&format!("GET {url}"), client.get(&url)).await;
        r.assert_status(200);
        assert_eq!(r.version, "HTTP/1.1");
        assert_eq!(r.echo().path(), format!("/p/{i}"));
        assert_eq!(r.echo().header("x-forwarded-proto"), Some("https"));
        assert!(r.header("x-kong-proxy-latency").is_some());
    }
    // A body too, on the same client.
    let url = gw.proxy_tls_url("/p/body");
    let r = gw.send(&format!("POST {url}"), client.post(&url).body("hello")).await;
    assert_eq!((r.status, r.echo().body_len()), (200, 5));
    let r = gw.send("GET /nowhere", client.get(gw.proxy_tls_url("/nowhere"))).await;
    r.assert_status(404);
    assert_eq!(up.connections(), 1, "one client connection, one upstream connection");
}

/// An https service on the direct path: requests on one client connection share one TLS
/// connection to the upstream (the session tickets a TLS 1.3 server sends unasked do not make
/// the pooled connection look used), and the upstream sees the service's Host.
#[tokio::test]
async fn https_services_keep_one_tls_connection_across_requests() {
    let gw = Standalone::start().await;
    let up = Upstream::echo_tls("tls-upstream").await;
    gw.expose(&up, json!({"protocol": "https"}), json!({"paths": ["/s"], "strip_path": false})).await;
    gw.sync().await;
    let host = format!("Host: 127.0.0.1:{}\r\n", gw.proxy_addr().port());
    let mut tcp = TcpStream::connect(gw.proxy_addr()).await.expect("loopback I/O");
    for i in 0..5 {
        let r = get_on(&mut tcp, &format!("/s/{i}"), &host).await;
        r.assert_status(200);
        let echo = r.echo();
        assert_eq!((echo.upstream(), echo.path()), ("tls-upstream", format!("/s/{i}").as_str()));
        assert_eq!(echo.header("host"), Some(format!("127.0.0.1:{}", up.port()).as_str()));
        assert!(r.header("x-kong-upstream-latency").is_some());
    }
    assert_eq!(up.connections(), 1, "one TLS connection to the upstream for five requests");
}

/// The same request without and with `Kong-Debug`. Both take the direct path (it answers
/// `Kong-Debug` itself); a test run over both checks that `Kong-Debug` changes nothing but the
/// fields it adds, as in Kong.
const BOTH_PATHS: [&[(&str, &str)]; 2] = [&[], &[("Kong-Debug", "1")]];

/// Chunked framing wins over a Content-Length sent with it (RFC 9112 §6.3): the whole body
/// reaches the client, not as many bytes as the length said, with `Kong-Debug` as without.
#[tokio::test]
async fn an_answer_both_chunked_and_with_a_length_is_relayed_whole() {
    let gw = Standalone::start().await;
    let up = Scripted::start(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        false,
    )
    .await;
    let service = gw.service_at(up.port, json!({})).await;
    gw.route(&service, json!({"paths": ["/te"]})).await;
    gw.sync().await;
    for headers in BOTH_PATHS {
        let r = gw.get_with("/te", headers).await;
        assert_eq!((r.status, r.text().as_str()), (200, "hello world"), "{headers:?}");
        assert_eq!(r.header("content-length"), None, "{headers:?}");
    }
}

/// Kong always speaks HTTP/1.1 to upstreams: an upstream that answered HTTP/1.0 (keeping the
/// connection alive) still gets HTTP/1.1 requests next, with `Kong-Debug` as without.
#[tokio::test]
async fn an_http10_upstream_still_gets_http11_requests() {
    let gw = Standalone::start().await;
    let up = Scripted::start(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", false).await;
    let service = gw.service_at(up.port, json!({})).await;
    gw.route(&service, json!({"paths": ["/ten"], "strip_path": false})).await;
    gw.sync().await;
    for headers in BOTH_PATHS {
        for _ in 0..3 {
            let r = gw.get_with("/ten", headers).await;
            assert_eq!((r.status, r.text().as_str()), (200, "ok"), "{headers:?}");
        }
    }
    let lines = up.lines.lock().expect("not poisoned").clone();
    assert_eq!(lines, vec!["GET /ten HTTP/1.1"; 6]);
}

/// An answer that is not valid HTTP is a 502 at once: Kong retries connection failures and
/// timeouts only (`proxy_next_upstream error timeout`), not an invalid header.
#[tokio::test]
async fn an_invalid_answer_is_not_retried() {
    let gw = Standalone::start().await;
    let up = Scripted::start(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", true).await;
    let service = gw.service_at(up.port, json!({"retries": 5})).await;
    gw.route(&service, json!({"paths": ["/bad"]})).await;
    gw.sync().await;
    for (i, headers) in BOTH_PATHS.iter().enumerate() {
        gw.get_with("/bad", headers).await.assert_status(502);
        assert_eq!(up.requests.load(Ordering::SeqCst), i + 1, "one try only: {headers:?}");
    }
}

/// A 204 carries no Content-Length (RFC 9110 §8.6) even when the upstream sent one. A 304 keeps
/// its own, as nginx does (it describes the body the 304 stands for), `Kong-Debug` or not.
#[tokio::test]
async fn a_204_has_no_length_and_a_304_keeps_its_own() {
    let gw = Standalone::start().await;
    let no_content = Scripted::start(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", false).await;
    let not_modified =
        Scripted::start(b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 100\r\n\r\n", false).await;
    for (up, path) in [(&no_content, "/nc"), (&not_modified, "/nm")] {
        let service = gw.service_at(up.port, json!({})).await;
        gw.route(&service, json!({"paths": [path]})).await;
    }
    gw.sync().await;
    for headers in BOTH_PATHS {
        let r = gw.get_with("/nc", headers).await;
        assert_eq!((r.status, r.header("content-length")), (204, None), "{headers:?}");
        let r = gw.get_with("/nm", headers).await;
        assert_eq!((r.status, r.header("content-length")), (304, Some("100")), "{headers:?}");
    }
}

/// An error page follows the first `Accept` field, with `Kong-Debug` as without.
#[tokio::test]
async fn an_error_page_follows_the_first_accept_field() {
    let gw = Standalone::start().await;
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("loopback I/O");
    let port = closed.local_addr().expect("loopback I/O").port();
    drop(closed);
    let service = gw.service_at(port, json!({"retries": 0})).await;
    gw.route(&service, json!({"paths": ["/down"]})).await;
    gw.sync().await;
    for debug in BOTH_PATHS {
        let mut headers = vec![("Accept", "text/html"), ("Accept", "application/json")];
        headers.extend_from_slice(debug);
        let r = gw.get_with("/down", &headers).await;
        r.assert_status(502);
        assert!(r.text().starts_with("<html>"), "{debug:?}: {}", r.text());
    }
}

/// An https service with `preserve_host` (its TLS name is the client's Host, so the connection
/// is not pooled) still streams a long answer to its end.
#[tokio::test]
async fn a_long_answer_over_an_unpooled_tls_connection_arrives_whole() {
    let gw = Standalone::start().await;
    let len = 3 * 1024 * 1024;
    let up = Upstream::source_tls("tls-source", len).await;
    gw.expose(&up, json!({"protocol": "https"}), json!({"paths": ["/big"], "preserve_host": true})).await;
    gw.sync().await;
    let r = gw.get_with("/big", &[("Host", "secure.test")]).await;
    r.assert_status(200);
    assert_eq!(r.body.len() as u64, len);
    assert_eq!(
        r.body.iter().map(|b| u64::from(*b)).fold(0u64, u64::wrapping_add),
        gatehouse_tests::proxy::pattern_sum(len)
    );
}

/// The upstream's reason phrase goes on as it is, an empty one too, with `Kong-Debug` as without.
#[tokio::test]
async fn the_upstream_reason_phrase_is_kept_even_when_empty() {
    let gw = Standalone::start().await;
    let custom = Scripted::start(b"HTTP/1.1 200 Fine Thanks\r\nContent-Length: 2\r\n\r\nok", false).await;
    let empty = Scripted::start(b"HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nok", false).await;
    for (up, path) in [(&custom, "/custom"), (&empty, "/empty")] {
        let service = gw.service_at(up.port, json!({})).await;
        gw.route(&service, json!({"paths": [path]})).await;
    }
    gw.sync().await;
    let host = format!("Host: 127.0.0.1:{}\r\n", gw.proxy_addr().port());
    for debug in ["", "Kong-Debug: 1\r\n"] {
        for (path, status_line) in [("/custom", "HTTP/1.1 200 Fine Thanks\r\n"), ("/empty", "HTTP/1.1 200 \r\n")] {
            let out =
                read_all(&gw, format!("GET {path} HTTP/1.1\r\n{host}{debug}Connection: close\r\n\r\n").as_bytes())
                    .await;
            assert!(out.starts_with(status_line), "{debug:?} {path}: {out}");
        }
    }
}

/// A TLS upstream that ends a close-delimited body by closing without a close_notify (as many
/// servers do): nginx takes that as the end, so the body arrives whole and the client's
/// connection goes on, with `Kong-Debug` as without.
#[tokio::test]
async fn a_tls_body_ended_by_a_close_without_close_notify_arrives_whole() {
    let gw = Standalone::start().await;
    let up = Scripted::start_tls(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", true).await;
    let service = gw.service_at(up.port, json!({"protocol": "https"})).await;
    gw.route(&service, json!({"paths": ["/tc"]})).await;
    gw.sync().await;
    let host = format!("Host: 127.0.0.1:{}\r\n", gw.proxy_addr().port());
    for debug in ["", "Kong-Debug: 1\r\n"] {
        let mut tcp = TcpStream::connect(gw.proxy_addr()).await.expect("loopback I/O");
        for i in 0..2 {
            let request = format!("GET /tc HTTP/1.1\r\n{host}{debug}\r\n");
            tcp.write_all(request.as_bytes()).await.expect("loopback I/O");
            let r = read_response(&mut tcp, &request).await.expect("a complete response");
            assert_eq!((r.status, r.text().as_str()), (200, "until the end"), "{debug:?} request {i}");
        }
    }
}

/// A Content-Length that means a number without being one (leading zeros, a list of one value
/// repeated) goes on as the plain number, both ways, as nginx regenerates it, with `Kong-Debug`
/// as without.
#[tokio::test]
async fn lengths_are_forwarded_as_plain_numbers() {
    let (gw, _up, host) = echo_gateway().await;
    let listed = Scripted::start(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok", false).await;
    let zeros = Scripted::start(b"HTTP/1.1 200 OK\r\nContent-Length: 02\r\n\r\nok", false).await;
    for (up, path) in [(&listed, "/listed"), (&zeros, "/zeros")] {
        let service = gw.service_at(up.port, json!({})).await;
        gw.route(&service, json!({"paths": [path]})).await;
    }
    gw.sync().await;
    for debug in ["", "Kong-Debug: 1\r\n"] {
        let out = read_all(
            &gw,
            format!("POST /p HTTP/1.1\r\n{host}{debug}Content-Length: 005\r\nConnection: close\r\n\r\nhello")
                .as_bytes(),
        )
        .await;
        let body = &out[out.find("\r\n\r\n").map_or(0, |i| i + 4)..];
        let echo: serde_json::Value = serde_json::from_str(body).expect("the echo's JSON");
        assert_eq!(echo["headers"]["content-length"], "5", "{debug:?}: {out}");
        for path in ["/listed", "/zeros"] {
            let out =
                read_all(&gw, format!("GET {path} HTTP/1.1\r\n{host}{debug}Connection: close\r\n\r\n").as_bytes())
                    .await;
            assert!(out.starts_with("HTTP/1.1 200 "), "{debug:?} {path}: {out}");
            assert!(out.to_ascii_lowercase().contains("\r\ncontent-length: 2\r\n"), "{debug:?} {path}: {out}");
            assert!(out.ends_with("\r\n\r\nok"), "{debug:?} {path}: {out}");
        }
    }
}

/// An HTTP/1.0 request: `path`, the gateway's Host, `fields` (whole lines), then `extra`.
fn http10(path: &str, host: &str, fields: &str, extra: &[(&str, &str)]) -> String {
    let extra: String = extra.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    format!("GET {path} HTTP/1.0\r\n{host}{fields}{extra}\r\n")
}

/// One HTTP/1.0 keep-alive `GET path` on an open connection.
async fn http10_kept_on(tcp: &mut TcpStream, path: &str, host: &str, extra: &[(&str, &str)]) -> Reply {
    let request = http10(path, host, "Connection: keep-alive\r\n", extra);
    tcp.write_all(request.as_bytes()).await.expect("loopback I/O");
    read_response(tcp, &format!("GET {path} HTTP/1.0")).await.expect("a complete response")
}

/// The `Connection` field an answer carries, in lower case.
fn connection(r: &Reply) -> Option<String> {
    r.header("connection").map(str::to_ascii_lowercase)
}

/// The head and body of a whole exchange read until the proxy closed.
fn split_answer(out: &str) -> (String, &str) {
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((out, ""));
    (head.to_ascii_lowercase(), body)
}

/// HTTP/1.0 clients (`ab -k`, say) keep their connection only when they ask to, are told so in
/// `Connection`, and the upstream still gets HTTP/1.1, with `Kong-Debug` as without. The direct
/// path answers in HTTP/1.1, as nginx does.
#[tokio::test]
async fn http10_clients_are_kept_alive_only_when_they_ask() {
    let (gw, _up, host) = echo_gateway().await;
    for extra in BOTH_PATHS {
        let mut tcp = TcpStream::connect(gw.proxy_addr()).await.expect("loopback I/O");
        for i in 0..2 {
            let r = http10_kept_on(&mut tcp, "/p/ka", &host, extra).await;
            assert_eq!(r.status, 200, "{extra:?} {i}");
            assert_eq!(connection(&r).as_deref(), Some("keep-alive"), "{extra:?}");
            assert_eq!(r.echo().version(), "HTTP/1.1", "what the upstream was sent, {extra:?}");
            if extra.is_empty() {
                assert_eq!(r.version, "HTTP/1.1", "the direct path's status line");
            }
        }
        // Without keep-alive, the answer says close, and the connection ends after it.
        tcp.write_all(http10("/p/last", &host, "", extra).as_bytes()).await.expect("loopback I/O");
        let r = read_response(&mut tcp, "GET /p/last HTTP/1.0").await.expect("a complete response");
        assert_eq!(r.status, 200, "{extra:?}");
        assert_eq!(r.echo().path(), "/p/last");
        let mut rest = Vec::new();
        let end = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest)).await;
        assert!(matches!(end, Ok(Ok(0))), "{extra:?}: the connection ends after the answer ({rest:?})");
    }
}

/// An HTTP/1.0 client cannot read chunks: a chunked answer reaches it as its data, and a body
/// delimited by the upstream's close as it is; either ends the client's connection, even one
/// that asked for keep-alive.
#[tokio::test]
async fn answers_without_a_length_reach_http10_clients_unchunked_and_end_the_connection() {
    let gw = Standalone::start().await;
    let chunked = Scripted::start(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        false,
    )
    .await;
    let closing = Scripted::start(b"HTTP/1.1 200 OK\r\nX-Up: 1\r\n\r\nuntil the end", true).await;
    for (up, path) in [(&chunked, "/chunked"), (&closing, "/closing")] {
        let service = gw.service_at(up.port, json!({})).await;
        gw.route(&service, json!({"paths": [path]})).await;
    }
    gw.sync().await;
    let host = format!("Host: 127.0.0.1:{}\r\n", gw.proxy_addr().port());
    for extra in BOTH_PATHS {
        for (path, expected) in [("/chunked", "hello world"), ("/closing", "until the end")] {
            let out = read_all(&gw, http10(path, &host, "Connection: keep-alive\r\n", extra).as_bytes()).await;
            let (head, body) = split_answer(&out);
            assert!(head.contains(" 200 ok"), "{path} {extra:?}: {out}");
            assert_eq!(body, expected, "{path} {extra:?}");
            assert!(!head.contains("transfer-encoding"), "{path} {extra:?}: {out}");
            assert!(!head.contains("connection: keep-alive"), "{path} {extra:?}: {out}");
        }
    }
}

/// An error page keeps an HTTP/1.0 keep-alive connection as it would an HTTP/1.1 one.
#[tokio::test]
async fn an_error_page_keeps_an_http10_keep_alive_connection() {
    let gw = Standalone::start().await;
    let refused = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback I/O");
    let port = refused.local_addr().expect("bound").port();
    drop(refused);
    let service = gw.service_at(port, json!({"retries": 0})).await;
    gw.route(&service, json!({"paths": ["/gone"]})).await;
    gw.sync().await;
    let host = format!("Host: 127.0.0.1:{}\r\n", gw.proxy_addr().port());
    for extra in BOTH_PATHS {
        let mut tcp = TcpStream::connect(gw.proxy_addr()).await.expect("loopback I/O");
        for i in 0..2 {
            let r = http10_kept_on(&mut tcp, "/gone", &host, extra).await;
            assert_eq!(r.status, 502, "{extra:?} {i}");
            assert_eq!(connection(&r).as_deref(), Some("keep-alive"), "{extra:?}");
        }
    }
}

/// The last request head `up` received.
fn last_head(up: &Scripted) -> String {
    up.heads.lock().expect("not poisoned").last().cloned().expect("the upstream got a request")
}

/// A route with key-auth (hiding the credential) forwards the same request for an HTTP/1.1
/// client on the plain port and an HTTP/2 client on the TLS port: the query without the key,
/// the consumer's fields, the forwarding fields, the body without the key and its new length.
/// Header-name case is the client's: as sent over HTTP/1.1, lower case from HTTP/2.
#[tokio::test]
async fn a_plugin_route_forwards_the_same_request_on_both_paths() {
    let gw = Standalone::start().await;
    let up = Scripted::start(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false).await;
    let service = gw.service_at(up.port, json!({})).await;
    // The key in the query on /k, in a form body on /kb.
    for (path, config) in
        [("/k", json!({"hide_credentials": true})), ("/kb", json!({"hide_credentials": true, "key_in_body": true}))]
    {
        let route = gw.route(&service, json!({"paths": [path], "strip_path": false})).await;
        gw.post("/plugins", json!({"name": "key-auth", "route_id": route["id"], "config": config})).await;
    }
    let alice = gw.post("/consumers", json!({"username": "alice"})).await;
    gw.post("/consumers/alice/key-auth", json!({"key": "alice-key"})).await;
    gw.sync().await;
    let alice_id = alice["id"].as_str().expect("a consumer id");
    let (port, tls_port) = (gw.proxy_addr().port(), gw.proxy_tls_addr().port());
    // reqwest sends `Accept: */*` unless told otherwise: both sides send it, so the heads match.
    let sent = [("X-Mixed-Case", "kept"), ("X-Forwarded-For", "10.0.0.1"), ("Accept", "*/*")];
    let form = "apikey=alice-key&a=12";
    let form_type = "application/x-www-form-urlencoded";
    let mut heads = Vec::new();

    // The direct path: HTTP/1.1 on the plain port.
    let r = gw.request("GET", "/k?apikey=alice-key&x=1", &sent).await;
    assert_eq!((r.status, r.version.as_str(), r.text().as_str()), (200, "HTTP/1.1", "ok"), "GET, direct");
    heads.push(last_head(&up));
    let raw_post = format!(
        "POST /kb HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: */*\r\nContent-Type: {form_type}\r\n\
         Content-Length: {}\r\n\r\n{form}",
        form.len()
    );
    let r = gw.send_raw(raw_post.as_bytes()).await.expect("a response");
    assert_eq!((r.status, r.version.as_str(), r.text().as_str()), (200, "HTTP/1.1", "ok"), "POST, direct");
    heads.push(last_head(&up));

    // HTTP/2 on the TLS port.
    let mut h2_get = gw.client().get(gw.proxy_tls_url("/k?apikey=alice-key&x=1"));
    for (name, value) in sent {
        h2_get = h2_get.header(name, value);
    }
    let r = gw.send("GET /k over HTTP/2", h2_get).await;
    assert_eq!((r.status, r.version.as_str(), r.text().as_str()), (200, "HTTP/2.0", "ok"), "GET, HTTP/2");
    heads.push(last_head(&up));
    let h2_post = gw.client().post(gw.proxy_tls_url("/kb")).header("Accept", "*/*").header("Content-Type", form_type);
    let r = gw.send("POST /kb over HTTP/2", h2_post.body(form)).await;
    assert_eq!((r.status, r.version.as_str(), r.text().as_str()), (200, "HTTP/2.0", "ok"), "POST, HTTP/2");
    heads.push(last_head(&up));

    assert!(heads[0].contains("\r\nX-Mixed-Case: kept\r\n"), "the direct path: {}", heads[0]);
    assert!(heads[2].contains("\r\nx-mixed-case: kept\r\n"), "HTTP/2: {}", heads[2]);
    // The forwarding fields naming the client's scheme and port differ, as they must: http and
    // the plain port on one side, https and the TLS port on the other.
    for (i, proto, listener) in [(0, "http", port), (1, "http", port), (2, "https", tls_port), (3, "https", tls_port)] {
        let lines: Vec<String> = heads[i].lines().map(str::to_ascii_lowercase).collect();
        for f in [format!("x-forwarded-proto: {proto}"), format!("x-forwarded-port: {listener}")] {
            assert!(lines.contains(&f), "{f}: {}", heads[i]);
        }
    }
    // Field by field, names and values compared without case, in any order, leaving out those
    // two forwarding fields (the only ones TLS changes).
    let fields = |head: &str| {
        let mut lines: Vec<String> = head
            .lines()
            .map(str::to_ascii_lowercase)
            .filter(|l| !l.starts_with("x-forwarded-proto:") && !l.starts_with("x-forwarded-port:"))
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(fields(&heads[0]), fields(&heads[2]), "GET:\n{}\n---\n{}", heads[0], heads[2]);
    assert_eq!(fields(&heads[1]), fields(&heads[3]), "POST:\n{}\n---\n{}", heads[1], heads[3]);
    let (get, post) = (fields(&heads[0]), fields(&heads[1]));
    assert!(heads[0].starts_with("GET /k?x=1 HTTP/1.1\r\n"), "the key left the query: {}", heads[0]);
    for f in [format!("x-consumer-id: {alice_id}"), "x-consumer-username: alice".into()] {
        assert!(get.contains(&f) && post.contains(&f), "{f}: {get:?} {post:?}");
    }
    assert!(get.contains(&"x-forwarded-for: 10.0.0.1, 127.0.0.1".to_string()), "{get:?}");
    assert!(!heads.iter().any(|h| h.contains("alice-key")), "hide_credentials: {heads:?}");
    // The body lost its key, and its length followed (over HTTP/2 too: the fields match).
    assert!(post.contains(&"content-length: 4".to_string()), "{post:?}");
}

/// On one keep-alive connection, a plugin's rejection, an authenticated request, the no-route
/// 404 and the https-only 426 are all answered on the direct path, which keeps the connection:
/// a later plugin-free request still reaches the upstream with its header names' case.
#[tokio::test]
async fn plugin_answers_and_error_pages_keep_the_connection_on_the_direct_path() {
    let gw = Standalone::start().await;
    let up = Scripted::start(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false).await;
    let service = gw.service_at(up.port, json!({})).await;
    let route = gw.route(&service, json!({"paths": ["/k"]})).await;
    gw.route(&service, json!({"paths": ["/p"]})).await;
    gw.route(&service, json!({"paths": ["/tls"], "protocols": ["https"]})).await;
    gw.post("/plugins", json!({"name": "key-auth", "route_id": route["id"]})).await;
    gw.post("/consumers", json!({"username": "alice"})).await;
    gw.post("/consumers/alice/key-auth", json!({"key": "alice-key"})).await;
    gw.sync().await;
    let host = format!("Host: 127.0.0.1:{}\r\n", gw.proxy_addr().port());
    let mut tcp = TcpStream::connect(gw.proxy_addr()).await.expect("loopback I/O");
    let r = get_on(&mut tcp, "/k", &host).await;
    assert_eq!((r.status, r.text().as_str()), (401, r#"{"message":"No API key found in request"}"#));
    assert_eq!(r.header("www-authenticate"), Some(r#"Key realm="kong""#));
    assert_eq!(get_on(&mut tcp, "/nowhere", &host).await.status, 404);
    assert_eq!(get_on(&mut tcp, "/tls", &host).await.status, 426);
    let r = get_on(&mut tcp, "/k", &format!("{host}ApiKey: alice-key\r\n")).await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let r = get_on(&mut tcp, "/p", &format!("{host}X-Mixed-Case: kept\r\n")).await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    assert!(last_head(&up).contains("\r\nX-Mixed-Case: kept"), "still the direct path: {}", last_head(&up));
    let (connections, requests) = (up.connections.load(Ordering::SeqCst), up.requests.load(Ordering::SeqCst));
    assert_eq!((connections, requests), (1, 2), "one upstream connection, two requests forwarded");
}

/// A request on a plugin route whose body a plugin has read is held in memory, and a
/// replayable method (PUT) is sent again when the first upstream connection fails, with the
/// body as the plugin left it, with `Kong-Debug` as without.
#[tokio::test]
async fn a_body_a_plugin_read_is_sent_again_on_a_retry() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("loopback I/O");
    let port = listener.local_addr().expect("bound").port();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    // Every other connection is closed once its request has been read, unanswered.
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut tcp, _)) = listener.accept().await {
            n += 1;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.ends_with(b"a=12") {
                match tcp.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => buf.extend_from_slice(&chunk[..k]),
                }
            }
            let text = String::from_utf8_lossy(&buf).into_owned();
            seen.lock().expect("not poisoned").push(text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned());
            if n % 2 == 0 {
                let _ = tcp.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").await;
            }
        }
    });
    let gw = Standalone::start().await;
    let service = gw.service_at(port, json!({"retries": 1})).await;
    let route = gw.route(&service, json!({"paths": ["/kb"]})).await;
    let config = json!({"hide_credentials": true, "key_in_body": true});
    gw.post("/plugins", json!({"name": "key-auth", "route_id": route["id"], "config": config})).await;
    gw.post("/consumers", json!({"username": "alice"})).await;
    gw.post("/consumers/alice/key-auth", json!({"key": "alice-key"})).await;
    gw.sync().await;
    for extra in BOTH_PATHS {
        let debug: String = extra.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
        let put = format!(
            "PUT /kb HTTP/1.1\r\nHost: x\r\n{debug}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 21\r\n\r\napikey=alice-key&a=12"
        );
        let r = gw.send_raw(put.as_bytes()).await.expect("a response");
        assert_eq!((r.status, r.text().as_str()), (200, "ok"), "{extra:?}");
    }
    assert_eq!(*bodies.lock().expect("not poisoned"), vec!["a=12"; 4], "each try carried the rewritten body");
}

/// The https-only 426 names `Upgrade` and the connection's own token in one Connection field.
#[tokio::test]
async fn the_426_has_one_connection_field() {
    let gw = Standalone::start().await;
    let up = Upstream::echo("secure").await;
    gw.expose(&up, json!({}), json!({"paths": ["/tls"], "protocols": ["https"]})).await;
    gw.sync().await;
    let out = read_all(&gw, b"GET /tls HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.to_ascii_lowercase();
    assert!(out.starts_with("http/1.1 426 "), "{out}");
    assert_eq!(out.matches("\r\nconnection:").count(), 1, "{out}");
    assert!(out.contains("\r\nconnection: upgrade, close\r\n"), "{out}");
}

/// An answer carrying the fields Gatehouse adds, as an upstream (or a hop before it) set them.
const WITH_OWN_FIELDS: &[u8] = b"HTTP/1.1 200 OK\r\nServer: up\r\nVia: 1.1 up-hop\r\nX-Kong-Proxy-Latency: up\r\n\
X-Kong-Upstream-Latency: up\r\nX-Kong-Upstream-Status: 999\r\nContent-Length: 2\r\n\r\nok";

/// What one proxied answer, one 404, one plugin rejection and one Admin API answer say about
/// the `headers` setting, without and with `Kong-Debug` (both on the direct path, which answers
/// it): `Kong-Debug` changes nothing but the fields it adds, so the setting acts alike on both.
async fn headers_seen(setting: &str) -> Vec<(&'static str, Reply)> {
    let gw = Standalone::start_with_env(&[("GATEHOUSE_HEADERS", setting)]).await;
    let up = Scripted::start(WITH_OWN_FIELDS, false).await;
    let service = gw.service_at(up.port, json!({})).await;
    gw.route(&service, json!({"paths": ["/p"]})).await;
    let locked = gw.route(&service, json!({"paths": ["/locked"]})).await;
    let route_id = locked["id"].as_str().expect("route id");
    gw.post(&format!("/routes/{route_id}/plugins"), json!({"name": "key-auth"})).await;
    let dead = gw.service_at(dead_port(), json!({"retries": 0})).await;
    gw.route(&dead, json!({"paths": ["/dead"]})).await;
    gw.sync().await;

    let host = format!("Host: 127.0.0.1:{}\r\n", gw.proxy_addr().port());
    let debug = format!("{host}Kong-Debug: 1\r\n");
    let mut seen = Vec::new();
    for (what, path, fields) in [
        ("proxied, direct", "/p", &host),
        ("proxied, Kong-Debug", "/p", &debug),
        ("404, direct", "/nowhere", &host),
        ("404, Kong-Debug", "/nowhere", &debug),
        ("401, direct", "/locked", &host),
        ("401, Kong-Debug", "/locked", &debug),
        ("502, direct", "/dead", &host),
        ("502, Kong-Debug", "/dead", &debug),
    ] {
        // A connection each, so that no request's answer depends on the one before it.
        let mut tcp = TcpStream::connect(gw.proxy_addr()).await.expect("loopback I/O");
        seen.push((what, get_on(&mut tcp, path, fields).await));
    }
    let admin = reqwest::Client::builder().no_proxy().build().expect("client");
    let r = admin.get(format!("{}/", gw.admin)).send().await.expect("Admin API answers");
    seen.push(("admin", Reply::read("GET / (admin)", r).await));
    seen
}

/// A proxied answer of [`WITH_OWN_FIELDS`] whose Via and latencies are the upstream's, one of
/// each (Server is always the upstream's on proxied answers), with this upstream status.
#[track_caller]
fn assert_upstreams_fields(what: &str, r: &Reply, upstream_status: &str) {
    r.assert_status(200);
    assert_eq!(r.header_all("server"), ["up"], "{what}: {:?}", r.headers);
    assert_eq!(r.header_all("via"), ["1.1 up-hop"], "{what}: {:?}", r.headers);
    assert_eq!(r.header_all("x-kong-proxy-latency"), ["up"], "{what}: {:?}", r.headers);
    assert_eq!(r.header_all("x-kong-upstream-latency"), ["up"], "{what}: {:?}", r.headers);
    assert_eq!(r.header_all("x-kong-upstream-status"), [upstream_status], "{what}: {:?}", r.headers);
}

#[tokio::test]
async fn headers_off_sends_none_of_gatehouses_fields_and_keeps_the_upstreams() {
    for (what, r) in headers_seen("off").await {
        match what {
            "proxied, direct" | "proxied, Kong-Debug" => assert_upstreams_fields(what, &r, "999"),
            _ => {
                assert!(matches!(r.status, 200 | 401 | 404 | 502), "{what}: {}", r.status);
                for name in
                    ["server", "via", "x-kong-proxy-latency", "x-kong-upstream-latency", "x-kong-upstream-status"]
                {
                    assert_eq!(r.header(name), None, "{what}: {name} with headers=off: {:?}", r.headers);
                }
            }
        }
    }
}

#[tokio::test]
async fn headers_lists_the_fields_gatehouse_sends() {
    for (what, r) in headers_seen("Server, x-kong-upstream-status").await {
        match what {
            "proxied, direct" | "proxied, Kong-Debug" => assert_upstreams_fields(what, &r, "200"),
            "502, direct" | "502, Kong-Debug" => {
                r.assert_generated();
                assert_eq!(r.header_all("x-kong-upstream-status"), ["502"], "{what}: {:?}", r.headers);
                assert_eq!(r.header("via"), None, "{what}: {:?}", r.headers);
            }
            _ => {
                r.assert_generated();
                assert_eq!(r.header("x-kong-upstream-status"), None, "{what}: not proxied: {:?}", r.headers);
            }
        }
    }
    for (what, r) in headers_seen("server_tokens, latency_tokens").await {
        if what.starts_with("proxied") {
            let via = r.header_all("via");
            assert!(via.len() == 1 && via[0].starts_with("gatehouse/"), "{what}: Via {via:?}");
            for name in ["x-kong-proxy-latency", "x-kong-upstream-latency"] {
                let v = r.header_all(name);
                assert!(v.len() == 1 && v[0].parse::<u64>().is_ok(), "{what}: {name} {v:?}");
            }
            assert_eq!(r.header_all("x-kong-upstream-status"), ["999"], "{what}: not ours unless asked for");
        } else {
            r.assert_generated();
            // Only an upstream failure's page counts as proxied.
            let via = r.header_all("via");
            if what.starts_with("502") {
                assert!(via.len() == 1 && via[0].starts_with("gatehouse/"), "{what}: Via {via:?}");
            } else {
                assert!(via.is_empty(), "{what}: Via {via:?}");
            }
        }
    }
}

/// The raw answer to `GET path` on an open keep-alive connection (head and body as sent).
async fn raw_get_on(tcp: &mut TcpStream, path: &str, host: &str, version: &str) -> (Reply, String) {
    tcp.write_all(format!("GET {path} HTTP/{version}\r\n{host}\r\n").as_bytes()).await.expect("loopback I/O");
    let mut raw = Vec::new();
    let mut probe = RecordingReader { inner: tcp, seen: &mut raw };
    let r = read_response(&mut probe, &format!("GET {path}")).await.expect("a complete response");
    (r, String::from_utf8_lossy(&raw).into_owned())
}

/// Keeps a copy of every byte read through it.
struct RecordingReader<'a, R> {
    inner: &'a mut R,
    seen: &'a mut Vec<u8>,
}

impl<R: AsyncRead + Unpin> AsyncRead for RecordingReader<'_, R> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut *this.inner).poll_read(cx, buf);
        this.seen.extend_from_slice(&buf.filled()[before..]);
        polled
    }
}

/// Plugins that act on answers run on the direct path: response-transformer's header rules
/// and JSON body rewrite (the body re-chunked, as its length changes), and
/// response-ratelimiting's counting of what the upstream reports, up to its bodiless 429. The
/// upstream's field names keep their spelling there, which is how the test knows the path.
#[tokio::test]
async fn plugins_acting_on_answers_run_on_the_direct_path() {
    let gw = Standalone::start().await;
    let body = r#"{"a":1,"secret":"s","b":2}"#;
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Upstream-Spelling: kept\r\nX-Kong-Limit: video=1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let up = Scripted::start(Box::leak(answer.into_bytes().into_boxed_slice()), false).await;
    let service = gw.service_at(up.port, json!({})).await;
    let both = gw.route(&service, json!({"paths": ["/rp"]})).await;
    let transform_only = gw.route(&service, json!({"paths": ["/rt"]})).await;
    let rules = json!({"remove": {"json": ["secret"]}, "add": {"headers": ["x-added:1"]}});
    for route in [&both, &transform_only] {
        gw.post("/plugins", json!({"name": "response-transformer", "route_id": route["id"], "config": rules})).await;
    }
    gw.post(
        "/plugins",
        json!({"name": "response-ratelimiting", "route_id": both["id"],
               "config": {"limits": {"video": {"hour": 2}}, "policy": "local"}}),
    )
    .await;
    gw.sync().await;
    let host = format!("Host: 127.0.0.1:{}\r\n", gw.proxy_addr().port());
    let mut tcp = TcpStream::connect(gw.proxy_addr()).await.expect("loopback I/O");

    for remaining in ["1", "0"] {
        let (r, raw) = raw_get_on(&mut tcp, "/rp", &host, "1.1").await;
        r.assert_status(200);
        assert!(raw.contains("\r\nX-Upstream-Spelling: kept\r\n"), "the direct path: {raw}");
        assert_eq!(r.json(), json!({"a": 1, "b": 2}), "the JSON rule ran on the body");
        assert_eq!(r.header("transfer-encoding"), Some("chunked"), "a rewritten body goes chunked: {raw}");
        assert_eq!(r.header("content-length"), None, "{raw}");
        assert_eq!(r.header("x-added"), Some("1"));
        assert_eq!(r.header("x-ratelimit-limit-video-hour"), Some("2"));
        assert_eq!(r.header("x-ratelimit-remaining-video-hour"), Some(remaining), "{raw}");
        assert_eq!(r.header("x-kong-limit"), None, "the upstream's usage report is not passed on");
    }
    // Used up: Kong's bodiless 429, on a connection that goes on.
    let (r, raw) = raw_get_on(&mut tcp, "/rp", &host, "1.1").await;
    r.assert_status(429);
    assert!(r.body.is_empty(), "{raw}");
    assert_eq!(r.header("content-length"), Some("0"), "{raw}");
    let (r, _) = raw_get_on(&mut tcp, "/rt", &host, "1.1").await;
    r.assert_status(200);

    // An HTTP/1.0 client gets the rewritten body unchunked, ended by the connection's close.
    let mut old = TcpStream::connect(gw.proxy_addr()).await.expect("loopback I/O");
    old.write_all(format!("GET /rt HTTP/1.0\r\n{host}\r\n").as_bytes()).await.expect("loopback I/O");
    let all = until_closed(&mut old).await;
    let (head, rest) = all.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 200 ") && !head.to_ascii_lowercase().contains("transfer-encoding"), "{head}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(rest).expect("JSON"), json!({"a": 1, "b": 2}), "{all}");
}

/// A WebSocket handshake on the direct path: the upstream gets Kong's `Connection: upgrade`
/// and `Upgrade: websocket`, the client its 101 as the upstream wrote it, and the connection
/// becomes a tunnel both ways, including the bytes each side sent right after the switch.
#[tokio::test]
async fn a_websocket_becomes_a_tunnel_on_the_direct_path() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("loopback I/O");
    let port = listener.local_addr().expect("loopback I/O").port();
    let seen = Arc::new(Mutex::new(String::new()));
    let head_seen = seen.clone();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.expect("loopback I/O");
        let mut buf = Vec::new();
        let end = loop {
            let mut chunk = [0u8; 4096];
            let n = tcp.read(&mut chunk).await.expect("loopback I/O");
            assert!(n > 0, "the handshake arrives");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        *head_seen.lock().expect("not poisoned") = String::from_utf8_lossy(&buf[..end]).into_owned();
        let answer = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Spelled-Thus: 1\r\n\r\nserver-first";
        tcp.write_all(answer.as_bytes()).await.expect("loopback I/O");
        // Echoes, upper-cased, whatever comes (early bytes included).
        let mut pending = buf.split_off(end);
        loop {
            if !pending.is_empty() {
                tcp.write_all(&pending.to_ascii_uppercase()).await.expect("loopback I/O");
                pending.clear();
            }
            let mut chunk = [0u8; 4096];
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&chunk[..n]),
            }
        }
    });
    let gw = Standalone::start().await;
    let service = gw.service_at(port, json!({})).await;
    gw.route(&service, json!({"paths": ["/ws"], "strip_path": false})).await;
    gw.sync().await;

    let mut tcp = TcpStream::connect(gw.proxy_addr()).await.expect("loopback I/O");
    let handshake = format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nX-Client-Spelling: 1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\nearly",
        gw.proxy_port
    );
    tcp.write_all(handshake.as_bytes()).await.expect("loopback I/O");
    let mut got = Vec::new();
    let want = |got: &[u8]| {
        let text = String::from_utf8_lossy(got);
        text.contains("server-first") && text.contains("EARLY")
    };
    while !want(&got) {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut chunk))
            .await
            .expect("the tunnel relays within 10 s")
            .expect("loopback I/O");
        assert!(n > 0, "the tunnel stays open: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"), "{text}");
    assert!(text.contains("\r\nX-Spelled-Thus: 1\r\n"), "the upstream's answer as written (the direct path): {text}");
    assert!(text.contains("\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"), "{text}");
    tcp.write_all(b"ping").await.expect("loopback I/O");
    let mut pong = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut pong))
        .await
        .expect("an echo within 10 s")
        .expect("loopback I/O");
    assert_eq!(&pong, b"PING");
    let head = seen.lock().expect("not poisoned").clone();
    assert!(head.contains("\r\nX-Client-Spelling: 1\r\n"), "the direct path: {head}");
    assert!(head.contains("\r\nConnection: upgrade\r\nUpgrade: websocket\r\n"), "{head}");
    assert!(head.contains("\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"), "{head}");
}

/// A target with characters a plain one does not have is routed and forwarded on the direct
/// path as it came, without its fragment.
#[tokio::test]
async fn an_unusual_target_is_forwarded_as_it_came_without_its_fragment() {
    let gw = Standalone::start().await;
    let up = Scripted::start(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false).await;
    let service = gw.service_at(up.port, json!({})).await;
    gw.route(&service, json!({"paths": ["/p"], "strip_path": false})).await;
    gw.sync().await;
    let raw = format!(
        "GET /p/x{{y}}|z^w?q=[1]#frag HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nX-Mixed-Case: kept\r\n\r\n",
        gw.proxy_port
    );
    let r = gw.send_raw(raw.as_bytes()).await.expect("a response");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let head = last_head(&up);
    assert!(head.starts_with("GET /p/x{y}|z^w?q=[1] HTTP/1.1\r\n"), "{head}");
    assert!(head.contains("\r\nX-Mixed-Case: kept"), "the direct path: {head}");
}

/// `Kong-Debug` is answered on the direct path (the upstream gets the client's spelling): the
/// answer names the route and the service, in place of any
/// fields of those names the upstream sent; an unnamed service adds no name. A route whose
/// plugins act on answers adds them too, beside what the plugins add.
#[tokio::test]
async fn kong_debug_is_answered_on_the_direct_path() {
    let gw = Standalone::start().await;
    let up = Scripted::start(b"HTTP/1.1 200 OK\r\nKong-Route-Id: spoofed\r\nContent-Length: 2\r\n\r\nok", false).await;
    let named = gw.service_at(up.port, json!({"name": "debugged"})).await;
    let plain = gw.route(&named, json!({"paths": ["/d"], "strip_path": false})).await;
    let anon = gw.service_at(up.port, json!({})).await;
    let anon_route = gw.route(&anon, json!({"paths": ["/anon"], "strip_path": false})).await;
    let phased = gw.route(&named, json!({"paths": ["/phased"], "strip_path": false})).await;
    let transform = json!({"name": "response-transformer", "route_id": phased["id"], "config": {"add": {"headers": ["X-Added:1"]}}});
    gw.post("/plugins", transform).await;
    gw.sync().await;
    let host = format!("Host: 127.0.0.1:{}\r\n", gw.proxy_addr().port());
    let id = |v: &serde_json::Value| v["id"].as_str().expect("an id").to_owned();

    let raw = read_all(
        &gw,
        format!("GET /d HTTP/1.1\r\n{host}X-Mixed-Case: kept\r\nKong-Debug: 1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 200 "), "{raw}");
    assert!(raw.contains(&format!("\r\nKong-Route-Id: {}\r\n", id(&plain))), "{raw}");
    assert!(raw.contains(&format!("\r\nKong-Service-Id: {}\r\n", id(&named))), "{raw}");
    assert!(raw.contains("\r\nKong-Service-Name: debugged\r\n"), "{raw}");
    assert!(!raw.contains("spoofed"), "the upstream's field is replaced: {raw}");
    let head = last_head(&up);
    assert!(head.contains("\r\nX-Mixed-Case: kept"), "the client's spelling, as the direct path keeps it: {head}");
    assert!(!head.to_ascii_lowercase().contains("kong-debug"), "Kong-Debug is the gateway's: {head}");

    let r = gw.get_with("/anon", &[("Kong-Debug", "1")]).await;
    assert_eq!(r.header("kong-route-id"), Some(id(&anon_route).as_str()), "{:?}", r.headers);
    assert_eq!(r.header("kong-service-id"), Some(id(&anon).as_str()), "{:?}", r.headers);
    assert_eq!(r.header("kong-service-name"), None, "an unnamed service: {:?}", r.headers);

    let r = gw.get_with("/phased", &[("Kong-Debug", "1")]).await;
    assert_eq!(r.header("kong-route-id"), Some(id(&phased).as_str()), "{:?}", r.headers);
    assert_eq!(r.header("kong-service-name"), Some("debugged"), "{:?}", r.headers);
    assert_eq!(r.header("x-added"), Some("1"), "{:?}", r.headers);

    let r = gw.get("/d").await;
    assert_eq!(r.header("kong-route-id"), Some("spoofed"), "without Kong-Debug the upstream's stays: {:?}", r.headers);
}

/// An answer with as many fields as an upstream may send, and the gateway's own added, reaches
/// an HTTP/2 client whole (the engine's answer is parsed again on its way to HTTP/2).
#[tokio::test]
async fn an_answer_with_a_hundred_fields_reaches_http2_clients_whole() {
    let gw = Standalone::start().await;
    let fields: String = (0..99).map(|i| format!("X-Answer-{i}: {i}\r\n")).collect();
    let response = format!("HTTP/1.1 200 OK\r\n{fields}Content-Length: 2\r\n\r\nok");
    let up = Scripted::start(Box::leak(response.into_bytes().into_boxed_slice()), false).await;
    let service = gw.service_at(up.port, json!({})).await;
    gw.route(&service, json!({"paths": ["/many"]})).await;
    gw.sync().await;
    let r = gw.send("GET /many over HTTP/2", gw.client().get(gw.proxy_tls_url("/many"))).await;
    r.assert_status(200);
    assert_eq!(r.version, "HTTP/2.0");
    assert_eq!((r.header("x-answer-0"), r.header("x-answer-98")), (Some("0"), Some("98")));
    assert!(r.header("x-kong-proxy-latency").is_some(), "{:?}", r.headers);
}

/// A head is limited by its bytes (32 KiB, as nginx's buffers), not by a count of fields: one
/// with hundreds of fields is forwarded whole on the direct path, each field as the client
/// spelled it and in its order; and hundreds of Host fields are still more than one.
#[tokio::test]
async fn a_head_with_hundreds_of_fields_is_forwarded_whole() {
    let gw = Standalone::start().await;
    let up = Scripted::start(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false).await;
    let service = gw.service_at(up.port, json!({})).await;
    gw.route(&service, json!({"paths": ["/w"], "strip_path": false})).await;
    let guarded = gw.route(&service, json!({"paths": ["/guarded"], "strip_path": false})).await;
    gw.post("/plugins", json!({"name": "key-auth", "route_id": guarded["id"]})).await;
    gw.post("/consumers", json!({"username": "alice"})).await;
    gw.post("/consumers/alice/key-auth", json!({"key": "alice-key"})).await;
    gw.sync().await;
    let host = format!("Host: 127.0.0.1:{}\r\n", gw.proxy_addr().port());
    let fields: String = (0..300).map(|i| format!("X-Field-{i}: {i}\r\n")).collect();

    let mut tcp = TcpStream::connect(gw.proxy_addr()).await.expect("loopback I/O");
    tcp.write_all(format!("GET /w HTTP/1.1\r\n{host}{fields}\r\n").as_bytes()).await.expect("loopback I/O");
    let r = read_response(&mut tcp, "GET /w").await.expect("a complete response");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let head = last_head(&up);
    assert!(head.contains(&fields), "every field, spelled and ordered as sent: {head}");

    // On a plugin route too, and on the same connection.
    tcp.write_all(format!("GET /guarded HTTP/1.1\r\n{host}apikey: alice-key\r\n{fields}\r\n").as_bytes())
        .await
        .expect("loopback I/O");
    let r = read_response(&mut tcp, "GET /guarded").await.expect("a complete response");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let head = last_head(&up);
    assert!(head.contains("\r\nX-Field-0: 0\r\n") && head.contains("\r\nX-Field-299: 299\r\n"), "{head}");
    assert!(
        head.contains("\r\nX-Consumer-Username: alice\r\n")
            || head.to_ascii_lowercase().contains("\r\nx-consumer-username: alice\r\n"),
        "{head}"
    );

    // 300 Host fields: a 400, never a count that wrapped round to one.
    let hosts: String = (0..300).map(|_| format!("Host: 127.0.0.1:{}\r\n", gw.proxy_addr().port())).collect();
    let raw = read_all(&gw, format!("GET /w HTTP/1.1\r\n{hosts}\r\n").as_bytes()).await;
    assert!(raw.starts_with("HTTP/1.1 400 "), "{raw}");
    // Past 32 KiB in all, many fields or not, the head is refused.
    let wide: String = (0..2000).map(|i| format!("X-F{i}: {i:08}\r\n")).collect();
    let raw = read_all(&gw, format!("GET /w HTTP/1.1\r\n{host}{wide}\r\n").as_bytes()).await;
    assert!(raw.starts_with("HTTP/1.1 400 "), "{raw}");
    assert_eq!(up.heads.lock().expect("not poisoned").len(), 2, "only the two heads within the limits went upstream");
}

/// While a request is with the upstream, the direct path watches its client, as nginx does: a
/// request the client pipelines meanwhile is answered after it, in order, on the same
/// connection; a client that leaves ends the wait, and the upstream's connection goes with the
/// request it holds.
#[tokio::test]
async fn the_client_is_watched_while_the_upstream_works() {
    let gw = Standalone::start().await;
    let slow = Upstream::slow("slow", Duration::from_millis(300)).await;
    gw.expose(&slow, json!({}), json!({"paths": ["/slow"]})).await;
    // An upstream that never answers, and notes when the gateway closes its connection.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("loopback I/O");
    let port = listener.local_addr().expect("loopback I/O").port();
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.expect("the gateway connects");
        let mut buf = vec![0u8; 4096];
        let mut read = 0;
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
        let _ = closed_tx.send(read);
    });
    let mute = gw.service_at(port, json!({"read_timeout": 60_000})).await;
    gw.route(&mute, json!({"paths": ["/mute"]})).await;
    gw.sync().await;
    let host = format!("Host: 127.0.0.1:{}\r\n", gw.proxy_addr().port());

    let mut tcp = TcpStream::connect(gw.proxy_addr()).await.expect("loopback I/O");
    tcp.write_all(format!("GET /slow/1 HTTP/1.1\r\n{host}\r\n").as_bytes()).await.expect("loopback I/O");
    tokio::time::sleep(Duration::from_millis(100)).await;
    tcp.write_all(format!("GET /slow/2 HTTP/1.1\r\n{host}\r\n").as_bytes()).await.expect("loopback I/O");
    let first = read_response(&mut tcp, "GET /slow/1").await.expect("a complete response");
    let second = read_response(&mut tcp, "GET /slow/2").await.expect("a complete response");
    assert_eq!((first.echo().path(), second.echo().path()), ("/1", "/2"), "answered in order");
    assert_eq!(get_on(&mut tcp, "/slow/3", &host).await.echo().path(), "/3", "the connection goes on");

    let mut tcp = TcpStream::connect(gw.proxy_addr()).await.expect("loopback I/O");
    tcp.write_all(format!("GET /mute HTTP/1.1\r\n{host}\r\n").as_bytes()).await.expect("loopback I/O");
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(tcp);
    let read = tokio::time::timeout(Duration::from_secs(10), closed_rx)
        .await
        .expect("the upstream's connection closed soon after the client left, not after its 60 s read timeout")
        .expect("the upstream task reports");
    assert!(read > 0, "the upstream got the request before the client left");
}

/// A plugin that changes the method (request-transformer's `http_method`): the upstream's
/// answer is read as an answer to the method it got, and a client's HEAD gets the head alone,
/// so the next request on either connection is not mistaken for a body.
#[tokio::test]
async fn a_method_a_plugin_changes_frames_the_answer() {
    let gw = Standalone::start().await;
    let up = Scripted::start(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false).await;
    let service = gw.service_at(up.port, json!({})).await;
    let route = gw.route(&service, json!({"paths": ["/m"], "strip_path": false})).await;
    gw.route(&service, json!({"paths": ["/plain"], "strip_path": false})).await;
    let plugin = json!({"name": "request-transformer", "route_id": route["id"], "config": {"http_method": "GET"}});
    gw.post("/plugins", plugin).await;
    gw.sync().await;
    let host = format!("Host: 127.0.0.1:{}\r\n", gw.proxy_addr().port());
    let out = read_all(
        &gw,
        format!("HEAD /m HTTP/1.1\r\n{host}\r\nGET /plain HTTP/1.1\r\n{host}Connection: close\r\n\r\n").as_bytes(),
    )
    .await;
    let (first, rest) = out.split_once("\r\n\r\n").expect("a first head");
    assert!(first.starts_with("HTTP/1.1 200 ") && first.contains("\r\nContent-Length: 2"), "{out}");
    assert!(rest.starts_with("HTTP/1.1 200 "), "the HEAD got no body: {out}");
    assert!(rest.ends_with("\r\n\r\nok"), "{out}");
    let lines = up.lines.lock().expect("not poisoned").clone();
    assert_eq!(lines, ["GET /m HTTP/1.1", "GET /plain HTTP/1.1"]);
}

/// Limits that keep a head's per-field work bounded: more than 1,000 fields, or a Connection
/// list of more than 32 options, is Kong's 400 and never forwarded. Over TLS, only a connection
/// that opens with HTTP/2's preface goes to HTTP/2: another version on a request is a 400.
#[tokio::test]
async fn heads_with_too_many_fields_or_options_are_refused() {
    let gw = Standalone::start().await;
    let up = Scripted::start(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false).await;
    let service = gw.service_at(up.port, json!({})).await;
    gw.route(&service, json!({"paths": ["/l"], "strip_path": false})).await;
    gw.sync().await;
    let host = format!("Host: 127.0.0.1:{}\r\n", gw.proxy_addr().port());

    let fields: String = (0..1001).map(|i| format!("a{i}:\r\n")).collect();
    let raw = read_all(&gw, format!("GET /l HTTP/1.1\r\n{host}{fields}\r\n").as_bytes()).await;
    assert!(raw.starts_with("HTTP/1.1 400 "), "{}", &raw[..raw.len().min(300)]);
    let fields: String = (0..998).map(|i| format!("a{i}:\r\n")).collect();
    let raw = read_all(&gw, format!("GET /l HTTP/1.1\r\n{host}{fields}Connection: close\r\n\r\n").as_bytes()).await;
    assert!(raw.starts_with("HTTP/1.1 200 "), "1,000 fields in all: {}", &raw[..raw.len().min(300)]);

    let options: Vec<String> = (0..33).map(|i| format!("o{i}")).collect();
    let raw =
        read_all(&gw, format!("GET /l HTTP/1.1\r\n{host}Connection: {}\r\n\r\n", options.join(", ")).as_bytes()).await;
    assert!(raw.starts_with("HTTP/1.1 400 "), "{raw}");
    let raw = read_all(
        &gw,
        format!("GET /l HTTP/1.1\r\n{host}Connection: {}, close\r\n\r\n", options[..31].join(",")).as_bytes(),
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 200 "), "32 options: {raw}");
    assert_eq!(up.lines.lock().expect("not poisoned").len(), 2, "only the heads within the limits went upstream");

    let mut tls = gatehouse_tests::proxy::tls_connect(gw.proxy_tls_addr(), None, &["http/1.1"]).await.expect("TLS");
    tls.write_all(format!("GET /l HTTP/1.2\r\n{host}\r\n").as_bytes()).await.expect("TLS I/O");
    let raw = until_closed(&mut tls).await;
    assert!(raw.starts_with("HTTP/1.1 400 "), "an HTTP/1 answer, not HTTP/2 frames: {raw:?}");
}
