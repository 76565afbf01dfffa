//! aws-lambda against a local Lambda-compatible endpoint over TLS that checks each request's
//! AWS Signature Version 4 itself (an independent implementation of the verification, with
//! the configured secret) and answers as Lambda does.

use std::sync::{Arc, Mutex};

use gatehouse_tests::proxy::{Standalone, TestCert};
use gatehouse_tests::{id_of, json};
use http_body_util::BodyExt;
use ring::{digest, hmac};
use rustls::pki_types::pem::PemObject;
use serde_json::Value;

const KEY: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a request's SigV4 `Authorization` against `SECRET`; the reason when it fails.
fn verify(method: &str, path: &str, query: &str, headers: &http::HeaderMap, body: &[u8]) -> Result<(), String> {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).ok_or("no Authorization")?;
    let rest = auth.strip_prefix("AWS4-HMAC-SHA256 ").ok_or("not AWS4-HMAC-SHA256")?;
    let field = |name: &str| {
        rest.split(", ")
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .map(str::to_owned)
            .ok_or(format!("no {name}"))
    };
    let (credential, signed, signature) = (field("Credential")?, field("SignedHeaders")?, field("Signature")?);
    let scope: Vec<&str> = credential.split('/').collect();
    let [key, date, region, service, "aws4_request"] = scope.as_slice() else {
        return Err(format!("scope {credential}"));
    };
    if *key != KEY || *service != "lambda" {
        return Err(format!("credential {credential}"));
    }
    let amz_date = headers.get("x-amz-date").and_then(|v| v.to_str().ok()).ok_or("no X-Amz-Date")?;
    let mut canonical_headers = String::new();
    for name in signed.split(';') {
        let value = headers.get(name).and_then(|v| v.to_str().ok()).ok_or(format!("signed header {name} missing"))?;
        canonical_headers.push_str(&format!("{name}:{}\n", value.trim()));
    }
    let mut query_pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    query_pairs.sort_unstable();
    let canonical = format!(
        "{method}\n{path}\n{}\n{canonical_headers}\n{signed}\n{}",
        query_pairs.join("&"),
        hex(digest::digest(&digest::SHA256, body).as_ref())
    );
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{date}/{region}/lambda/aws4_request\n{}",
        hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
    );
    let step = |k: &[u8], m: &str| hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, k), m.as_bytes()).as_ref().to_vec();
    let k = step(format!("AWS4{SECRET}").as_bytes(), date);
    let k = step(&k, region);
    let k = step(&k, "lambda");
    let k = step(&k, "aws4_request");
    let expected = hex(&step(&k, &to_sign));
    if expected == signature {
        Ok(())
    } else {
        Err(format!("signature mismatch: canonical request\n{canonical}"))
    }
}

/// What the endpoint saw: (path and query, verification outcome, the payload).
type Seen = Arc<Mutex<Vec<(String, Result<(), String>, Value)>>>;

async fn lambda_endpoint(cert: &TestCert) -> (u16, Seen) {
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("certs");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("key");
    let config = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key).expect("tls");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, log) = (acceptor.clone(), log.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let check = verify(
                            parts.method.as_str(),
                            parts.uri.path(),
                            parts.uri.query().unwrap_or_default(),
                            &parts.headers,
                            &body,
                        );
                        let payload: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let target = parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
                        let ok = check.is_ok();
                        log.lock().expect("log").push((target.clone(), check, payload.clone()));
                        let mut resp = hyper::Response::builder()
                            .header("content-type", "application/json")
                            .header("x-amzn-requestid", "req-1");
                        if !ok {
                            resp = resp.status(403);
                        } else if target.contains("/functions/failing/") {
                            resp = resp.header("x-amz-function-error", "Unhandled");
                        }
                        let answer = json!({"echo": payload, "function": target});
                        Ok::<_, std::convert::Infallible>(
                            resp.body(http_body_util::Full::new(bytes::Bytes::from(answer.to_string())))
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
    (port, seen)
}

#[tokio::test]
async fn invokes_the_function_with_a_valid_signature() {
    let cert = TestCert::new("lambda.local");
    let (port, seen) = lambda_endpoint(&cert).await;
    let gw = Standalone::start().await;
    let svc = gw.post("/services", json!({"host": "127.0.0.1", "port": 9})).await;
    let base = json!({"aws_key": KEY, "aws_secret": SECRET, "aws_region": "us-east-1",
                      "host": "127.0.0.1", "port": port});
    for (path, extra) in [
        ("/plain", json!({"function_name": "echo", "qualifier": "v1"})),
        (
            "/forward",
            json!({"function_name": "echo", "forward_request_method": true, "forward_request_uri": true,
                           "forward_request_headers": true, "forward_request_body": true}),
        ),
        ("/failing", json!({"function_name": "failing", "unhandled_status": 412})),
    ] {
        let route = gw.route(&svc, json!({"paths": [path]})).await;
        let mut config = base.clone();
        for (k, v) in extra.as_object().expect("object") {
            config[k] = v.clone();
        }
        gw.post("/plugins", json!({"name": "aws-lambda", "route_id": id_of(&route), "config": config})).await;
    }
    gw.sync().await;

    let r = gw.get("/plain?a=1&b=2").await;
    r.assert_status(200);
    let body = r.json();
    assert_eq!(body["echo"], json!({"a": "1", "b": "2"}), "query arguments as the payload");
    assert_eq!(body["function"], "/2015-03-31/functions/echo/invocations?Qualifier=v1");
    assert!(r.header("via").is_some_and(|v| v.starts_with("gatehouse/")), "{:?}", r.headers);
    assert_eq!(r.header("x-amzn-requestid"), Some("req-1"), "the function's fields come back");

    let raw = format!(
        "POST /forward?q=1 HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nX-Custom: v\r\nContent-Length: 9\r\n\r\n{{\"k\":\"v\"}}",
        gw.proxy_port
    );
    let r = gw.send_raw(raw.as_bytes()).await.expect("answer");
    r.assert_status(200);
    let payload = &r.json()["echo"];
    assert_eq!(payload["request_method"], "POST");
    assert_eq!(payload["request_uri"], "/forward?q=1");
    assert_eq!(payload["request_uri_args"], json!({"q": "1"}));
    assert_eq!(payload["request_headers"]["x-custom"], "v");
    assert_eq!(payload["request_body"], "{\"k\":\"v\"}");
    assert_eq!(payload["request_body_args"], json!({"k": "v"}));

    // An unhandled function error takes unhandled_status.
    gw.get("/failing").await.assert_status(412);

    let seen = seen.lock().expect("seen").clone();
    assert_eq!(seen.len(), 3);
    for (target, check, _) in &seen {
        assert!(check.is_ok(), "{target}: {check:?}");
    }
}
