//! Logging and metrics plugins against real receivers the tests start (kong-0.14-plugins §7):
//! a file renamed away mid-test, an HTTP server, TCP (plain and TLS) and UDP listeners, a
//! syslog socket, a StatsD/DogStatsD listener that parses the lines. The basic serializer's
//! record is checked field by field for a proxied request with a consumer, a plugin's
//! refusal, and an upstream failure after retries.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse_tests::proxy::{dead_port, Standalone, TestCert, Upstream};
use gatehouse_tests::{id_of, json};
use rustls::pki_types::pem::PemObject;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

const WITHIN: Duration = Duration::from_secs(10);

/// Lines or datagrams a receiver got, shared with the test.
#[derive(Clone, Default)]
struct Inbox(Arc<Mutex<Vec<String>>>);

impl Inbox {
    fn push(&self, s: String) {
        self.0.lock().expect("inbox").push(s);
    }

    fn all(&self) -> Vec<String> {
        self.0.lock().expect("inbox").clone()
    }

    /// Waits until `n` items arrived, and returns them.
    async fn wait(&self, n: usize) -> Vec<String> {
        let started = std::time::Instant::now();
        loop {
            let got = self.all();
            if got.len() >= n {
                return got;
            }
            assert!(started.elapsed() < WITHIN, "expected {n} records, got {}: {got:?}", got.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn udp_receiver() -> (u16, Inbox) {
    udp_receiver_split(false).await
}

/// A UDP receiver keeping each datagram, or (`lines`) each newline-separated line of each, as a
/// statsd server reads multi-metric packets.
async fn udp_receiver_split(lines: bool) -> (u16, Inbox) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
    let port = socket.local_addr().expect("addr").port();
    let inbox = Inbox::default();
    let sink = inbox.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok(n) = socket.recv(&mut buf).await {
            let datagram = String::from_utf8_lossy(&buf[..n]).into_owned();
            if lines {
                datagram.split('\n').for_each(|l| sink.push(l.to_owned()));
            } else {
                sink.push(datagram);
            }
        }
    });
    (port, inbox)
}

/// A TCP listener that keeps each `\r\n`-terminated line, optionally behind TLS.
async fn tcp_receiver(tls: Option<&TestCert>) -> (u16, Inbox) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind tcp");
    let port = listener.local_addr().expect("addr").port();
    let inbox = Inbox::default();
    let sink = inbox.clone();
    let acceptor = tls.map(|c| {
        let certs = rustls_certs(&c.cert_pem);
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).expect("key");
        let config =
            rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key).expect("tls config");
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let sink = sink.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let read_lines = |r: Box<dyn tokio::io::AsyncRead + Unpin + Send>| async move {
                    let mut lines = BufReader::new(r).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        sink.push(line.trim_end_matches('\r').to_owned());
                    }
                };
                match acceptor {
                    Some(a) => {
                        if let Ok(s) = a.accept(tcp).await {
                            read_lines(Box::new(s)).await;
                        }
                    }
                    None => read_lines(Box::new(tcp)).await,
                }
            });
        }
    });
    (port, inbox)
}

fn rustls_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<_, _>>().expect("certs")
}

/// An HTTP server keeping each request as `METHOD path\nheaders-as-json\nbody`.
async fn http_receiver() -> (u16, Inbox) {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind http");
    let port = listener.local_addr().expect("addr").port();
    let inbox = Inbox::default();
    let sink = inbox.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let sink = sink.clone();
            let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let sink = sink.clone();
                async move {
                    let head = format!("{} {}", req.method(), req.uri());
                    let headers: serde_json::Map<String, Value> = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap_or_default())))
                        .collect();
                    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    sink.push(format!("{head}\n{}\n{}", Value::Object(headers), String::from_utf8_lossy(&body)));
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from("ok"),
                    )))
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (port, inbox)
}

/// A gateway with one named service (`logged-svc`) and a route `/logged` carrying `plugin`.
async fn logged(env: &[(&str, &str)], plugin: &str, config: Value) -> (Standalone, Upstream) {
    let gw = Standalone::start_with_env(env).await;
    let up = Upstream::echo("logged-up").await;
    let (_, route) =
        gw.expose(&up, json!({"name": "logged-svc"}), json!({"paths": ["/logged"], "strip_path": false})).await;
    gw.post("/plugins", json!({"name": plugin, "route_id": id_of(&route), "config": config})).await;
    gw.sync().await;
    (gw, up)
}

fn record(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON record ({e}): {line}"))
}

#[tokio::test]
async fn serializer_record_for_proxied_refused_and_failed_requests() {
    let (port, inbox) = udp_receiver().await;
    let gw = Standalone::start().await;
    let up = Upstream::echo("ser-up").await;
    let (service, route) =
        gw.expose(&up, json!({"name": "ser-svc"}), json!({"paths": ["/ser"], "strip_path": true})).await;
    gw.post("/plugins", json!({"name": "key-auth", "route_id": id_of(&route), "config": {"hide_credentials": true}}))
        .await;
    gw.post("/plugins", json!({"name": "udp-log", "config": {"host": "127.0.0.1", "port": port}})).await;
    let alice = gw.post("/consumers", json!({"username": "alice", "custom_id": "a-1"})).await;
    let key = gw.post(&format!("/consumers/{}/key-auth", id_of(&alice)), json!({"key": "alice-key"})).await;
    // A service whose only target refuses connections, tried three times.
    let dead =
        gw.post("/services", json!({"name": "dead-svc", "host": "127.0.0.1", "port": dead_port(), "retries": 2})).await;
    gw.route(&dead, json!({"paths": ["/dead"]})).await;
    gw.sync().await;

    gw.get_with("/ser/thing?a=1&a=2&flag", &[("apikey", "alice-key"), ("X-Custom", "v")]).await.echo();
    let r = record(&inbox.wait(1).await[0]);
    assert_eq!(r["request"]["method"], "GET");
    assert_eq!(r["request"]["uri"], "/ser/thing?a=1&a=2&flag");
    assert_eq!(r["request"]["url"], format!("http://127.0.0.1:{}/ser/thing?a=1&a=2&flag", gw.proxy_port));
    assert_eq!(r["request"]["querystring"], json!({"a": ["1", "2"], "flag": true}));
    assert_eq!(r["request"]["headers"]["x-custom"], "v");
    assert_eq!(r["request"]["headers"]["x-consumer-username"], "alice", "as plugins left the request: {r}");
    assert_eq!(r["request"]["headers"]["apikey"], Value::Null, "hidden by hide_credentials: {r}");
    assert!(r["request"]["size"].as_str().is_some_and(|s| s.parse::<u64>().is_ok_and(|n| n > 50)), "{r}");
    assert_eq!(r["upstream_uri"], "/thing?a=1&a=2&flag");
    assert_eq!(r["response"]["status"], 200);
    assert_eq!(r["response"]["headers"]["x-upstream"], "ser-up");
    assert!(r["response"]["size"].as_str().is_some_and(|s| s.parse::<u64>().is_ok_and(|n| n > 100)), "{r}");
    let tries = r["tries"].as_array().expect("tries");
    assert_eq!(tries.len(), 1, "{r}");
    assert_eq!(tries[0]["ip"], "127.0.0.1");
    assert_eq!(tries[0]["port"], up.port());
    assert!(r["latencies"]["kong"].is_u64() && r["latencies"]["proxy"].is_u64() && r["latencies"]["request"].is_u64());
    assert_eq!(r["authenticated_entity"], json!({"id": key["id"], "consumer_id": alice["id"]}));
    assert_eq!(r["consumer"]["username"], "alice");
    assert_eq!(r["consumer"]["custom_id"], "a-1");
    assert_eq!(r["route"]["id"], route["id"]);
    assert_eq!(r["service"]["id"], service["id"]);
    assert_eq!(r["service"]["name"], "ser-svc");
    assert_eq!(r["api"], json!({}));
    assert_eq!(r["client_ip"], "127.0.0.1");
    let now = gatehouse_tests::now_ms();
    assert!(r["started_at"].as_i64().is_some_and(|t| (now - 60_000..=now).contains(&t)), "{r}");

    // Refused by key-auth: logged, not proxied.
    gw.get("/ser/thing").await.assert_status(401);
    let r = record(&inbox.wait(2).await[1]);
    assert_eq!(r["response"]["status"], 401);
    assert_eq!(r["tries"], json!({}), "Kong's empty table: {r}");
    assert_eq!(r["latencies"]["proxy"], -1);
    assert_eq!(r["consumer"], Value::Null);

    // An upstream that refuses every connection: three tries, the page logged.
    gw.get("/dead").await.assert_status(502);
    let r = record(&inbox.wait(3).await[2]);
    assert_eq!(r["response"]["status"], 502);
    let tries = r["tries"].as_array().unwrap_or_else(|| panic!("tries: {r}"));
    assert_eq!(tries.len(), 3, "{r}");
    for t in &tries[..2] {
        assert_eq!(t["state"], "next", "{r}");
        assert_eq!(t["code"], 502, "{r}");
    }
    assert_eq!(r["service"]["name"], "dead-svc");
}

#[tokio::test]
async fn file_log_appends_lines_and_follows_rotation() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("access.log");
    let (gw, _up) = logged(&[], "file-log", json!({"path": path.to_str().expect("utf-8")})).await;
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    gw.get("/logged?n=1").await.echo();
    assert!(gatehouse_tests::proxy::eventually(WITHIN, || read(&path).lines().count() == 1).await, "{}", read(&path));
    let line = read(&path);
    assert_eq!(record(line.trim_end())["request"]["uri"], "/logged?n=1");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the log holds credentials: owner only");

    // Rotated away: later records go to a new file at the path.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&path, &rotated).expect("rotate");
    gw.get("/logged?n=2").await.echo();
    assert!(gatehouse_tests::proxy::eventually(WITHIN, || read(&path).lines().count() == 1).await, "{}", read(&path));
    assert_eq!(record(read(&path).trim_end())["request"]["uri"], "/logged?n=2");
    assert_eq!(read(&rotated).lines().count(), 1, "nothing more went to the rotated file");
}

#[tokio::test]
async fn http_log_posts_records_with_basic_auth() {
    let (port, inbox) = http_receiver().await;
    let endpoint = format!("http://user:p%40ss@127.0.0.1:{port}/ingest?src=gh");
    let (gw, _up) = logged(&[], "http-log", json!({"http_endpoint": endpoint, "method": "PUT"})).await;
    for i in 0..3 {
        gw.get(&format!("/logged?i={i}")).await.echo();
    }
    let got = inbox.wait(3).await;
    let mut uris = Vec::new();
    for req in &got {
        let mut parts = req.splitn(3, '\n');
        assert_eq!(parts.next(), Some("PUT /ingest?src=gh"));
        let headers: Value = serde_json::from_str(parts.next().unwrap_or_default()).expect("headers");
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["host"], "127.0.0.1");
        assert_eq!(headers["authorization"], "Basic dXNlcjpwQHNz", "user:p@ss");
        uris.push(record(parts.next().unwrap_or_default())["request"]["uri"].as_str().unwrap_or_default().to_owned());
    }
    uris.sort();
    assert_eq!(
        uris,
        ["/logged?i=0", "/logged?i=1", "/logged?i=2"],
        "one record per request (workers send in any order)"
    );
}

/// A raw HTTP/1.1 receiver: reads requests back to back (as pipelined), keeps each one's
/// request line and body, and answers each with `answer(n, k)` for the n-th request it has seen
/// (across connections) and the k-th on its connection, closing after it when that says so
/// (without processing the requests behind it), and closing a connection left idle for
/// `idle`. Each answer goes in two writes, so the gateway reads it in pieces. Counts the
/// connections it accepted.
async fn raw_http_receiver(
    answer: fn(usize, usize) -> (&'static str, bool),
    idle: Duration,
) -> (u16, Inbox, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind http");
    let port = listener.local_addr().expect("addr").port();
    let (inbox, connections, seen) = (Inbox::default(), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (sink, accepted) = (inbox.clone(), connections.clone());
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            let (sink, seen) = (sink.clone(), seen.clone());
            tokio::spawn(async move {
                let mut buf: Vec<u8> = Vec::new();
                let mut chunk = [0u8; 16 * 1024];
                let mut here = 0;
                loop {
                    // Every complete request in the buffer, in order.
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        let length: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
                            })
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        if buf.len() < end + 4 + length {
                            break;
                        }
                        let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into_owned();
                        buf.drain(..end + 4 + length);
                        sink.push(format!("{}\n{body}", head.lines().next().unwrap_or_default()));
                        let (reply, close) = answer(seen.fetch_add(1, Ordering::SeqCst), here);
                        here += 1;
                        let (first, rest) = reply.as_bytes().split_at(reply.len() / 2);
                        if tcp.write_all(first).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        if tcp.write_all(rest).await.is_err() {
                            return;
                        }
                        if close {
                            // As nginx and Go's servers close: the answers go out whole, and
                            // requests that came after are read and dropped, so the close is not
                            // a reset that could take the answers with it.
                            let _ = tcp.shutdown().await;
                            let drain = async { while matches!(tcp.read(&mut chunk).await, Ok(n) if n > 0) {} };
                            let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
                            return;
                        }
                    }
                    match tokio::time::timeout(idle, tcp.read(&mut chunk)).await {
                        Ok(Ok(0) | Err(_)) | Err(_) => return,
                        Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (port, inbox, connections)
}

/// Sends `n` requests to `/logged?i=…` at once, and checks each was answered by the upstream.
async fn burst(gw: &Standalone, n: usize) {
    let gets = (0..n).map(|i| async move { gw.get(&format!("/logged?i={i}")).await.echo() });
    futures::future::join_all(gets).await;
}

/// The request URIs in the records a raw receiver kept, sorted, with the request line checked.
fn logged_uris(got: &[String]) -> Vec<String> {
    let mut uris: Vec<String> = got
        .iter()
        .map(|r| {
            let (line, body) = r.split_once('\n').unwrap_or_default();
            assert_eq!(line, "POST /in HTTP/1.1");
            record(body)["request"]["uri"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    uris.sort();
    uris
}

async fn dropped_records(gw: &Standalone) -> u64 {
    let status = format!("http://127.0.0.1:{}/status", gw.status_port);
    let v: Value = reqwest::get(&status).await.expect("status").json().await.expect("json");
    v["log_records_dropped"].as_u64().unwrap_or(u64::MAX)
}

/// Checks that a raw receiver got exactly one record for each of `/logged?i=0` … `n - 1`
/// (waiting for them, then a little longer for any sent twice), and that none was dropped.
async fn each_record_once(gw: &Standalone, inbox: &Inbox, n: usize) {
    let got = inbox.wait(n).await;
    let mut expected: Vec<String> = (0..n).map(|i| format!("/logged?i={i}")).collect();
    expected.sort();
    assert_eq!(logged_uris(&got), expected, "each record once");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(inbox.all().len(), n, "no record sent twice");
    assert_eq!(dropped_records(gw).await, 0);
}

/// A receiver that closes its connection after every answer (`Connection: close`) has not
/// processed the requests written behind the first: every record still arrives, once.
#[tokio::test]
async fn http_log_to_a_receiver_that_closes_after_each_answer_loses_no_record() {
    let (port, inbox, connections) =
        raw_http_receiver(|_, _| ("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", true), WITHIN)
            .await;
    let (gw, _up) = logged(&[], "http-log", json!({"http_endpoint": format!("http://127.0.0.1:{port}/in")})).await;
    burst(&gw, 60).await;
    each_record_once(&gw, &inbox, 60).await;
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 60, "one request per connection");
}

/// A receiver that closes a connection after every fifth answer (as nginx does after
/// `keepalive_requests`), with requests written behind it: those go again, and every record
/// arrives once.
#[tokio::test]
async fn http_log_to_a_receiver_that_closes_every_few_answers_sends_each_record_once() {
    let (port, inbox, connections) = raw_http_receiver(
        |_, k| match k % 5 {
            4 => ("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", true),
            _ => ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
        },
        WITHIN,
    )
    .await;
    let (gw, _up) = logged(&[], "http-log", json!({"http_endpoint": format!("http://127.0.0.1:{port}/in")})).await;
    burst(&gw, 100).await;
    each_record_once(&gw, &inbox, 100).await;
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 20, "five answers a connection");
}

/// Answers whose body ends with the connection (HTTP/1.0 without a length): each is read to
/// its close, and the records behind it go again on new connections.
#[tokio::test]
async fn http_log_reads_answers_that_end_with_the_connection() {
    let (port, inbox, connections) = raw_http_receiver(|_, _| ("HTTP/1.0 200 OK\r\n\r\nstored", true), WITHIN).await;
    let (gw, _up) = logged(&[], "http-log", json!({"http_endpoint": format!("http://127.0.0.1:{port}/in")})).await;
    burst(&gw, 30).await;
    each_record_once(&gw, &inbox, 30).await;
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 30);
}

/// Answers of every framing (a length, chunks with a trailer, none, an interim 100 before the
/// final answer, HTTP/1.0 with keep-alive) are read to their ends: records written back to
/// back keep flowing on one connection, and none is dropped.
#[tokio::test]
async fn http_log_reads_answers_of_every_framing_on_one_connection() {
    let (port, inbox, connections) = raw_http_receiver(
        |n, _| {
            let reply = match n % 5 {
                0 => "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                1 => "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
                2 => "HTTP/1.1 204 No Content\r\n\r\n",
                3 => "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                _ => "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
            };
            (reply, false)
        },
        WITHIN,
    )
    .await;
    let (gw, _up) = logged(&[], "http-log", json!({"http_endpoint": format!("http://127.0.0.1:{port}/in")})).await;
    burst(&gw, 100).await;
    each_record_once(&gw, &inbox, 100).await;
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1, "the connection was kept throughout");
}

/// A receiver that closes a kept connection while it is idle (its keep-alive timeout, shorter
/// than the plugin's): the next record goes on a new connection instead of being lost.
#[tokio::test]
async fn http_log_after_the_receiver_closed_an_idle_connection_loses_no_record() {
    let (port, inbox, connections) =
        raw_http_receiver(|_, _| ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false), Duration::from_millis(100))
            .await;
    let (gw, _up) = logged(&[], "http-log", json!({"http_endpoint": format!("http://127.0.0.1:{port}/in")})).await;
    for i in 0..3 {
        gw.get(&format!("/logged?i={i}")).await.echo();
        inbox.wait(i + 1).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(logged_uris(&inbox.all()), ["/logged?i=0", "/logged?i=1", "/logged?i=2"]);
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 3, "a new connection after each idle close");
    assert_eq!(dropped_records(&gw).await, 0);
}

#[tokio::test]
async fn tcp_log_plain_and_tls() {
    let (plain_port, plain) = tcp_receiver(None).await;
    let cert = TestCert::new("logs.test");
    let (tls_port, secure) = tcp_receiver(Some(&cert)).await;
    let (gw, up) = logged(&[], "tcp-log", json!({"host": "127.0.0.1", "port": plain_port})).await;
    let (_, route) = gw.expose(&up, json!({}), json!({"paths": ["/secure"], "strip_path": false})).await;
    gw.post(
        "/plugins",
        json!({"name": "tcp-log", "route_id": id_of(&route),
               "config": {"host": "127.0.0.1", "port": tls_port, "tls": true, "tls_sni": "logs.test"}}),
    )
    .await;
    gw.sync().await;
    gw.get("/logged").await.echo();
    gw.get("/logged").await.echo();
    gw.get("/secure").await.echo();
    let lines = plain.wait(2).await;
    assert!(lines.iter().all(|l| record(l)["request"]["uri"] == "/logged"), "{lines:?}");
    assert_eq!(record(&secure.wait(1).await[0])["request"]["uri"], "/secure");
}

#[tokio::test]
async fn syslog_and_loggly_choose_severity_by_status() {
    let dir = tempfile::tempdir().expect("dir");
    let socket_path = dir.path().join("log.sock");
    let socket = tokio::net::UnixDatagram::bind(&socket_path).expect("bind syslog socket");
    let syslog = Inbox::default();
    let sink = syslog.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok(n) = socket.recv(&mut buf).await {
            sink.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    });
    let env = [("GATEHOUSE_SYSLOG_SOCKET", socket_path.to_str().expect("utf-8"))];
    let config = json!({"log_level": "info", "successful_severity": "notice", "client_errors_severity": "debug"});
    let (gw, up) = logged(&env, "syslog", config.clone()).await;
    // A client error, whose severity (debug) is above the level (info): not sent.
    let (_, gone) = gw.expose(&up, json!({}), json!({"paths": ["/gone"], "strip_path": false})).await;
    gw.post("/plugins", json!({"name": "syslog", "route_id": id_of(&gone), "config": config})).await;
    gw.post(
        "/plugins",
        json!({"name": "request-termination", "route_id": id_of(&gone), "config": {"status_code": 404}}),
    )
    .await;
    let (loggly_port, loggly) = udp_receiver().await;
    let (_, route) = gw.expose(&up, json!({}), json!({"paths": ["/loggly"], "strip_path": false})).await;
    gw.post(
        "/plugins",
        json!({"name": "loggly", "route_id": id_of(&route),
               "config": {"host": "127.0.0.1", "port": loggly_port, "key": "tok", "tags": ["a", "b"],
                          "successful_severity": "warning"}}),
    )
    .await;
    gw.sync().await;

    gw.get("/logged").await.echo();
    gw.get("/gone").await.assert_status(404);
    gw.get("/logged").await.echo();
    let got = syslog.wait(2).await;
    assert!(got.iter().all(|m| !m.contains("\"status\":404")), "{got:?}");
    // user facility (8) + notice (5).
    assert!(got[0].starts_with("<13>"), "{}", got[0]);
    assert!(got[0].contains(" kong: {"), "{}", got[0]);
    let json_part = got[0].split_once(" kong: ").map(|(_, j)| j).unwrap_or_default();
    assert_eq!(record(json_part)["response"]["status"], 200);

    gw.get("/loggly").await.echo();
    let frame = &loggly.wait(1).await[0];
    // user facility (8) + warning (4), RFC 5424 with the key and tags.
    assert!(frame.starts_with("<12>1 "), "{frame}");
    assert!(frame.contains(" kong - - [tok@41058 tag=\"a\" tag=\"b\"] {"), "{frame}");
}

#[tokio::test]
async fn statsd_and_datadog_lines() {
    let (port, inbox) = udp_receiver_split(true).await;
    let (gw, up) = logged(&[], "statsd", json!({"host": "127.0.0.1", "port": port, "prefix": "gh"})).await;
    gw.get("/logged").await.echo();
    let lines = inbox.wait(8).await;
    for expected in [
        "gh.logged-svc.request.count:1|c",
        "gh.logged-svc.request.status.200:1|c",
        "gh.logged-svc.request.status.total:1|c",
    ] {
        assert!(lines.iter().any(|l| l == expected), "{expected} not in {lines:?}");
    }
    for prefix in [
        "gh.logged-svc.latency:",
        "gh.logged-svc.request.size:",
        "gh.logged-svc.response.size:",
        "gh.logged-svc.upstream_latency:",
        "gh.logged-svc.kong_latency:",
    ] {
        let l = lines.iter().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} in {lines:?}"));
        assert!(l.ends_with("|ms"), "{l}");
        let value = l.trim_start_matches(prefix).trim_end_matches("|ms");
        assert!(value.parse::<i64>().is_ok(), "{l}");
    }

    // datadog: tags on every line; a dotted service name with `_`.
    let (dd_port, dd) = udp_receiver_split(true).await;
    let svc = gw.post("/services", json!({"name": "dd.svc", "host": "127.0.0.1", "port": up.port()})).await;
    let route = gw.route(&svc, json!({"paths": ["/dd"]})).await;
    gw.post(
        "/plugins",
        json!({"name": "datadog", "route_id": id_of(&route),
               "config": {"host": "127.0.0.1", "port": dd_port,
                          "metrics": [{"name": "request_count", "stat_type": "counter", "sample_rate": 1, "tags": ["app:gh", "env"]}]}}),
    )
    .await;
    gw.sync().await;
    gw.get("/dd").await.echo();
    assert_eq!(dd.wait(1).await[0], "kong.dd_svc.request.count:1|c|#app:gh,env");
}

#[tokio::test]
async fn a_receiver_that_is_down_has_its_records_dropped_and_counted() {
    let (gw, _up) =
        logged(&[], "http-log", json!({"http_endpoint": format!("http://127.0.0.1:{}/", dead_port())})).await;
    for _ in 0..20 {
        gw.get("/logged").await.echo();
    }
    let status = format!("http://127.0.0.1:{}/status", gw.status_port);
    let dropped = || async {
        let v: Value = reqwest::get(&status).await.expect("status").json().await.expect("json");
        v["log_records_dropped"].as_u64().unwrap_or(0)
    };
    let started = std::time::Instant::now();
    while dropped().await < 20 {
        assert!(started.elapsed() < WITHIN, "dropped records not counted: {}", dropped().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A request logs the same record with `Kong-Debug` as without (both on the direct path), but
/// for timings and the fields `Kong-Debug` adds to the answer: `Kong-Debug` changes nothing but
/// the fields it adds.
#[tokio::test]
async fn both_request_paths_write_the_same_record() {
    let (port, inbox) = udp_receiver().await;
    let gw = Standalone::start().await;
    let up = Upstream::echo("paths-up").await;
    let (_, route) = gw.expose(&up, json!({"name": "paths-svc"}), json!({"paths": ["/paths"]})).await;
    gw.post("/plugins", json!({"name": "key-auth", "route_id": id_of(&route)})).await;
    gw.post(
        "/plugins",
        json!({"name": "udp-log", "route_id": id_of(&route), "config": {"host": "127.0.0.1", "port": port}}),
    )
    .await;
    let bob = gw.post("/consumers", json!({"username": "bob"})).await;
    gw.post(&format!("/consumers/{}/key-auth", id_of(&bob)), json!({"key": "bob-key"})).await;
    let dead =
        gw.post("/services", json!({"name": "gone-svc", "host": "127.0.0.1", "port": dead_port(), "retries": 1})).await;
    let dead_route = gw.route(&dead, json!({"paths": ["/gone"]})).await;
    gw.post(
        "/plugins",
        json!({"name": "udp-log", "route_id": id_of(&dead_route), "config": {"host": "127.0.0.1", "port": port}}),
    )
    .await;
    gw.sync().await;

    // Timings and the fields that carry them differ from one request to the next.
    let comparable = |mut r: Value| {
        for k in ["latencies", "started_at"] {
            r.as_object_mut().map(|o| o.remove(k));
        }
        for t in r["tries"].as_array_mut().into_iter().flatten() {
            t.as_object_mut().map(|o| o.remove("balancer_start"));
        }
        for h in ["x-kong-proxy-latency", "x-kong-upstream-latency", "date"] {
            r["response"]["headers"].as_object_mut().map(|o| o.remove(h));
        }
        // What Kong-Debug adds to the answer, and so to its size.
        for h in ["kong-route-id", "kong-service-id", "kong-service-name"] {
            let removed = r["response"]["headers"].as_object_mut().and_then(|o| o.remove(h));
            if let Some(v) = removed.as_ref().and_then(Value::as_str) {
                let size: u64 = r["response"]["size"].as_str().and_then(|s| s.parse().ok()).expect("size");
                r["response"]["size"] = json!((size - (h.len() + v.len() + 4) as u64).to_string());
            }
        }
        r
    };
    let mut n = 0;
    for (path, key, status) in [("/paths/a?x=1", Some("bob-key"), 200), ("/paths/a", None, 401), ("/gone", None, 502)] {
        let mut records = Vec::new();
        for debug in [false, true] {
            let mut headers = vec![("X-Custom", "v")];
            if let Some(k) = key {
                headers.push(("apikey", k));
            }
            if debug {
                headers.push(("Kong-Debug", "1"));
            }
            gw.get_with(path, &headers).await.assert_status(status);
            n += 1;
            records.push(comparable(record(&inbox.wait(n).await[n - 1])));
        }
        assert_eq!(records[0], records[1], "{path}: the record without Kong-Debug, then with it");
    }
}
