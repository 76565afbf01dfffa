//! galileo against a local HTTPS collector: ALF batches by size and by idle time, the
//! entries' fields (bodies in base64 with `log_bodies`), and a batch the collector failed
//! tried again.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use gatehouse_tests::proxy::{Standalone, TestCert, Upstream};
use gatehouse_tests::{id_of, json};
use http_body_util::BodyExt;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;

/// What the collector received: (method and path, Content-Type, the parsed body).
type Received = Arc<Mutex<Vec<(String, String, Value)>>>;

/// An HTTPS collector answering each POST with the next status of `statuses` (200 once
/// they run out).
async fn collector(statuses: &[u16]) -> (u16, Received) {
    let cert = TestCert::new("collector.galileo.test");
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("certs");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("key");
    let config = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key).expect("tls");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let received: Received = Arc::default();
    let statuses = Arc::new(Mutex::new(statuses.iter().copied().collect::<VecDeque<u16>>()));
    let sink = received.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, sink, statuses) = (acceptor.clone(), sink.clone(), statuses.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (sink, statuses) = (sink.clone(), statuses.clone());
                    async move {
                        let head = format!("{} {}", req.method(), req.uri());
                        let ct = req
                            .headers()
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let doc: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        sink.lock().expect("sink").push((head, ct, doc));
                        let status = statuses.lock().expect("statuses").pop_front().unwrap_or(200);
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .status(status)
                                .body(http_body_util::Full::new(bytes::Bytes::from("saved")))
                                .expect("response"),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (port, received)
}

/// Waits until the collector holds `n` batches.
async fn batches(received: &Received, n: usize, within: Duration) -> Vec<(String, String, Value)> {
    let started = std::time::Instant::now();
    loop {
        let got = received.lock().expect("received").clone();
        if got.len() >= n {
            return got;
        }
        assert!(started.elapsed() < within, "expected {n} ALF batches, got {}: {got:?}", got.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn gateway(config: Value) -> (Standalone, Upstream) {
    let gw = Standalone::start().await;
    let up = Upstream::echo("galileo-up").await;
    let (_, route) = gw.expose(&up, json!({}), json!({"paths": ["/alf"], "strip_path": false})).await;
    gw.post("/plugins", json!({"name": "galileo", "route_id": id_of(&route), "config": config})).await;
    gw.sync().await;
    (gw, up)
}

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn batches_alf_entries_to_the_collector_by_size_and_by_idle_time() {
    let (port, received) = collector(&[]).await;
    let (gw, _up) = gateway(json!({"service_token": "tok-1", "environment": "staging", "host": "127.0.0.1",
                                   "port": port, "queue_size": 2, "flush_timeout": 1, "log_bodies": true}))
    .await;

    let raw = format!(
        "POST /alf?a=1&a=2&flag HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
        gw.proxy_port
    );
    let posted = gw.send_raw(raw.as_bytes()).await.expect("answer");
    posted.assert_status(200);
    gw.get("/alf/second").await.assert_status(200);
    // Two entries fill the batch: it goes at once, well before the idle flush.
    let first = batches(&received, 1, Duration::from_secs(5)).await;
    gw.get("/alf/third").await.assert_status(200);
    // The third waits for a second without new entries.
    let all = batches(&received, 2, Duration::from_secs(10)).await;
    assert_eq!(first[0].2["har"]["log"]["entries"].as_array().map(Vec::len), Some(2));

    let mut entries = Vec::new();
    for (head, ct, alf) in &all {
        assert_eq!(head, "POST /1.1.0/single");
        assert_eq!(ct, "application/json");
        assert_eq!(alf["version"], "1.1.0");
        assert_eq!(alf["serviceToken"], "tok-1");
        assert_eq!(alf["environment"], "staging");
        assert_eq!(alf["har"]["log"]["creator"], json!({"name": "galileo-agent-kong", "version": "2.0.0"}));
        entries.extend(alf["har"]["log"]["entries"].as_array().cloned().unwrap_or_default());
    }
    assert_eq!(entries.len(), 3);
    let by_url = |suffix: &str| -> Value {
        entries
            .iter()
            .find(|e| e["request"]["url"].as_str().is_some_and(|u| u.ends_with(suffix)))
            .cloned()
            .unwrap_or_else(|| panic!("no entry for {suffix}: {entries:?}"))
    };

    let post = by_url("/alf?a=1&a=2&flag");
    let req = &post["request"];
    assert_eq!(req["url"], "http://127.0.0.1/alf?a=1&a=2&flag");
    assert_eq!(req["method"], "POST");
    assert_eq!(req["httpVersion"], "HTTP/1.1");
    assert_eq!(
        req["queryString"],
        json!([{"name": "a", "value": "1"}, {"name": "a", "value": "2"}, {"name": "flag", "value": true}])
    );
    let headers = req["headers"].as_array().cloned().unwrap_or_default();
    assert!(headers.contains(&json!({"name": "content-type", "value": "text/plain"})), "{headers:?}");
    assert_eq!(req["postData"], json!({"text": b64(b"hello"), "encoding": "base64", "mimeType": "text/plain"}));
    assert_eq!(req["bodyCaptured"], true);
    assert_eq!(req["bodySize"], 5);
    assert!(req["headersSize"].as_u64().is_some_and(|n| n > 30), "{req}");

    let res = &post["response"];
    assert_eq!(res["status"], 200);
    assert_eq!(res["statusText"], "");
    assert_eq!(res["headersSize"], 0);
    let echoed = posted.body.clone();
    assert_eq!(res["content"]["text"], b64(&echoed), "the response body as the client got it");
    assert_eq!(res["content"]["encoding"], "base64");
    assert_eq!(res["bodySize"], echoed.len());
    assert_eq!(res["bodyCaptured"], true);
    // The upstream received the body untouched by its capture.
    let upstream_saw: Value = serde_json::from_slice(&echoed).expect("echo");
    assert_eq!(upstream_saw["body"], "hello", "{upstream_saw}");

    assert_eq!(post["clientIPAddress"], "127.0.0.1");
    assert_eq!(post["serverIPAddress"], "127.0.0.1");
    let started = post["startedDateTime"].as_str().unwrap_or_default();
    assert!(
        started.len() == 20 && started.ends_with('Z') && started.as_bytes()[10] == b'T',
        "ISO 8601 in whole seconds: {started}"
    );
    let t = &post["timings"];
    let sum = ["send", "wait", "receive"].iter().map(|k| t[*k].as_u64().expect("a number")).sum::<u64>();
    assert_eq!(post["time"], sum);

    let get = by_url("/alf/second");
    assert_eq!(get["request"]["bodyCaptured"], false);
    assert_eq!(get["request"]["bodySize"], 0);
    assert!(get["request"].get("postData").is_none(), "no body, no postData: {get}");
}

#[tokio::test]
async fn a_batch_the_collector_failed_is_sent_again() {
    let (port, received) = collector(&[503]).await;
    let (gw, _up) = gateway(json!({"service_token": "tok-2", "host": "127.0.0.1", "port": port,
                                   "queue_size": 1, "retry_count": 3}))
    .await;
    gw.get("/alf/once").await.assert_status(200);
    // Kong waits min(60, n²) seconds after a failure: 4 s after the first.
    let got = batches(&received, 2, Duration::from_secs(15)).await;
    assert_eq!(got[0].2, got[1].2, "the same batch, again");
    assert!(got[0].2.get("environment").is_none(), "no environment set, none sent: {}", got[0].2);
    let entries = got[1].2["har"]["log"]["entries"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["request"]["url"], "http://127.0.0.1/alf/once");
    assert!(entries[0]["request"].get("postData").is_none() && entries[0]["response"].get("content").is_none());
}

/// On a route whose logger keeps bodies, answers without a body (HEAD, and so 204 and 304)
/// go out as their head alone: the next answer on the connection follows it directly.
#[tokio::test]
async fn a_bodiless_answer_on_a_body_keeping_route_is_its_head_alone() {
    use tokio::io::AsyncWriteExt;
    let (port, _received) = collector(&[]).await;
    let (gw, _up) =
        gateway(json!({"service_token": "tok-h", "host": "127.0.0.1", "port": port, "log_bodies": true})).await;
    let host = format!("Host: 127.0.0.1:{}", gw.proxy_port);
    let mut tcp = tokio::net::TcpStream::connect(gw.proxy_addr()).await.expect("connect");
    let requests =
        format!("HEAD /alf HTTP/1.1\r\n{host}\r\n\r\nGET /alf HTTP/1.1\r\n{host}\r\nConnection: close\r\n\r\n");
    tcp.write_all(requests.as_bytes()).await.expect("write");
    let all = gatehouse_tests::proxy::until_closed(&mut tcp).await;
    let (head, rest) = all.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(rest.starts_with("HTTP/1.1 200 "), "the HEAD answer is its head alone: {all:?}");
}
