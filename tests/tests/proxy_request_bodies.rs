//! Request bodies of any length on the direct HTTP/1 path: streamed to the upstream as they
//! come (Content-Length or chunked, with `Expect: 100-continue`), the client's connection kept
//! for the next request, and an upstream that answers before taking the whole body answered
//! at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse_tests::json;
use gatehouse_tests::proxy::{read_response, until_closed, Standalone};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a [`Recorder`] upstream received: each request's head and body bytes as they came on
/// the wire (a chunked body with its chunk lines), and how many connections it accepted.
#[derive(Default)]
struct Received {
    heads: Vec<String>,
    bodies: Vec<Vec<u8>>,
    connections: usize,
}

/// A keep-alive HTTP/1.1 upstream that reads each request's body by its framing and answers
/// with the number of body bytes it read.
struct Recorder {
    port: u16,
    received: Arc<Mutex<Received>>,
}

impl Recorder {
    async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("loopback I/O");
        let port = listener.local_addr().expect("loopback I/O").port();
        let received = Arc::new(Mutex::new(Received::default()));
        let r = received.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                r.lock().expect("not poisoned").connections += 1;
                tokio::spawn(serve(tcp, r.clone()));
            }
        });
        Recorder { port, received }
    }

    fn heads(&self) -> Vec<String> {
        self.received.lock().expect("not poisoned").heads.clone()
    }
}

async fn fill(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    match tcp.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

fn find(buf: &[u8], what: &[u8]) -> Option<usize> {
    buf.windows(what.len()).position(|w| w == what)
}

async fn serve(mut tcp: TcpStream, received: Arc<Mutex<Received>>) {
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i;
            }
            if !fill(&mut tcp, &mut buf).await {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        let lower = head.to_ascii_lowercase();
        let length = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse::<usize>().expect("a length"));
        let body_end = if let Some(n) = length {
            while buf.len() < n {
                if !fill(&mut tcp, &mut buf).await {
                    return;
                }
            }
            n
        } else if lower.contains("transfer-encoding: chunked") {
            // Ends after the last chunk's line and the trailer (if any) with its blank line.
            loop {
                let last = if buf.starts_with(b"0\r\n") { Some(0) } else { find(&buf, b"\r\n0\r\n").map(|i| i + 2) };
                if let Some(end) = last.and_then(|i| find(&buf[i + 1..], b"\r\n\r\n").map(|j| i + 1 + j + 4)) {
                    break end;
                }
                if !fill(&mut tcp, &mut buf).await {
                    return;
                }
            }
        } else {
            0
        };
        let body: Vec<u8> = buf.drain(..body_end).collect();
        let answer = body.len().to_string();
        {
            let mut r = received.lock().expect("not poisoned");
            r.heads.push(head);
            r.bodies.push(body);
        }
        let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{answer}", answer.len());
        if tcp.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// The status of each response in `answers`, read one after another by their lengths.
fn statuses(answers: &str) -> Vec<u16> {
    let mut found = Vec::new();
    let mut rest = answers;
    while let Some(end) = rest.find("\r\n\r\n") {
        let head = &rest[..end];
        let Some(status) = head.strip_prefix("HTTP/1.1 ").and_then(|h| h.get(..3)?.parse().ok()) else { break };
        found.push(status);
        let length = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        rest = rest.get(end + 4 + length..).unwrap_or("");
    }
    found
}

/// A gateway routing `/b` to `port` on 127.0.0.1, and the `Host` line for requests to it.
async fn gateway_to(port: u16, service: serde_json::Value) -> (Standalone, String) {
    let gw = Standalone::start().await;
    let mut svc = json!({"url": format!("http://127.0.0.1:{port}")});
    if let (Some(s), Some(extra)) = (svc.as_object_mut(), service.as_object()) {
        s.extend(extra.clone());
    }
    let svc = gw.post("/services", svc).await;
    gw.route(&svc, json!({"paths": ["/b"], "strip_path": false})).await;
    gw.sync().await;
    let host = format!("Host: 127.0.0.1:{}\r\n", gw.proxy_port);
    (gw, host)
}

#[tokio::test]
async fn long_and_chunked_bodies_stream_through_and_the_connection_goes_on() {
    let up = Recorder::start().await;
    let (gw, host) = gateway_to(up.port, json!({})).await;
    let mut tcp = TcpStream::connect(gw.proxy_addr()).await.expect("loopback I/O");

    // A body far longer than one read, written in pieces with pauses between them.
    let long: Vec<u8> = (0..1_048_576u32).map(|i| (i % 251) as u8).collect();
    let head = format!("PUT /b/long HTTP/1.1\r\n{host}X-Spelled-Thus: 1\r\nContent-Length: {}\r\n\r\n", long.len());
    tcp.write_all(head.as_bytes()).await.expect("loopback I/O");
    for piece in long.chunks(300_000) {
        tcp.write_all(piece).await.expect("loopback I/O");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = read_response(&mut tcp, "PUT /b/long").await.expect("a complete response");
    r.assert_status(200);
    assert_eq!(r.body, b"1048576", "the upstream read the whole body");

    // The client waits to be told to send its body.
    let expecting = vec![b'e'; 100_000];
    let head =
        format!("POST /b/expect HTTP/1.1\r\n{host}Content-Length: {}\r\nExpect: 100-continue\r\n\r\n", expecting.len());
    tcp.write_all(head.as_bytes()).await.expect("loopback I/O");
    let interim = read_response(&mut tcp, "POST /b/expect (head)").await.expect("an interim response");
    assert_eq!(interim.status, 100);
    tcp.write_all(&expecting).await.expect("loopback I/O");
    let r = read_response(&mut tcp, "POST /b/expect (body)").await.expect("a complete response");
    r.assert_status(200);
    assert_eq!(r.body, b"100000");

    // A chunked body with an extension and a trailer goes on as it came, and a request
    // pipelined right behind it is answered on the same connection (which it then ends).
    let chunked = "4\r\nwiki\r\n5;ext=1\r\npedia\r\n0\r\nTrailer-Field: x\r\n\r\n";
    let both = format!(
        "POST /b/chunked HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\n\r\n{chunked}GET /b/after HTTP/1.1\r\n{host}Connection: close\r\n\r\n"
    );
    tcp.write_all(both.as_bytes()).await.expect("loopback I/O");
    let answers = until_closed(&mut tcp).await;
    assert_eq!(statuses(&answers), [200, 200], "both answered, in order: {answers}");
    assert!(answers.contains(&format!("\r\n\r\n{}HTTP/1.1 200", chunked.len())), "{answers}");

    let received = up.received.lock().expect("not poisoned");
    assert_eq!(received.connections, 1, "one upstream connection, reused after each body");
    assert_eq!(received.bodies[0], long, "the long body arrived intact");
    assert_eq!(received.bodies[2], chunked.as_bytes(), "the chunked body arrived as it was sent");
    let heads = &received.heads;
    assert!(heads[0].contains("\r\nX-Spelled-Thus: 1"), "the client's spelling is kept: {}", heads[0]);
    assert!(heads[0].contains("\r\nContent-Length: 1048576"), "{}", heads[0]);
    assert!(!heads[1].to_ascii_lowercase().contains("\r\nexpect:"), "Expect is the gateway's to answer: {}", heads[1]);
    assert!(heads[2].contains("\r\nTransfer-Encoding: chunked"), "{}", heads[2]);
}

#[tokio::test]
async fn an_upstream_answering_before_it_takes_the_body_is_relayed_at_once() {
    // Reads the head, answers 413, then holds the connection without reading anything more.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("loopback I/O");
    let port = listener.local_addr().expect("loopback I/O").port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while find(&buf, b"\r\n\r\n").is_none() {
                    if !fill(&mut tcp, &mut buf).await {
                        return;
                    }
                }
                let answer = "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo long";
                let _ = tcp.write_all(answer.as_bytes()).await;
                tokio::time::sleep(Duration::from_secs(120)).await;
            });
        }
    });
    // The upstream has a minute to take each write: without watching for its answer while the
    // body goes, the client would wait that long.
    let (gw, host) = gateway_to(port, json!({"write_timeout": 60_000})).await;
    let tcp = TcpStream::connect(gw.proxy_addr()).await.expect("loopback I/O");
    let (mut read, mut write) = tcp.into_split();
    let head = format!("POST /b/upload HTTP/1.1\r\n{host}Content-Length: {}\r\n\r\n", 1u64 << 30);
    write.write_all(head.as_bytes()).await.expect("loopback I/O");
    let writer = tokio::spawn(async move {
        let zeros = vec![0u8; 64 * 1024];
        while write.write_all(&zeros).await.is_ok() {}
    });
    let r = tokio::time::timeout(Duration::from_secs(20), read_response(&mut read, "POST /b/upload"))
        .await
        .expect("answered while the body was still going")
        .expect("a complete response");
    r.assert_status(413);
    assert_eq!(r.body, b"too long");
    assert_eq!(r.header("connection"), Some("close"), "the rest of the body is not read: the connection ends");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), read.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the gateway closes the connection after the answer");
    writer.abort();
}

#[tokio::test]
async fn a_request_pipelined_after_a_length_body_is_served() {
    let up = Recorder::start().await;
    let (gw, host) = gateway_to(up.port, json!({})).await;
    let body = vec![b'p'; 50_000];
    let mut bytes = format!("POST /b/one HTTP/1.1\r\n{host}Content-Length: {}\r\n\r\n", body.len()).into_bytes();
    bytes.extend_from_slice(&body);
    bytes.extend_from_slice(format!("GET /b/two HTTP/1.1\r\n{host}Connection: close\r\n\r\n").as_bytes());
    let mut tcp = TcpStream::connect(gw.proxy_addr()).await.expect("loopback I/O");
    tcp.write_all(&bytes).await.expect("loopback I/O");
    let answers = until_closed(&mut tcp).await;
    assert_eq!(statuses(&answers), [200, 200], "{answers}");
    let heads = up.heads();
    assert_eq!(heads.len(), 2, "each request reached the upstream once: {heads:?}");
    assert!(heads[0].starts_with("POST /b/one ") && heads[1].starts_with("GET /b/two "), "{heads:?}");
}

/// A body once partly sent is not sent again: the upstream that takes part of it and closes
/// gets one try, however many retries the service allows.
#[tokio::test]
async fn a_streamed_body_partly_sent_is_not_sent_again() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("loopback I/O");
    let port = listener.local_addr().expect("loopback I/O").port();
    let accepted = Arc::new(Mutex::new(0usize));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            *count.lock().expect("not poisoned") += 1;
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while buf.len() < 40_000 {
                    if !fill(&mut tcp, &mut buf).await {
                        return;
                    }
                }
                // Closed in the middle of the body, with unread bytes: a reset.
            });
        }
    });
    let (gw, host) = gateway_to(port, json!({"retries": 3})).await;
    let body = vec![b's'; 1_000_000];
    let mut tcp = TcpStream::connect(gw.proxy_addr()).await.expect("loopback I/O");
    let head = format!("PUT /b/once HTTP/1.1\r\n{host}Content-Length: {}\r\n\r\n", body.len());
    tcp.write_all(head.as_bytes()).await.expect("loopback I/O");
    let writer = tokio::spawn(async move {
        let _ = tcp.write_all(&body).await;
        tcp
    });
    let mut tcp = writer.await.expect("the writer ends");
    let r = tokio::time::timeout(Duration::from_secs(20), read_response(&mut tcp, "PUT /b/once"))
        .await
        .expect("answered")
        .expect("a complete response");
    r.assert_status(502);
    assert_eq!(*accepted.lock().expect("not poisoned"), 1, "one try: the body had gone in part");
}

/// A request whose streamed body the gateway did not read (no route, an upstream it could not
/// reach) is answered with `Connection: close` and its connection ends: what follows the head
/// is body, never a request.
#[tokio::test]
async fn an_answer_before_a_streamed_body_is_read_ends_the_connection() {
    let up = Recorder::start().await;
    let (gw, host) = gateway_to(up.port, json!({})).await;
    let smuggled = format!("GET /b/smuggled HTTP/1.1\r\n{host}\r\n");
    let mut body = smuggled.clone().into_bytes();
    body.resize(20_000, b' ');
    for target in ["/nowhere", "/b/chunked-trailer"] {
        let mut tcp = TcpStream::connect(gw.proxy_addr()).await.expect("loopback I/O");
        let request = if target == "/nowhere" {
            let mut r = format!("POST {target} HTTP/1.1\r\n{host}Content-Length: {}\r\n\r\n", body.len()).into_bytes();
            r.extend_from_slice(&body);
            r
        } else {
            // A trailer line ended by a bare LF: other parsers end the body there.
            format!("POST {target} HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\n\r\n0\r\n\n{smuggled}").into_bytes()
        };
        tcp.write_all(&request).await.expect("loopback I/O");
        let answers = until_closed(&mut tcp).await;
        let want = if target == "/nowhere" { 404 } else { 400 };
        assert_eq!(statuses(&answers), [want], "{target}: one answer, then the close: {answers}");
        assert!(answers.to_ascii_lowercase().contains("\r\nconnection: close\r\n"), "{target}: {answers}");
    }
    assert!(!up.heads().iter().any(|h| h.starts_with("GET /b/smuggled")), "{:?}", up.heads());
}

/// key-auth on every route, with `config`, and a consumer `alice` whose key is `alice-key`.
async fn key_auth_for_alice(gw: &Standalone, config: serde_json::Value) {
    gw.post("/plugins", json!({"name": "key-auth", "config": config})).await;
    gw.post("/consumers", json!({"username": "alice"})).await;
    gw.post("/consumers/alice/key-auth", json!({"key": "alice-key"})).await;
}

/// On a plugin route, a request whose `Connection` names its length (so that the length is
/// not forwarded) still has its body reach the upstream whole.
#[tokio::test]
async fn a_plugin_route_forwards_a_body_whose_length_connection_names() {
    let up = Recorder::start().await;
    let (gw, host) = gateway_to(up.port, json!({})).await;
    key_auth_for_alice(&gw, json!({})).await;
    gw.sync().await;
    let body = vec![b'c'; 30_000];
    let mut request = format!(
        "POST /b/named HTTP/1.1\r\n{host}apikey: alice-key\r\nConnection: content-length, close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let mut tcp = TcpStream::connect(gw.proxy_addr()).await.expect("loopback I/O");
    tcp.write_all(&request).await.expect("loopback I/O");
    let r = tokio::time::timeout(Duration::from_secs(20), read_response(&mut tcp, "POST /b/named"))
        .await
        .expect("answered")
        .expect("a complete response");
    r.assert_status(200);
    assert_eq!(r.body, b"30000");
}

/// On a route whose plugins read no body (key-auth with the key in a header), a short body
/// that comes with the head reaches the upstream as it came, with its length, and so does one
/// on a route whose plugin reads bodies (the key taken out of it).
#[tokio::test]
async fn a_short_body_reaches_the_upstream_whether_or_not_plugins_read_it() {
    let up = Recorder::start().await;
    let (gw, host) = gateway_to(up.port, json!({})).await;
    key_auth_for_alice(&gw, json!({})).await;
    let svc = gw.post("/services", json!({"url": format!("http://127.0.0.1:{}", up.port)})).await;
    let read = gw.route(&svc, json!({"paths": ["/read"], "strip_path": false})).await;
    let in_body =
        json!({"name": "key-auth", "route_id": read["id"], "config": {"key_in_body": true, "hide_credentials": true}});
    gw.post("/plugins", in_body).await;
    gw.sync().await;
    let mut tcp = TcpStream::connect(gw.proxy_addr()).await.expect("loopback I/O");
    let form = "application/x-www-form-urlencoded";
    let body = "a=1&b=two";
    let request = format!(
        "POST /b/short HTTP/1.1\r\n{host}apikey: alice-key\r\nContent-Type: {form}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.expect("loopback I/O");
    let r = read_response(&mut tcp, "POST /b/short").await.expect("a complete response");
    r.assert_status(200);
    assert_eq!(r.body, body.len().to_string().into_bytes());

    let body = "apikey=alice-key&a=1";
    let request =
        format!("POST /read HTTP/1.1\r\n{host}Content-Type: {form}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    tcp.write_all(request.as_bytes()).await.expect("loopback I/O");
    let r = read_response(&mut tcp, "POST /read").await.expect("a complete response");
    r.assert_status(200);
    assert_eq!(r.body, b"3", "the key taken out of the body");

    let received = up.received.lock().expect("not poisoned");
    assert_eq!(received.bodies[0], b"a=1&b=two", "as it came");
    assert!(received.heads[0].contains("\r\nContent-Length: 9\r\n"), "{}", received.heads[0]);
    assert_eq!(received.bodies[1], b"a=1", "as the plugin left it");
    assert!(received.heads[1].contains("\r\nContent-Length: 3\r\n"), "{}", received.heads[1]);
}

#[tokio::test]
async fn plugin_routes_read_long_and_chunked_bodies_whole() {
    let up = Recorder::start().await;
    let (gw, host) = gateway_to(up.port, json!({})).await;
    key_auth_for_alice(&gw, json!({"key_in_body": true, "hide_credentials": true})).await;
    gw.sync().await;
    let mut tcp = TcpStream::connect(gw.proxy_addr()).await.expect("loopback I/O");
    let form = "application/x-www-form-urlencoded";

    // A chunked form body, longer than the direct path sends with a head: read whole, the key
    // taken out of it, and sent on with its new length.
    let data = format!("data={}", "x".repeat(20_000));
    let (first, second) = ("apikey=alice-key&", data.as_str());
    let request = format!(
        "POST /b/chunked HTTP/1.1\r\n{host}X-Spelled-Thus: 1\r\nContent-Type: {form}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{first}\r\n{:x}\r\n{second}\r\n0\r\n\r\n",
        first.len(),
        second.len()
    );
    tcp.write_all(request.as_bytes()).await.expect("loopback I/O");
    let r = read_response(&mut tcp, "POST /b/chunked").await.expect("a complete response");
    r.assert_status(200);
    assert_eq!(r.body, data.len().to_string().into_bytes());

    // A long Content-Length body without the key: refused, and the connection goes on.
    let long = format!("data={}", "y".repeat(40_000));
    let request =
        format!("POST /b/nokey HTTP/1.1\r\n{host}Content-Type: {form}\r\nContent-Length: {}\r\n\r\n{long}", long.len());
    tcp.write_all(request.as_bytes()).await.expect("loopback I/O");
    let r = read_response(&mut tcp, "POST /b/nokey").await.expect("a complete response");
    r.assert_status(401);

    // Longer than plugins read (1 MiB): passed on whole all the same.
    let huge = vec![b'z'; 2 * 1024 * 1024];
    let head = format!(
        "PUT /b/huge HTTP/1.1\r\n{host}apikey: alice-key\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        huge.len()
    );
    tcp.write_all(head.as_bytes()).await.expect("loopback I/O");
    tcp.write_all(&huge).await.expect("loopback I/O");
    let r = read_response(&mut tcp, "PUT /b/huge").await.expect("a complete response");
    r.assert_status(200);
    assert_eq!(r.body, huge.len().to_string().into_bytes());

    let received = up.received.lock().expect("not poisoned");
    let head = &received.heads[0];
    assert!(head.contains("\r\nX-Spelled-Thus: 1"), "the direct path: {head}");
    assert!(head.contains(&format!("\r\nContent-Length: {}", data.len())), "{head}");
    assert!(!head.to_ascii_lowercase().contains("transfer-encoding"), "{head}");
    assert_eq!(received.bodies[0], data.as_bytes(), "the body as the plugin left it");
    assert_eq!(received.heads.len(), 2, "the refused request never reached the upstream");
}

/// On a plugin route, a client awaiting `100 Continue` is told to send its body, and a body
/// longer than plugins read (1 MiB) streams upstream after them, Content-Length or chunked,
/// as it came: all on the direct path (the client's spelling reaches the upstream; nothing is
/// left to hyper). A plugin that must measure such a body (request-size-limiting below 1 MiB)
/// refuses it, and a refusal before the body is read ends the connection.
#[tokio::test]
async fn plugin_routes_take_expect_and_bodies_longer_than_plugins_read() {
    let up = Recorder::start().await;
    let (gw, host) = gateway_to(up.port, json!({})).await;
    key_auth_for_alice(&gw, json!({})).await;
    let svc = gw.post("/services", json!({"url": format!("http://127.0.0.1:{}", up.port)})).await;
    let limited = gw.route(&svc, json!({"paths": ["/limited"], "strip_path": false})).await;
    let limit =
        json!({"name": "request-size-limiting", "route_id": limited["id"], "config": {"allowed_payload_size": 0.5}});
    gw.post("/plugins", limit).await;
    gw.sync().await;
    let mut tcp = TcpStream::connect(gw.proxy_addr()).await.expect("loopback I/O");

    // Awaiting 100 Continue, with a short body.
    let short = vec![b's'; 100_000];
    let head = format!(
        "POST /b/expect HTTP/1.1\r\n{host}X-Spelled-Thus: 1\r\napikey: alice-key\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        short.len()
    );
    tcp.write_all(head.as_bytes()).await.expect("loopback I/O");
    let interim = read_response(&mut tcp, "POST /b/expect (head)").await.expect("an interim response");
    assert_eq!(interim.status, 100);
    tcp.write_all(&short).await.expect("loopback I/O");
    let r = read_response(&mut tcp, "POST /b/expect (body)").await.expect("a complete response");
    r.assert_status(200);
    assert_eq!(r.body, b"100000");

    // Awaiting 100 Continue, with a body longer than plugins read.
    let long: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let head = format!(
        "PUT /b/long HTTP/1.1\r\n{host}apikey: alice-key\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        long.len()
    );
    tcp.write_all(head.as_bytes()).await.expect("loopback I/O");
    let interim = read_response(&mut tcp, "PUT /b/long (head)").await.expect("an interim response");
    assert_eq!(interim.status, 100);
    for piece in long.chunks(256 * 1024) {
        tcp.write_all(piece).await.expect("loopback I/O");
    }
    let r = read_response(&mut tcp, "PUT /b/long (body)").await.expect("a complete response");
    r.assert_status(200);
    assert_eq!(r.body, long.len().to_string().into_bytes());

    // Chunked, longer than plugins read: passed on as it came.
    let mut chunked = Vec::new();
    for piece in long.chunks(300_000) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let head = format!("POST /b/chunked HTTP/1.1\r\n{host}apikey: alice-key\r\nTransfer-Encoding: chunked\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.expect("loopback I/O");
    tcp.write_all(&chunked).await.expect("loopback I/O");
    let r = read_response(&mut tcp, "POST /b/chunked").await.expect("a complete response");
    r.assert_status(200);
    assert_eq!(r.body, chunked.len().to_string().into_bytes());
    {
        let received = up.received.lock().expect("not poisoned");
        assert_eq!(received.heads.len(), 3);
        assert!(received.heads[0].contains("\r\nX-Spelled-Thus: 1"), "the direct path: {}", received.heads[0]);
        assert_eq!(received.bodies[1], long, "the long body arrived intact");
        assert!(received.heads[1].contains("\r\nContent-Length: 3145728"), "{}", received.heads[1]);
        assert!(received.heads[2].contains("\r\nTransfer-Encoding: chunked"), "{}", received.heads[2]);
        assert_eq!(received.bodies[2], chunked, "the chunked body arrived as it was sent");
        for head in &received.heads {
            assert!(
                head.contains("\r\nX-Consumer-Username: alice") || head.contains("\r\nx-consumer-username: alice"),
                "{head}"
            );
            assert!(!head.to_ascii_lowercase().contains("expect:"), "Expect is the gateway's to answer: {head}");
        }
    }

    // A chunked body over 1 MiB on a route limited to 0.5 MB: measured, and refused.
    let head = format!("POST /limited HTTP/1.1\r\n{host}apikey: alice-key\r\nTransfer-Encoding: chunked\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.expect("loopback I/O");
    tcp.write_all(&chunked).await.expect("loopback I/O");
    let answers = until_closed(&mut tcp).await;
    assert_eq!(statuses(&answers), [413], "refused, then the connection ends: {answers}");
    assert_eq!(up.heads().len(), 3, "the refused body never reached the upstream");
}

/// request-size-limiting on the direct path: a client awaiting `100 Continue` with a length
/// over the limit gets Kong's 417 at once (never a 100, and no upload); a chunked body over the
/// limit but short enough for plugins to read is measured and refused with a 413.
#[tokio::test]
async fn request_size_limiting_answers_expect_and_measures_chunked_bodies() {
    let up = Recorder::start().await;
    let (gw, host) = gateway_to(up.port, json!({})).await;
    gw.post("/plugins", json!({"name": "request-size-limiting", "config": {"allowed_payload_size": 0.5}})).await;
    gw.sync().await;

    for length in [800_000, 2_000_000] {
        let mut tcp = TcpStream::connect(gw.proxy_addr()).await.expect("loopback I/O");
        let head = format!("POST /b/expect HTTP/1.1\r\n{host}Content-Length: {length}\r\nExpect: 100-continue\r\n\r\n");
        tcp.write_all(head.as_bytes()).await.expect("loopback I/O");
        let r = read_response(&mut tcp, "POST /b/expect").await.expect("a response");
        assert_eq!(r.status, 417, "{length}: no 100 Continue first: {:?}", r.headers);
    }

    let piece = vec![b'c'; 100_000];
    let mut chunked = Vec::new();
    for _ in 0..7 {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(&piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let mut tcp = TcpStream::connect(gw.proxy_addr()).await.expect("loopback I/O");
    let head = format!("POST /b/chunked HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.expect("loopback I/O");
    tcp.write_all(&chunked).await.expect("loopback I/O");
    let r = read_response(&mut tcp, "POST /b/chunked").await.expect("a response");
    assert_eq!(r.status, 413, "700,000 bytes over a 524,288-byte limit");
    assert!(up.heads().is_empty(), "nothing reached the upstream: {:?}", up.heads());
}
